package mqttgw

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectTimeout bounds the TLS handshake and the CONNECT packet; after
// CONNECT the broker applies the client's keep-alive.
const connectTimeout = 30 * time.Second

// connSet tracks a listener's open connections so that closing the
// listener also ends connections still in their handshake, which the
// broker does not know yet.
type connSet struct {
	mu        sync.Mutex
	closed    bool
	establish listeners.EstablishFn
	conns     map[net.Conn]struct{}
}

// add registers c and returns the broker's entry point, or false once
// the listener is closed or before it serves.
func (s *connSet) add(c net.Conn) (listeners.EstablishFn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.establish == nil {
		return nil, false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return s.establish, true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) serve(establish listeners.EstablishFn) {
	s.mu.Lock()
	s.establish = establish
	s.mu.Unlock()
}

// close marks the set closed and closes every connection in it; it
// reports false if it was closed already.
func (s *connSet) close() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	return true
}

// tlsListener feeds the broker MQTT connections over TLS.
type tlsListener struct {
	id    string
	ln    net.Listener
	conf  *tls.Config
	log   *slog.Logger
	ended func(net.Conn) // called when a connection is over
	set   connSet
}

func newTLSListener(id string, ln net.Listener, conf *tls.Config, log *slog.Logger, ended func(net.Conn)) *tlsListener {
	return &tlsListener{id: id, ln: ln, conf: conf, log: log, ended: ended}
}

func (l *tlsListener) ID() string              { return l.id }
func (l *tlsListener) Address() string         { return l.ln.Addr().String() }
func (l *tlsListener) Protocol() string        { return "mqtts" }
func (l *tlsListener) Init(*slog.Logger) error { return nil }
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	_ = l.ln.Close()
	if l.set.close() {
		closeClients(l.id)
	}
}

// Serve accepts connections until the listener closes. The TLS handshake
// runs on each connection's own goroutine.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	l.set.serve(establish)
	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("MQTT listener cannot accept connections", "error", err, "retryIn", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := tls.Server(raw, l.conf)
		establish, ok := l.set.add(c)
		if !ok {
			_ = raw.Close()
			return
		}
		go func() {
			defer l.set.remove(c)
			_ = raw.SetDeadline(time.Now().Add(connectTimeout))
			err := establish(l.id, c)
			l.ended(c)
			l.log.Debug("MQTT connection ended", "remote", raw.RemoteAddr().String(), "reason", errText(err))
		}()
	}
}

// wsListener feeds the broker MQTT connections that arrive as WebSocket
// upgrades on the HTTPS server.
type wsListener struct {
	id       string
	log      *slog.Logger
	ended    func(net.Conn) // called when a connection is over
	upgrader websocket.Upgrader
	set      connSet
}

func newWSListener(id string, log *slog.Logger, ended func(net.Conn)) *wsListener {
	return &wsListener{
		id:    id,
		log:   log,
		ended: ended,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: connectTimeout,
			Subprotocols:     []string{"mqtt"},
			// Devices authenticate with SAS tokens in CONNECT, not with
			// cookies, so a browser origin grants nothing.
			CheckOrigin:     func(*http.Request) bool { return true },
			WriteBufferPool: &sync.Pool{},
		},
	}
}

func (l *wsListener) ID() string                            { return l.id }
func (l *wsListener) Address() string                       { return WebSocketPath }
func (l *wsListener) Protocol() string                      { return "wss" }
func (l *wsListener) Init(*slog.Logger) error               { return nil }
func (l *wsListener) Serve(establish listeners.EstablishFn) { l.set.serve(establish) }
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if l.set.close() {
		closeClients(l.id)
	}
}

// ServeHTTP upgrades the request and serves MQTT on it until the client
// goes away.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.set.mu.Lock()
	ready := !l.set.closed && l.set.establish != nil
	l.set.mu.Unlock()
	if !ready {
		http.Error(w, "MQTT over WebSockets is not available", http.StatusServiceUnavailable)
		return
	}
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		l.log.Debug("WebSocket upgrade failed", "remote", r.RemoteAddr, "error", err)
		return // the upgrader has answered
	}
	c := &wsConn{ws: ws}
	establish, ok := l.set.add(c)
	if !ok {
		_ = c.Close()
		return
	}
	defer l.set.remove(c)
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
	err = establish(l.id, c)
	l.ended(c)
	l.log.Debug("MQTT connection ended", "remote", r.RemoteAddr, "reason", errText(err))
}

// wsConn is a net.Conn over a WebSocket: MQTT bytes travel in binary
// messages, and a packet may span messages or share one.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read
	// The broker sets deadlines from its reading goroutine while another
	// goroutine writes; the WebSocket takes the write deadline unguarded,
	// so it is handed over at the next write.
	writeDeadline atomic.Pointer[time.Time]
}

var errTextMessage = errors.New("websocket: MQTT travels in binary messages, got a text message")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	var deadline time.Time
	if d := c.writeDeadline.Load(); d != nil {
		deadline = *d
	}
	_ = c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { c.writeDeadline.Store(&t); return nil }
func (c *wsConn) SetDeadline(t time.Time) error {
	c.writeDeadline.Store(&t)
	return c.ws.SetReadDeadline(t)
}
