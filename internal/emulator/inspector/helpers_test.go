package inspector_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/mqttgw"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// hangGuard bounds waits for what the emulator signals.
const hangGuard = time.Minute

// env is an emulator with its web inspector, reached over REST and MQTT.
type env struct {
	em      *emulator.Emulator
	tls     *tls.Config
	rest    *http.Client
	service *sas.Signer
	svcHost string
	keys    map[string]string // primary keys by identity
}

func start(t *testing.T) *env {
	t.Helper()
	em, err := emulator.Start(context.Background(), emulator.Config{InMemory: true, InspectorAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { em.Close() })
	pem, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cs, err := connstr.Parse(em.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{RootCAs: roots, ServerName: em.HostName()}
	rest := &http.Client{Transport: &http.Transport{TLSClientConfig: conf.Clone()}, Timeout: hangGuard}
	t.Cleanup(rest.CloseIdleConnections)
	return &env{em: em, tls: conf, rest: rest, service: signer, svcHost: cs.HostName, keys: map[string]string{}}
}

func (e *env) call(t *testing.T, method, path, ifMatch, body string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+e.em.HTTPSAddr()+path+"?api-version="+iothub.APIVersion, strings.NewReader(body))
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
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return b
}

// createModule creates a device and a module over REST.
func (e *env) createModule(t *testing.T, deviceID, moduleID string) {
	t.Helper()
	var d iothub.Device
	_ = json.Unmarshal(e.call(t, http.MethodPut, "/devices/"+deviceID, "", `{"deviceId":"`+deviceID+`"}`), &d)
	e.keys[deviceID] = d.Authentication.SymmetricKey.PrimaryKey
	var m iothub.Module
	_ = json.Unmarshal(e.call(t, http.MethodPut, "/devices/"+deviceID+"/modules/"+moduleID, "", `{"deviceId":"`+deviceID+`","moduleId":"`+moduleID+`"}`), &m)
	e.keys[deviceID+"/"+moduleID] = m.Authentication.SymmetricKey.PrimaryKey
}

func (e *env) patchDesired(t *testing.T, deviceID, moduleID, desired string) {
	t.Helper()
	e.call(t, http.MethodPatch, "/twins/"+deviceID+"/modules/"+moduleID, `"*"`, `{"properties":{"desired":`+desired+`}}`)
}

func (e *env) twin(t *testing.T, deviceID, moduleID string) iothub.Twin {
	t.Helper()
	var tw iothub.Twin
	if err := json.Unmarshal(e.call(t, http.MethodGet, "/twins/"+deviceID+"/modules/"+moduleID, "", ""), &tw); err != nil {
		t.Fatal(err)
	}
	return tw
}

func (e *env) desired(t *testing.T, deviceID, moduleID string) map[string]any {
	t.Helper()
	var tw struct {
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(e.call(t, http.MethodGet, "/twins/"+deviceID+"/modules/"+moduleID, "", ""), &tw); err != nil {
		t.Fatal(err)
	}
	return tw.Properties.Desired
}

func (e *env) twinETag(t *testing.T, deviceID, moduleID string) string {
	t.Helper()
	return e.twin(t, deviceID, moduleID).ETag
}

// receiver runs the twin client receive-twin-patch is built on, as the module.
type receiver struct {
	c      *twinclient.Client
	events chan twinclient.Event
	done   chan error
}

func (e *env) receiver(t *testing.T, deviceID, moduleID string) *receiver {
	t.Helper()
	cs := connstr.ConnectionString{HostName: e.svcHost, DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: e.keys[deviceID+"/"+moduleID]}
	c, err := twinclient.New(cs, twinclient.WithTLSConfig(e.tls.Clone()), twinclient.WithMQTTAddr(e.em.MQTTAddr()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &receiver{c: c, events: make(chan twinclient.Event, 100), done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx, func(ev twinclient.Event) { r.events <- ev }) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *receiver) next(t *testing.T) twinclient.Event {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case err := <-r.done:
		t.Fatalf("twin client stopped: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("the twin client got nothing")
	}
	return twinclient.Event{}
}

// dial connects an identity with paho, over WebSockets or TLS.
func (e *env) dial(t *testing.T, deviceID, moduleID string, websocket bool) paho.Client {
	t.Helper()
	clientID, res := deviceID, sas.DeviceResource(e.em.HostName(), deviceID)
	if moduleID != "" {
		clientID, res = deviceID+"/"+moduleID, sas.ModuleResource(e.em.HostName(), deviceID, moduleID)
	}
	s, err := sas.NewSigner("", e.keys[clientID])
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(res, time.Hour)
	broker := "tls://" + e.em.MQTTAddr()
	if websocket {
		broker = "wss://" + e.em.HTTPSAddr() + mqttgw.WebSocketPath
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetUsername(e.em.HostName() + "/" + clientID + "/?api-version=" + iothub.APIVersion).SetPassword(tok).
		SetTLSConfig(e.tls.Clone()).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(hangGuard))
	if tk := c.Connect(); !tk.WaitTimeout(hangGuard) || tk.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tk.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}
