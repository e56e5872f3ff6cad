package emulatorcli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatorcli"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

// hangGuard bounds waits for what the emulator or the monitor signals.
const hangGuard = 30 * time.Second

// running is a monitor started in-process, talking HTTPS to the emulator.
type running struct {
	stdout *syncio.Buffer
	stderr *bufio.Reader
	done   chan int
}

// startMonitor runs iothub-emulator monitor with args and returns once it
// says on stderr that it is listening.
func startMonitor(t *testing.T, h *emulatortest.Hub, policy string, args ...string) *running {
	t.Helper()
	dir := t.TempDir()
	csFile := filepath.Join(dir, "cs")
	if err := os.WriteFile(csFile, []byte(h.ConnectionString(policy)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	m := &running{stdout: &syncio.Buffer{}, stderr: bufio.NewReader(r), done: make(chan int, 1)}
	all := append([]string{"monitor", "--connection-string-file", csFile, "--ca-file", h.CAFile()}, args...)
	go func() {
		code := emulatorcli.Run(ctx, emulatorcli.NewCommand(m.stdout, w), all, w)
		w.Close()
		m.done <- code
	}()
	t.Cleanup(func() {
		cancel()
		<-m.done
	})
	return m
}

func (m *running) firstLine(t *testing.T) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		l, _ := m.stderr.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, m.stderr) // the rest, so the monitor never blocks on it
	}()
	select {
	case l := <-line:
		return l
	case <-time.After(hangGuard):
		t.Fatal("the monitor printed nothing on stderr")
	}
	return ""
}

func (m *running) listening(t *testing.T) {
	t.Helper()
	if l := m.firstLine(t); !strings.HasPrefix(l, "monitoring ") {
		t.Fatalf("first stderr line %q, want the listening line", l)
	}
}

func (m *running) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-m.done:
		m.done <- code
		return code
	case <-time.After(hangGuard):
		t.Fatal("the monitor did not exit")
	}
	return 0
}

// dial connects a device or module connection string over TLS or WebSockets.
func dial(t *testing.T, h *emulatortest.Hub, cs connstr.ConnectionString, websocket bool) paho.Client {
	t.Helper()
	clientID := cs.DeviceID
	res := sas.DeviceResource(h.HostName(), cs.DeviceID)
	if cs.ModuleID != "" {
		clientID += "/" + cs.ModuleID
		res = sas.ModuleResource(h.HostName(), cs.DeviceID, cs.ModuleID)
	}
	s, err := sas.NewSigner("", cs.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(res, time.Hour)
	broker := "tls://" + h.MQTTAddr()
	if websocket {
		broker = "wss://" + h.HTTPSAddr() + mqttgw.WebSocketPath
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetUsername(h.HostName() + "/" + clientID + "/?api-version=" + iothub.APIVersion).SetPassword(tok).
		SetTLSConfig(h.ClientTLS()).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(hangGuard))
	if tk := c.Connect(); !tk.WaitTimeout(hangGuard) || tk.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tk.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func publish(t *testing.T, c paho.Client, topic, body string) {
	t.Helper()
	if tk := c.Publish(topic, 1, false, body); !tk.WaitTimeout(hangGuard) || tk.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tk.Error())
	}
}

