// Package loadgen drives a running IoT hub for the benchmarks: a service
// client that creates identities and patches twins over HTTPS keep-alive,
// and a minimal MQTT 3.1.1 module client small enough to hold ten
// thousand connections in one process.
package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// MQTT control packet types (first byte, upper nibble) used here.
const (
	pktConnect   = 1
	pktConnack   = 2
	pktPublish   = 3
	pktPuback    = 4
	pktSubscribe = 8
	pktSuback    = 9
	pktPingreq   = 12
	pktPingresp  = 13
)

// Module names a module identity and its primary key.
type Module struct {
	DeviceID string
	ModuleID string
	Key      string
}

// Patch is a desired-properties patch as a module received it.
type Patch struct {
	Version int64
	Body    []byte
	At      time.Time // when its PUBLISH packet had been read
}

// ModuleConfig says how modules reach the hub.
type ModuleConfig struct {
	Addr      string      // MQTT-over-TLS address, host:port
	HostName  string      // the hub's host name, as in tokens and user names
	TLS       *tls.Config // trusts the hub's CA
	KeepAlive time.Duration
	TokenTTL  time.Duration
	// AnswerMethods also subscribes to direct methods (QoS 0) and answers
	// every call at once with status 200 and the request's payload.
	AnswerMethods bool
}

// ModuleConn is one module's MQTT connection, subscribed to its desired
// property patches. Received patches go to the function given to
// DialModule, on the connection's reader goroutine.
type ModuleConn struct {
	Module Module
	answer bool
	nc     net.Conn
	r      *bufio.Reader
	wmu    sync.Mutex
	done   chan struct{}
	err    error
}

// DialModule connects m as an IoT Hub module would (clean session off),
// subscribes to desired patches with QoS 1 (and to direct methods with
// QoS 0 when cfg.AnswerMethods), and returns once the subscription is
// acknowledged. onPatch must not block for long.
func DialModule(ctx context.Context, cfg ModuleConfig, m Module, onPatch func(Patch)) (*ModuleConn, error) {
	signer, err := sas.NewSigner("", m.Key)
	if err != nil {
		return nil, err
	}
	ttl := cfg.TokenTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	token, _ := signer.Token(sas.ModuleResource(cfg.HostName, m.DeviceID, m.ModuleID), ttl)

	d := tls.Dialer{Config: cfg.TLS}
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	// Cancelling ctx aborts the handshake, not the connection after it.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := &ModuleConn{Module: m, answer: cfg.AnswerMethods, nc: nc, done: make(chan struct{})}
	if err := c.handshake(cfg, token, onPatch); err != nil {
		nc.Close()
		return nil, err
	}
	go c.read(onPatch)
	return c, nil
}

// handshake sends CONNECT and SUBSCRIBE and waits for their answers.
func (c *ModuleConn) handshake(cfg ModuleConfig, token string, onPatch func(Patch)) error {
	m := c.Module
	clientID := topics.ClientID(m.DeviceID, m.ModuleID)
	user := topics.Username(cfg.HostName, clientID, "iothub-bench-loadgen/1")
	c.r = bufio.NewReaderSize(c.nc, 512)
	if err := c.write(connectPacket(clientID, user, token, uint16(cfg.KeepAlive/time.Second))); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	b0, body, err := readPacket(c.r)
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if b0>>4 != pktConnack || len(body) != 2 {
		return fmt.Errorf("expected CONNACK, got packet type %d", b0>>4)
	}
	if body[1] != 0 {
		return fmt.Errorf("connection refused: CONNACK return code %d", body[1])
	}
	subs := []subscription{{topics.DesiredPatchFilter, 1}}
	if c.answer {
		subs = append(subs, subscription{topics.MethodsFilter, 0})
	}
	if err := c.write(subscribePacket(1, subs...)); err != nil {
		return fmt.Errorf("send SUBSCRIBE: %w", err)
	}
	for {
		b0, body, err = readPacket(c.r)
		if err != nil {
			return fmt.Errorf("read SUBACK: %w", err)
		}
		if b0>>4 == pktSuback {
			break
		}
		// A patch committed meanwhile may come before the SUBACK.
		if b0>>4 == pktPublish {
			if err := c.handlePublish(body, b0, onPatch); err != nil {
				return err
			}
		}
	}
	if len(body) != 2+len(subs) {
		return errors.New("SUBACK does not answer every filter")
	}
	for i, code := range body[2:] {
		if code > 1 {
			return fmt.Errorf("subscription to %s refused", subs[i].filter)
		}
	}
	return nil
}

