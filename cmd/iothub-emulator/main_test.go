package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds iothub-emulator once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iothub-emulator-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "iothub-emulator")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// proc is a running iothub-emulator.
type proc struct {
	cmd    *exec.Cmd
	lines  []string // the settings lines printed on stdout
	cs     connstr.ConnectionString
	caFile string
	stderr *syncio.Buffer
	stdout *bytes.Buffer // what came after the settings lines
	done   chan error
}

var (
	csLine = regexp.MustCompile(`^export IOTHUB_CONNECTION_STRING='([^']*)'$`)
	caLine = regexp.MustCompile(`^export IOTHUB_CA_FILE=(.*)$`)
)

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	// The web inspector on a free port; its link is the fourth line.
	cmd := exec.Command(binary(t), append([]string{"--inspector-addr", "127.0.0.1:0"}, args...)...)
	p := &proc{cmd: cmd, stderr: &syncio.Buffer{}, stdout: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	r := bufio.NewReader(out)
	for len(p.lines) < 4 {
		line, err := r.ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("reading the settings lines: %v (got %q); stderr:\n%s", err, p.lines, p.stderr)
		}
		p.lines = append(p.lines, strings.TrimSuffix(line, "\n"))
	}
	go func() {
		io.Copy(p.stdout, r)
		p.done <- cmd.Wait()
	}()
	m := csLine.FindStringSubmatch(p.lines[0])
	if m == nil {
		t.Fatalf("first line %q is not export IOTHUB_CONNECTION_STRING='…'", p.lines[0])
	}
	if p.cs, err = connstr.Parse(m[1]); err != nil {
		t.Fatal(err)
	}
	c := caLine.FindStringSubmatch(p.lines[1])
	if c == nil {
		t.Fatalf("second line %q is not IOTHUB_CA_FILE=…", p.lines[1])
	}
	p.caFile = c[1]
	if !strings.HasPrefix(p.lines[2], "export IOTHUB_MQTT_ADDR=127.0.0.1:") {
		t.Fatalf("third line %q is not export IOTHUB_MQTT_ADDR=127.0.0.1:<port>", p.lines[2])
	}
	if !strings.HasPrefix(p.lines[3], "# web inspector (the link works once): http://127.0.0.1:") {
		t.Fatalf("fourth line %q is not the web inspector's link", p.lines[3])
	}
	return p
}

// wait returns the exit error, failing the test if the process hangs.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("iothub-emulator did not exit; stderr:\n%s", p.stderr)
		return nil
	}
}

// client is a plain net/http client for the emulator p serves.
type client struct {
	http  *http.Client
	base  string
	token string
}

func newClient(t *testing.T, p *proc) *client {
	t.Helper()
	pem, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the CA file")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	s, err := sas.NewSigner(p.cs.SharedAccessKeyName, p.cs.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(p.cs.HostName, time.Hour)
	return &client{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}, base: "https://" + p.cs.HostName, token: tok}
}

