package registry

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

func TestAuthorizationHeader(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	now := time.Now()
	c.sas.now = func() time.Time { return now }
	if _, err := c.ListDevices(context.Background(), 0); err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	auth := hub.requests()[0].Authorization
	tok, err := sas.ParseToken(auth)
	if err != nil {
		t.Fatalf("ParseToken(Authorization): %v", err)
	}
	key, _ := (connstr.ConnectionString{SharedAccessKey: hub.key()}).Key()
	if !tok.Verify(key) {
		t.Errorf("token signature does not verify with the policy key")
	}
	if tok.KeyName != testPolicy {
		t.Errorf("skn = %q, want %q", tok.KeyName, testPolicy)
	}
	// sr is HostName as written, port included, URL-encoded.
	if want := url.QueryEscape(hub.Host()); tok.RawResource != want {
		t.Errorf("sr = %q, want %q", tok.RawResource, want)
	}
	if want := now.Add(time.Hour).Unix(); tok.Expiry.Unix() != want {
		t.Errorf("se = %d, want now + 1h = %d", tok.Expiry.Unix(), want)
	}
	if !strings.HasPrefix(auth, "SharedAccessSignature sr=") {
		t.Errorf("Authorization = %q, want a SharedAccessSignature", sas.Redact(auth))
	}
}

func TestTokenCachedThenRenewed(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	now := time.Now()
	c.sas.now = func() time.Time { return now }
	ctx := context.Background()
	call := func() string {
		t.Helper()
		if _, err := c.ListDevices(ctx, 0); err != nil {
			t.Fatalf("ListDevices: %v", err)
		}
		r := hub.requests()
		return r[len(r)-1].Authorization
	}
	first := call()
	now = now.Add(TokenTTL - renewBefore - time.Second)
	if second := call(); second != first {
		t.Errorf("token changed before its renewal time")
	}
	now = now.Add(2 * time.Second)
	third := call()
	if third == first {
		t.Errorf("token not renewed %v before expiry", renewBefore-time.Second)
	}
	tok, err := sas.ParseToken(third)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(TokenTTL).Unix(); tok.Expiry.Unix() != want {
		t.Errorf("renewed token expires at %d, want %d", tok.Expiry.Unix(), want)
	}
}

