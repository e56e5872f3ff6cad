package mqttgw

import (
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// DefaultAddr is where MQTT over TLS listens unless told otherwise.
const DefaultAddr = "127.0.0.1:8883"

// WebSocketPath is where the real hub serves MQTT over WebSockets, on the
// same HTTPS listener as its REST API.
const WebSocketPath = "/$iothub/websocket"

// Config configures a Gateway.
type Config struct {
	// Hub is the emulator's hub core.
	Hub Hub
	// Addr is the MQTT-over-TLS listen address (DefaultAddr when empty).
	Addr string
	// TLSConfig is the server TLS configuration of that listener. It must
	// hold a certificate; TLS 1.2 is the lowest version served.
	TLSConfig *tls.Config
	// Logger receives connection events. Passwords and tokens are never
	// logged. Nil discards.
	Logger *slog.Logger
	// Faults, when set, is consulted once per connection, subscription,
	// twin request and desired push (see package faults).
	Faults faults.Hook
	// Events receives connections, disconnections and messages; nil
	// discards them.
	Events events.Publisher
	// Messages keeps device-to-cloud messages; nil keeps none.
	Messages *telemetry.Buffer
	// Methods, if set, gets the connections that listen for direct
	// methods and their answers.
	Methods *methods.Engine
}

// Gateway serves IoT Hub's device-side MQTT dialect on an embedded broker:
// MQTT 3.1.1 over TLS on its own listener, and over WebSockets through
// ServeHTTP.
type Gateway struct {
	hub      Hub
	methods  *methods.Engine
	log      *slog.Logger
	faults   faults.Hook
	closed   chan struct{} // closed by Close: stalled operations give up
	events   events.Publisher
	messages *telemetry.Buffer
	srv      *mqtt.Server
	tls      *tlsListener
	ws       *wsListener

	cancelEvents func()
	closeOnce    sync.Once

	// conns holds every authenticated connection by its network
	// connection; live holds each identity's current connection.
	conns sync.Map // net.Conn → *conn
	live  sync.Map // hub.IdentityRef → *conn
	// stripes serialise connect and disconnect bookkeeping per identity,
	// so the hub's connectionState always ends with the newest event.
	stripes [64]sync.Mutex
	seed    maphash.Seed
}

// conn is the gateway's state for one authenticated MQTT connection.
type conn struct {
	cl     *mqtt.Client
	id     hub.IdentityRef
	prefix string // internalPrefix of the client ID
	// iothub-connection-auth-method and -auth-generation-id of its messages.
	authMethod string
	generation string
	expiry     *time.Timer   // closes the connection when its token expires
	gone       chan struct{} // closed once the gateway has forgotten it
	live       atomic.Bool   // still the identity's current connection
	active     atomic.Int64  // unix second of the last activity given to the hub

	// Desired patches committed after the connection became live but
	// before its CONNACK went out wait here: the broker moves a taken-over
	// session's subscriptions only just before CONNACK, and a PUBLISH
	// before CONNACK makes clients drop the connection.
	mu      sync.Mutex
	acked   bool
	pending []hub.DesiredPatch
	methods *methods.Attachment // set while it answers direct methods
}

// touch records activity on c, at most once a second per connection.
func (g *Gateway) touch(c *conn) {
	now := time.Now()
	sec := now.Unix()
	if c.active.Swap(sec) != sec {
		g.hub.RecordActivity(c.id, now)
	}
}

// Start opens the MQTT-over-TLS listener and starts the broker. The
// WebSocket endpoint is g itself (an http.Handler), to be mounted at
// WebSocketPath on the HTTPS server.
func Start(cfg Config) (*Gateway, error) {
	if cfg.Hub == nil {
		return nil, errors.New("mqtt gateway: no hub")
	}
	if cfg.TLSConfig == nil {
		return nil, errors.New("mqtt gateway: no TLS configuration")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}

	tlsConf := cfg.TLSConfig.Clone()
	if tlsConf.MinVersion < tls.VersionTLS12 {
		tlsConf.MinVersion = tls.VersionTLS12
	}
	// The HTTPS server's ALPN list ("h2", "http/1.1") would make the TLS
	// stack refuse an MQTT client that offers its own protocol names.
	tlsConf.NextProtos = nil

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt gateway: %w", err) // names the address
	}

	g := &Gateway{
		hub:      cfg.Hub,
		methods:  cfg.Methods,
		log:      log,
		faults:   cfg.Faults,
		closed:   make(chan struct{}),
		events:   cfg.Events,
		messages: cfg.Messages,
		seed:     maphash.MakeSeed(),
	}
	if g.events == nil {
		g.events = discard{}
	}
	g.srv = mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           brokerCapabilities(),
		Logger:                 slog.New(brokerLogHandler{log.Handler()}),
		SysTopicResendInterval: 24 * 60 * 60, // nobody may subscribe to $SYS
		// Packets larger than the buffer are read in several steps; a small
		// buffer keeps idle connections cheap.
		ClientNetReadBufferSize: 1024,
	})
	ended := func(nc net.Conn) { g.disconnected(nc, "connection closed") }
	g.tls = newTLSListener("mqtts", ln, tlsConf, log, ended)
	g.ws = newWSListener("wss", log, ended)

	if err := g.srv.AddHook(&hook{g: g}, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mqtt gateway: add hook: %w", err)
	}
	for _, l := range []listeners.Listener{g.tls, g.ws} {
		if err := g.srv.AddListener(l); err != nil {
			ln.Close()
			return nil, fmt.Errorf("mqtt gateway: add listener %s: %w", l.ID(), err)
		}
	}
	if err := g.srv.Serve(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mqtt gateway: start broker: %w", err)
	}
	// The broker starts its listeners on goroutines of its own; WebSocket
	// upgrades may arrive as soon as Start returns.
	g.ws.set.serve(g.srv.EstablishConnection)
	g.cancelEvents = cfg.Hub.Subscribe(hub.Events{Desired: g.deliverDesired, Revoked: g.revoke})
	log.Info("MQTT gateway listening", "addr", ln.Addr().String(), "websocket", WebSocketPath)
	return g, nil
}

