package twinclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

// run is a client running against a test hub.
type run struct {
	c      *Client
	events chan Event
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	logs   *syncio.Buffer
	waited atomic.Int32 // the test took Run's result itself
}

func startClient(t *testing.T, cs connstr.ConnectionString, opts ...Option) *run {
	t.Helper()
	logs := &syncio.Buffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	c, err := New(cs, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{c: c, events: make(chan Event, 10000), cancel: cancel, done: make(chan struct{}), logs: logs}
	go func() {
		r.err = c.Run(ctx, func(ev Event) { r.events <- ev })
		close(r.done)
	}()
	t.Cleanup(func() {
		if err := r.stop(); r.waited.Load() == 0 && !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return r
}

// stop cancels the run and returns what Run returned.
func (r *run) stop() error {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		return fmt.Errorf("Run did not return within 10s of cancellation:\n%s", buf)
	}
	return r.err
}

// wait returns what Run returned once it returns on its own.
func (r *run) wait(t *testing.T) error {
	t.Helper()
	r.waited.Store(1)
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
		return nil
	}
}

func (r *run) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case <-r.done:
		t.Fatalf("Run returned %v while an event was expected; log:\n%s", r.err, r.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("no event within 10s; log:\n%s", r.logs)
	}
	return Event{}
}

// brief renders an event for comparison: type, version, compact desired.
func brief(ev Event) string {
	b, _ := json.Marshal(ev.Desired)
	return fmt.Sprintf("%s %d %s", ev.Type, ev.Version, b)
}

// testHub is the emulator holding the module d1/m1 the tests connect as.
type testHub struct {
	*emulatortest.Hub
	cs connstr.ConnectionString
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	h := emulatortest.Start(t)
	return &testHub{Hub: h, cs: h.CreateModule("d1", "m1")}
}

func (h *testHub) patchDesired(patch string) int64 { return h.PatchDesired("d1", "m1", patch) }

// logged counts the emulator's log lines containing s.
func (h *testHub) logged(s string) int { return strings.Count(h.Logs(), s) }

// transports are the two ways to reach the hub. The WebSocket one goes
// through GatewayHostName, so it also shows that the username and token
// keep the hub's name while the client dials another host.
var transports = []struct {
	name  string
	setup func(h *testHub) (connstr.ConnectionString, []Option)
}{
	{"tls", func(h *testHub) (connstr.ConnectionString, []Option) {
		return h.cs, []Option{WithTLSConfig(h.ClientTLS()), WithMQTTAddr(h.MQTTAddr()), WithBackoff(10*time.Millisecond, 100*time.Millisecond)}
	}},
	{"websocket", func(h *testHub) (connstr.ConnectionString, []Option) {
		cs := h.cs
		cs.GatewayHostName = h.HTTPSAddr()
		return cs, []Option{WithTLSConfig(h.ClientTLS()), WithTransport(TransportWebSocket), WithBackoff(10*time.Millisecond, 100*time.Millisecond)}
	}},
}

func TestTokenRenewalLosesNothing(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	// The hub drops a connection when its token expires, so every
	// renewal must happen in time, and patches keep flowing meanwhile.
	r := startClient(t, cs, append(opts, WithSASTTL(2*time.Second), WithResyncGrace(2*time.Second))...)
	first := r.next(t)
	if first.Type != EventTwin {
		t.Fatalf("first event = %s, want the twin", brief(first))
	}

	var want []string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); <-tick.C {
		v := h.patchDesired(fmt.Sprintf(`{"seq":%d}`, len(want)))
		want = append(want, fmt.Sprintf(`patch %d {"seq":%d}`, v, len(want)))
	}
	var got []string
	for range want {
		got = append(got, brief(r.next(t)))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	connects, expired := len(h.Faults.Seen(faults.MQTTConnect)), h.logged("its SAS token expired")
	if connects < 3 {
		t.Errorf("%d connections in 5s with a 2s token; want renewals", connects)
	}
	if expired != 0 {
		t.Errorf("the hub dropped %d connections for an expired token; want renewal before expiry", expired)
	}
	if strings.Contains(r.logs.String(), "level=INFO") {
		t.Errorf("renewals logged at Info level; want only Debug:\n%s", r.logs)
	}
}

