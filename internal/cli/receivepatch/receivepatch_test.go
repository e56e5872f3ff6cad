package receivepatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/receivepatch"
	"github.com/moduletwin/iothub-module-twin/internal/cli/updatetwin"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

const testKey = "c2VjcmV0LWtleS1ub2JvZHktc2hvdWxkLXNlZQ==" // "secret-key-nobody-should-see"

// hub is a running emulator with one module, dev/mod.
type hub struct {
	em     *emulatortest.Hub
	reg    *registry.Client
	module connstr.ConnectionString
}

func newHub(t *testing.T) *hub {
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
	return &hub{em: em, reg: reg, module: em.CreateModule("dev", "mod")}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// vars is the environment of a receive-twin-patch run against h.
func (h *hub) vars() map[string]string {
	return map[string]string{
		cli.EnvModuleConnectionString: h.module.Format(),
		cli.EnvCAFile:                 h.em.CAFile(),
		receivepatch.EnvMQTTAddr:      h.em.MQTTAddr(),
	}
}

// patch merges desired into the module's desired properties over REST and
// returns the new desired $version.
func (h *hub) patch(t *testing.T, desired string) int64 {
	t.Helper()
	var d map[string]json.RawMessage
	if err := json.Unmarshal([]byte(desired), &d); err != nil {
		t.Fatal(err)
	}
	tw, err := h.reg.UpdateModuleTwin(testCtx(t), "dev", "mod", iothub.Twin{Properties: &iothub.TwinProperties{Desired: d}}, "*")
	if err != nil {
		t.Fatalf("patch %s: %v", desired, err)
	}
	return iothub.DocVersion(tw.Properties.Desired)
}

// watched is a buffer whose readers can wait for content.
type watched struct {
	mu     sync.Mutex
	b      bytes.Buffer
	change chan struct{}
}

func newWatched() *watched { return &watched{change: make(chan struct{}, 1)} }

func (w *watched) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.b.Write(p)
	w.mu.Unlock()
	select {
	case w.change <- struct{}{}:
	default:
	}
	return n, err
}

func (w *watched) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// proc is one in-process run of the command.
type proc struct {
	stdout, stderr *watched
	cancel         context.CancelFunc
	done           chan int
}

func start(t *testing.T, vars map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: newWatched(), stderr: newWatched(), done: make(chan int, 1)}
	env := &cli.Env{
		Stdin:  strings.NewReader(""),
		Stdout: p.stdout,
		Stderr: p.stderr,
		Getenv: func(k string) string { return vars[k] },
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	if args == nil {
		args = []string{} // nil would make cobra parse the test binary's own arguments
	}
	go func() { p.done <- cli.Run(ctx, env, receivepatch.Command(env), args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Error("receive-twin-patch did not stop within 10s of cancellation")
		}
	})
	return p
}

// waitStderr waits until stderr contains s.
func (p *proc) waitStderr(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.stderr.change:
		case code := <-p.done:
			p.done <- code
			t.Fatalf("exited %d before printing %q; stderr:\n%s", code, s, p.stderr)
		case <-timeout:
			t.Fatalf("stderr lacks %q after 15s:\n%s", s, p.stderr)
		}
	}
}

// exit waits for the command to end and returns its exit status.
func (p *proc) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("still running after 15s; stderr:\n%s", p.stderr)
		return -1
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	moduleCS := "HostName=hub.example.net;DeviceId=d;ModuleId=m;SharedAccessKey=" + testKey
	serviceCS := "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey
	tests := []struct {
		name   string
		vars   map[string]string
		args   []string
		stderr string
	}{
		{"no connection string", nil, nil, "no connection string"},
		{"service connection string", map[string]string{cli.EnvModuleConnectionString: serviceCS}, nil, "is a service (shared access policy) one"},
		{"bad transport", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"--transport", "amqp"}, `must be "tls" or "websocket"`},
		{"mqtt-addr with websocket", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"--transport", "websocket", "--mqtt-addr", "localhost:1"}, "--mqtt-addr applies to --transport tls only"},
		{"bad mqtt-addr", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"--mqtt-addr", "localhost"}, `--mqtt-addr "localhost": want HOST:PORT`},
		{"bad IOTHUB_MQTT_ADDR", map[string]string{cli.EnvModuleConnectionString: moduleCS, receivepatch.EnvMQTTAddr: "nohost"}, nil, `$IOTHUB_MQTT_ADDR "nohost": want HOST:PORT`},
		{"negative count", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"--count", "-1"}, "--count: must not be negative"},
		{"short token", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"--sas-ttl", "1s"}, "--sas-ttl: must be at least 2s"},
		{"argument", map[string]string{cli.EnvModuleConnectionString: moduleCS}, []string{"extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.vars, tt.args...)
			if code := p.exit(t); code != cli.ExitUsage {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, cli.ExitUsage, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, p.stderr)
			}
			if strings.Contains(p.stderr.String(), testKey) {
				t.Errorf("stderr shows the key:\n%s", p.stderr)
			}
		})
	}
}

