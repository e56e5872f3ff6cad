package twinclient

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// fakeHub is a minimal IoT hub for one module, on the embedded mochi
// broker: SAS-checked CONNECT (with the hub dropping a connection when its
// token expires), twin GET, reported PATCH and desired pushes, over TLS
// and WebSockets. Like the real hub it pushes patches only to a connected
// client, and a connection that replaces the client's live one (a token
// renewal) takes its session over without losing a push.
type fakeHub struct {
	t              *testing.T
	host           string // the hub's host name in usernames and tokens
	device, module string
	key            string // base64
	srv            *mochi.Server
	tlsAddr        string // MQTT over TLS listener
	wsAddr         string // HTTPS listener with /$iothub/websocket
	clientTLS      *tls.Config
	proxied        chan string // CONNECT targets seen by the test proxy

	// pushMu orders pushes with connections that take the session over.
	// While mochi moves the session to a new connection it routes a
	// publish to the old one after copying its messages (the push is
	// lost), or to the new one before its CONNACK (the client refuses the
	// connection), so pushes wait until the new connection is established.
	pushMu sync.Mutex

	mu              sync.Mutex
	joining         map[*mochi.Client]bool // connections taking the session over, until established
	desired         map[string]json.RawMessage
	version         int64
	reported        map[string]json.RawMessage
	reportedVersion int64
	connected       *mochi.Client // the current session's connection
	gate            chan struct{} // when set, CONNECT waits until it is closed
	connects        int           // accepted CONNECTs
	refused         int           // refused CONNECTs
	expiredDrops    int           // connections dropped because their token expired
	refuseSubs      int           // SUBSCRIBEs to desired patches still to refuse
	usernames       []string
	expiry          map[*mochi.Client]*time.Timer
	events          chan string // "connected", "disconnected", "subscribed"
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	h := &fakeHub{
		t:        t,
		host:     "hub.test",
		device:   "d1",
		module:   "m1",
		key:      base64.StdEncoding.EncodeToString(key),
		desired:  map[string]json.RawMessage{},
		version:  1,
		reported: map[string]json.RawMessage{},
		expiry:   map[*mochi.Client]*time.Timer{},
		joining:  map[*mochi.Client]bool{},
		events:   make(chan string, 1024),
		proxied:  make(chan string, 16),
	}
	serverTLS, clientTLS := testCerts(t)
	h.clientTLS = clientTLS

	h.srv = mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := h.srv.AddHook(&fakeHubHook{h: h}, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	h.tlsAddr = ln.Addr().String()
	if err := h.srv.AddListener(listeners.NewNet("tls", ln)); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Serve(); err != nil {
		t.Fatal(err)
	}

	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	ws := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != WebSocketPath {
			http.NotFound(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = h.srv.EstablishConnection("ws", &wsConn{Conn: c})
	}))
	ws.TLS = serverTLS
	ws.StartTLS()
	h.wsAddr = ws.Listener.Addr().String()

	t.Cleanup(func() {
		h.openGate()
		h.srv.Close()
		ws.Close()
		h.mu.Lock()
		for _, tm := range h.expiry {
			tm.Stop()
		}
		h.mu.Unlock()
	})
	return h
}

// connString is the module's connection string, naming the hub by host.
func (h *fakeHub) connString() connstr.ConnectionString {
	return connstr.ConnectionString{HostName: h.host, DeviceID: h.device, ModuleID: h.module, SharedAccessKey: h.key}
}

func (h *fakeHub) clientID() string { return h.device + "/" + h.module }

// waitFor waits for the named event.
func (h *fakeHub) waitFor(what string) {
	h.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-h.events:
			if ev == what {
				return
			}
		case <-timeout:
			h.t.Fatalf("fake hub: no %q event within 10s", what)
		}
	}
}

// patchDesired merges patch into the desired properties and pushes it to
// the connected client, as the hub does.
func (h *fakeHub) patchDesired(patch string) int64 {
	h.t.Helper()
	var p map[string]json.RawMessage
	if err := json.Unmarshal([]byte(patch), &p); err != nil {
		h.t.Fatalf("patch %s: %v", patch, err)
	}
	h.pushMu.Lock()
	defer h.pushMu.Unlock()
	h.awaitHandOver()
	h.mu.Lock()
	for k, v := range p {
		if string(v) == "null" {
			delete(h.desired, k)
		} else {
			h.desired[k] = v
		}
	}
	h.version++
	v := h.version
	push := h.connected != nil
	h.mu.Unlock()
	if push {
		h.publish(v, p)
	}
	return v
}

