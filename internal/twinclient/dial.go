package twinclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// dial opens the network connection for one MQTT session: TLS to addr, or
// a WebSocket to wsURL. Cancelling ctx aborts the dial and, later, closes
// the connection, so that an abandoned attempt leaves nothing behind.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var (
		nc  net.Conn
		err error
	)
	switch c.cfg.transport {
	case TransportWebSocket:
		nc, err = dialWebSocket(ctx, c.target, c.cfg.tls, c.cfg.proxy, c.cfg.dialTimeout)
	default:
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: c.cfg.dialTimeout}, Config: c.cfg.tls}
		nc, err = d.DialContext(ctx, "tcp", c.target)
	}
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { nc.Close() })
	return nc, nil
}

func dialWebSocket(ctx context.Context, target string, tlsConf *tls.Config, proxy func(*http.Request) (*url.URL, error), timeout time.Duration) (net.Conn, error) {
	d := websocket.Dialer{
		Proxy:            proxy,
		HandshakeTimeout: timeout,
		TLSClientConfig:  tlsConf,
		Subprotocols:     []string{"mqtt"},
	}
	ws, resp, err := d.DialContext(ctx, target, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket handshake answered HTTP %s: %w", resp.Status, err)
		}
		return nil, err
	}
	return &wsConn{Conn: ws}, nil
}

// wsConn carries MQTT's byte stream in binary WebSocket messages.
type wsConn struct {
	*websocket.Conn
	rmu sync.Mutex
	r   io.Reader // the message being read
	wmu sync.Mutex
}

var _ net.Conn = (*wsConn)(nil)

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetWriteDeadline is serialised with Write: gorilla's Conn keeps the
// deadline in a field its writers read.
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}