// brokerCapabilities are the broker settings IoT Hub's dialect needs,
// sized so that idle connections stay small.
func brokerCapabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumQos = 1                   // QoS 2 subscriptions are granted QoS 1
	c.MinimumProtocolVersion = 4       // MQTT 3.1.1
	c.MaximumClientWritesPending = 256 // per-connection queue of outgoing packets
	c.MaximumPacketSize = 512 << 10    // telemetry is at most 256 KiB
	c.SharedSubAvailable = 0
	c.WildcardSubAvailable = 1
	c.RetainAvailable = 1 // accepted and ignored: nothing is routed between clients
	return c
}

// Addr is the address of the MQTT-over-TLS listener.
func (g *Gateway) Addr() net.Addr { return g.tls.ln.Addr() }

// ServeHTTP accepts MQTT over WebSockets (subprotocol "mqtt").
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.ws.ServeHTTP(w, r) }

// Close stops taking the hub's changes, closes the listeners and every
// connection, and waits for them to end. The hub must stay usable until
// Close returns (disconnections are recorded in it).
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		close(g.closed)
		g.cancelEvents()
		_ = g.srv.Close()
	})
	return nil
}

func (g *Gateway) stripe(id hub.IdentityRef) *sync.Mutex {
	h := maphash.String(g.seed, id.DeviceID) ^ maphash.String(g.seed, id.ModuleID)
	return &g.stripes[h%uint64(len(g.stripes))]
}

// connOf returns the gateway's state of an authenticated client.
func (g *Gateway) connOf(cl *mqtt.Client) *conn {
	if cl.Net.Conn == nil {
		return nil // the broker's inline client
	}
	if v, ok := g.conns.Load(cl.Net.Conn); ok {
		return v.(*conn)
	}
	return nil
}

// connected makes c its identity's live connection and arms the token
// expiry. It closes c and returns false when the identity was deleted or
// disabled since it authenticated.
func (g *Gateway) connected(c *conn, tokenExpiry time.Time) bool {
	now := time.Now()
	mu := g.stripe(c.id)
	mu.Lock()
	g.conns.Store(c.cl.Net.Conn, c)
	if old, ok := g.live.Swap(c.id, c); ok {
		old.(*conn).live.Store(false)
		// Its calls in flight end now: the broker may already have moved
		// its subscriptions to c, which never got those requests.
		g.detachMethods(old.(*conn))
	}
	c.live.Store(true)
	err := g.hub.SetConnectionState(c.id, true, now)
	mu.Unlock()

	cl := c.cl
	if err != nil {
		// Deleted or disabled since it authenticated: a revocation
		// committed before the connection became live found nothing to
		// close.
		cause := errDisabled
		if hub.StatusOf(err) == http.StatusNotFound {
			cause = errDeleted
		}
		g.log.Info("closing MQTT connection", "identity", c.id.String(), "reason", cause)
		cl.Stop(cause)
		return false
	}
	c.expiry = time.AfterFunc(tokenExpiry.Sub(now), func() {
		g.log.Info("closing MQTT connection: its SAS token expired", "identity", c.id.String())
		cl.Stop(errTokenExpired)
	})
	return true
}

