package emulator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// The hub core is what the MQTT gateway is written against.
var _ mqttgw.Hub = (*hub.Hub)(nil)

func startInMemory(t *testing.T) *emulator.Emulator {
	t.Helper()
	e, err := emulator.Start(context.Background(), emulator.Config{HTTPSAddr: "127.0.0.1:0", InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// client talks to an emulator with nothing but net/http, trusting only
// the CA file the emulator wrote.
type client struct {
	http *http.Client
	e    *emulator.Emulator
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

func newClient(t *testing.T, e *emulator.Emulator) *client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, e.CAFile()), ServerName: "localhost"}}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{http: &http.Client{Transport: tr}, e: e}
}

func (c *client) token(t *testing.T, policy string) string {
	t.Helper()
	cs, err := c.e.PolicyConnectionString(policy)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := connstr.Parse(cs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sas.NewSigner(parsed.SharedAccessKeyName, parsed.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(parsed.HostName, time.Hour)
	return tok
}

func (c *client) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+c.e.HTTPSAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", c.token(t, hub.PolicyOwner))
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestStartServesOverTLSAndCloseCleansUp(t *testing.T) {
	e, err := emulator.Start(context.Background(), emulator.Config{HTTPSAddr: "127.0.0.1:0", InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	addr, dir := e.HTTPSAddr(), e.DataDir()
	_, port, _ := net.SplitHostPort(addr)
	cs, err := connstr.Parse(e.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "localhost:"+port || cs.SharedAccessKeyName != "iothubowner" {
		t.Errorf("service connection string = %s; want HostName=localhost:%s and iothubowner", cs, port)
	}
	if e.HostName() != "localhost" {
		t.Errorf("HostName = %q; want localhost", e.HostName())
	}
	if filepath.Dir(e.CAFile()) != dir {
		t.Errorf("CA file %s is not in the data directory %s", e.CAFile(), dir)
	}
	for _, p := range []string{"iothubowner", "service", "device", "registryRead", "registryReadWrite"} {
		s, err := e.PolicyConnectionString(p)
		if err != nil {
			t.Errorf("PolicyConnectionString(%s): %v", p, err)
			continue
		}
		if c, err := connstr.Parse(s); err != nil || c.SharedAccessKeyName != p || c.Kind() != connstr.Service {
			t.Errorf("PolicyConnectionString(%s) = %v, %v", p, c, err)
		}
	}
	if _, err := e.PolicyConnectionString("nobody"); err == nil {
		t.Error("PolicyConnectionString of an unknown policy succeeded")
	}

	c := newClient(t, e)
	if status, body := c.do(t, "PUT", "/devices/d1?api-version=2021-04-12", `{"deviceId":"d1"}`); status != 200 {
		t.Fatalf("create device = %d %s", status, body)
	}
	// Both TLS versions, for each name the certificate must cover.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, name := range []string{"localhost", "127.0.0.1"} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: caPool(t, e.CAFile()), ServerName: name, MinVersion: v, MaxVersion: v})
			if err != nil {
				t.Errorf("TLS %x to %s: %v", v, name, err)
				continue
			}
			conn.Close()
		}
	}
	// No plaintext.
	resp, err := http.Get("http://" + addr + "/health")
	if err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP /health answered 200")
		}
		resp.Body.Close()
	}
	// The health endpoint answers without a token.
	hreq, _ := http.NewRequest("GET", "https://"+addr+"/health", nil)
	if hresp, err := c.http.Do(hreq); err != nil || hresp.StatusCode != 200 {
		t.Errorf("GET /health = %v, %v", hresp, err)
	} else {
		hresp.Body.Close()
	}
	c.http.CloseIdleConnections()

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary data directory %s is left after Close (%v)", dir, err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

func TestDataDirKeepsHubKeysAndCertificates(t *testing.T) {
	dir := t.TempDir()
	cfg := emulator.Config{HTTPSAddr: "127.0.0.1:0", DataDir: dir, HostName: "myhub.local"}
	e, err := emulator.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs1, _ := connstr.Parse(e.ServiceConnectionString())
	ca1, err := os.ReadFile(e.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, e)
	if status, body := c.do(t, "PUT", "/devices/keep", `{}`); status != 200 {
		t.Fatalf("create = %d %s", status, body)
	}
	_, devBefore := c.do(t, "GET", "/devices/keep", "")
	// The certificate covers --hostname as well.
	conn, err := tls.Dial("tcp", e.HTTPSAddr(), &tls.Config{RootCAs: caPool(t, e.CAFile()), ServerName: "myhub.local"})
	if err != nil {
		t.Errorf("TLS with server name myhub.local: %v", err)
	} else {
		conn.Close()
	}
	// A second emulator cannot take the same data directory.
	if e2, err := emulator.Start(context.Background(), cfg); err == nil {
		e2.Close()
		t.Error("a second emulator started on a data directory in use")
	}
	c.http.CloseIdleConnections()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data directory is gone after Close: %v", err)
	}

	e, err = emulator.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cs2, _ := connstr.Parse(e.ServiceConnectionString())
	ca2, _ := os.ReadFile(e.CAFile())
	if cs1.SharedAccessKey != cs2.SharedAccessKey {
		t.Error("the owner key changed across restarts")
	}
	if string(ca1) != string(ca2) {
		t.Error("the CA changed across restarts")
	}
	c = newClient(t, e)
	if _, devAfter := c.do(t, "GET", "/devices/keep", ""); devAfter != devBefore {
		t.Errorf("device after restart:\n%s\nbefore:\n%s", devAfter, devBefore)
	}
}

func TestEnvLines(t *testing.T) {
	dir := t.TempDir()
	lines, err := emulator.EnvLines(dir, "localhost", "443", "127.0.0.1:8883")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(lines, "\n"), "\n")
	if len(got) != 3 || !strings.HasPrefix(got[0], "export IOTHUB_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=") ||
		got[1] != "export IOTHUB_CA_FILE="+filepath.Join(dir, "ca.pem") || got[2] != "export IOTHUB_MQTT_ADDR=127.0.0.1:8883" {
		t.Fatalf("EnvLines =\n%s", lines)
	}
	// A later start on the directory uses the keys env printed.
	e, err := emulator.Start(context.Background(), emulator.Config{HTTPSAddr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cs, _ := connstr.Parse(e.ServiceConnectionString())
	if !strings.Contains(got[0], "SharedAccessKey="+cs.SharedAccessKey+"'") {
		t.Error("env printed another key than the emulator uses")
	}
	host, port, mqttAddr, ok, err := emulator.LastEndpoint(dir)
	_, wantPort, _ := net.SplitHostPort(e.HTTPSAddr())
	if err != nil || !ok || host != "localhost" || port != wantPort || mqttAddr != e.MQTTAddr() {
		t.Errorf("LastEndpoint = %q %q %q %v %v; want localhost %s %s", host, port, mqttAddr, ok, err, wantPort, e.MQTTAddr())
	}
}

func TestShellLinesQuoting(t *testing.T) {
	tests := []struct{ cs, ca, mqtt, want string }{
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=a+b/c=", "/tmp/x/ca.pem", "127.0.0.1:8883",
			"export IOTHUB_CONNECTION_STRING='HostName=h;SharedAccessKeyName=p;SharedAccessKey=a+b/c='\nexport IOTHUB_CA_FILE=/tmp/x/ca.pem\nexport IOTHUB_MQTT_ADDR=127.0.0.1:8883\n"},
		{"x", "/home/a b/it's/ca.pem", "", "export IOTHUB_CONNECTION_STRING='x'\nexport IOTHUB_CA_FILE='/home/a b/it'\\''s/ca.pem'\n"},
		{"x", "/p/$HOME/ca.pem", "[::1]:8883", "export IOTHUB_CONNECTION_STRING='x'\nexport IOTHUB_CA_FILE='/p/$HOME/ca.pem'\nexport IOTHUB_MQTT_ADDR='[::1]:8883'\n"},
	}
	for _, tt := range tests {
		if got := emulator.ShellLines(tt.cs, tt.ca, tt.mqtt); got != tt.want {
			t.Errorf("ShellLines(%q, %q, %q) =\n%s\nwant\n%s", tt.cs, tt.ca, tt.mqtt, got, tt.want)
		}
	}
}

func TestStartFailsOnABusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e, err := emulator.Start(context.Background(), emulator.Config{HTTPSAddr: ln.Addr().String(), InMemory: true})
	if err == nil {
		e.Close()
		t.Fatal("Start on a busy port succeeded")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("error %q does not name the address", err)
	}
}
