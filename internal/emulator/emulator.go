// Package emulator assembles a local IoT Hub: the hub core on its store,
// the service API over HTTPS and the device side over MQTT, with the TLS
// material and shared access policies kept in a data directory.
package emulator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/certs"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/eventapi"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/inspector"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/restapi"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/store"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

// Defaults for a Config's empty fields.
const (
	DefaultHostName = "localhost"
	// defaultHTTPSAddr for in-process use picks a free port; the command
	// line tool has its own fixed default.
	defaultHTTPSAddr = "127.0.0.1:0"
	defaultMQTTAddr  = "127.0.0.1:0"
	shutdownTimeout  = 5 * time.Second
)

// Config configures an emulator.
type Config struct {
	HTTPSAddr string // service API (and MQTT over WebSockets); "" = 127.0.0.1:0
	MQTTAddr  string // MQTT over TLS; "" = 127.0.0.1:0
	HostName  string // the hub's host name in tokens and certificates; "" = localhost
	DataDir   string // "" = DefaultDataDir(); ignored with InMemory
	InMemory  bool   // keep nothing: a temporary directory removed on Close
	Logger    *slog.Logger
	// DisableLocalAuth refuses shared access signatures on the service API
	// (Microsoft Entra ID tokens only), as a hub with disableLocalAuth.
	DisableLocalAuth bool
	// Faults, when set, perturbs chosen operations (see package faults);
	// nil answers as a real hub.
	Faults faults.Hook
	// TelemetryBuffer is how many device-to-cloud messages are kept in
	// memory (the oldest go first); 0 = telemetry.DefaultCapacity.
	TelemetryBuffer int
	// EventBuffer is how many events wait for each slow reader of an event
	// stream before they are dropped and counted; 0 = 4096.
	EventBuffer int
	// InspectorAddr is the loopback address of the web inspector (plain
	// HTTP); "" serves none.
	InspectorAddr string
	// ShutdownTimeout bounds how long Close waits for requests in flight
	// and for clients to hang up; 0 = 5 s.
	ShutdownTimeout time.Duration
}

// Emulator is a running local IoT Hub.
type Emulator struct {
	cfg      Config
	log      *slog.Logger
	dataDir  string
	tempDir  bool
	material *certs.Material
	tlsConf  *tls.Config
	store    *store.Store
	hub      *hub.Hub
	entra    *entra.Issuer
	mux      *http.ServeMux
	https    *http.Server
	httpsLn  net.Listener
	port     string
	serving  bool          // the HTTPS server owns httpsLn
	served   chan struct{} // closed when the HTTPS server has stopped
	mqtt     *mqttgw.Gateway
	mqttAddr string
	bus      *events.Bus
	messages *telemetry.Buffer
	stopHub  func()        // ends the hub's feed to the bus
	closing  chan struct{} // closed by Close: ends event streams
	web      *inspector.Server

	closeOnce sync.Once
	closeErr  error
}