type discard struct{}

func (discard) Publish(events.Event) {}

// Why the gateway closes a connection.
var (
	errTokenExpired = errors.New("SAS token expired")
	errDeleted      = errors.New("identity deleted")
	errDisabled     = errors.New("device disabled")
)

// disconnected forgets the connection nc; if it was its identity's live
// connection, the identity is now disconnected. The broker reports most
// ends; listeners report every end, which covers a client that goes away
// between authentication and CONNACK.
func (g *Gateway) disconnected(nc net.Conn, reason string) (*conn, bool) {
	v, ok := g.conns.LoadAndDelete(nc)
	if !ok {
		return nil, false
	}
	c := v.(*conn)
	defer close(c.gone)
	g.events.Publish(events.Event{Kind: events.Disconnected, DeviceID: c.id.DeviceID, ModuleID: c.id.ModuleID,
		Connection: &events.Connection{Transport: c.cl.Net.Listener, Remote: c.cl.Net.Remote, Reason: reason}})
	if c.expiry != nil {
		c.expiry.Stop()
	}
	g.detachMethods(c)
	mu := g.stripe(c.id)
	mu.Lock()
	defer mu.Unlock()
	if !g.live.CompareAndDelete(c.id, c) {
		return c, false
	}
	c.live.Store(false)
	_ = g.hub.SetConnectionState(c.id, false, time.Now()) // fails only for a deleted identity
	return c, true
}

// revoke closes the live connection of an identity that may no longer
// connect, as the real hub does when an identity is deleted or its device
// disabled.
func (g *Gateway) revoke(r hub.Revocation) {
	v, ok := g.live.Load(r.Identity)
	if !ok {
		return
	}
	cause := errDisabled
	if r.Deleted {
		cause = errDeleted
	}
	g.log.Info("closing MQTT connection", "identity", r.Identity.String(), "reason", cause)
	// Closing a TLS connection may wait for the peer; this runs on the
	// hub's committing goroutine.
	go v.(*conn).cl.Stop(cause)
}

// deliverDesired pushes a committed desired change to its identity's live
// connection, if there is one and it subscribed to desired patches. It
// runs on the committing goroutine: the broker only queues the packet.
func (g *Gateway) deliverDesired(p hub.DesiredPatch) {
	v, ok := g.live.Load(p.Identity)
	if !ok {
		return // not queued for a disconnected identity, as the real hub
	}
	c := v.(*conn)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.acked {
		c.pending = append(c.pending, p)
		return
	}
	g.publishDesired(c, p)
}

// acknowledged runs once c's CONNACK is out: held patches go out in order,
// and later ones directly.
func (g *Gateway) acknowledged(c *conn) {
	c.mu.Lock()
	for _, p := range c.pending {
		g.publishDesired(c, p)
	}
	c.pending, c.acked = nil, true
	c.mu.Unlock()
	if g.subscribedToMethods(c) {
		g.attachMethods(c)
	}
}

func (g *Gateway) publishDesired(c *conn, p hub.DesiredPatch) {
	if g.pushedByPlan(p, func() { g.sendDesired(c, p) }) {
		return
	}
	g.sendDesired(c, p)
}

func (g *Gateway) sendDesired(c *conn, p hub.DesiredPatch) {
	topic := c.prefix + topics.DesiredPatch(p.Version)
	if err := g.srv.Publish(topic, p.Body, false, 1); err != nil {
		g.log.Debug("desired patch not delivered", "identity", p.Identity.String(), "version", p.Version, "error", err)
	}
}

// respond sends a twin response to c, if c subscribed to twin responses.
// version, when not 0, is the reported $version after a reported PATCH.
func (g *Gateway) respond(c *conn, status int, rid string, version int64, body []byte) {
	topic := c.prefix + topics.TwinResponse(status, rid, version)
	if err := g.srv.Publish(topic, body, false, 1); err != nil {
		g.log.Debug("twin response not delivered", "identity", c.id.String(), "status", status, "error", err)
	}
}
