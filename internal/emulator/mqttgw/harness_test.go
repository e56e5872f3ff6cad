package mqttgw_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// waitFor bounds every wait for something the gateway signals.
const waitFor = 10 * time.Second

// env is a hub with its MQTT gateway on loopback.
type env struct {
	hub     *hub.Hub
	host    string
	mqttURL string // tls://127.0.0.1:port
	wsURL   string // wss://127.0.0.1:port/$iothub/websocket
	clientT *tls.Config
	logs    *syncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cert, pool := selfSigned(t)
	h, err := hub.New(hub.Options{HostName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	logs := &syncBuffer{}
	gw, err := mqttgw.Start(mqttgw.Config{
		Hub:       h,
		Addr:      "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(mqttgw.WebSocketPath, gw)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(func() {
		gw.Close()
		srv.Close()
	})
	return &env{
		hub:     h,
		host:    "localhost",
		mqttURL: "tls://" + gw.Addr().String(),
		wsURL:   "wss://" + srv.Listener.Addr().String() + mqttgw.WebSocketPath,
		clientT: &tls.Config{RootCAs: pool, ServerName: "localhost"},
		logs:    logs,
	}
}

// selfSigned makes a certificate for localhost and 127.0.0.1 and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// identity is a registered device or module with its primary key.
type identity struct {
	ref hub.IdentityRef
	key string
}

func (i identity) clientID() string { return i.ref.String() }

func (e *env) resource(r hub.IdentityRef) string {
	if r.IsModule() {
		return sas.ModuleResource(e.host, r.DeviceID, r.ModuleID)
	}
	return sas.DeviceResource(e.host, r.DeviceID)
}

// token signs a SAS token for the identity valid for ttl (negative: already expired).
func (e *env) token(t *testing.T, id identity, ttl time.Duration) string {
	t.Helper()
	s, err := sas.NewSigner("", id.key)
	if err != nil {
		t.Fatal(err)
	}
	return s.TokenAt(e.resource(id.ref), time.Now().Add(ttl))
}

func (e *env) device(t *testing.T, deviceID string) identity {
	t.Helper()
	d, err := e.hub.CreateOrUpdateDevice(deviceID, iothub.Device{}, hub.IfMatch{})
	if err != nil {
		t.Fatalf("create device %s: %v", deviceID, err)
	}
	return identity{ref: hub.IdentityRef{DeviceID: deviceID}, key: d.Authentication.SymmetricKey.PrimaryKey}
}

func (e *env) module(t *testing.T, deviceID, moduleID string) identity {
	t.Helper()
	if _, err := e.hub.GetDevice(deviceID); err != nil {
		e.device(t, deviceID)
	}
	m, err := e.hub.CreateOrUpdateModule(deviceID, moduleID, iothub.Module{}, hub.IfMatch{})
	if err != nil {
		t.Fatalf("create module %s/%s: %v", deviceID, moduleID, err)
	}
	return identity{ref: hub.IdentityRef{DeviceID: deviceID, ModuleID: moduleID}, key: m.Authentication.SymmetricKey.PrimaryKey}
}

// patchDesired changes desired properties the way the service API does.
func (e *env) patchDesired(t *testing.T, id identity, desired string) {
	t.Helper()
	if _, err := e.hub.UpdateTwin(id.ref, []byte(`{"properties":{"desired":`+desired+`}}`), hub.IfMatch{}); err != nil {
		t.Fatalf("patch desired of %s: %v", id.ref, err)
	}
}

// twin returns the full twin as the service API shows it.
func (e *env) twin(t *testing.T, id identity) []byte {
	t.Helper()
	b, err := e.hub.Twin(id.ref)
	if err != nil {
		t.Fatalf("get twin of %s: %v", id.ref, err)
	}
	return b
}

func (e *env) connectionState(t *testing.T, id identity) string {
	t.Helper()
	if id.ref.IsModule() {
		m, err := e.hub.GetModule(id.ref.DeviceID, id.ref.ModuleID)
		if err != nil {
			t.Fatal(err)
		}
		return m.ConnectionState
	}
	d, err := e.hub.GetDevice(id.ref.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	return d.ConnectionState
}

// transport is how a test client reaches the gateway.
type transport string

const (
	overTLS       transport = "tls"
	overWebSocket transport = "websocket"
)

var transports = []transport{overTLS, overWebSocket}

// client is a paho MQTT client whose events arrive on channels.
type client struct {
	paho.Client
	msgs chan paho.Message // messages of no subscription handler
	lost chan error        // connection lost
}

type dialOpts struct {
	username string // default: the current form with api-version
	password string
	clean    bool
}

// newClient builds a client for id; connect it with connect.
func (e *env) newClient(t *testing.T, tr transport, clientID string, o dialOpts) *client {
	t.Helper()
	c := &client{msgs: make(chan paho.Message, 100), lost: make(chan error, 1)}
	broker := e.mqttURL
	if tr == overWebSocket {
		broker = e.wsURL
	}
	username := o.username
	if username == "" {
		username = e.host + "/" + clientID + "/?api-version=2021-04-12&DeviceClientType=paho-test%2F1.0"
	}
	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(clientID).
		SetUsername(username).
		SetPassword(o.password).
		SetTLSConfig(e.clientT.Clone()).
		SetProtocolVersion(4).
		SetCleanSession(o.clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lost <- err })
	c.Client = paho.NewClient(opts)
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(0)
		}
	})
	return c
}

// connect connects and returns the CONNACK return code (0 = accepted).
func (c *client) connect(t *testing.T) byte {
	t.Helper()
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("no CONNACK")
	}
	return tok.(*paho.ConnectToken).ReturnCode()
}

// dial connects id with a fresh one-hour token and fails the test unless
// the gateway accepts it.
func (e *env) dial(t *testing.T, tr transport, id identity) *client {
	t.Helper()
	c := e.newClient(t, tr, id.clientID(), dialOpts{password: e.token(t, id, time.Hour)})
	if rc := c.connect(t); rc != 0 {
		t.Fatalf("connect %s over %s: CONNACK %d, want 0\nlogs:\n%s", id.clientID(), tr, rc, e.logs)
	}
	return c
}

// subscribe subscribes and returns the SUBACK codes by filter.
func (c *client) subscribe(t *testing.T, qos byte, filters ...string) map[string]byte {
	t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = qos
	}
	tok := c.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("no SUBACK")
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return tok.(*paho.SubscribeToken).Result()
}

func (c *client) publish(t *testing.T, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("publish %s: not acknowledged", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// next returns the next message the client receives.
func (c *client) next(t *testing.T) paho.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case err := <-c.lost:
		t.Fatalf("connection lost while waiting for a message: %v", err)
	case <-time.After(waitFor):
		t.Fatal("no message arrived")
	}
	return nil
}

// waitLost waits until the gateway closes the client's connection.
func (c *client) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(waitFor):
		t.Fatal("the connection stayed open")
	}
}

// eventually polls cond until it holds, for state nothing signals.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ = fmt.Sprintf