func TestJSONLinesUntilCount(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"tls", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			h := newHub(t)
			v0 := h.patch(t, `{"telemetryInterval":122}`)
			p := start(t, h.vars(), "--output", "json", "--count", "3", "--transport", transport)
			p.waitStderr(t, receivepatch.ReadyMessage)

			want := []string{fmt.Sprintf(`{"type":"twin","version":%d,"desired":{"telemetryInterval":122}}`, v0)}
			for _, d := range []string{`{"telemetryInterval":60}`, `{"mode":"eco","nested":{"a":[1,2]}}`, `{"telemetryInterval":null}`} {
				v := h.patch(t, d)
				want = append(want, fmt.Sprintf(`{"type":"patch","version":%d,"desired":%s}`, v, d))
			}
			if code := p.exit(t); code != cli.ExitOK {
				t.Fatalf("exit status %d, want 0 after --count 3; stderr:\n%s", code, p.stderr)
			}
			got := strings.Split(strings.TrimSuffix(p.stdout.String(), "\n"), "\n")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stdout lines (-want +got):\n%s", diff)
			}
			if n := strings.Count(p.stderr.String(), receivepatch.ReadyMessage); n != 1 {
				t.Errorf("ready line printed %d times, want once; stderr:\n%s", n, p.stderr)
			}
		})
	}
}

func TestTextOutput(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	h.patch(t, `{"gone":true}`)
	p := start(t, h.vars(), "--count", "1")
	p.waitStderr(t, receivepatch.ReadyMessage)
	v := h.patch(t, `{"telemetryInterval":122,"gone":null,"o":{"k":"v"}}`)
	if code := p.exit(t); code != cli.ExitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, p.stderr)
	}
	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)`
	want := regexp.MustCompile(`^` + ts + ` twin \$version ` + fmt.Sprint(v-1) + `: current desired properties\n` +
		`  gone = true\n` +
		ts + ` patch \$version ` + fmt.Sprint(v) + `\n` +
		`  gone removed\n` +
		`  o = \{"k":"v"\}\n` +
		`  telemetryInterval = 122\n$`)
	if !want.MatchString(p.stdout.String()) {
		t.Errorf("stdout does not match %s:\n%s", want, p.stdout)
	}
}

func TestTimeoutExitsOne(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"count not reached", []string{"--count", "2", "--timeout", "2s"}, "timed out after 2s waiting for 2 desired-property changes"},
		{"no change at all", []string{"--timeout", "1s"}, "timed out after 1s waiting for 1 desired-property change (received 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, h.vars(), tt.args...)
			if code := p.exit(t); code != cli.ExitFailed {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, cli.ExitFailed, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, p.stderr)
			}
		})
	}
}

func TestTimeoutWithChangeExitsZero(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	p := start(t, h.vars(), "--timeout", "20s")
	p.waitStderr(t, receivepatch.ReadyMessage)
	h.patch(t, `{"x":1}`)
	if code := p.exit(t); code != cli.ExitOK {
		t.Errorf("exit status %d, want 0 once one change arrived within --timeout; stderr:\n%s", code, p.stderr)
	}
}

func TestInterruptExitsZero(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	p := start(t, h.vars())
	p.waitStderr(t, receivepatch.ReadyMessage)
	p.cancel() // what SIGINT does to cli.Main's context
	if code := p.exit(t); code != cli.ExitOK {
		t.Errorf("exit status %d after interruption, want 0; stderr:\n%s", code, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "interrupted") {
		t.Errorf("stderr reports an error for a normal stop:\n%s", p.stderr)
	}
}

func TestWrongKeyExitsOne(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	vars := h.vars()
	bad := h.module
	bad.SharedAccessKey = testKey
	vars[cli.EnvModuleConnectionString] = bad.Format()
	p := start(t, vars)
	if code := p.exit(t); code != cli.ExitFailed {
		t.Fatalf("exit status %d, want 1; stderr:\n%s", code, p.stderr)
	}
	stderr := p.stderr.String()
	for _, s := range []string{"refused the connection of dev/mod: not authorized (CONNACK 5)", "hint: check SharedAccessKey"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
	if strings.Contains(stderr, testKey) || strings.Contains(stderr, "sig=") {
		t.Errorf("stderr shows a secret:\n%s", stderr)
	}
	if p.stdout.String() != "" {
		t.Errorf("stdout = %q, want nothing", p.stdout)
	}
}

// TestAckSatisfiesUpdateWaitAck runs both sides of the tutorial: the
// service's update-module-twin --wait-ack returns once receive-twin-patch
// --ack has acknowledged the change.
func TestAckSatisfiesUpdateWaitAck(t *testing.T) {
	t.Parallel()
	h := newHub(t)
	p := start(t, h.vars(), "--ack")
	p.waitStderr(t, receivepatch.ReadyMessage)

	var out, errOut bytes.Buffer
	svc := map[string]string{cli.EnvConnectionString: h.em.ServiceConnectionString(), cli.EnvCAFile: h.em.CAFile()}
	env := &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return svc[k] }}
	args := []string{"--device-id", "dev", "--module-id", "mod", "--set", "telemetryInterval=122", "--wait-ack", "10s"}
	if code := cli.Run(testCtx(t), env, updatetwin.Command(env), args); code != cli.ExitOK {
		t.Fatalf("update-module-twin --wait-ack exited %d; stderr:\n%s\nreceive-twin-patch stderr:\n%s", code, &errOut, p.stderr)
	}

	tw, err := h.reg.GetModuleTwin(testCtx(t), "dev", "mod")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(tw.Properties.Reported["telemetryInterval"], &got); err != nil {
		t.Fatalf("reported telemetryInterval = %s: %v", tw.Properties.Reported["telemetryInterval"], err)
	}
	want := map[string]any{"value": 122.0, "ac": 200.0, "av": float64(iothub.DocVersion(tw.Properties.Desired))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reported telemetryInterval over REST (-want +got):\n%s", diff)
	}
}
