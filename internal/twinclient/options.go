package twinclient

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Transport is how the client reaches the hub.
type Transport int

const (
	// TransportTLS is MQTT over TLS, by default to port 8883.
	TransportTLS Transport = iota
	// TransportWebSocket is MQTT over a secure WebSocket at
	// wss://host[:port]/$iothub/websocket (port 443 unless HostName has one).
	TransportWebSocket
)

func (t Transport) String() string {
	if t == TransportWebSocket {
		return "websocket"
	}
	return "tls"
}

// Defaults.
const (
	DefaultSASTTL         = time.Hour
	DefaultKeepAlive      = 60 * time.Second
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultDialTimeout    = 30 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultResyncGrace    = 300 * time.Millisecond
	DefaultUserAgent      = "iothub-module-twin"
	MQTTPort              = "8883"
	WebSocketPath         = "/$iothub/websocket"
	// RenewAt is the share of a token's lifetime after which the client
	// reconnects with a fresh one.
	RenewAt = 0.8
)

type config struct {
	tls            *tls.Config
	transport      Transport
	mqttAddr       string
	ttl            time.Duration
	keepAlive      time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	dialTimeout    time.Duration
	requestTimeout time.Duration
	gapGrace       time.Duration
	userAgent      string
	proxy          func(*http.Request) (*url.URL, error)
	log            *slog.Logger
}

func defaultConfig() config {
	return config{
		tls:            &tls.Config{MinVersion: tls.VersionTLS12},
		ttl:            DefaultSASTTL,
		keepAlive:      DefaultKeepAlive,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		dialTimeout:    DefaultDialTimeout,
		requestTimeout: DefaultRequestTimeout,
		gapGrace:       DefaultResyncGrace,
		userAgent:      DefaultUserAgent,
		proxy:          http.ProxyFromEnvironment,
		log:            slog.New(slog.DiscardHandler),
	}
}

// Option configures a Client.
type Option func(*config)

// WithTLSConfig sets the TLS configuration (trusted roots, minimum
// version). The server name is taken from the address dialled when the
// configuration leaves it empty.
func WithTLSConfig(c *tls.Config) Option { return func(o *config) { o.tls = c } }

// WithTransport selects MQTT over TLS (default) or over WebSockets.
func WithTransport(t Transport) Option { return func(o *config) { o.transport = t } }

// WithMQTTAddr makes the TLS transport dial host:port instead of the hub's
// (or gateway's) host on port 8883; the username and token keep the hub's
// host name. The local emulator listens for MQTT on its own port.
func WithMQTTAddr(hostPort string) Option { return func(o *config) { o.mqttAddr = hostPort } }

// WithSASTTL sets the lifetime of each SAS token; the client reconnects
// with a fresh token after RenewAt of it.
func WithSASTTL(d time.Duration) Option { return func(o *config) { o.ttl = d } }

// WithBackoff sets the first and the longest wait between reconnection
// attempts; waits double in between, with jitter.
func WithBackoff(first, longest time.Duration) Option {
	return func(o *config) { o.minBackoff, o.maxBackoff = first, longest }
}

// WithUserAgent sets the DeviceClientType the client announces.
func WithUserAgent(ua string) Option { return func(o *config) { o.userAgent = ua } }

// WithProxy sets how the WebSocket transport picks an HTTP proxy; the
// default is http.ProxyFromEnvironment (HTTPS_PROXY, NO_PROXY).
func WithProxy(p func(*http.Request) (*url.URL, error)) Option {
	return func(o *config) { o.proxy = p }
}

// WithLogger sets where the client reports connection changes: one Info
// record per disconnection, failed attempt and reconnection, Debug records
// for token renewals and retried requests.
func WithLogger(l *slog.Logger) Option { return func(o *config) { o.log = l } }

// WithResyncGrace sets how long the client waits for patches still in
// flight before it reports the twin read after a reconnection as a resync,
// and before it reads the twin when a patch version is missing.
func WithResyncGrace(d time.Duration) Option { return func(o *config) { o.gapGrace = d } }
