// Package emulatortest starts the emulator for one test: an in-memory hub
// on loopback serving the service API over HTTPS and MQTT over TLS and
// WebSockets, with its CA, connection strings, helpers that create
// identities, and the fault plan the test perturbs it with.
package emulatortest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

// Hub is an emulator running for one test.
type Hub struct {
	*emulator.Emulator
	// Faults is the emulator's fault plan, empty at start.
	Faults *faults.Plan

	t    testing.TB
	pool *x509.CertPool
	logs *syncio.Buffer
}

type config struct {
	dataDir  string
	hostName string
}

// Option configures Start.
type Option func(*config)

// WithDataDir keeps the hub in dir (its store, policies and CA) instead of
// in memory, so that a later Start on dir finds it again.
func WithDataDir(dir string) Option { return func(c *config) { c.dataDir = dir } }

// WithHostName sets the hub's host name (default localhost).
func WithHostName(name string) Option { return func(c *config) { c.hostName = name } }

// Start starts an emulator on 127.0.0.1 with free ports; t.Cleanup stops
// it.
func Start(t testing.TB, opts ...Option) *Hub {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	h := &Hub{t: t, Faults: faults.New(), logs: &syncio.Buffer{}}
	cfg := emulator.Config{
		HostName: c.hostName,
		DataDir:  c.dataDir,
		InMemory: c.dataDir == "",
		Logger:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Faults:   h.Faults,
		// An HTTP/2 client that a test leaves open would hold Close for
		// a second after GOAWAY.
		ShutdownTimeout: 50 * time.Millisecond,
	}
	e, err := emulator.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	h.Emulator = e
	t.Cleanup(func() {
		h.Faults.Clear() // releases stalled operations, so that Close does not wait on them
		if err := e.Close(); err != nil {
			t.Errorf("stop emulator: %v", err)
		}
	})
	pem, err := os.ReadFile(e.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	h.pool = x509.NewCertPool()
	if !h.pool.AppendCertsFromPEM(pem) {
		t.Fatalf("emulator CA file %s holds no certificate", e.CAFile())
	}
	return h
}

// CertPool returns a pool holding only the emulator's CA.
func (h *Hub) CertPool() *x509.CertPool { return h.pool }

// ClientTLS returns a client TLS configuration trusting only the
// emulator's CA.
func (h *Hub) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: h.pool, MinVersion: tls.VersionTLS12}
}

// HTTPClient returns an HTTP client trusting only the emulator's CA; its
// idle connections close when the test ends.
func (h *Hub) HTTPClient() *http.Client {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.ClientTLS(), ForceAttemptHTTP2: true}}
	h.t.Cleanup(c.CloseIdleConnections)
	return c
}

// Host is the HostName clients put in connection strings: the hub's name
// and the port of its HTTPS listener.
func (h *Hub) Host() string {
	_, port, _ := net.SplitHostPort(h.HTTPSAddr())
	return net.JoinHostPort(h.HostName(), port)
}

// URL is the base URL of the service API.
func (h *Hub) URL() string { return "https://" + h.Host() }

// ConnectionString returns the connection string of a shared access
// policy (hub.PolicyOwner, "service", "registryRead", ...).
func (h *Hub) ConnectionString(policy string) string {
	h.t.Helper()
	cs, err := h.PolicyConnectionString(policy)
	if err != nil {
		h.t.Fatal(err)
	}
	return cs
}

// PolicyKey returns the primary key of a shared access policy, for tests
// that check it never shows.
func (h *Hub) PolicyKey(policy string) string {
	h.t.Helper()
	p, ok := h.Hub().Policy(policy)
	if !ok {
		h.t.Fatalf("no shared access policy %q", policy)
	}
	return p.PrimaryKey
}

// Logs returns what the emulator logged so far, at every level.
func (h *Hub) Logs() string { return h.logs.String() }