// Start prepares the data directory, binds the listeners and starts
// serving; the listeners are bound when it returns. ctx bounds start-up
// only: call Close to stop.
func Start(ctx context.Context, cfg Config) (*Emulator, error) {
	if cfg.HTTPSAddr == "" {
		cfg.HTTPSAddr = defaultHTTPSAddr
	}
	if cfg.HostName == "" {
		cfg.HostName = DefaultHostName
	}
	e := &Emulator{cfg: cfg, log: cfg.Logger, served: make(chan struct{}), closing: make(chan struct{}),
		bus: events.NewBus(), messages: telemetry.NewBuffer(cfg.TelemetryBuffer, 0)}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	ok := false
	defer func() {
		if !ok {
			e.release()
		}
	}()
	if err := e.openDataDir(); err != nil {
		return nil, err
	}
	policies, err := loadOrCreatePolicies(e.dataDir)
	if err != nil {
		return nil, err
	}
	if e.material, err = certs.Ensure(e.dataDir, certs.Names(cfg.HostName), time.Now()); err != nil {
		return nil, err
	}
	e.tlsConf = e.material.ServerConfig()
	if cfg.InMemory {
		e.store = store.Memory()
	} else if e.store, err = store.Open(filepath.Join(e.dataDir, dbFile), hub.Buckets...); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if e.httpsLn, err = lc.Listen(ctx, "tcp", cfg.HTTPSAddr); err != nil {
		return nil, fmt.Errorf("--https-addr: %w", err) // names the address
	}
	_, e.port, _ = net.SplitHostPort(e.httpsLn.Addr().String())
	e.hub, err = hub.New(hub.Options{
		HostName: cfg.HostName,
		Port:     e.port,
		Policies: policies,
		Store:    e.store,
		Logger:   e.log.With("component", "hub"),
	})
	if err != nil {
		return nil, err
	}
	engine := methods.New(methods.Options{Logger: e.log.With("component", "methods"), OnCall: methodEvents(e.bus)})
	e.stopHub = e.hub.Subscribe(hubEvents(e.bus))
	if e.entra, err = entra.Open(e.dataDir, hostWithPort(cfg.HostName, e.port), nil); err != nil {
		return nil, err
	}
	e.mux = http.NewServeMux()
	e.entra.Register(e.mux, e.log.With("component", "entra"))
	restapi.Register(e.mux, e.hub, restapi.Options{
		Logger:           e.log.With("component", "rest"),
		Faults:           cfg.Faults,
		Events:           e.bus,
		Entra:            e.entra,
		DisableLocalAuth: cfg.DisableLocalAuth,
		Methods:          engine,
	})
	e.mux.Handle(eventapi.Path, &eventapi.Handler{Hub: e.hub, Bus: e.bus, Done: e.closing, Buffer: cfg.EventBuffer})
	mqttAddr := cfg.MQTTAddr
	if mqttAddr == "" {
		mqttAddr = defaultMQTTAddr
	}
	if e.mqtt, err = mqttgw.Start(mqttgw.Config{
		Hub:       e.hub,
		Addr:      mqttAddr,
		TLSConfig: e.tlsConf,
		Logger:    e.log.With("component", "mqtt"),
		Faults:    cfg.Faults,
		Events:    e.bus,
		Messages:  e.messages,
		Methods:   engine,
	}); err != nil {
		return nil, err
	}
	e.mqttAddr = e.mqtt.Addr().String()
	e.mux.Handle(mqttgw.WebSocketPath, e.mqtt)
	e.https = &http.Server{
		Handler:           e.mux,
		TLSConfig:         e.tlsConf.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	if !cfg.InMemory {
		if err := writeEndpoint(e.dataDir, endpoint{HostName: cfg.HostName, Port: e.port, MQTTAddr: e.mqttAddr}); err != nil {
			return nil, err
		}
	}
	if cfg.InspectorAddr != "" {
		if e.web, err = inspector.Start(inspector.Config{Addr: cfg.InspectorAddr, Hub: e.hub, Bus: e.bus, Messages: e.messages,
			Logger: e.log.With("component", "inspector")}); err != nil {
			return nil, err
		}
	}
	e.serving = true
	go func() {
		defer close(e.served)
		if err := e.https.ServeTLS(e.httpsLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("https server stopped", "err", err)
		}
	}()
	ok = true
	e.log.Info("serving", "https", e.HTTPSAddr(), "mqtt", e.MQTTAddr(), "hostname", cfg.HostName, "data_dir", e.dataDir, "in_memory", cfg.InMemory, "inspector", e.InspectorAddr(),
		"entra_tenant", e.entra.TenantID(), "local_auth", !cfg.DisableLocalAuth)
	return e, nil
}

func (e *Emulator) openDataDir() error {
	if e.cfg.InMemory {
		dir, err := os.MkdirTemp("", "iothub-emulator-*")
		if err != nil {
			return fmt.Errorf("create temporary data directory: %w", err)
		}
		e.dataDir, e.tempDir = dir, true
		return nil
	}
	dir := e.cfg.DataDir
	if dir == "" {
		var err error
		if dir, err = DefaultDataDir(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	e.dataDir = dir
	return nil
}

// HTTPSAddr returns the address the HTTPS listener is bound to.
func (e *Emulator) HTTPSAddr() string { return e.httpsLn.Addr().String() }

// MQTTAddr returns the address the MQTT-over-TLS listener is bound to.
func (e *Emulator) MQTTAddr() string { return e.mqttAddr }

// HostName returns the hub's host name without port.
func (e *Emulator) HostName() string { return e.cfg.HostName }

// DataDir returns the data directory (a temporary one with InMemory).
func (e *Emulator) DataDir() string { return e.dataDir }

// ServiceConnectionString returns the iothubowner connection string.
func (e *Emulator) ServiceConnectionString() string {
	cs, err := e.PolicyConnectionString(hub.PolicyOwner)
	if err != nil {
		panic("emulator: the owner policy is missing: " + err.Error()) // loadOrCreatePolicies always makes it
	}
	return cs
}

// PolicyConnectionString returns the connection string of a shared access
// policy. HostName carries the port unless it is 443.
func (e *Emulator) PolicyConnectionString(policy string) (string, error) {
	p, ok := e.hub.Policy(policy)
	if !ok {
		return "", fmt.Errorf("no shared access policy %q", policy)
	}
	return policyConnectionString(e.cfg.HostName, e.port, p), nil
}

func policyConnectionString(hostName, port string, p hub.Policy) string {
	return connstr.ConnectionString{
		HostName:            hostWithPort(hostName, port),
		SharedAccessKeyName: p.KeyName,
		SharedAccessKey:     p.PrimaryKey,
	}.Format()
}

// hostWithPort is what clients put in HostName: the port is left out when
// it is 443, the only port Microsoft's SDKs reach the service API on.
func hostWithPort(hostName, port string) string {
	if port == "443" || port == "" {
		return hostName
	}
	return net.JoinHostPort(hostName, port)
}

// CAFile returns the path of the CA certificate clients should trust.
func (e *Emulator) CAFile() string { return e.material.CAFile }

// Hub returns the hub core.
func (e *Emulator) Hub() *hub.Hub { return e.hub }

// Disconnect closes the MQTT connection of a device (moduleID "") or
// module, as a network failure would, and returns once the hub shows it
// disconnected or ctx ends. It reports whether it was connected.
func (e *Emulator) Disconnect(ctx context.Context, deviceID, moduleID string) bool {
	return e.mqtt.Disconnect(ctx, hub.IdentityRef{DeviceID: deviceID, ModuleID: moduleID})
}

// Events returns the hub's event stream: publish what the hub does to
// it, subscribe to read it.
func (e *Emulator) Events() *events.Bus { return e.bus }

// InspectorURL returns the one-time link that opens the web inspector
// ("" without one). It holds a secret.
func (e *Emulator) InspectorURL() string {
	if e.web == nil {
		return ""
	}
	return e.web.LoginURL()
}

// InspectorAddr returns the address the web inspector listens on ("" without one).
func (e *Emulator) InspectorAddr() string {
	if e.web == nil {
		return ""
	}
	return e.web.Addr()
}

// Messages returns the device-to-cloud messages kept in memory.
func (e *Emulator) Messages() *telemetry.Buffer { return e.messages }

// Close stops serving, waits for requests in flight (up to a few
// seconds), and releases the store and any temporary directory.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		close(e.closing)
		timeout := e.cfg.ShutdownTimeout
		if timeout <= 0 {
			timeout = shutdownTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := e.https.Shutdown(ctx); err != nil {
			e.https.Close()
		}
		<-e.served
		e.closeErr = e.release()
		e.log.Info("stopped")
	})
	return e.closeErr
}

// release frees what Start acquired, in reverse order.
func (e *Emulator) release() error {
	var errs []error
	if e.web != nil {
		errs = append(errs, e.web.Close())
	}
	if e.mqtt != nil {
		errs = append(errs, e.mqtt.Close()) // before the hub: it records the disconnections
	}
	if e.httpsLn != nil && !e.serving {
		e.httpsLn.Close()
	}
	if e.stopHub != nil {
		e.stopHub()
	}
	if e.hub != nil {
		errs = append(errs, e.hub.Close())
	}
	if e.store != nil {
		errs = append(errs, e.store.Close())
	}
	if e.tempDir {
		errs = append(errs, os.RemoveAll(e.dataDir))
	}
	return errors.Join(errs...)
}

// LastEndpoint returns the host name, port and MQTT address the last emulator on
// dataDir served on (ok false when none has).
func LastEndpoint(dataDir string) (hostName, port, mqttAddr string, ok bool, err error) {
	ep, ok, err := readEndpoint(dataDir)
	return ep.HostName, ep.Port, ep.MQTTAddr, ok, err
}

// EnvLines prepares dataDir as Start would (policies and CA, without
// taking the store) and returns ShellLines for a hub at hostName:port with
// its MQTT listener at mqttAddr ("" when unknown).
func EnvLines(dataDir, hostName, port, mqttAddr string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	policies, err := loadOrCreatePolicies(dataDir)
	if err != nil {
		return "", err
	}
	m, err := certs.Ensure(dataDir, certs.Names(hostName), time.Now())
	if err != nil {
		return "", err
	}
	for _, p := range policies {
		if p.KeyName == hub.PolicyOwner {
			return ShellLines(policyConnectionString(hostName, port, p), m.CAFile, mqttAddr), nil
		}
	}
	return "", fmt.Errorf("data directory %s has no %s policy", dataDir, hub.PolicyOwner)
}

// ServiceSettings returns the iothubowner connection string of the hub
// kept in dataDir, as served at hostName:port, and its CA file, without
// creating anything.
func ServiceSettings(dataDir, hostName, port string) (connectionString, caFile string, err error) {
	if _, err := os.Stat(filepath.Join(dataDir, policiesFile)); err != nil {
		return "", "", fmt.Errorf("no hub in data directory %s (start iothub-emulator, or set the connection string): %w", dataDir, err)
	}
	policies, err := loadOrCreatePolicies(dataDir)
	if err != nil {
		return "", "", err
	}
	for _, p := range policies {
		if p.KeyName == hub.PolicyOwner {
			return policyConnectionString(hostName, port, p), filepath.Join(dataDir, certs.CAFile), nil
		}
	}
	return "", "", fmt.Errorf("data directory %s has no %s policy", dataDir, hub.PolicyOwner)
}
