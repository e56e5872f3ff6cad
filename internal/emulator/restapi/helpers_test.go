package restapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/restapi"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

const testHost = "testhub.local"

// env is a hub served by the REST API over real TLS.
type env struct {
	t        *testing.T
	hub      *hub.Hub
	srv      *httptest.Server
	port     string
	policies map[string]hub.Policy
	logs     *syncio.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := hub.DefaultPolicies()
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hub.Options{HostName: testHost, Port: port, Policies: ps})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncio.Buffer{}
	restapi.Register(mux, h, restapi.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		h.Close()
	})
	e := &env{t: t, hub: h, srv: srv, port: port, policies: map[string]hub.Policy{}, logs: logs}
	for _, p := range ps {
		e.policies[p.KeyName] = p
	}
	return e
}

// token signs a service token for policy with the primary key.
func (e *env) token(policy string) string {
	e.t.Helper()
	return e.tokenFor(policy, e.policies[policy].PrimaryKey, testHost, time.Hour)
}

func (e *env) tokenFor(keyName, key, resource string, ttl time.Duration) string {
	e.t.Helper()
	s, err := sas.NewSigner(keyName, key)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, _ := s.Token(resource, ttl)
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// code returns the iothub-errorcode header.
func (r response) code() string { return r.header.Get("iothub-errorcode") }

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request with the owner's token unless headers set
// Authorization (an empty value sends none).
func (e *env) do(method, path, body string, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	q := req.URL.Query()
	q.Set("api-version", "2021-04-12")
	req.URL.RawQuery = q.Encode()
	req.Header.Set("Authorization", e.token(hub.PolicyOwner))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Authorization" && headers[i+1] == "" {
			req.Header.Del("Authorization")
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// mustDo is do that fails the test unless the status is want.
func (e *env) mustDo(want int, method, path, body string, headers ...string) response {
	e.t.Helper()
	r := e.do(method, path, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, r.status, r.body, want)
	}
	return r
}

func (e *env) createDevice(id string) map[string]any {
	e.t.Helper()
	return e.mustDo(200, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`).json(e.t)
}

func (e *env) createModule(deviceID, moduleID string) map[string]any {
	e.t.Helper()
	return e.mustDo(200, "PUT", "/devices/"+deviceID+"/modules/"+moduleID, `{"deviceId":"`+deviceID+`","moduleId":"`+moduleID+`"}`).json(e.t)
}

var trackingID = regexp.MustCompile(`^Tracking ID:[0-9a-f]{32}-G:0-TimeStamp:\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$`)

// checkError checks a response is an IoT Hub error with status and code.
func checkError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d (%s); want %d", r.status, r.body, status)
	}
	if got := r.code(); got != code {
		t.Errorf("iothub-errorcode = %q; want %q", got, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if r.header.Get("x-ms-request-id") == "" {
		t.Error("no x-ms-request-id header")
	}
	var body struct {
		Message          string
		ExceptionMessage string
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if !strings.HasPrefix(body.Message, "ErrorCode:"+code+";") {
		t.Errorf("Message = %q; want prefix ErrorCode:%s;", body.Message, code)
	}
	if !trackingID.MatchString(body.ExceptionMessage) {
		t.Errorf("ExceptionMessage = %q; want Tracking ID:…-G:0-TimeStamp:MM/dd/yyyy HH:mm:ss", body.ExceptionMessage)
	}
}

func errorMessage(t *testing.T, r response) string {
	t.Helper()
	var body struct{ Message string }
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return body.Message
}

// path walks a decoded JSON document ("properties.desired.x").
func path(doc map[string]any, p string) any {
	var cur any = doc
	for _, k := range strings.Split(p, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}