func TestRefusedCredentialsAreFatal(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	cs.SharedAccessKey = base64.StdEncoding.EncodeToString([]byte("not the module's key"))
	r := startClient(t, cs, opts...)
	err := r.wait(t)
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Unauthorized() {
		t.Fatalf("Run = %v, want a *ConnectError for bad credentials", err)
	}
	if !strings.Contains(err.Error(), "d1/m1") || strings.Contains(err.Error(), cs.SharedAccessKey) {
		t.Errorf("error %q should name the identity and not the key", err)
	}
	if n := len(h.Faults.Seen(faults.MQTTConnect)); n != 1 {
		t.Errorf("hub saw %d CONNECTs, want exactly 1 (no retry)", n)
	}
}

func TestUntrustedCertificateIsFatal(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, append(opts, WithTLSConfig(nil))...) // system roots only
	err := r.wait(t)
	if err == nil || !isFatal(err) {
		t.Fatalf("Run = %v, want a certificate error", err)
	}
}

func TestAckVisibleInReportedProperties(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, opts...)
	r.next(t)
	h.patchDesired(`{"telemetryInterval":122,"gone":null}`)
	ev := r.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := r.c.UpdateReported(ctx, WritableAck(ev))
	if err != nil {
		t.Fatalf("UpdateReported: %v", err)
	}
	if v != 2 {
		t.Errorf("reported $version = %d, want 2 (a new twin's is 1)", v)
	}
	got := map[string]any{}
	for k, raw := range h.Twin("d1", "m1").Properties.Reported {
		if !strings.HasPrefix(k, "$") {
			var val any
			_ = json.Unmarshal(raw, &val)
			got[k] = val
		}
	}
	want := map[string]any{
		"telemetryInterval": map[string]any{"value": float64(122), "ac": float64(200), "av": float64(2)},
		// A null in a patch removes the member: the hub keeps no "value".
		"gone": map[string]any{"ac": float64(200), "av": float64(2)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reported properties (-want +got):\n%s", diff)
	}
}

func TestUpdateReportedRejected(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, opts...)
	r.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.c.UpdateReported(ctx, []byte(`not json`))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 400 {
		t.Fatalf("UpdateReported(not json) = %v, want a 400 *StatusError", err)
	}
}

