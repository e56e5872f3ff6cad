package emulatortest

import (
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Request is one request a client sent, as it went on the wire, and the
// status it got (0 when it got no response).
type Request struct {
	Method        string
	Path          string // escaped
	Query         url.Values
	IfMatch       []string // nil when the header was absent
	ContentType   string
	Authorization string
	Body          []byte
	Status        int
}

// Recorder is an azcore pipeline policy that records every attempt a
// client makes: put it in ClientOptions.PerRetryPolicies, where it runs
// after authorization, just before the transport.
type Recorder struct {
	mu   sync.Mutex
	reqs []Request
}

// Do implements policy.Policy.
func (r *Recorder) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	rec := Request{
		Method:        raw.Method,
		Path:          raw.URL.EscapedPath(),
		Query:         raw.URL.Query(),
		IfMatch:       raw.Header.Values("If-Match"),
		ContentType:   raw.Header.Get("Content-Type"),
		Authorization: raw.Header.Get("Authorization"),
	}
	if body := req.Body(); body != nil {
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, err
		}
		if err := req.RewindBody(); err != nil {
			return nil, err
		}
		rec.Body = b
	}
	resp, err := req.Next()
	if resp != nil {
		rec.Status = resp.StatusCode
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return resp, err
}

// Requests returns the requests recorded so far, in order.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}