// Messages with every kind of property, from a device and a module over
// TLS and WebSockets, reach monitor -o json with exactly their properties.
func TestMonitorJSONShowsMessagesWithProperties(t *testing.T) {
	h := emulatortest.Start(t)
	device := h.CreateDevice("sensor-1")
	module := h.CreateModule("gateway-1", "filter")
	m := startMonitor(t, h, "service", "-o", "json", "--properties", "--count", "4")
	m.listening(t)

	bag := "%24.mid=id-1&$.cid=corr%201&%24.ct=application%2Fjson&%24.ce=utf-8&%24.uid=alice" +
		"&%24.to=%2Fdevices%2Fsensor-1%2Fmessages%2Fevents&%24.ctime=2026-12-02T10%3A00%3A00.000Z" +
		"&%24.exp=2026-12-09T10%3A00%3A00.000Z&%24.sub=thermostat1&alert=true&unit=%C2%B0C&empty="
	type sent struct {
		cs        connstr.ConnectionString
		websocket bool
		body      string
	}
	var all []sent
	for i, ws := range []bool{false, true} {
		for _, cs := range []connstr.ConnectionString{device, module} {
			c := dial(t, h, cs, ws)
			topic := "devices/" + cs.DeviceID + "/messages/events/"
			if cs.ModuleID != "" {
				topic = "devices/" + cs.DeviceID + "/modules/" + cs.ModuleID + "/messages/events/"
			}
			body := `{"temperature":` + string(rune('0'+i)) + `}`
			publish(t, c, topic+bag, body)
			all = append(all, sent{cs, ws, body})
			c.Disconnect(0)
		}
	}
	if code := m.exit(t); code != 0 {
		t.Fatalf("monitor exited %d\nstdout:\n%s", code, m.stdout)
	}
	lines := strings.Split(strings.TrimSpace(m.stdout.String()), "\n")
	if len(lines) != len(all) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(all), m.stdout)
	}
	for i, l := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		s := all[i]
		ann := got["annotations"].(map[string]any)
		enq, _ := ann["iothub-enqueuedtime"].(string)
		if _, err := time.Parse(time.RFC3339, enq); err != nil {
			t.Errorf("line %d: iothub-enqueuedtime %q: %v", i, enq, err)
		}
		delete(ann, "iothub-enqueuedtime")
		gen := ann["iothub-connection-auth-generation-id"]
		if g, _ := gen.(string); len(g) < 10 {
			t.Errorf("line %d: generation id %v", i, gen)
		}
		delete(ann, "iothub-connection-auth-generation-id")
		if _, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil {
			t.Errorf("line %d: time: %v", i, err)
		}
		delete(got, "time")
		scope := "device"
		want := map[string]any{
			"kind":     "message",
			"deviceId": s.cs.DeviceID,
			"payload":  json.RawMessage(s.body),
			"properties": map[string]any{
				"system": map[string]any{
					"message-id": "id-1", "correlation-id": "corr 1", "content-type": "application/json",
					"content-encoding": "utf-8", "user-id": "alice", "to": "/devices/sensor-1/messages/events",
					"iothub-creation-time-utc": "2026-12-02T10:00:00.000Z", "absolute-expiry-time": "2026-12-09T10:00:00.000Z",
					"dt-subject": "thermostat1",
				},
				"application": map[string]any{"alert": "true", "unit": "°C", "empty": ""},
			},
			"annotations": map[string]any{
				"iothub-connection-device-id": s.cs.DeviceID,
				"iothub-message-source":       "Telemetry",
			},
		}
		if s.cs.ModuleID != "" {
			scope = "module"
			want["moduleId"] = s.cs.ModuleID
			want["annotations"].(map[string]any)["iothub-connection-module-id"] = s.cs.ModuleID
		}
		want["annotations"].(map[string]any)["iothub-connection-auth-method"] = `{"scope":"` + scope + `","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
		wantJSON, _ := json.Marshal(want)
		var wantAny map[string]any
		_ = json.Unmarshal(wantJSON, &wantAny)
		if d := cmp.Diff(wantAny, got); d != "" {
			t.Errorf("line %d (%s, websocket %v) (-want +got):\n%s", i, s.cs.DeviceID, s.websocket, d)
		}
	}
}

// The monitor streams the other events too, filtered by identity.
func TestMonitorStreamsOtherEventsOfOneIdentity(t *testing.T) {
	h := emulatortest.Start(t)
	mod := h.CreateModule("d1", "m1")
	h.CreateModule("d2", "m1")
	m := startMonitor(t, h, "iothubowner", "--events", "connected,twin", "-d", "d1", "-m", "m1", "--count", "2")
	m.listening(t)
	h.PatchDesired("d2", "m1", `{"ignored":true}`)
	dial(t, h, mod, false)
	h.PatchDesired("d1", "m1", `{"interval":5}`)
	if code := m.exit(t); code != 0 {
		t.Fatalf("monitor exited %d", code)
	}
	lines := strings.Split(strings.TrimSpace(m.stdout.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], " d1/m1 connected mqtts ") ||
		!strings.HasSuffix(lines[1], ` d1/m1 twin desired $version 2 {"interval":5,"$version":2}`) {
		t.Errorf("monitor printed:\n%s", m.stdout)
	}
}

func TestMonitorExitStatus(t *testing.T) {
	h := emulatortest.Start(t)
	t.Run("timeout before count", func(t *testing.T) {
		m := startMonitor(t, h, "service", "--count", "1", "--timeout", "100ms")
		m.listening(t)
		if code := m.exit(t); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
	t.Run("timeout without count", func(t *testing.T) {
		m := startMonitor(t, h, "service", "--timeout", "100ms")
		m.listening(t)
		if code := m.exit(t); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	})
	t.Run("bad kind", func(t *testing.T) {
		m := startMonitor(t, h, "service", "--events", "telemetry")
		if l := m.firstLine(t); !strings.Contains(l, `"telemetry" is not one of all, message`) {
			t.Errorf("stderr %q", l)
		}
		if code := m.exit(t); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
	})
	t.Run("policy without ServiceConnect", func(t *testing.T) {
		m := startMonitor(t, h, "registryRead")
		l := m.firstLine(t)
		if !strings.Contains(l, "401 Unauthorized") || strings.Contains(l, h.PolicyKey("registryRead")) {
			t.Errorf("stderr %q", l)
		}
		if code := m.exit(t); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})
}