// push publishes a desired notification with version v.
func (h *fakeHub) push(v int64, p map[string]json.RawMessage) {
	h.t.Helper()
	h.pushMu.Lock()
	defer h.pushMu.Unlock()
	h.awaitHandOver()
	h.publish(v, p)
}

// awaitHandOver waits until no connection is taking the session over: each
// is established, or has failed and closed. The caller holds pushMu, so no
// new one starts meanwhile.
func (h *fakeHub) awaitHandOver() {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		for cl := range h.joining {
			if cl.Closed() {
				delete(h.joining, cl)
			}
		}
		busy := len(h.joining) > 0
		h.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("fake hub: a connection took 10s to take the session over")
			return
		}
	}
}

func (h *fakeHub) publish(v int64, p map[string]json.RawMessage) {
	h.t.Helper()
	body := map[string]json.RawMessage{"$version": json.RawMessage(fmt.Sprint(v))}
	for k, x := range p {
		body[k] = x
	}
	b, _ := json.Marshal(body)
	if err := h.srv.Publish(fmt.Sprintf("%s?$version=%d", topicDesired, v), b, false, 1); err != nil {
		h.t.Errorf("push patch: %v", err)
	}
}

// recreate replaces the twin as if the module were deleted and created
// again with the same key: desired starts over at version 1.
func (h *fakeHub) recreate(desired string) {
	// The old identity's session goes with it.
	if cl, ok := h.srv.Clients.Get(h.clientID()); ok {
		h.srv.UnsubscribeClient(cl)
		cl.ClearInflights()
		h.srv.Clients.Delete(cl.ID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.desired = map[string]json.RawMessage{}
	_ = json.Unmarshal([]byte(desired), &h.desired)
	h.version = 1
}

// drop closes the client's connection; with a gate set, it cannot come back
// until the gate is opened.
func (h *fakeHub) drop(gate bool) {
	h.mu.Lock()
	cl := h.connected
	if gate {
		h.gate = make(chan struct{})
	}
	h.mu.Unlock()
	if cl == nil {
		h.t.Fatal("fake hub: no client to drop")
	}
	cl.Stop(errors.New("dropped by the test"))
	h.waitFor("disconnected")
}

func (h *fakeHub) openGate() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

func (h *fakeHub) counts() (connects, refused, expiredDrops int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connects, h.refused, h.expiredDrops
}

func (h *fakeHub) reportedDoc() map[string]json.RawMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]json.RawMessage{}
	for k, v := range h.reported {
		out[k] = v
	}
	return out
}

// authenticate checks a CONNECT as IoT Hub does and returns the token's
// expiry.
func (h *fakeHub) authenticate(clientID, user string, password []byte) (time.Time, error) {
	if clientID != h.clientID() {
		return time.Time{}, fmt.Errorf("client ID %q", clientID)
	}
	wantUser := h.host + "/" + h.clientID() + "/?api-version=" + iothub.APIVersion + "&DeviceClientType="
	if !strings.HasPrefix(user, wantUser) {
		return time.Time{}, fmt.Errorf("username %q does not start with %q", user, wantUser)
	}
	tok, err := sas.ParseToken(string(password))
	if err != nil {
		return time.Time{}, err
	}
	key, _ := base64.StdEncoding.DecodeString(h.key)
	switch {
	case !tok.Verify(key):
		return time.Time{}, errors.New("bad signature")
	case tok.Resource != sas.ModuleResource(h.host, h.device, h.module):
		return time.Time{}, fmt.Errorf("token scope %q", tok.Resource)
	case tok.Expired(time.Now()):
		return time.Time{}, errors.New("token expired")
	case tok.KeyName != "":
		return time.Time{}, errors.New("identity token with skn")
	}
	return tok.Expiry, nil
}

type fakeHubHook struct {
	mochi.HookBase
	h *fakeHub
}

func (k *fakeHubHook) ID() string { return "fake-iothub" }

func (k *fakeHubHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablish, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnSubscribed, mochi.OnPublish,
	}, []byte{b})
}

