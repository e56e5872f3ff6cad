package loadgen

import (
	"bytes"
	"net"
	"time"
)

// fakeConn is a net.Conn that records what is written to it.
type fakeConn struct{ w *bytes.Buffer }

func (c fakeConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c fakeConn) Read([]byte) (int, error)    { return 0, net.ErrClosed }
func (c fakeConn) Close() error                { return nil }

// The rest of net.Conn is never called by the code under test.
func (c fakeConn) LocalAddr() net.Addr              { return nil }
func (c fakeConn) RemoteAddr() net.Addr             { return nil }
func (c fakeConn) SetDeadline(time.Time) error      { return nil }
func (c fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c fakeConn) SetWriteDeadline(time.Time) error { return nil }
