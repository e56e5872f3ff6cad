package twinclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// hubEnv is a running emulator with a service client, and links in front
// of its MQTT and HTTPS listeners that a test can cut to make the client's
// connection drop.
type hubEnv struct {
	em       *emulatortest.Hub
	reg      *registry.Client
	host     string // the hub's host name, without port
	mqttLink *link  // in front of the MQTT/TLS listener
	wssLink  *link  // in front of the HTTPS listener (WebSockets)
	opts     []twinclient.Option
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	em := emulatortest.Start(t)
	svc, err := connstr.Parse(em.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.NewClient(svc, &registry.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: em.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return &hubEnv{
		em:       em,
		reg:      reg,
		host:     em.HostName(),
		mqttLink: newLink(t, em.MQTTAddr()),
		wssLink:  newLink(t, em.HTTPSAddr()),
		opts:     []twinclient.Option{twinclient.WithTLSConfig(em.ClientTLS()), twinclient.WithBackoff(10*time.Millisecond, 200*time.Millisecond)},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// module creates a module and returns its connection string and the client
// options that reach it over transport through the test's link.
func (e *hubEnv) module(t *testing.T, deviceID, moduleID, transport string) (connstr.ConnectionString, []twinclient.Option) {
	t.Helper()
	ctx := ctxT(t)
	if _, _, err := e.reg.EnsureDevice(ctx, iothub.Device{DeviceID: deviceID}); err != nil {
		t.Fatalf("create device: %v", err)
	}
	m, _, err := e.reg.EnsureModule(ctx, iothub.Module{DeviceID: deviceID, ModuleID: moduleID})
	if err != nil {
		t.Fatalf("create module: %v", err)
	}
	cs := connstr.ConnectionString{HostName: e.host, DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: m.Authentication.SymmetricKey.PrimaryKey}
	opts := append([]twinclient.Option(nil), e.opts...)
	switch transport {
	case "tls":
		opts = append(opts, twinclient.WithMQTTAddr(e.mqttLink.addr()))
	case "websocket":
		_, port, _ := net.SplitHostPort(e.wssLink.addr())
		cs.HostName = net.JoinHostPort(e.host, port)
		opts = append(opts, twinclient.WithTransport(twinclient.TransportWebSocket))
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	return cs, opts
}

// patch changes the module's desired properties over REST and returns the
// new desired $version.
func (e *hubEnv) patch(t *testing.T, deviceID, moduleID, desired string) int64 {
	t.Helper()
	var d map[string]json.RawMessage
	if err := json.Unmarshal([]byte(desired), &d); err != nil {
		t.Fatal(err)
	}
	tw, err := e.reg.UpdateModuleTwin(ctxT(t), deviceID, moduleID, iothub.Twin{Properties: &iothub.TwinProperties{Desired: d}}, "*")
	if err != nil {
		t.Fatalf("patch desired %s: %v", desired, err)
	}
	return iothub.DocVersion(tw.Properties.Desired)
}

// waitDisconnected waits until the hub has seen the module go away, so
// that it will not push the next patch to the dead connection.
func (e *hubEnv) waitDisconnected(t *testing.T, deviceID, moduleID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := e.reg.GetModule(ctxT(t), deviceID, moduleID)
		if err != nil {
			t.Fatal(err)
		}
		if m.ConnectionState == iothub.Disconnected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("module still %s 10s after its connection was cut", m.ConnectionState)
		}
		time.Sleep(10 * time.Millisecond) // polling the REST API: there is no push for this
	}
}

// link forwards TCP connections to target until cut; while cut, new
// connections wait until it is restored.
type link struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]bool
	gate  chan struct{} // non-nil while cut
	done  chan struct{}
}

func newLink(t *testing.T, target string) *link {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{t: t, ln: ln, target: target, conns: map[net.Conn]bool{}, done: make(chan struct{})}
	go l.accept()
	t.Cleanup(func() {
		close(l.done)
		ln.Close()
		l.closeAll()
	})
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.serve(c)
	}
}

func (l *link) serve(down net.Conn) {
	l.mu.Lock()
	gate := l.gate
	l.conns[down] = true
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-l.done:
			down.Close()
			return
		}
	}
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		down.Close()
		return
	}
	l.mu.Lock()
	l.conns[up] = true
	l.mu.Unlock()
	go func() { _, _ = io.Copy(up, down); up.Close() }()
	_, _ = io.Copy(down, up)
	down.Close()
}

// cut closes every forwarded connection and holds new ones.
func (l *link) cut() {
	l.mu.Lock()
	l.gate = make(chan struct{})
	l.mu.Unlock()
	l.closeAll()
}

func (l *link) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gate != nil {
		close(l.gate)
		l.gate = nil
	}
}

func (l *link) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
		delete(l.conns, c)
	}
}

// events runs a client and collects its events.
type events struct {
	ch     chan twinclient.Event
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	client *twinclient.Client
	logs   *syncio.Buffer
}

