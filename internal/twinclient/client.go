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
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
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

// session is one MQTT connection.
type session struct {
	mc       mqtt.Client
	cancel   context.CancelFunc // closes the network connection
	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error // set before lost is closed
	started  time.Time

	mu      sync.Mutex
	minted  time.Time // when its token was signed
	expires time.Time
}

func (s *session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.lostErr = err
		close(s.lost)
	})
}

func (s *session) close() {
	s.mc.Disconnect(250)
	s.cancel()
	s.markLost(errors.New("closed"))
}

// renewIn is how long until the session's token should be replaced.
func (s *session) renewIn() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	life := s.expires.Sub(s.minted)
	return time.Until(s.minted.Add(time.Duration(float64(life) * RenewAt)))
}

// open connects and subscribes one session.
func (c *Client) open(ctx context.Context) (*session, error) {
	sctx, cancel := context.WithCancel(context.Background())
	s := &session{cancel: cancel, lost: make(chan struct{}), started: time.Now()}
	opts := mqtt.NewClientOptions().
		AddBroker(c.broker).
		SetClientID(c.clientID).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetKeepAlive(c.cfg.keepAlive).
		SetConnectTimeout(c.cfg.dialTimeout).
		SetWriteTimeout(handOverTimeout).
		SetCredentialsProvider(func() (string, string) {
			now := time.Now()
			tok, exp := c.signer.Token(c.resource, c.cfg.ttl)
			s.mu.Lock()
			s.minted, s.expires = now, exp
			s.mu.Unlock()
			return c.user, tok
		}).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return c.dial(sctx) }).
		SetDefaultPublishHandler(c.onMessage).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { s.markLost(err) })
	s.mc = mqtt.NewClient(opts)

	tok := s.mc.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cancel() // closes the socket, so paho gives up at once
		<-tok.Done()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		cancel()
		return nil, c.connectError(tok, err)
	}

	if err := c.subscribe(ctx, s); err != nil {
		s.close()
		return nil, fmt.Errorf("subscribe to twin topics on %s: %w", c.addr, err)
	}
	return s, nil
}

// subscribe asks for twin responses (QoS 0: a lost answer is a timed-out
// request, asked again) and desired patches (QoS 1: acknowledged on the
// connection). A refused filter is asked again a few times: a broker that
// resumes the session may still hold a message under the packet ID the
// new connection's first SUBSCRIBE uses.
func (c *Client) subscribe(ctx context.Context, s *session) error {
	filters := map[string]byte{topics.TwinResponseFilter: 0, topics.DesiredPatchFilter: 1}
	var refused error
	for attempt := 1; attempt <= 3; attempt++ {
		st, err := c.send(ctx, s, func() mqtt.Token { return s.mc.SubscribeMultiple(filters, nil) })
		if err != nil {
			return err
		}
		if err := c.await(ctx, st, s); err != nil {
			return err
		}
		refused = nil
		for filter, code := range st.(*mqtt.SubscribeToken).Result() {
			if code > 2 {
				refused = fmt.Errorf("hub refused the subscription to %s (code %#x)", filter, code)
			}
		}
		if refused == nil {
			return nil
		}
		c.cfg.log.Debug(refused.Error()+"; subscribing again", "addr", c.addr)
		if !sleep(ctx, c.backoff(attempt)) {
			return ctx.Err()
		}
	}
	return refused
}

// send calls a paho method that queues a packet. paho waits up to its write
// timeout for its sender to take the packet, which never happens while the
// connection is going down: the call goes on in the background then, and
// send returns as soon as the session is lost or ctx is done.
func (c *Client) send(ctx context.Context, s *session, queue func() mqtt.Token) (mqtt.Token, error) {
	queued := make(chan mqtt.Token, 1)
	go func() { queued <- queue() }()
	select {
	case tok := <-queued:
		return tok, nil
	case <-s.lost:
		return nil, errSessionLost
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// await waits for a paho token, bounded by the request timeout.
func (c *Client) await(ctx context.Context, tok mqtt.Token, s *session) error {
	timer := time.NewTimer(c.cfg.requestTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-s.lost:
		return errSessionLost
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no answer within %s", c.cfg.requestTimeout)
	}
}

// ConnectError is a CONNECT the hub refused with a return code that
// retrying cannot fix: bad credentials or an unknown identity.
type ConnectError struct {
	Addr     string
	ClientID string
	Code     byte // CONNACK return code
}

func (e *ConnectError) Error() string {
	reason := map[byte]string{
		1: "unacceptable protocol version",
		2: "client identifier rejected",
		4: "bad user name or password",
		5: "not authorized",
	}[e.Code]
	return fmt.Sprintf("hub at %s refused the connection of %s: %s (CONNACK %d)", e.Addr, e.ClientID, reason, e.Code)
}

// Unauthorized reports whether the hub refused the credentials: the key is
// wrong or the identity does not exist.
func (e *ConnectError) Unauthorized() bool { return e.Code == 4 || e.Code == 5 }

func (c *Client) connectError(tok mqtt.Token, err error) error {
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		switch rc := ct.ReturnCode(); rc {
		case 1, 2, 4, 5:
			return &ConnectError{Addr: c.addr, ClientID: c.clientID, Code: rc}
		}
	}
	// paho joins "network Error" with the cause; keep the cause.
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := m.Unwrap(); len(errs) == 2 {
			err = errs[1]
		}
	}
	return fmt.Errorf("connect to %s: %w", c.addr, err)
}