func (c *client) do(method, path, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, c.base+path+"?api-version=2021-04-12", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestKillNineLosesNothingAcknowledged writes from several clients at once,
// kills the emulator with SIGKILL mid-stream, restarts it on the same data
// directory and checks that every acknowledged write is there.
func TestKillNineLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "--data-dir", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	c := newClient(t, p)
	if status, body, err := c.do("PUT", "/devices/twinhost", `{}`); err != nil || status != 200 {
		t.Fatalf("create = %d %s %v", status, body, err)
	}

	const writers = 8
	const killAfter = 400 // acknowledged writes before the kill
	var mu sync.Mutex
	acked := 0
	devices := map[string]bool{}      // acknowledged creates
	lastValue := make([]int, writers) // last acknowledged desired value per writer
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				var status int
				var err error
				var dev string
				if i%2 == 0 {
					dev = fmt.Sprintf("w%d-d%d", w, i)
					status, _, err = c.do("PUT", "/devices/"+dev, `{}`)
				} else {
					status, _, err = c.do("PATCH", "/twins/twinhost", fmt.Sprintf(`{"properties":{"desired":{"w%d":%d}}}`, w, i))
				}
				if err != nil {
					select {
					case <-killed:
						return // the emulator is gone: this write was never acknowledged
					default:
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
				if status != 200 {
					t.Errorf("writer %d: status %d", w, status)
					return
				}
				mu.Lock()
				if dev != "" {
					devices[dev] = true
				} else {
					lastValue[w] = i
				}
				acked++
				if acked == killAfter {
					once.Do(func() {
						close(killed)
						p.cmd.Process.Signal(syscall.SIGKILL)
					})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := p.wait(t); err == nil {
		t.Fatal("the emulator exited cleanly; want killed")
	}
	c.http.CloseIdleConnections()

	p2 := start(t, "--data-dir", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	if p2.cs.SharedAccessKey != p.cs.SharedAccessKey {
		t.Error("the owner key changed across the crash")
	}
	c2 := newClient(t, p2)
	status, body, err := c2.do("GET", "/twins/twinhost", "")
	if err != nil || status != 200 {
		t.Fatalf("GET twin after restart = %d %s %v", status, body, err)
	}
	var tw struct {
		Properties struct{ Desired map[string]any }
	}
	if err := json.Unmarshal(body, &tw); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for w, want := range lastValue {
		if want == 0 {
			continue
		}
		got, _ := tw.Properties.Desired[fmt.Sprintf("w%d", w)].(float64)
		// A write in flight at the kill may have landed too: never less.
		if int(got) < want {
			t.Errorf("desired w%d = %v after restart; %d was acknowledged", w, got, want)
		}
	}
	missing := 0
	for dev := range devices {
		if status, _, err := c2.do("GET", "/devices/"+dev, ""); err != nil || status != 200 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged devices are missing after the restart", missing, len(devices))
	}
	if len(devices) == 0 {
		t.Error("no device create was acknowledged before the kill")
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	if err := p2.wait(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func TestSignalsShutDownCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := start(t, "--in-memory", "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
			c := newClient(t, p)
			if status, _, err := c.do("PUT", "/devices/d1", `{}`); err != nil || status != 200 {
				t.Fatalf("create = %d %v", status, err)
			}
			c.http.CloseIdleConnections()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(t); err != nil {
				t.Fatalf("exit after %v: %v; stderr:\n%s", sig, err, p.stderr)
			}
			if p.stdout.Len() != 0 {
				t.Errorf("stdout has more than the settings lines: %q", p.stdout)
			}
			logs := p.stderr.String()
			if !strings.Contains(logs, "msg=serving") || !strings.Contains(logs, "msg=stopped") {
				t.Errorf("stderr lacks the serving/stopped logs:\n%s", logs)
			}
			for _, secret := range []string{p.cs.SharedAccessKey, "sig=", "SharedAccessSignature"} {
				if strings.Contains(logs, secret) {
					t.Errorf("stderr shows %q:\n%s", secret, logs)
				}
			}
			if _, err := os.Stat(filepath.Dir(p.caFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("--in-memory left %s behind (%v)", filepath.Dir(p.caFile), err)
			}
		})
	}
}

func TestPrintedSettings(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "--data-dir", dir, "--https-addr", "127.0.0.1:0", "--hostname", "localhost", "--mqtt-addr", "127.0.0.1:0")
	host, port, _ := strings.Cut(p.cs.HostName, ":")
	if host != "localhost" || port == "" || p.cs.SharedAccessKeyName != "iothubowner" {
		t.Errorf("printed %s; want HostName=localhost:<port> and iothubowner", p.cs)
	}
	if p.caFile != filepath.Join(dir, "ca.pem") {
		t.Errorf("IOTHUB_CA_FILE = %s; want %s", p.caFile, filepath.Join(dir, "ca.pem"))
	}
	// env prints the same lines while the emulator runs.
	out, err := exec.Command(binary(t), "env", "--data-dir", dir).Output()
	if err != nil {
		t.Fatalf("env: %v", err)
	}
	if got, want := string(out), strings.Join(p.lines[:3], "\n")+"\n"; got != want { // env has no inspector link
		t.Errorf("env printed\n%s\nwant\n%s", got, want)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.wait(t); err != nil {
		t.Fatal(err)
	}
	// Told the port, env prints a host name without it for 443.
	out, err = exec.Command(binary(t), "env", "--data-dir", dir, "--https-addr", "127.0.0.1:443").Output()
	if err != nil {
		t.Fatalf("env --https-addr: %v", err)
	}
	if !strings.HasPrefix(string(out), "export IOTHUB_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="+p.cs.SharedAccessKey+"'\n") {
		t.Errorf("env --https-addr 127.0.0.1:443 printed %s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--nope"}, 2, "unknown flag"},
		{"argument", []string{"extra"}, 2, "unknown command"},
		{"in-memory with data-dir", []string{"--in-memory", "--data-dir", "x"}, 2, "--in-memory"},
		{"bad log level", []string{"--log-level", "loud", "--in-memory", "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, 2, "--log-level"},
		{"env without fixed port", []string{"env", "--data-dir", "DIR", "--https-addr", "127.0.0.1:0"}, 2, "no fixed port"},
		{"bad address", []string{"--in-memory", "--https-addr", "256.0.0.1:1", "--mqtt-addr", "127.0.0.1:0"}, 1, "--https-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "DIR", t.TempDir())
			}
			cmd := exec.Command(binary(t), args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tt.code {
				t.Fatalf("exit = %v; want code %d; stderr:\n%s", err, tt.code, stderr.String())
			}
			if len(out) != 0 {
				t.Errorf("stdout = %q; want nothing", out)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tt.want)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, err := exec.Command(binary(t), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "iothub-emulator ") {
		t.Errorf("--version = %q, %v", out, err)
	}
	out, err = exec.Command(binary(t), "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--https-addr", "--mqtt-addr", "--hostname", "--data-dir", "--in-memory", "env"} {
		if !bytes.Contains(out, []byte(flag)) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}
