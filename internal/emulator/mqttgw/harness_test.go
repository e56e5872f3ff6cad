package mqttgw_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

// waitFor bounds every wait for something the gateway signals.
const waitFor = 10 * time.Second

// env is an emulator on loopback, reached over REST and MQTT.
type env struct {
	em      *emulator.Emulator
	host    string
	mqttURL string // tls://127.0.0.1:port
	wsURL   string // wss://127.0.0.1:port/$iothub/websocket
	restURL string // https://127.0.0.1:port
	clientT *tls.Config
	rest    *http.Client
	service *sas.Signer
	svcHost string // HostName of the service connection string
	logs    *syncio.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	logs := &syncio.Buffer{}
	em, err := emulator.Start(t.Context(), emulator.Config{
		HTTPSAddr: "127.0.0.1:0",
		MQTTAddr:  "127.0.0.1:0",
		InMemory:  true,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := em.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	pem, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", em.CAFile())
	}
	cs, err := connstr.Parse(em.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	clientT := &tls.Config{RootCAs: roots, ServerName: em.HostName()}
	rest := &http.Client{Transport: &http.Transport{TLSClientConfig: clientT.Clone()}, Timeout: waitFor}
	t.Cleanup(rest.CloseIdleConnections)
	return &env{
		em:      em,
		host:    em.HostName(),
		mqttURL: "tls://" + em.MQTTAddr(),
		wsURL:   "wss://" + em.HTTPSAddr() + mqttgw.WebSocketPath,
		restURL: "https://" + em.HTTPSAddr(),
		clientT: clientT,
		rest:    rest,
		service: signer,
		svcHost: cs.HostName,
		logs:    logs,
	}
}

// call makes a service API request and decodes a JSON answer into out.
func (e *env) call(t *testing.T, method, path, ifMatch string, body any, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.restURL+path+"?api-version="+iothub.APIVersion, rd)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := e.service.Token(sas.ServiceResource(e.svcHost), time.Hour)
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := e.rest.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: answer %q: %v", method, path, b, err)
		}
	}
}

// identity is a registered device or module with its primary key.
type identity struct {
	ref hub.IdentityRef
	key string
}

func (i identity) clientID() string { return i.ref.String() }

// path is the identity's registry path; twinPath its twin's.
func (i identity) path() string {
	if i.ref.IsModule() {
		return "/devices/" + url.PathEscape(i.ref.DeviceID) + "/modules/" + url.PathEscape(i.ref.ModuleID)
	}
	return "/devices/" + url.PathEscape(i.ref.DeviceID)
}

func (i identity) twinPath() string { return "/twins" + strings.TrimPrefix(i.path(), "/devices") }

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

// device registers a device over REST; the hub makes its keys.
func (e *env) device(t *testing.T, deviceID string) identity {
	t.Helper()
	id := identity{ref: hub.IdentityRef{DeviceID: deviceID}}
	var d iothub.Device
	e.call(t, http.MethodPut, id.path(), "", iothub.Device{DeviceID: deviceID}, &d)
	id.key = d.Authentication.SymmetricKey.PrimaryKey
	return id
}

// module registers a module (and its device when needed) over REST.
func (e *env) module(t *testing.T, deviceID, moduleID string) identity {
	t.Helper()
	if _, err := e.em.Hub().GetDevice(deviceID); err != nil {
		e.device(t, deviceID)
	}
	id := identity{ref: hub.IdentityRef{DeviceID: deviceID, ModuleID: moduleID}}
	var m iothub.Module
	e.call(t, http.MethodPut, id.path(), "", iothub.Module{DeviceID: deviceID, ModuleID: moduleID}, &m)
	id.key = m.Authentication.SymmetricKey.PrimaryKey
	return id
}

// deviceKey returns a registered device's primary key.
func (e *env) deviceKey(t *testing.T, deviceID string) string {
	t.Helper()
	var d iothub.Device
	e.call(t, http.MethodGet, "/devices/"+url.PathEscape(deviceID), "", nil, &d)
	return d.Authentication.SymmetricKey.PrimaryKey
}

// patchDesired changes desired properties over REST.
func (e *env) patchDesired(t *testing.T, id identity, desired string) {
	t.Helper()
	body := json.RawMessage(`{"properties":{"desired":` + desired + `}}`)
	e.call(t, http.MethodPatch, id.twinPath(), `"*"`, body, nil)
}

// twin returns the full twin as the service API shows it.
func (e *env) twin(t *testing.T, id identity) []byte {
	t.Helper()
	var raw json.RawMessage
	e.call(t, http.MethodGet, id.twinPath(), "", nil, &raw)
	return raw
}

// registryEntry is what the registry shows about an identity's connection.
type registryEntry struct {
	ConnectionState  string `json:"connectionState"`
	LastActivityTime string `json:"lastActivityTime"`
}

func (e *env) registryEntry(t *testing.T, id identity) registryEntry {
	t.Helper()
	var r registryEntry
	e.call(t, http.MethodGet, id.path(), "", nil, &r)
	return r
}

func (e *env) connectionState(t *testing.T, id identity) string {
	t.Helper()
	return e.registryEntry(t, id).ConnectionState
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