// isFatal reports whether retrying a connection cannot help: the hub refused
// the credentials, or its certificate cannot be trusted.
func isFatal(err error) bool {
	var (
		refused     *ConnectError
		verify      *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
	)
	return errors.As(err, &refused) || errors.As(err, &verify) || errors.As(err, &unknownAuth) ||
		errors.As(err, &hostErr) || errors.As(err, &invalidCert)
}

// maintain keeps one live session until ctx is done, reconnecting after a
// loss and renewing the token ahead of its expiry. It returns nil when ctx
// is done, or the error that made reconnecting pointless.
func (c *Client) maintain(ctx context.Context) error {
	var cur *session
	defer func() {
		if cur != nil {
			c.setDown(cur)
			cur.close()
		}
	}()
	log := c.cfg.log
	failures := 0 // consecutive failed attempts or short-lived sessions
	connected := false
	renew := time.NewTimer(time.Hour)
	renew.Stop()
	defer renew.Stop()
	for {
		if cur == nil {
			s, err := c.open(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if isFatal(err) {
					return err
				}
				failures++
				wait := c.backoff(failures)
				log.Info(fmt.Sprintf("%v; retrying in %s", err, wait.Round(time.Millisecond)), "addr", c.addr, "err", err)
				if !sleep(ctx, wait) {
					return nil
				}
				continue
			}
			cur = s
			c.setLive(s)
			c.requestGet()
			if connected {
				log.Info("reconnected to "+c.addr, "addr", c.addr)
			} else {
				log.Debug("connected to "+c.addr, "addr", c.addr, "client_id", c.clientID)
			}
			connected = true
			renew.Reset(s.renewIn())
		}

		select {
		case <-ctx.Done():
			return nil

		case <-cur.lost:
			c.setDown(cur)
			if time.Since(cur.started) < c.cfg.maxBackoff {
				failures++
			} else {
				failures = 0
			}
			wait := c.backoff(failures)
			reason := "closed by the hub"
			if cur.lostErr != nil {
				reason = cur.lostErr.Error()
			}
			msg := fmt.Sprintf("connection to %s lost (%s); reconnecting", c.addr, reason)
			if wait > 0 {
				msg += " in " + wait.Round(time.Millisecond).String()
			}
			log.Info(msg, "addr", c.addr, "err", cur.lostErr)
			cur.close()
			cur = nil
			renew.Stop()
			if !sleep(ctx, wait) {
				return nil
			}

		case <-renew.C:
			// Connect again with a fresh token before the hub drops the old
			// session; the hub closes the old connection when the new one
			// with the same client ID arrives.
			s, err := c.open(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if isFatal(err) {
					return err
				}
				retry := c.backoff(2)
				log.Debug(fmt.Sprintf("token renewal: %v; keeping the current connection, retrying in %s", err, retry),
					"addr", c.addr, "err", err)
				renew.Reset(retry)
				continue
			}
			old := cur
			cur = s
			c.setLive(s)
			c.requestGet()
			old.close()
			s.mu.Lock()
			exp := s.expires
			s.mu.Unlock()
			log.Debug("renewed the SAS token with a new connection to "+c.addr, "addr", c.addr, "expires", exp)
			renew.Reset(s.renewIn())
		}
	}
}

// backoff is the wait before attempt n+1 after n failures: doubling from
// the first wait up to the longest, each scattered over its upper half.
func (c *Client) backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := c.cfg.minBackoff
	for i := 1; i < n && d < c.cfg.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.maxBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) setLive(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil {
		close(c.up)
	}
	c.live = s
}

func (c *Client) setDown(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == s {
		c.live = nil
		c.up = make(chan struct{})
	}
}

// waitLive returns the live session, waiting for one if needed.
func (c *Client) waitLive(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, up := c.live, c.up
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.stopped:
			return nil, ErrClosed
		}
	}
}

func (c *Client) requestGet() {
	select {
	case c.getReq <- struct{}{}:
	default: // one is already due; it will see the latest state
	}
}

