// Package registry is a client for IoT Hub's service REST API: device and
// module identities and their twins (api-version 2021-04-12). It runs on
// azcore's pipeline, so requests get azcore's retries, logging and
// telemetry; a per-retry policy signs every try with a cached SAS token of
// the hub's shared access policy.
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// Telemetry names this client in the User-Agent azcore sends.
const (
	moduleName    = "iothub-module-twin/registry"
	moduleVersion = "v0.1.0"
)

// TokenTTL is the lifetime of the SAS tokens the client mints, the default
// of Microsoft's SDKs.
const TokenTTL = time.Hour

// ClientOptions configures a Client. The zero value (or nil) is fine.
type ClientOptions struct {
	azcore.ClientOptions
}

// Client talks to one hub's service API. It is safe for concurrent use.
type Client struct {
	hostName string
	endpoint string // https://{HostName}
	pl       runtime.Pipeline
	sas      *sasPolicy
}

// NewClient returns a client for the hub named by a service (shared access
// policy) connection string. A port in HostName is kept in the endpoint and
// in the tokens' scope.
func NewClient(cs connstr.ConnectionString, opts *ClientOptions) (*Client, error) {
	if cs.Kind() != connstr.Service {
		return nil, fmt.Errorf("registry client needs a service connection string (HostName;SharedAccessKeyName;SharedAccessKey), got a %s connection string", cs.Kind())
	}
	if err := cs.Validate(); err != nil {
		return nil, err
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		return nil, err
	}
	var co azcore.ClientOptions
	if opts != nil {
		co = opts.ClientOptions
	}
	sp := newSASPolicy(signer, sas.ServiceResource(cs.HostName))
	azc, err := azcore.NewClient(moduleName, moduleVersion, runtime.PipelineOptions{
		// Etags, error codes and the query are what one needs to read a
		// log; azcore redacts everything else, Authorization included.
		AllowedHeaders:         []string{"ETag", "If-Match", "iothub-errorcode"},
		AllowedQueryParameters: []string{"api-version", "top"},
		PerRetry:               []policy.Policy{sp},
	}, &co)
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return &Client{
		hostName: cs.HostName,
		endpoint: "https://" + cs.HostName,
		pl:       azc.Pipeline(),
		sas:      sp,
	}, nil
}

// HostName returns the hub's host name as written in the connection string
// (with its port, if any).
func (c *Client) HostName() string { return c.hostName }

// segments builds a request path from raw path segments, escaping each one
// so that IDs holding '#', '?', '%' or '/' reach the hub intact.
func segments(parts ...string) (path, rawPath string) {
	var p, rp strings.Builder
	for _, s := range parts {
		p.WriteByte('/')
		p.WriteString(s)
		rp.WriteByte('/')
		rp.WriteString(escapeSegment(s))
	}
	return p.String(), rp.String()
}

// escapeSegment percent-encodes every byte but RFC 3986's unreserved
// characters. That is stricter than url.PathEscape (which leaves '+', '=',
// '@', ':' and '$' alone) and close to what Microsoft's SDKs send, so no
// server can read an ID differently from what was meant.
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// call describes one REST operation.
type call struct {
	method  string
	path    []string // raw segments
	query   url.Values
	ifMatch string // already formatted; "" sends no header
	body    any    // nil sends no body
	ok      []int  // success statuses
	out     any    // decoded from the response when non-nil
}

// do runs a call through the pipeline and decodes the response.
func (c *Client) do(ctx context.Context, k call) error {
	path, rawPath := segments(k.path...)
	q := url.Values{}
	for name, vs := range k.query {
		q[name] = vs
	}
	q.Set("api-version", iothub.APIVersion)
	u := url.URL{Scheme: "https", Host: c.hostName, Path: path, RawPath: rawPath, RawQuery: q.Encode()}
	req, err := runtime.NewRequest(ctx, k.method, u.String())
	if err != nil {
		return fmt.Errorf("%s %s: %w", k.method, rawPath, err)
	}
	req.Raw().Header.Set("Accept", "application/json")
	if k.ifMatch != "" {
		req.Raw().Header.Set("If-Match", k.ifMatch)
	}
	if k.body != nil {
		b, err := json.Marshal(k.body)
		if err != nil {
			return fmt.Errorf("%s %s: encode request body: %w", k.method, rawPath, err)
		}
		if err := req.SetBody(streaming.NopCloser(bytes.NewReader(b)), "application/json"); err != nil {
			return fmt.Errorf("%s %s: %w", k.method, rawPath, err)
		}
	}
	resp, err := c.pl.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", k.method, rawPath, err)
	}
	if !runtime.HasStatusCode(resp, k.ok...) {
		return newResponseError(k.method, rawPath, resp)
	}
	if k.out == nil {
		runtime.Drain(resp)
		return nil
	}
	payload, err := runtime.Payload(resp)
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", k.method, rawPath, err)
	}
	if err := json.Unmarshal(payload, k.out); err != nil {
		return fmt.Errorf("%s %s: decode %d response: %w", k.method, rawPath, resp.StatusCode, err)
	}
	return nil
}

// ifMatch formats an etag argument for the If-Match header: "" means any
// version ("*"), and values are quoted unless already quoted or weak.
func ifMatch(etag string) string {
	switch {
	case etag == "" || etag == "*" || etag == `"*"`:
		return `"*"`
	case strings.HasPrefix(etag, `W/"`), len(etag) >= 2 && strings.HasPrefix(etag, `"`) && strings.HasSuffix(etag, `"`):
		return etag
	}
	return `"` + etag + `"`
}

// validIDs checks IDs before they go into a path, so that an empty or
// malformed ID cannot address a different resource.
func validIDs(deviceID, moduleID string, withModule bool) error {
	if err := iothub.ValidateID("device ID", deviceID); err != nil {
		return err
	}
	if withModule {
		return iothub.ValidateID("module ID", moduleID)
	}
	return nil
}

// errNotHTTPS is returned instead of sending a token over plain HTTP.
var errNotHTTPS = errors.New("refusing to send a shared access signature over plain http (the endpoint must be https)")

// statusIs reports whether err is a *ResponseError with status code.
func statusIs(err error, code int) bool { return StatusCode(err) == code }

var (
	okGet    = []int{http.StatusOK}
	okPut    = []int{http.StatusOK, http.StatusCreated}
	okDelete = []int{http.StatusOK, http.StatusNoContent}
)