func run(t *testing.T, cs connstr.ConnectionString, opts ...twinclient.Option) *events {
	t.Helper()
	logs := &syncio.Buffer{}
	c, err := twinclient.New(cs, append(opts, twinclient.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &events{ch: make(chan twinclient.Event, 10000), done: make(chan struct{}), cancel: cancel, client: c, logs: logs}
	go func() {
		e.err = c.Run(ctx, func(ev twinclient.Event) { e.ch <- ev })
		close(e.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancellation")
		}
	})
	return e
}

func (e *events) next(t *testing.T) twinclient.Event {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-e.done:
		t.Fatalf("Run returned %v while an event was expected; log:\n%s", e.err, e.logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("no event within 15s; log:\n%s", e.logs)
	}
	return twinclient.Event{}
}

func brief(ev twinclient.Event) string {
	b, _ := json.Marshal(ev.Desired)
	return fmt.Sprintf("%s %d %s", ev.Type, ev.Version, b)
}

var transports = []string{"tls", "websocket"}

func TestEmulatorInitialTwinThenPatchesInOrder(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newHubEnv(t)
			cs, opts := h.module(t, "dev", "mod", tr)
			v0 := h.patch(t, "dev", "mod", `{"telemetryInterval":122}`)
			e := run(t, cs, opts...)
			if got, want := brief(e.next(t)), fmt.Sprintf(`twin %d {"telemetryInterval":122}`, v0); got != want {
				t.Fatalf("first event = %s, want %s", got, want)
			}
			var want, got []string
			for _, p := range []string{`{"a":1}`, `{"b":{"c":[1,2]}}`, `{"telemetryInterval":null}`, `{"a":2}`} {
				want = append(want, fmt.Sprintf("patch %d %s", h.patch(t, "dev", "mod", p), p))
			}
			for range want {
				got = append(got, brief(e.next(t)))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("patches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmulatorPatchWhileDisconnectedArrivesAsResync(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newHubEnv(t)
			cs, opts := h.module(t, "dev", "mod", tr)
			e := run(t, cs, opts...)
			e.next(t) // the twin
			v1 := h.patch(t, "dev", "mod", `{"a":1}`)
			if got, want := brief(e.next(t)), fmt.Sprintf(`patch %d {"a":1}`, v1); got != want {
				t.Fatalf("event = %s, want %s", got, want)
			}

			l := h.mqttLink
			if tr == "websocket" {
				l = h.wssLink
			}
			l.cut()
			h.waitDisconnected(t, "dev", "mod")
			h.patch(t, "dev", "mod", `{"b":2}`)
			v3 := h.patch(t, "dev", "mod", `{"a":null,"c":3}`)
			l.restore()

			if got, want := brief(e.next(t)), fmt.Sprintf(`resync %d {"b":2,"c":3}`, v3); got != want {
				t.Errorf("event after reconnecting = %s, want %s", got, want)
			}
			v4 := h.patch(t, "dev", "mod", `{"d":4}`)
			if got, want := brief(e.next(t)), fmt.Sprintf(`patch %d {"d":4}`, v4); got != want {
				t.Errorf("event = %s, want %s", got, want)
			}
		})
	}
}

// TestEmulatorShortTokensLoseNothing runs for 20 s with 3 s tokens while
// patches flow to two modules, one reached over TLS and one over
// WebSockets: each client renews its token six times, and every change is
// delivered once, in order.
func TestEmulatorShortTokensLoseNothing(t *testing.T) {
	t.Parallel()
	h := newHubEnv(t)
	type watcher struct {
		module  string
		e       *events
		first   int64
		state   map[int64]map[string]int // desired state at each version
		patches map[int64]int            // seq set by each version
		last    int64
	}
	var ws []*watcher
	for _, tr := range transports {
		w := &watcher{module: "mod-" + tr, state: map[int64]map[string]int{}, patches: map[int64]int{}}
		cs, opts := h.module(t, "dev", w.module, tr)
		w.e = run(t, cs, append(opts, twinclient.WithSASTTL(3*time.Second))...)
		w.first = w.e.next(t).Version
		w.state[w.first], w.last = map[string]int{}, w.first
		ws = append(ws, w)
	}

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i, end := 0, time.Now().Add(20*time.Second); time.Now().Before(end); i++ {
		<-tick.C
		for _, w := range ws {
			v := h.patch(t, "dev", w.module, fmt.Sprintf(`{"seq":%d}`, i))
			w.state[v] = map[string]int{"seq": i}
			w.patches[v] = i
			w.last = v
		}
	}

	for i, w := range ws {
		prev, resyncs := w.first, 0
		for prev < w.last {
			ev := w.e.next(t)
			if ev.Version <= prev {
				t.Fatalf("%s: event %s after version %d: out of order or repeated", transports[i], brief(ev), prev)
			}
			var got map[string]int
			b, _ := json.Marshal(ev.Desired)
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: event %s: %v", transports[i], brief(ev), err)
			}
			switch ev.Type {
			case twinclient.EventPatch:
				if ev.Version != prev+1 || got["seq"] != w.patches[ev.Version] {
					t.Fatalf("%s: patch %s after version %d: want version %d with seq %d", transports[i], brief(ev), prev, prev+1, w.patches[prev+1])
				}
			case twinclient.EventResync:
				resyncs++
				if diff := cmp.Diff(w.state[ev.Version], got); diff != "" {
					t.Fatalf("%s: resync %s does not hold the state at its version (-want +got):\n%s", transports[i], brief(ev), diff)
				}
			default:
				t.Fatalf("%s: unexpected event %s", transports[i], brief(ev))
			}
			prev = ev.Version
		}
		if resyncs > 0 {
			t.Logf("%s: %d changes arrived in a resync rather than as patches", transports[i], resyncs)
		}
		logs := w.e.logs.String()
		if n := strings.Count(logs, "renewed the SAS token"); n < 5 {
			t.Errorf("%s: %d token renewals in 20s with 3s tokens, want at least 5; log:\n%s", transports[i], n, logs)
		}
		if strings.Contains(logs, "level=INFO") {
			t.Errorf("%s: the connection dropped (Info records); want seamless renewals; log:\n%s", transports[i], logs)
		}
	}
}