// request publishes a twin request on s and waits for its answer.
func (c *Client) request(ctx context.Context, s *session, topic func(rid string) string, payload []byte) (reply, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	ch := make(chan reply, 1)
	c.mu.Lock()
	c.waiters[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, rid)
		c.mu.Unlock()
	}()

	// QoS 0: the answer is the acknowledgement, and an unanswered request
	// is sent again on the next connection.
	pub, err := c.send(ctx, s, func() mqtt.Token { return s.mc.Publish(topic(rid), 0, false, payload) })
	if err != nil {
		return reply{}, err
	}
	published := pub.Done()
	timer := time.NewTimer(c.cfg.requestTimeout)
	defer timer.Stop()
	for {
		select {
		case r := <-ch:
			return r, nil
		case <-published:
			if pub.Error() != nil {
				return reply{}, errSessionLost
			}
			published = nil
		case <-s.lost:
			return reply{}, errSessionLost
		case <-ctx.Done():
			return reply{}, ctx.Err()
		case <-c.stopped:
			return reply{}, ErrClosed
		case <-timer.C:
			return reply{}, fmt.Errorf("the hub did not answer within %s", c.cfg.requestTimeout)
		}
	}
}

// onMessage runs on a paho goroutine of its own for every message
// (SetOrderMatters(false)); it only parses and hands over.
func (c *Client) onMessage(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	topic := m.Topic()
	switch {
	case strings.HasPrefix(topic, topics.TwinResponsePrefix):
		r, err := topics.ParseTwinResponse(topic)
		if err != nil {
			c.cfg.log.Debug("ignoring a twin response: "+err.Error(), "topic", topic)
			return
		}
		c.mu.Lock()
		ch := c.waiters[r.RID]
		c.mu.Unlock()
		if ch == nil {
			c.cfg.log.Debug("ignoring a twin response to no open request", "topic", topic)
			return
		}
		select {
		case ch <- reply{status: r.Status, version: r.Version, body: m.Payload(), at: now}:
		default: // a duplicate
		}
	case strings.HasPrefix(topic, topics.DesiredPatchPrefix):
		in := c.parsePatch(topic, m.Payload(), now)
		select {
		case c.in <- in:
		case <-c.stopped:
		}
	default:
		c.cfg.log.Debug("ignoring a message on an unexpected topic", "topic", topic)
	}
}

// parsePatch reads a desired-properties notification. One that cannot be
// placed in order asks for a GET instead, which tells what changed.
func (c *Client) parsePatch(topic string, payload []byte, now time.Time) input {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(payload, &doc); err != nil || doc == nil {
		c.cfg.log.Warn("a desired-properties patch is not a JSON object; reading the twin instead", "topic", topic)
		return input{check: true}
	}
	v := iothub.DocVersion(doc)
	if v == 0 {
		v, _ = topics.DesiredPatchVersion(topic)
	}
	if v <= 0 {
		c.cfg.log.Warn("a desired-properties patch has no $version; reading the twin instead", "topic", topic)
		return input{check: true}
	}
	stripHubMembers(doc)
	return input{patch: &Event{Type: EventPatch, Version: v, Desired: doc, Time: now}}
}

func stripHubMembers(doc map[string]json.RawMessage) {
	delete(doc, "$version")
	delete(doc, "$metadata")
}

// parseTwin reads the body of a twin GET response.
func parseTwin(body []byte) (snapshot, error) {
	var twin struct {
		Desired map[string]json.RawMessage `json:"desired"`
	}
	if err := json.Unmarshal(body, &twin); err != nil {
		return snapshot{}, fmt.Errorf("twin document is not valid JSON: %v", err)
	}
	if twin.Desired == nil {
		return snapshot{}, errors.New("twin document has no desired properties")
	}
	v := iothub.DocVersion(twin.Desired)
	stripHubMembers(twin.Desired)
	return snapshot{version: v, desired: twin.Desired}, nil
}

// fetchTwins performs the GETs the connection manager and the dispatcher
// ask for and hands the snapshots to the dispatcher.
func (c *Client) fetchTwins(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.getReq:
		}
		for attempt := 1; ; attempt++ {
			err := c.fetchTwin(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			if errors.Is(err, errSessionLost) {
				continue // on the next connection, without waiting
			}
			wait := c.backoff(attempt)
			c.cfg.log.Debug(fmt.Sprintf("read twin: %v; retrying in %s", err, wait.Round(time.Millisecond)), "err", err)
			if !sleep(ctx, wait) {
				return
			}
		}
	}
}