// read handles incoming packets until the connection ends.
func (c *ModuleConn) read(onPatch func(Patch)) {
	defer close(c.done)
	for {
		b0, body, err := readPacket(c.r)
		if err != nil {
			c.err = err
			return
		}
		switch b0 >> 4 {
		case pktPublish:
			if err := c.handlePublish(body, b0, onPatch); err != nil {
				c.err = err
				c.nc.Close()
				return
			}
		case pktPingresp:
		}
	}
}

func (c *ModuleConn) handlePublish(body []byte, b0 byte, onPatch func(Patch)) error {
	at := time.Now()
	if len(body) < 2 {
		return errors.New("short PUBLISH")
	}
	n := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+n {
		return errors.New("short PUBLISH topic")
	}
	topic := string(body[2 : 2+n])
	rest := body[2+n:]
	if qos := (b0 >> 1) & 3; qos > 0 {
		if len(rest) < 2 {
			return errors.New("short PUBLISH packet identifier")
		}
		if err := c.write([]byte{pktPuback << 4, 2, rest[0], rest[1]}); err != nil {
			return err
		}
		rest = rest[2:]
	}
	if strings.HasPrefix(topic, topics.DesiredPatchPrefix) && onPatch != nil {
		version, _ := topics.DesiredPatchVersion(topic)
		onPatch(Patch{Version: version, Body: rest, At: at})
	}
	if strings.HasPrefix(topic, topics.MethodRequestPrefix) && c.answer {
		rid, ok := topics.RequestID(topic)
		if !ok {
			return fmt.Errorf("method request %q has no $rid", topic)
		}
		return c.write(publishPacket(topics.MethodResponse(200, rid), rest))
	}
	return nil
}

func (c *ModuleConn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(p)
	return err
}

// Ping sends PINGREQ, keeping an idle connection alive.
func (c *ModuleConn) Ping() error { return c.write([]byte{pktPingreq << 4, 0}) }

// Close ends the connection (without DISCONNECT, as a lost client would)
// and waits for its reader.
func (c *ModuleConn) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended.
func (c *ModuleConn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended, once Done is closed.
func (c *ModuleConn) Err() error { return c.err }

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func connectPacket(clientID, user, password string, keepAlive uint16) []byte {
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4)         // protocol level: 3.1.1
	v = append(v, 0x80|0x40) // user name and password; clean session off
	v = binary.BigEndian.AppendUint16(v, keepAlive)
	v = appendString(v, clientID)
	v = appendString(v, user)
	v = appendString(v, password)
	p := appendRemainingLength([]byte{pktConnect << 4}, len(v))
	return append(p, v...)
}

type subscription struct {
	filter string
	qos    byte
}

func subscribePacket(id uint16, subs ...subscription) []byte {
	var v []byte
	v = binary.BigEndian.AppendUint16(v, id)
	for _, s := range subs {
		v = appendString(v, s.filter)
		v = append(v, s.qos)
	}
	p := appendRemainingLength([]byte{pktSubscribe<<4 | 2}, len(v))
	return append(p, v...)
}

// publishPacket is a QoS 0 PUBLISH.
func publishPacket(topic string, payload []byte) []byte {
	v := appendString(nil, topic)
	v = append(v, payload...)
	p := appendRemainingLength([]byte{pktPublish << 4}, len(v))
	return append(p, v...)
}

// readPacket reads one packet and returns its first byte (type and flags)
// and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	b0, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return b0, body, nil
}