// CreateDevice creates a device with generated keys, straight in the hub
// core (no request a test would see), and returns its connection string.
func (h *Hub) CreateDevice(deviceID string) connstr.ConnectionString {
	h.t.Helper()
	d, err := h.Hub().CreateOrUpdateDevice(deviceID, iothub.Device{DeviceID: deviceID}, hub.IfMatch{})
	if err != nil {
		h.t.Fatalf("create device %s: %v", deviceID, err)
	}
	return connstr.ConnectionString{HostName: h.Host(), DeviceID: deviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
}

// CreateModule creates a module (and its device, if missing) and returns
// the module's connection string.
func (h *Hub) CreateModule(deviceID, moduleID string) connstr.ConnectionString {
	h.t.Helper()
	if _, err := h.Hub().GetDevice(deviceID); err != nil {
		h.CreateDevice(deviceID)
	}
	m, err := h.Hub().CreateOrUpdateModule(deviceID, moduleID, iothub.Module{DeviceID: deviceID, ModuleID: moduleID}, hub.IfMatch{})
	if err != nil {
		h.t.Fatalf("create module %s/%s: %v", deviceID, moduleID, err)
	}
	return connstr.ConnectionString{HostName: h.Host(), DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: m.Authentication.SymmetricKey.PrimaryKey}
}

// DeleteModule deletes a module, closing its connection as the hub does.
func (h *Hub) DeleteModule(deviceID, moduleID string) {
	h.t.Helper()
	if err := h.Hub().DeleteModule(deviceID, moduleID, hub.IfMatch{}); err != nil {
		h.t.Fatalf("delete module %s/%s: %v", deviceID, moduleID, err)
	}
}

func ref(deviceID, moduleID string) hub.IdentityRef {
	return hub.IdentityRef{DeviceID: deviceID, ModuleID: moduleID}
}

// Twin returns a twin (moduleID "" for a device's) as the service API
// shows it.
func (h *Hub) Twin(deviceID, moduleID string) iothub.Twin {
	h.t.Helper()
	b, err := h.Hub().Twin(ref(deviceID, moduleID))
	if err != nil {
		h.t.Fatalf("read twin: %v", err)
	}
	var tw iothub.Twin
	if err := json.Unmarshal(b, &tw); err != nil {
		h.t.Fatalf("decode twin: %v", err)
	}
	return tw
}

// PatchDesired merges a JSON object into a twin's desired properties, as
// a service's PATCH does (null removes), and returns the new desired
// $version. Connected clients get the patch.
func (h *Hub) PatchDesired(deviceID, moduleID, desired string) int64 {
	h.t.Helper()
	body := `{"properties":{"desired":` + desired + `}}`
	b, err := h.Hub().UpdateTwin(ref(deviceID, moduleID), []byte(body), hub.IfMatch{})
	if err != nil {
		h.t.Fatalf("patch desired %s: %v", desired, err)
	}
	var tw iothub.Twin
	if err := json.Unmarshal(b, &tw); err != nil {
		h.t.Fatalf("decode twin: %v", err)
	}
	return iothub.DocVersion(tw.Properties.Desired)
}

// PatchReported merges a JSON object into a twin's reported properties,
// as its device or module does over MQTT, and returns the new reported
// $version.
func (h *Hub) PatchReported(deviceID, moduleID, reported string) int64 {
	h.t.Helper()
	v, err := h.Hub().UpdateReported(ref(deviceID, moduleID), []byte(reported))
	if err != nil {
		h.t.Fatalf("patch reported %s: %v", reported, err)
	}
	return v
}

// Disconnect closes the MQTT connection of a device or module, as a
// network failure would, and returns once the hub shows it disconnected.
// It fails the test when there was no connection.
func (h *Hub) Disconnect(deviceID, moduleID string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !h.Emulator.Disconnect(ctx, deviceID, moduleID) {
		h.t.Fatalf("%s is not connected", ref(deviceID, moduleID))
	}
	if ctx.Err() != nil {
		h.t.Fatalf("%s still connected 10s after its connection was closed", ref(deviceID, moduleID))
	}
}
