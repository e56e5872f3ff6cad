// Package twinclient is a device or module twin client for IoT Hub's MQTT
// dialect. It delivers desired-property changes in $version order and never
// silently misses one: it reads the whole twin after every (re)connection
// and reports what changed meanwhile as a resync, holds back out-of-order
// patches, drops duplicates, and notices when the twin was deleted and
// created again. It renews its SAS token before expiry with a fresh
// connection that is up before the old one goes, and reconnects forever
// with backoff unless the hub refuses the credentials.
package twinclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// ErrClosed is returned by UpdateReported once Run has returned.
var ErrClosed = errors.New("twin client is closed")

// handOverTimeout bounds how long paho waits to hand a packet to its
// sender; on a live connection that takes microseconds.
const handOverTimeout = 5 * time.Second

// errSessionLost means a request's connection went down before its answer.
var errSessionLost = errors.New("connection lost before the hub answered")

// Client is a twin client for one device or module identity. Create it with
// New, then call Run once; UpdateReported may be called while Run runs.
//
// Who owns what: the fields up to addr are fixed by New. live and up are
// written only by maintain (session.go), under mu; waiters is written by
// request and read by onMessage (request.go), under mu. The tracker and
// its timers belong to dispatch alone (dispatch.go), which publishes the
// delivered version in floor for the fetcher.
type Client struct {
	cfg      config
	signer   *sas.Signer
	resource string // token scope
	user     string // MQTT username
	clientID string
	target   string // host:port for TLS, wss:// URL for WebSockets
	broker   string // URL handed to paho
	addr     string // what messages call the hub: host:port

	rid atomic.Uint64

	mu      sync.Mutex
	waiters map[string]chan reply // open requests by $rid
	live    *session              // the connection requests go to; nil while down
	up      chan struct{}         // closed while live != nil

	in      chan input    // patches and snapshots, to the dispatcher
	getReq  chan struct{} // asks the fetcher for a twin GET; holds at most one
	floor   atomic.Int64  // the dispatcher's last delivered version, -1 before any
	stopped chan struct{} // closed when Run starts shutting down
	ran     atomic.Bool
}

type reply struct {
	status  int
	version int64
	body    []byte
	at      time.Time
}

// input is what the dispatcher consumes: a patch, a snapshot, or a bare
// request to verify the state with a GET.
type input struct {
	patch   *Event
	snap    *snapshot
	handled chan struct{} // closed once snap is taken into account
	check   bool
}

// New returns a client for the device or module in cs.
func New(cs connstr.ConnectionString, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cs.Kind() == connstr.Service:
		return nil, errors.New("twin client needs a device or module connection string, not a service one")
	case cs.X509:
		return nil, errors.New("twin client: X.509 authentication is not supported; use a connection string with SharedAccessKey")
	case cfg.ttl <= 0:
		return nil, fmt.Errorf("SAS token lifetime %s is not positive", cfg.ttl)
	}
	// A private copy: an HTTP transport sharing the caller's configuration
	// may add "h2" to its ALPN list, which a WebSocket handshake refuses.
	if cfg.tls == nil {
		cfg.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.tls = cfg.tls.Clone()
	cfg.tls.NextProtos = nil
	signer, err := sas.NewSigner("", cs.SharedAccessKey)
	if err != nil {
		return nil, err
	}
	host := cs.Host()
	c := &Client{
		cfg:      cfg,
		signer:   signer,
		user:     topics.Username(host, topics.ClientID(cs.DeviceID, cs.ModuleID), cfg.userAgent),
		clientID: topics.ClientID(cs.DeviceID, cs.ModuleID),
		waiters:  map[string]chan reply{},
		up:       make(chan struct{}),
		in:       make(chan input, 64),
		getReq:   make(chan struct{}, 1),
		stopped:  make(chan struct{}),
	}
	c.floor.Store(-1)
	if cs.ModuleID != "" {
		c.resource = sas.ModuleResource(host, cs.DeviceID, cs.ModuleID)
	} else {
		c.resource = sas.DeviceResource(host, cs.DeviceID)
	}

	// The gateway, when there is one, is what we dial; the hub's name stays
	// in the username and the token.
	dialHost := cs.HostName
	if cs.GatewayHostName != "" {
		dialHost = cs.GatewayHostName
	}
	switch cfg.transport {
	case TransportWebSocket:
		c.addr = dialHost
		if _, _, err := net.SplitHostPort(dialHost); err != nil {
			c.addr = net.JoinHostPort(dialHost, "443")
		}
		u := url.URL{Scheme: "wss", Host: dialHost, Path: WebSocketPath}
		c.target, c.broker = u.String(), u.String()
	default:
		c.addr = net.JoinHostPort(hostOnly(dialHost), MQTTPort)
		if cfg.mqttAddr != "" {
			if _, _, err := net.SplitHostPort(cfg.mqttAddr); err != nil {
				return nil, fmt.Errorf("MQTT address %q is not host:port", cfg.mqttAddr)
			}
			c.addr = cfg.mqttAddr
		}
		c.target, c.broker = c.addr, "tls://"+c.addr
	}
	return c, nil
}

func hostOnly(hostPort string) string {
	if h, _, err := net.SplitHostPort(hostPort); err == nil {
		return h
	}
	return hostPort
}

// Addr is the address the client dials (host:port), for messages.
func (c *Client) Addr() string { return c.addr }

// Run connects and calls handle with each desired-property event, in
// order, from one goroutine, until ctx is done (it then returns ctx.Err())
// or the hub refuses the connection for good (a *ConnectError, or a
// certificate error). handle may block; the network keeps being served and
// later events wait in memory.
func (c *Client) Run(ctx context.Context, handle func(Event)) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("twin client: Run called twice")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(runCtx, func() { close(c.stopped) })

	q := newQueue()
	var (
		wg      sync.WaitGroup
		stopErr error // why maintain gave up, if it did
	)
	wg.Add(3)
	go func() { defer wg.Done(); c.dispatch(runCtx, q) }()
	go func() { defer wg.Done(); c.fetchTwins(runCtx) }()
	go func() {
		defer wg.Done()
		stopErr = c.maintain(runCtx)
		cancel()
	}()

	for runCtx.Err() == nil {
		select {
		case <-runCtx.Done():
		case <-q.ready:
			for _, ev := range q.take() {
				if runCtx.Err() != nil {
					break
				}
				handle(ev)
			}
		}
	}
	cancel()
	wg.Wait()
	if stopErr != nil {
		return stopErr
	}
	return ctx.Err()
}