func (c *Client) fetchTwin(ctx context.Context) error {
	s, err := c.waitLive(ctx)
	if err != nil {
		return err
	}
	floor := c.floor.Load()
	r, err := c.request(ctx, s, topics.TwinGet, []byte{})
	if err != nil {
		return err
	}
	if r.status != 200 {
		return &StatusError{Op: "read twin", Status: r.status, Message: string(r.body)}
	}
	snap, err := parseTwin(r.body)
	if err != nil {
		return err
	}
	snap.floor, snap.time = floor, r.at
	handled := make(chan struct{})
	select {
	case c.in <- input{snap: &snap, handled: handled}:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The next GET's floor must include what this one delivered.
	select {
	case <-handled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dispatch owns the tracker: it orders patches and snapshots into events.
// It asks for a GET when a patch is stale, and when a grace period passes
// with patches still held behind a missing version. A held snapshot is
// reported as a resync once its own grace period, counted from its
// arrival, has passed.
func (c *Client) dispatch(ctx context.Context, q *queue) {
	t := newTracker()
	grace := c.cfg.gapGrace
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		deadline time.Time // when timer fires; zero while it is stopped
		gapSince time.Time // since when patches wait behind a missing version with no snapshot held
	)
	for {
		var handled chan struct{}
		select {
		case <-ctx.Done():
			return
		case in := <-c.in:
			handled = in.handled
			switch {
			case in.patch != nil:
				evs, stale := t.patch(*in.patch)
				q.push(evs)
				if stale {
					c.requestGet()
				}
			case in.snap != nil:
				q.push(t.snapshot(*in.snap))
			case in.check:
				c.requestGet()
			}
		case <-timer.C:
			now := time.Now()
			deadline = time.Time{}
			q.push(t.expire(now.Add(-grace)))
			if _, held := t.heldSince(); !held && t.gap() && !gapSince.After(now.Add(-grace)) {
				c.cfg.log.Debug("a desired-properties version is missing; reading the twin")
				c.requestGet()
				gapSince = now
			}
		}
		c.floor.Store(t.floor())
		if handled != nil {
			close(handled)
		}

		// A held snapshot settles the gap below it when its grace period
		// ends; without one, a gap that lasts a grace period asks for a GET.
		var next time.Time
		if at, held := t.heldSince(); held {
			next = at.Add(grace)
			gapSince = time.Time{}
		} else if t.gap() {
			if gapSince.IsZero() {
				gapSince = time.Now()
			}
			next = gapSince.Add(grace)
		} else {
			gapSince = time.Time{}
		}
		if !next.Equal(deadline) {
			timer.Stop()
			if !next.IsZero() {
				timer.Reset(time.Until(next))
			}
			deadline = next
		}
	}
}

// UpdateReported sends a reported-properties patch (null removes a member)
// and returns the new reported $version. It waits for a connection, sends
// again if the connection drops before the answer, and retries throttling
// and server errors a few times.
func (c *Client) UpdateReported(ctx context.Context, patch []byte) (int64, error) {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		s, err := c.waitLive(ctx)
		if err != nil {
			return 0, fmt.Errorf("update reported properties: %w", err)
		}
		r, err := c.request(ctx, s, topics.ReportedPatch, patch)
		switch {
		case errors.Is(err, errSessionLost):
			continue
		case err != nil:
			return 0, fmt.Errorf("update reported properties: %w", err)
		case r.status >= 200 && r.status < 300:
			return r.version, nil
		case (r.status == 429 || r.status >= 500) && attempt < attempts:
			if !sleep(ctx, c.backoff(attempt)) {
				return 0, fmt.Errorf("update reported properties: %w", ctx.Err())
			}
		default:
			return 0, &StatusError{Op: "update reported properties", Status: r.status, Message: string(r.body)}
		}
	}
}

// StatusError is a twin request the hub answered with an error status.
type StatusError struct {
	Op      string
	Status  int
	Message string // the hub's response body, if any
}

func (e *StatusError) Error() string {
	msg := strings.TrimSpace(e.Message)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		return fmt.Sprintf("%s: hub answered status %d", e.Op, e.Status)
	}
	return fmt.Sprintf("%s: hub answered status %d: %s", e.Op, e.Status, msg)
}

// WritableAck builds the reported-properties patch that acknowledges ev
// under IoT Plug and Play's convention for writable properties: for each
// desired member, {"value": <desired value>, "ac": 200, "av": <$version>}.
// It returns nil when ev has no members.
func WritableAck(ev Event) []byte {
	if len(ev.Desired) == 0 {
		return nil
	}
	type ack struct {
		Value json.RawMessage `json:"value"`
		AC    int             `json:"ac"`
		AV    int64           `json:"av"`
	}
	doc := make(map[string]ack, len(ev.Desired))
	for k, v := range ev.Desired {
		doc[k] = ack{Value: v, AC: 200, AV: ev.Version}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil // values came from parsed JSON, so they marshal
	}
	return b
}

// queue hands events from the dispatcher to Run's handler loop without
// ever blocking the dispatcher.
type queue struct {
	mu    sync.Mutex
	items []Event
	ready chan struct{}
}

func newQueue() *queue { return &queue{ready: make(chan struct{}, 1)} }

func (q *queue) push(evs []Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	q.items = append(q.items, evs...)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *queue) take() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}
