package twinclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// Connection and renewal: one session per MQTT connection, kept up by
// maintain, which reconnects with backoff and renews the token early.

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
