package emulator_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/eventapi"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// hangGuard bounds waits for what the emulator signals.
const hangGuard = 20 * time.Second

// stream opens the event stream with query and returns its lines.
func (c *client) stream(t *testing.T, policy, query string) (*http.Response, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.e.HTTPSAddr()+eventapi.Path+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if policy != "" {
		req.Header.Set("Authorization", c.token(t, policy))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return resp, lines
}

// nextEvent returns the next event line that satisfies want.
func nextEvent(t *testing.T, lines <-chan string, what string, want func(events.Event) bool) events.Event {
	t.Helper()
	timeout := time.After(hangGuard)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended while waiting for %s", what)
			}
			var e events.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			if want(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s on the stream", what)
		}
	}
}

func (c *client) mqtt(t *testing.T, r hub.IdentityRef, key string) paho.Client {
	t.Helper()
	s, err := sas.NewSigner("", key)
	if err != nil {
		t.Fatal(err)
	}
	res := sas.DeviceResource(c.e.HostName(), r.DeviceID)
	if r.IsModule() {
		res = sas.ModuleResource(c.e.HostName(), r.DeviceID, r.ModuleID)
	}
	tok, _ := s.Token(res, time.Hour)
	opts := paho.NewClientOptions().AddBroker("tls://" + c.e.MQTTAddr()).SetClientID(r.String()).
		SetUsername(c.e.HostName() + "/" + r.String() + "/?api-version=" + iothub.APIVersion).SetPassword(tok).
		SetTLSConfig(&tls.Config{RootCAs: caPool(t, c.e.CAFile()), ServerName: "localhost"}).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(hangGuard)
	cl := paho.NewClient(opts)
	if tk := cl.Connect(); !tk.WaitTimeout(hangGuard) || tk.Error() != nil {
		t.Fatalf("connect %s: %v", r, tk.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return cl
}

func wait(t *testing.T, tk paho.Token) {
	t.Helper()
	if !tk.WaitTimeout(hangGuard) || tk.Error() != nil {
		t.Fatalf("MQTT operation: %v", tk.Error())
	}
}

func moduleKey(t *testing.T, body string) string {
	t.Helper()
	var m iothub.Module
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	return m.Authentication.SymmetricKey.PrimaryKey
}

func TestEventStreamSeesWhatTheHubDoes(t *testing.T) {
	e := startInMemory(t)
	c := newClient(t, e)
	for _, p := range []string{"", hub.PolicyRegistryRead} {
		resp, _ := c.stream(t, p, "kind=all")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("stream with policy %q: %s, want 401", p, resp.Status)
		}
	}
	if resp, _ := c.stream(t, hub.PolicyOwner, "kind=bogus"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stream of an unknown kind: %s, want 400", resp.Status)
	}
	resp, lines := c.stream(t, hub.PolicyService, "kind=all")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	api := "?api-version=" + iothub.APIVersion
	c.do(t, http.MethodPut, "/devices/d1"+api, `{"deviceId":"d1"}`)
	_, body := c.do(t, http.MethodPut, "/devices/d1/modules/m1"+api, `{"deviceId":"d1","moduleId":"m1"}`)
	ref := hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}
	ofModule := func(e events.Event) bool { return e.DeviceID == "d1" && e.ModuleID == "m1" }

	reg := nextEvent(t, lines, "module creation", func(e events.Event) bool { return e.Kind == events.Registry && ofModule(e) })
	if reg.Registry.Operation != "created" {
		t.Errorf("registry event %+v", reg.Registry)
	}
	req := nextEvent(t, lines, "the module's PUT", func(e events.Event) bool { return e.Kind == events.Request && ofModule(e) })
	if r := req.Request; r.Method != http.MethodPut || r.Path != "/devices/d1/modules/m1" || r.Status != http.StatusOK || r.DurationMS < 0 {
		t.Errorf("request event %+v", r)
	}

	cl := c.mqtt(t, ref, moduleKey(t, body))
	conn := nextEvent(t, lines, "the connection", func(e events.Event) bool { return e.Kind == events.Connected && ofModule(e) })
	if conn.Connection.Transport != "mqtts" || conn.Connection.Remote == "" {
		t.Errorf("connection event %+v", conn.Connection)
	}

	c.do(t, http.MethodPatch, "/twins/d1/modules/m1"+api, `{"properties":{"desired":{"interval":5}},"tags":{"site":"lab"}}`)
	tags := nextEvent(t, lines, "the tags change", func(e events.Event) bool { return e.Kind == events.Twin && e.Twin.Section == "tags" })
	if string(tags.Twin.Patch) != `{"site":"lab"}` || tags.Twin.Version != 3 {
		t.Errorf("tags change %+v", tags.Twin)
	}
	desired := nextEvent(t, lines, "the desired change", func(e events.Event) bool { return e.Kind == events.Twin && e.Twin.Section == "desired" })
	if string(desired.Twin.Patch) != `{"interval":5,"$version":2}` || desired.Twin.Version != 2 || !ofModule(desired) {
		t.Errorf("desired change %+v", desired.Twin)
	}
	wait(t, cl.Subscribe("$iothub/twin/res/#", 1, func(paho.Client, paho.Message) {}))
	wait(t, cl.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"interval":5}`))
	rep := nextEvent(t, lines, "the reported change", func(e events.Event) bool { return e.Kind == events.Twin && e.Twin.Section == "reported" })
	if string(rep.Twin.Patch) != `{"interval":5,"$version":2}` || rep.Twin.Version != 2 {
		t.Errorf("reported change %+v", rep.Twin)
	}

	wait(t, cl.Publish("devices/d1/modules/m1/messages/events/%24.ct=text%2Fplain&a=1", 1, false, "hello"))
	msg := nextEvent(t, lines, "the message", func(e events.Event) bool { return e.Kind == events.Message })
	if m := msg.Message; string(m.Body) != "hello" || m.SystemProperties["content-type"] != "text/plain" || m.ApplicationProperties["a"] != "1" {
		t.Errorf("message event %+v", m)
	}

	cl.Disconnect(0)
	gone := nextEvent(t, lines, "the disconnection", func(e events.Event) bool { return e.Kind == events.Disconnected })
	if gone.Connection.Reason == "" {
		t.Errorf("disconnection without a reason: %+v", gone.Connection)
	}
}

// A reader that stops reading loses events, counted, and never holds
// up the hub: every message is still taken and acknowledged.
func TestStalledReaderDoesNotSlowTheHub(t *testing.T) {
	e, err := emulator.Start(context.Background(), emulator.Config{InMemory: true, EventBuffer: 16, TelemetryBuffer: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := newClient(t, e)
	api := "?api-version=" + iothub.APIVersion
	c.do(t, http.MethodPut, "/devices/d1"+api, `{"deviceId":"d1"}`)
	_, body := c.do(t, http.MethodPut, "/devices/d1/modules/m1"+api, `{"deviceId":"d1","moduleId":"m1"}`)

	// A raw connection that reads the answer's headers and then nothing.
	conn, err := tls.Dial("tcp", e.HTTPSAddr(), &tls.Config{RootCAs: caPool(t, e.CAFile()), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET "+eventapi.Path+"?kind=message HTTP/1.1\r\nHost: localhost\r\nAuthorization: "+c.token(t, hub.PolicyOwner)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stalled := bufio.NewReader(conn)
	for {
		l, err := stalled.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}

	cl := c.mqtt(t, hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}, moduleKey(t, body))
	const n = 10000
	payload := strings.Repeat("x", 1024)
	for i := range n {
		qos := byte(0)
		if i == n-1 {
			qos = 1 // its PUBACK comes after every message before it was taken
		}
		tk := cl.Publish("devices/d1/modules/m1/messages/events/", qos, false, payload)
		if qos == 1 {
			wait(t, tk)
		}
	}
	if s := e.Messages().Stats(); s.Received != n || s.Held != 10 || s.Dropped != n-10 {
		t.Errorf("telemetry buffer: %+v, want %d received, 10 held, %d dropped", s, n, n-10)
	}

	// Reading again shows the drops.
	_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
	for {
		l, err := stalled.ReadString('\n')
		if err != nil {
			t.Fatalf("no drop reported on the stalled stream: %v", err)
		}
		if strings.Contains(l, `"kind":"dropped"`) {
			var d eventapi.Dropped
			if err := json.Unmarshal([]byte(l), &d); err != nil || d.Dropped == 0 {
				t.Fatalf("drop line %q: %v", l, err)
			}
			break
		}
	}
}
