package hubtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two private CAs: "system" stands in for the machine's trust store (the
// test binary points SSL_CERT_FILE at it before anything reads the system
// pool), "extra" is what --ca-file adds.
var (
	systemCA, extraCA   *testCA
	systemPEM, extraPEM string // files holding each CA certificate
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hubtls-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	systemCA, extraCA = newTestCA("system test root"), newTestCA("extra test root")
	systemPEM, extraPEM = filepath.Join(dir, "system.pem"), filepath.Join(dir, "extra.pem")
	for file, ca := range map[string]*testCA{systemPEM: systemCA, extraPEM: extraCA} {
		if err := os.WriteFile(file, ca.pem(), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	emptyDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(emptyDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("SSL_CERT_FILE", systemPEM)
	os.Setenv("SSL_CERT_DIR", emptyDir)
	return m.Run()
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newTestCA(name string) *testCA {
	key := newKey()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// server starts an HTTPS server on 127.0.0.1 whose certificate, for the IP
// 127.0.0.1 only, is signed by ca.
func (ca *testCA) server(t *testing.T, maxVersion uint16) *httptest.Server {
	t.Helper()
	key := newKey()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MaxVersion:   maxVersion,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// get fetches url with a client built from cfg.
func get(t *testing.T, cfg *tls.Config, url string) error {
	t.Helper()
	c := HTTPClient(cfg)
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func TestTrust(t *testing.T) {
	systemSrv := systemCA.server(t, 0)
	extraSrv := extraCA.server(t, 0)
	tests := []struct {
		name        string
		caFile      string
		url         string
		serverName  string // overrides the name checked against the certificate
		wantTrusted bool
	}{
		{"system roots by default", "", systemSrv.URL, "", true},
		{"extra CA not trusted by default", "", extraSrv.URL, "", false},
		{"extra CA trusted with a CA file", extraPEM, extraSrv.URL, "", true},
		{"system roots kept with a CA file", extraPEM, systemSrv.URL, "", true},
		{"host name still verified", extraPEM, extraSrv.URL, "hub.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Config(tt.caFile)
			if err != nil {
				t.Fatalf("Config(%q): %v", tt.caFile, err)
			}
			if tt.serverName != "" {
				cfg.ServerName = tt.serverName
			}
			err = get(t, cfg, tt.url)
			if tt.wantTrusted && err != nil {
				t.Errorf("GET %s: %v, want success", tt.url, err)
			}
			if !tt.wantTrusted {
				var certErr *tls.CertificateVerificationError
				if !errors.As(err, &certErr) {
					t.Errorf("GET %s: %v, want a certificate verification error", tt.url, err)
				}
			}
		})
	}
}

func TestConfigRequiresTLS12(t *testing.T) {
	for _, caFile := range []string{"", extraPEM} {
		cfg, err := Config(caFile)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MinVersion != tls.VersionTLS12 || cfg.InsecureSkipVerify {
			t.Errorf("Config(%q): MinVersion %#x InsecureSkipVerify %v, want TLS 1.2 and false", caFile, cfg.MinVersion, cfg.InsecureSkipVerify)
		}
	}
	old := systemCA.server(t, tls.VersionTLS11)
	cfg, _ := Config("")
	if err := get(t, cfg, old.URL); err == nil {
		t.Errorf("GET from a TLS 1.1 server succeeded, want a handshake failure")
	}
}

func TestConfigAcceptsBundles(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.pem")
	// A key block and text before the certificates are skipped, as in
	// many bundle files.
	data := "some comment\n" + string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}})) +
		string(systemCA.pem()) + string(extraCA.pem())
	if err := os.WriteFile(bundle, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(bundle)
	if err != nil {
		t.Fatalf("Config(bundle): %v", err)
	}
	if err := get(t, cfg, extraCA.server(t, 0).URL); err != nil {
		t.Errorf("second certificate of the bundle not trusted: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing.pem")
	empty := write("empty.pem", "")
	text := write("text.pem", "not a certificate\n")
	keyOnly := write("key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})))
	broken := write("broken.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))

	tests := []struct {
		file string
		want string
		is   error
	}{
		{missing, fmt.Sprintf("read CA file %q: ", missing), fs.ErrNotExist},
		{dir, fmt.Sprintf("read CA file %q: ", dir), nil},
		{empty, fmt.Sprintf("CA file %q holds no PEM certificate", empty), nil},
		{text, fmt.Sprintf("CA file %q holds no PEM certificate", text), nil},
		{keyOnly, fmt.Sprintf("CA file %q holds no PEM certificate", keyOnly), nil},
		{broken, fmt.Sprintf("CA file %q: PEM block 1: x509: ", broken), nil},
	}
	for _, tt := range tests {
		cfg, err := Config(tt.file)
		if err == nil || cfg != nil {
			t.Errorf("Config(%q) = %v, %v; want an error", tt.file, cfg, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Config(%q) error = %q, want prefix %q", tt.file, err, tt.want)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("Config(%q) error = %v, want errors.Is %v", tt.file, err, tt.is)
		}
	}
}

func TestCAFile(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == EnvCAFile {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		flag   string
		getenv func(string) string
		want   string
	}{
		{"", env(""), ""},
		{"", env("/env/ca.pem"), "/env/ca.pem"},
		{"/flag/ca.pem", env("/env/ca.pem"), "/flag/ca.pem"},
		{"/flag/ca.pem", nil, "/flag/ca.pem"},
		{"", nil, ""},
	}
	for _, tt := range tests {
		if got := CAFile(tt.flag, tt.getenv); got != tt.want {
			t.Errorf("CAFile(%q, …) = %q, want %q", tt.flag, got, tt.want)
		}
	}
}

func TestHTTPClient(t *testing.T) {
	cfg, err := Config(extraPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := HTTPClient(cfg)
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T, want *http.Transport", c.Transport)
	}
	if tr.TLSClientConfig != cfg {
		t.Errorf("transport does not use the given TLS config")
	}
	if tr.Proxy == nil {
		t.Errorf("transport ignores the proxy environment")
	}
	if tr.TLSHandshakeTimeout <= 0 || tr.DialContext == nil {
		t.Errorf("transport has no handshake timeout or dialer")
	}
}
