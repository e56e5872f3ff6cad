package registry

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
)

// canned is an answer given byte for byte. The emulator answers as the
// real hub does; these tests need answers it never gives (a 201 create,
// error bodies in shapes other hub versions and proxies send) or exactly
// the bytes a real hub sent (its recorded sessions), so they talk to a
// server that only replays answers.
type canned struct {
	status int
	header string // iothub-errorcode
	body   string
}

// cannedClient returns a client of a TLS server that gives the requests
// the answers in turn (the last one to any further request), and never
// retries.
func cannedClient(t *testing.T, answers ...canned) *Client {
	t.Helper()
	var mu sync.Mutex
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		mu.Unlock()
		if a.header != "" {
			w.Header().Set("iothub-errorcode", a.header)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := hubtls.Config(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cs := connstr.ConnectionString{HostName: strings.TrimPrefix(srv.URL, "https://"), SharedAccessKeyName: testPolicy, SharedAccessKey: testKey}
	opts := &ClientOptions{}
	opts.Transport = hubtls.HTTPClient(cfg)
	opts.Retry.MaxRetries = -1
	c, err := NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
