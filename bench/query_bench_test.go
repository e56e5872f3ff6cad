package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// queryModules is how many module twins the query benchmarks search.
const queryModules = 10000

// BenchmarkQuery10kModules measures, in one run over HTTPS against 10,000
// module twins: a single module twin GET, one page (100 twins) of a full
// scan resumed from a continuation token halfway through, and a selective
// query that reads all 10,000 twins to find the 100 tagged ones. The
// query sub-benchmarks report their time as a multiple of the twin GET's
// (x-twin-GET), measured in the same process a moment before.
func BenchmarkQuery10kModules(b *testing.B) {
	c := setUpQueryModules(b)
	var getNs float64
	b.Run("twin-GET", func(b *testing.B) {
		start := time.Now()
		for i := range b.N {
			if _, _, err := c.do("GET", fmt.Sprintf("/twins/q%03d/modules/m%02d", i%200, i%50), nil, ""); err != nil {
				b.Fatal(err)
			}
		}
		getNs = float64(time.Since(start).Nanoseconds()) / float64(b.N)
	})
	ratio := func(b *testing.B, start time.Time) {
		if ns := float64(time.Since(start).Nanoseconds()) / float64(b.N); getNs > 0 {
			b.ReportMetric(ns/getNs, "x-twin-GET")
		}
	}

	const scan = `{"query":"SELECT * FROM devices.modules"}`
	halfway := ""
	for page := 0; page < queryModules/2/100; page++ {
		_, next, err := c.do("POST", "/devices/query", []byte(scan), halfway)
		if err != nil || next == "" {
			b.Fatalf("scan page %d: %v (continuation %q)", page, err, next)
		}
		halfway = next
	}
	b.Run("full-scan-page", func(b *testing.B) {
		start := time.Now()
		for range b.N {
			rows, next, err := c.do("POST", "/devices/query", []byte(scan), halfway)
			if err != nil || rows != 100 || next == "" {
				b.Fatalf("page: %d rows, continuation %q, %v", rows, next, err)
			}
		}
		ratio(b, start)
	})

	b.Run("selective-query", func(b *testing.B) {
		body := []byte(`{"query":"SELECT * FROM devices.modules WHERE tags.group = 'rare'"}`)
		start := time.Now()
		for range b.N {
			rows, next, err := c.do("POST", "/devices/query", body, "", "x-ms-max-item-count", "1000")
			if err != nil || rows != queryModules/100 || next != "" {
				b.Fatalf("selective query: %d rows, continuation %q, %v", rows, next, err)
			}
		}
		ratio(b, start)
	})
}

// queryClient posts queries and reads twins over HTTPS keep-alive.
type queryClient struct {
	base, token string
	http        *http.Client
}

// do sends a request and returns how many rows a query page held (the
// number of top-level array elements) and its continuation.
func (c *queryClient) do(method, path string, body []byte, continuation string, headers ...string) (int, string, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, c.base+path+"?api-version=2021-04-12", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", c.token)
	req.Header.Set("Content-Type", "application/json")
	if continuation != "" {
		req.Header.Set("x-ms-continuation", continuation)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return countRows(data), resp.Header.Get("x-ms-continuation"), nil
}

// countRows counts the elements of a JSON array of objects by their depth.
func countRows(b []byte) int {
	n, depth, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{':
			if depth == 1 {
				n++
			}
			depth++
		case c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		}
	}
	return n
}

// setUpQueryModules starts an in-memory emulator with 200 devices of 50
// modules; one module in a hundred is tagged group=rare, and every module
// reports a status.
func setUpQueryModules(b *testing.B) *queryClient {
	b.Helper()
	em, err := emulator.Start(context.Background(), emulator.Config{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { em.Close() })
	h := em.Hub()
	for i := range queryModules {
		did, mid := fmt.Sprintf("q%03d", i/iothub.MaxModulesPerDevice), fmt.Sprintf("m%02d", i%iothub.MaxModulesPerDevice)
		if i%iothub.MaxModulesPerDevice == 0 {
			if _, err := h.CreateOrUpdateDevice(did, iothub.Device{}, hub.IfMatch{}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := h.CreateOrUpdateModule(did, mid, iothub.Module{}, hub.IfMatch{}); err != nil {
			b.Fatal(err)
		}
		ref := hub.IdentityRef{DeviceID: did, ModuleID: mid}
		group := "common"
		if i%100 == 0 {
			group = "rare"
		}
		if _, err := h.UpdateTwin(ref, fmt.Appendf(nil, `{"tags":{"group":%q,"n":%d}}`, group, i), hub.IfMatch{}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.UpdateReported(ref, []byte(`{"status":"ok","temperature":21.5}`)); err != nil {
			b.Fatal(err)
		}
	}
	cs, err := connstr.Parse(em.ServiceConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		b.Fatal(err)
	}
	token, _ := signer.Token(sas.ServiceResource(cs.HostName), 2*time.Hour)
	pem, err := os.ReadFile(em.CAFile())
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tlsConf := &tls.Config{RootCAs: pool, ServerName: em.HostName(), MinVersion: tls.VersionTLS12}
	return &queryClient{
		base:  "https://" + cs.HostName,
		token: token,
		http:  &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: time.Minute},
	}
}