func TestBlockedHandlerDoesNotStallTheConnection(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	release := make(chan struct{})
	twin := make(chan struct{})
	logs := &syncio.Buffer{}
	c, err := New(cs, append(opts, WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 1000)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(ev Event) {
			if ev.Type == EventTwin {
				close(twin)
				<-release // a handler that does not return
			}
			events <- ev
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	<-twin

	// While the handler is stuck, the hub keeps talking to the client: 200
	// patches arrive and a reported-properties round trip completes.
	var want []string
	for i := range 200 {
		v := h.patchDesired(fmt.Sprintf(`{"i":%d}`, i))
		want = append(want, fmt.Sprintf(`patch %d {"i":%d}`, v, i))
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if _, err := c.UpdateReported(rctx, []byte(`{"alive":true}`)); err != nil {
		t.Fatalf("UpdateReported while the handler is blocked: %v", err)
	}
	close(release)

	got := []string{}
	for range len(want) + 1 {
		select {
		case ev := <-events:
			if ev.Type != EventTwin {
				got = append(got, brief(ev))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d events; log:\n%s", len(got), len(want), logs)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events after unblocking (-want +got):\n%s", diff)
	}
}

func TestWebSocketThroughProxy(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	proxied := make(chan string, 16)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		proxied <- r.Host
		upstream, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		go func() { _, _ = io.Copy(upstream, buf); upstream.Close() }()
		_, _ = io.Copy(conn, upstream)
		conn.Close()
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)

	cs, opts := transports[1].setup(h)
	r := startClient(t, cs, append(opts, WithProxy(http.ProxyURL(proxyURL)))...)
	if ev := r.next(t); ev.Type != EventTwin {
		t.Fatalf("first event = %s, want the twin", brief(ev))
	}
	select {
	case target := <-proxied:
		if target != h.HTTPSAddr() {
			t.Errorf("proxy was asked for %s, want %s", target, h.HTTPSAddr())
		}
	default:
		t.Error("the connection did not go through the proxy")
	}
}

func TestConnectFields(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, append(opts, WithUserAgent("receive-twin-patch/v1.2 (test)"))...)
	r.next(t)
	users := h.Faults.Seen(faults.MQTTConnect)
	want := []string{h.HostName() + "/d1/m1/?api-version=2021-04-12&DeviceClientType=receive-twin-patch%2Fv1.2+%28test%29"}
	if diff := cmp.Diff(want, users); diff != "" {
		t.Errorf("CONNECT usernames (-want +got):\n%s", diff)
	}
}

func TestNewTargets(t *testing.T) {
	key := "c2VjcmV0"
	tests := []struct {
		name       string
		cs         string
		opts       []Option
		wantBroker string
		wantErr    string
	}{
		{name: "hub on 8883", cs: "HostName=hub.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=" + key,
			wantBroker: "tls://hub.azure-devices.net:8883"},
		{name: "port in HostName is not MQTT's", cs: "HostName=localhost:8443;DeviceId=d;ModuleId=m;SharedAccessKey=" + key,
			wantBroker: "tls://localhost:8883"},
		{name: "MQTT address override", cs: "HostName=localhost:8443;DeviceId=d;ModuleId=m;SharedAccessKey=" + key,
			opts: []Option{WithMQTTAddr("127.0.0.1:18883")}, wantBroker: "tls://127.0.0.1:18883"},
		{name: "gateway", cs: "HostName=hub.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=" + key + ";GatewayHostName=edge.local",
			wantBroker: "tls://edge.local:8883"},
		{name: "websocket default port", cs: "HostName=hub.azure-devices.net;DeviceId=d;SharedAccessKey=" + key,
			opts: []Option{WithTransport(TransportWebSocket)}, wantBroker: "wss://hub.azure-devices.net/$iothub/websocket"},
		{name: "websocket on the port in HostName", cs: "HostName=localhost:8443;DeviceId=d;ModuleId=m;SharedAccessKey=" + key,
			opts: []Option{WithTransport(TransportWebSocket)}, wantBroker: "wss://localhost:8443/$iothub/websocket"},
		{name: "bad MQTT address", cs: "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" + key,
			opts: []Option{WithMQTTAddr("nohostport")}, wantErr: `MQTT address "nohostport" is not host:port`},
		{name: "service connection string", cs: "HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + key,
			wantErr: "needs a device or module connection string"},
		{name: "x509", cs: "HostName=h;DeviceId=d;x509=true", wantErr: "X.509 authentication is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := connstr.Parse(tt.cs)
			if err != nil {
				t.Fatal(err)
			}
			c, err := New(cs, tt.opts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.broker != tt.wantBroker {
				t.Errorf("broker = %q, want %q", c.broker, tt.wantBroker)
			}
			if !strings.HasPrefix(c.resource, "hub.azure-devices.net/devices/d") && !strings.HasPrefix(c.resource, "localhost/devices/d") {
				t.Errorf("token scope %q does not name the hub without port", c.resource)
			}
		})
	}
}

func TestRefusedSubscriptionIsAskedAgain(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	h.Faults.Add(faults.Rule{Op: faults.MQTTSubscribe, Target: topics.DesiredPatchFilter, Times: 2, Code: iothub.ServerError})
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, opts...)
	if ev := r.next(t); ev.Type != EventTwin {
		t.Fatalf("first event = %s, want the twin", brief(ev))
	}
	if n := strings.Count(r.logs.String(), "hub refused the subscription to "+topics.DesiredPatchFilter); n != 2 {
		t.Errorf("%d refusals logged, want 2:\n%s", n, r.logs)
	}
	v := h.patchDesired(`{"a":1}`)
	if got, want := brief(r.next(t)), fmt.Sprintf(`patch %d {"a":1}`, v); got != want {
		t.Errorf("event = %s, want %s", got, want)
	}
}