func TestNewClientRejects(t *testing.T) {
	tests := []struct {
		name string
		cs   connstr.ConnectionString
		want string
	}{
		{"module string", connstr.ConnectionString{HostName: "h.azure-devices.net", DeviceID: "d", ModuleID: "m", SharedAccessKey: testKey}, "needs a service connection string"},
		{"device string", connstr.ConnectionString{HostName: "h.azure-devices.net", DeviceID: "d", SharedAccessKey: testKey}, "got a device connection string"},
		{"missing key", connstr.ConnectionString{HostName: "h.azure-devices.net", SharedAccessKeyName: "p"}, "SharedAccessKey: missing"},
		{"bad key", connstr.ConnectionString{HostName: "h.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: "!!"}, "SharedAccessKey: not valid base64"},
	}
	for _, tt := range tests {
		_, err := NewClient(tt.cs, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewClient error = %v, want it to contain %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error reveals the key", tt.name)
		}
	}
}

func TestNewClientDefaults(t *testing.T) {
	cs := connstr.ConnectionString{HostName: "hub.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: testKey}
	c, err := NewClient(cs, nil)
	if err != nil {
		t.Fatalf("NewClient with nil options: %v", err)
	}
	if c.HostName() != "hub.azure-devices.net" || c.endpoint != "https://hub.azure-devices.net" {
		t.Errorf("host %q endpoint %q", c.HostName(), c.endpoint)
	}
	cs.HostName = "localhost:8443"
	c, err = NewClient(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostName() != "localhost:8443" || c.endpoint != "https://localhost:8443" || c.sas.resource != "localhost:8443" {
		t.Errorf("host %q endpoint %q token scope %q, want the port kept", c.HostName(), c.endpoint, c.sas.resource)
	}
}

// countingTransport answers 200 and counts what reaches it.
type countingTransport struct{ n int }

func (c *countingTransport) Do(*http.Request) (*http.Response, error) {
	c.n++
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
}

func TestPolicyRefusesPlainHTTP(t *testing.T) {
	signer, err := sas.NewSigner(testPolicy, testKey)
	if err != nil {
		t.Fatal(err)
	}
	tr := &countingTransport{}
	pl := runtime.NewPipeline("test", "v0.0.1", runtime.PipelineOptions{PerRetry: []policy.Policy{newSASPolicy(signer, "h")}},
		&policy.ClientOptions{Transport: tr, Retry: policy.RetryOptions{RetryDelay: time.Millisecond}})
	req, err := runtime.NewRequest(context.Background(), http.MethodGet, "http://127.0.0.1:1/devices")
	if err != nil {
		t.Fatal(err)
	}
	_, err = pl.Do(req)
	if !errors.Is(err, errNotHTTPS) {
		t.Fatalf("Do(http://…) error = %v, want errNotHTTPS", err)
	}
	var nr interface{ NonRetriable() }
	if !errors.As(err, &nr) {
		t.Errorf("error %v is not marked non-retriable", err)
	}
	if tr.n != 0 {
		t.Errorf("transport saw %d requests, want 0", tr.n)
	}
}

func TestLogShowsEtagsButNoSecrets(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	azlog.SetListener(func(_ azlog.Event, msg string) {
		mu.Lock()
		defer mu.Unlock()
		logs.WriteString(msg + "\n")
	})
	defer azlog.SetListener(nil)

	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"})
	c.DeleteDevice(ctx, "d1", "MTAw") // stale: 412 with iothub-errorcode
	c.ListDevices(ctx, 5)

	mu.Lock()
	out := logs.String()
	mu.Unlock()
	sig := strings.SplitN(strings.SplitN(hub.requests()[0].Authorization, "sig=", 2)[1], "&", 2)[0]
	for _, secret := range []string{sig, hub.key()} {
		if strings.Contains(out, secret) {
			t.Errorf("azcore log contains a secret")
		}
	}
	for _, want := range []string{
		"api-version=" + iothub.APIVersion, "top=5", `If-Match: "MTAw"`,
		"Iothub-Errorcode: PreconditionFailed", "Authorization: REDACTED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("azcore log lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// The telemetry policy must accept the module version.
func TestTelemetryEnabled(t *testing.T) {
	cs := connstr.ConnectionString{HostName: "hub.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: testKey}
	if _, err := NewClient(cs, &ClientOptions{azcore.ClientOptions{}}); err != nil {
		t.Fatalf("NewClient with telemetry on: %v", err)
	}
}

func TestUntrustedCertificateIsNotRetried(t *testing.T) {
	hub := newTestHub(t)
	cs := connstr.ConnectionString{HostName: hub.Host(), SharedAccessKeyName: testPolicy, SharedAccessKey: hub.key()}
	// System roots only: the emulator's certificate is not trusted.
	opts := hub.options(t)
	opts.Transport = hubtls.HTTPClient(nil)
	c, err := NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(context.Background(), "d1")
	var certErr *tls.CertificateVerificationError
	if !errors.As(err, &certErr) {
		t.Fatalf("GetDevice against an untrusted hub: %v, want a *tls.CertificateVerificationError in the chain", err)
	}
	if !strings.HasPrefix(err.Error(), "GET /devices/d1: ") {
		t.Errorf("error %q does not name the request", err)
	}
	if StatusCode(err) != 0 {
		t.Errorf("StatusCode = %d, want 0 for a transport error", StatusCode(err))
	}
	if n := len(hub.requests()); n != 1 {
		t.Errorf("client tried %d times, want 1 (no retries)", n)
	}
}