func TestEmulatorWrongKeyIsFatal(t *testing.T) {
	t.Parallel()
	h := newHubEnv(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			cs, opts := h.module(t, "dev", "mod-"+tr, tr)
			cs.SharedAccessKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
			e := run(t, cs, opts...)
			select {
			case <-e.done:
			case <-time.After(15 * time.Second):
				t.Fatal("Run still retrying 15s after a refused CONNECT")
			}
			var ce *twinclient.ConnectError
			if !errors.As(e.err, &ce) || !ce.Unauthorized() {
				t.Fatalf("Run = %v, want a *ConnectError for bad credentials", e.err)
			}
			if strings.Count(e.logs.String(), "retrying") != 0 {
				t.Errorf("the client retried a refused CONNECT; log:\n%s", e.logs)
			}
		})
	}
}

func TestEmulatorUnknownModuleIsFatal(t *testing.T) {
	t.Parallel()
	h := newHubEnv(t)
	cs, opts := h.module(t, "dev", "mod", "tls")
	cs.ModuleID = "no-such-module"
	e := run(t, cs, opts...)
	select {
	case <-e.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run still retrying 15s after a refused CONNECT")
	}
	var ce *twinclient.ConnectError
	if !errors.As(e.err, &ce) {
		t.Fatalf("Run = %v, want a *ConnectError", e.err)
	}
}

func TestEmulatorAckVisibleInReportedProperties(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newHubEnv(t)
			cs, opts := h.module(t, "dev", "mod", tr)
			e := run(t, cs, opts...)
			e.next(t)
			v := h.patch(t, "dev", "mod", `{"telemetryInterval":122,"mode":"eco"}`)
			ev := e.next(t)
			if _, err := e.client.UpdateReported(ctxT(t), twinclient.WritableAck(ev)); err != nil {
				t.Fatalf("UpdateReported: %v", err)
			}
			tw, err := h.reg.GetModuleTwin(ctxT(t), "dev", "mod")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for _, k := range []string{"telemetryInterval", "mode"} {
				var x any
				if err := json.Unmarshal(tw.Properties.Reported[k], &x); err != nil {
					t.Fatalf("reported %s = %s: %v", k, tw.Properties.Reported[k], err)
				}
				got[k] = x
			}
			want := map[string]any{
				"telemetryInterval": map[string]any{"value": 122.0, "ac": 200.0, "av": float64(v)},
				"mode":              map[string]any{"value": "eco", "ac": 200.0, "av": float64(v)},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("reported properties over REST (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEmulatorRecreatedModuleStartsOver deletes the module while the client
// is offline and creates it again with the same keys: its twin's version
// starts over, and the client follows instead of waiting for the old
// version to come back.
func TestEmulatorRecreatedModuleStartsOver(t *testing.T) {
	t.Parallel()
	h := newHubEnv(t)
	cs, opts := h.module(t, "dev", "mod", "tls")
	e := run(t, cs, opts...)
	e.next(t)
	for i := range 4 {
		h.patch(t, "dev", "mod", fmt.Sprintf(`{"n":%d}`, i))
		e.next(t)
	}

	h.mqttLink.cut()
	h.waitDisconnected(t, "dev", "mod")
	ctx := ctxT(t)
	old, err := h.reg.GetModule(ctx, "dev", "mod")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.reg.DeleteModule(ctx, "dev", "mod", "*"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reg.CreateModule(ctx, iothub.Module{DeviceID: "dev", ModuleID: "mod", Authentication: old.Authentication}); err != nil {
		t.Fatal(err)
	}
	v := h.patch(t, "dev", "mod", `{"fresh":true}`)
	h.mqttLink.restore()

	if got, want := brief(e.next(t)), fmt.Sprintf(`resync %d {"fresh":true}`, v); got != want {
		t.Fatalf("event after the module was recreated = %s, want %s", got, want)
	}
	v = h.patch(t, "dev", "mod", `{"n":0}`)
	if got, want := brief(e.next(t)), fmt.Sprintf(`patch %d {"n":0}`, v); got != want {
		t.Errorf("event = %s, want %s", got, want)
	}
}