func (k *fakeHubHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	h := k.h
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	exp, err := h.authenticate(cl.ID, string(pk.Connect.Username), pk.Connect.Password)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.usernames = append(h.usernames, string(pk.Connect.Username))
	if err != nil {
		h.refused++
		h.t.Logf("fake hub: refused CONNECT: %v", err)
		return false
	}
	if pk.Connect.Clean {
		h.t.Errorf("fake hub: CONNECT with clean session; IoT Hub clients keep their session")
	}
	h.connects++
	h.expiry[cl] = time.AfterFunc(time.Until(exp), func() {
		h.mu.Lock()
		_, tracked := h.expiry[cl]
		delete(h.expiry, cl)
		// A connection that failed before mochi served it never reaches
		// OnDisconnect; it is closed already and counts for nothing.
		live := tracked && !cl.Closed()
		if live {
			h.expiredDrops++
		}
		h.mu.Unlock()
		if live {
			cl.Stop(errors.New("token expired"))
		}
	})
	return true
}

func (k *fakeHubHook) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	h := k.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !write && topic == filterDesired && h.refuseSubs > 0 {
		h.refuseSubs--
		return false
	}
	return true
}

// OnSessionEstablish runs before mochi moves the session to cl.
func (k *fakeHubHook) OnSessionEstablish(cl *mochi.Client, _ packets.Packet) {
	h := k.h
	h.pushMu.Lock()
	defer h.pushMu.Unlock()
	h.mu.Lock()
	h.joining[cl] = true
	h.mu.Unlock()
}

// OnSessionEstablished runs once publishes are routed to cl.
func (k *fakeHubHook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	k.h.mu.Lock()
	delete(k.h.joining, cl)
	k.h.connected = cl
	k.h.mu.Unlock()
	k.h.events <- "connected"
}

func (k *fakeHubHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h := k.h
	h.mu.Lock()
	if tm, ok := h.expiry[cl]; ok {
		tm.Stop()
		delete(h.expiry, cl)
	}
	if h.connected == cl {
		h.connected = nil
	}
	h.mu.Unlock()
	h.events <- "disconnected"
}

func (k *fakeHubHook) OnSubscribed(*mochi.Client, packets.Packet, []byte) {
	k.h.events <- "subscribed"
}

// OnPublish answers twin requests and swallows everything the client sends.
func (k *fakeHubHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the hub's own replies and pushes
	}
	h := k.h
	topic := pk.TopicName
	_, query, _ := strings.Cut(topic, "?")
	q, _ := url.ParseQuery(query)
	rid := q.Get("$rid")
	switch {
	case strings.HasPrefix(topic, "$iothub/twin/GET/"):
		h.mu.Lock()
		desired := map[string]json.RawMessage{"$version": json.RawMessage(fmt.Sprint(h.version))}
		for k, v := range h.desired {
			desired[k] = v
		}
		reported := map[string]json.RawMessage{"$version": json.RawMessage(fmt.Sprint(h.reportedVersion))}
		h.mu.Unlock()
		body, _ := json.Marshal(map[string]any{"desired": desired, "reported": reported})
		h.reply(fmt.Sprintf("%s200/?$rid=%s", topicResponses, rid), body)
	case strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/reported/"):
		var p map[string]json.RawMessage
		if err := json.Unmarshal(pk.Payload, &p); err != nil {
			h.reply(fmt.Sprintf("%s400/?$rid=%s", topicResponses, rid), []byte(`{"errorCode":400004,"message":"not a JSON object"}`))
			break
		}
		h.mu.Lock()
		for k, v := range p {
			h.reported[k] = v
		}
		h.reportedVersion++
		v := h.reportedVersion
		h.mu.Unlock()
		h.reply(fmt.Sprintf("%s204/?$rid=%s&$version=%d", topicResponses, rid, v), nil)
	default:
		h.t.Errorf("fake hub: unexpected publish to %q", topic)
	}
	return pk, packets.ErrRejectPacket
}

func (h *fakeHub) reply(topic string, body []byte) {
	if err := h.srv.Publish(topic, body, false, 0); err != nil {
		h.t.Errorf("fake hub: reply: %v", err)
	}
}

// testCerts makes a CA and a server certificate for 127.0.0.1 and
// localhost, and the client configuration that trusts only that CA.
func testCerts(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "twinclient test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}},
		MinVersion:   tls.VersionTLS12,
	}
	return server, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
