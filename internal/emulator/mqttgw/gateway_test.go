package mqttgw_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

const (
	resFilter     = "$iothub/twin/res/#"
	desiredFilter = "$iothub/twin/PATCH/properties/desired/#"
)

// desiredTopic is where a desired patch of version v arrives.
func desiredTopic(v int) string {
	return fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%d", v)
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

// TestModulesReceiveOnlyTheirOwnPatches connects two modules of one device
// (their topic strings are identical) and changes both twins in turn:
// each must see exactly its own patches, in order, with "$version".
func TestModulesReceiveOnlyTheirOwnPatches(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			m1, m2 := e.module(t, "dev", "m1"), e.module(t, "dev", "m2")
			c1, c2 := e.dial(t, tr, m1), e.dial(t, tr, m2)
			c1.subscribe(t, 1, desiredFilter)
			c2.subscribe(t, 0, desiredFilter)

			for i := 1; i <= 3; i++ {
				e.patchDesired(t, m1, fmt.Sprintf(`{"owner":"m1","n":%d}`, i))
				e.patchDesired(t, m2, fmt.Sprintf(`{"owner":"m2","n":%d}`, i))
			}
			for _, c := range []struct {
				name   string
				client *client
			}{{"m1", c1}, {"m2", c2}} {
				for i := 1; i <= 3; i++ {
					msg := c.client.next(t)
					if got, want := msg.Topic(), desiredTopic(i+1); got != want {
						t.Errorf("%s: message %d topic = %q, want %q", c.name, i, got, want)
					}
					got := decode(t, msg.Payload())
					want := map[string]any{"owner": c.name, "n": float64(i), "$version": float64(i + 1)}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("%s: patch %d (-want +got):\n%s", c.name, i, diff)
					}
				}
			}
		})
	}
}

// TestDesiredReplace: a twin PUT over REST reaches the module as a patch
// that makes its desired properties the new ones.
func TestDesiredReplace(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "replaced")
	e.patchDesired(t, m, `{"old":1,"kept":true}`) // version 2
	c := e.dial(t, overTLS, m)
	c.subscribe(t, 1, desiredFilter)

	body := json.RawMessage(`{"properties":{"desired":{"kept":true,"new":"x"}}}`)
	e.call(t, http.MethodPut, m.twinPath(), `"*"`, body, nil)

	msg := c.next(t)
	if got, want := msg.Topic(), desiredTopic(3); got != want {
		t.Errorf("topic = %q, want %q", got, want)
	}
	got := decode(t, msg.Payload())
	want := map[string]any{"old": nil, "kept": true, "new": "x", "$version": float64(3)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patch (-want +got):\n%s", diff)
	}
}

// TestCloseEndsConnections: closing the emulator ends MQTT connections on
// both transports and frees the MQTT port.
func TestCloseEndsConnections(t *testing.T) {
	e := newEnv(t)
	m1, m2 := e.module(t, "dev", "m1"), e.module(t, "dev", "m2")
	c1, c2 := e.dial(t, overTLS, m1), e.dial(t, overWebSocket, m2)
	if err := e.em.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	c1.waitLost(t)
	c2.waitLost(t)
	if conn, err := net.Dial("tcp", e.em.MQTTAddr()); err == nil {
		conn.Close()
		t.Errorf("the MQTT port %s still accepts connections", e.em.MQTTAddr())
	}
}

func TestTwinGet(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			dev := e.device(t, "plain-device")
			e.patchDesired(t, dev, `{"interval":30}`)
			c := e.dial(t, tr, dev)
			c.subscribe(t, 0, resFilter)
			c.publish(t, "$iothub/twin/GET/?$rid=6f9619ff-8b86-d011-b42d-00cf4fc964ff", 0, " ")

			msg := c.next(t)
			if got, want := msg.Topic(), "$iothub/twin/res/200/?$rid=6f9619ff-8b86-d011-b42d-00cf4fc964ff"; got != want {
				t.Errorf("response topic = %q, want %q", got, want)
			}
			got := decode(t, msg.Payload())
			want := map[string]any{
				"desired":  map[string]any{"interval": float64(30), "$version": float64(2)},
				"reported": map[string]any{"$version": float64(1)},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("twin (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGetBeforeSubscribe mirrors Microsoft's Python SDK, which asks for
// the twin before it subscribes to responses: the GET is acknowledged,
// the client stays connected, and no response reaches it unasked.
func TestGetBeforeSubscribe(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "py")
	c := e.dial(t, overTLS, m)
	c.publish(t, "$iothub/twin/GET/?$rid=early", 1, " ")
	c.subscribe(t, 1, resFilter)
	c.publish(t, "$iothub/twin/GET/?$rid=late", 1, "")

	// Responses to one client leave in order: a stray answer to "early"
	// would come first.
	if got, want := c.next(t).Topic(), "$iothub/twin/res/200/?$rid=late"; got != want {
		t.Errorf("first message topic = %q, want %q", got, want)
	}
}

func TestReportedProperties(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "reporter")
	c := e.dial(t, overWebSocket, m)
	c.subscribe(t, 1, resFilter)

	reported := func() map[string]any {
		twin := decode(t, e.twin(t, m))
		r := twin["properties"].(map[string]any)["reported"].(map[string]any)
		delete(r, "$metadata")
		return r
	}

	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", 1, `{"temp":21,"fw":{"v":"1.0"}}`)
	if got, want := c.next(t).Topic(), "$iothub/twin/res/204/?$rid=1&$version=2"; got != want {
		t.Errorf("response topic = %q, want %q", got, want)
	}
	want := map[string]any{"temp": float64(21), "fw": map[string]any{"v": "1.0"}, "$version": float64(2)}
	if diff := cmp.Diff(want, reported()); diff != "" {
		t.Errorf("reported after first patch (-want +got):\n%s", diff)
	}

	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=2", 0, `{"temp":null}`)
	if got, want := c.next(t).Topic(), "$iothub/twin/res/204/?$rid=2&$version=3"; got != want {
		t.Errorf("response topic = %q, want %q", got, want)
	}
	want = map[string]any{"fw": map[string]any{"v": "1.0"}, "$version": float64(3)}
	if diff := cmp.Diff(want, reported()); diff != "" {
		t.Errorf("reported after null patch (-want +got):\n%s", diff)
	}

	for _, bad := range []struct{ name, body string }{
		{"not JSON", `{"temp":`},
		{"not an object", `[1,2]`},
		{"key with a dot", `{"a.b":1}`},
		{"empty", ``},
	} {
		c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=bad", 1, bad.body)
		msg := c.next(t)
		if got, want := msg.Topic(), "$iothub/twin/res/400/?$rid=bad"; got != want {
			t.Errorf("%s: response topic = %q, want %q", bad.name, got, want)
		}
		code, _ := decode(t, msg.Payload())["errorCode"].(float64)
		if int(code)/1000 != http.StatusBadRequest {
			t.Errorf("%s: error body %s has no 400xxx errorCode", bad.name, msg.Payload())
		}
	}
	if diff := cmp.Diff(want, reported()); diff != "" {
		t.Errorf("reported after refused patches (-want +got):\n%s", diff)
	}
}

func TestConnectRefused(t *testing.T) {
	e := newEnv(t)
	m1, m2 := e.module(t, "dev", "m1"), e.module(t, "dev", "m2")
	disabled := e.module(t, "off", "m")
	e.call(t, http.MethodPut, "/devices/off", `"*"`, iothub.Device{DeviceID: "off", Status: iothub.Disabled}, nil)
	ghost := identity{ref: hub.IdentityRef{DeviceID: "dev", ModuleID: "ghost"}, key: m1.key}
	validUser := e.host + "/dev/m1/?api-version=2021-04-12"

	tests := []struct {
		name     string
		tr       transport
		clientID string
		username string
		password string
	}{
		{"wrong key", overTLS, "dev/m1", validUser, e.token(t, identity{ref: m1.ref, key: m2.key}, time.Hour)},
		{"wrong key over websocket", overWebSocket, "dev/m1", validUser, e.token(t, identity{ref: m1.ref, key: m2.key}, time.Hour)},
		{"expired token", overTLS, "dev/m1", validUser, e.token(t, m1, -time.Minute)},
		{"expired token over websocket", overWebSocket, "dev/m1", validUser, e.token(t, m1, -time.Minute)},
		{"token of another module", overTLS, "dev/m1", validUser, e.token(t, m2, time.Hour)},
		{"user name of another module", overTLS, "dev/m1", e.host + "/dev/m2/?api-version=2021-04-12", e.token(t, m1, time.Hour)},
		{"client ID of the device", overTLS, "dev", validUser, e.token(t, m1, time.Hour)},
		{"unknown module", overTLS, "dev/ghost", e.host + "/dev/ghost/?api-version=2021-04-12", e.token(t, ghost, time.Hour)},
		{"disabled device", overTLS, "off/m", e.host + "/off/m/?api-version=2021-04-12", e.token(t, disabled, time.Hour)},
		{"malformed user name", overTLS, "dev/m1", "not a user name", e.token(t, m1, time.Hour)},
		{"other hub in user name", overTLS, "dev/m1", "other.azure-devices.net/dev/m1/?api-version=2021-04-12", e.token(t, m1, time.Hour)},
		{"no password", overTLS, "dev/m1", validUser, ""},
		{"password not a token", overTLS, "dev/m1", validUser, "hunter2-not-a-token"},
		{"bad client ID", overTLS, "dev/m1/x", validUser, e.token(t, m1, time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.newClient(t, tt.tr, tt.clientID, dialOpts{username: tt.username, password: tt.password})
			if rc := c.connect(t); rc != 5 {
				t.Errorf("CONNACK return code = %d, want 5 (not authorized)", rc)
			}
			if tt.password != "" && strings.Contains(e.logs.String(), tt.password) {
				t.Errorf("the logs contain the password")
			}
		})
	}
	if logs := e.logs.String(); strings.Contains(logs, "sig=") || strings.Contains(logs, m1.key) || strings.Contains(logs, m2.key) {
		t.Errorf("the logs show a signature or a key:\n%s", logs)
	}
}

// TestPolicyTokens: a shared access policy with DeviceConnect may sign a
// module's CONNECT password (with skn); one without it may not.
func TestPolicyTokens(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "m")
	for _, tt := range []struct {
		policy string
		want   byte
	}{
		{hub.PolicyDevice, 0},
		{hub.PolicyService, 5},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			s, err := e.em.PolicyConnectionString(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			cs, err := connstr.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
			if err != nil {
				t.Fatal(err)
			}
			tok, _ := signer.Token(e.resource(m.ref), time.Hour)
			c := e.newClient(t, overTLS, m.clientID(), dialOpts{password: tok})
			if rc := c.connect(t); rc != tt.want {
				t.Errorf("CONNACK %d, want %d", rc, tt.want)
			}
		})
	}
}

// TestUsernameForms accepts the user names Microsoft's SDKs and older
// clients send.
func TestUsernameForms(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "m")
	d := e.device(t, "legacy")
	tests := []struct {
		name     string
		id       identity
		username string
	}{
		{"node sdk", m, "localhost/dev/m/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.0.0%3B%20Linux)"},
		{"python sdk", m, "localhost/dev/m/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.14.0"},
		{"model id", m, "localhost/dev/m/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"},
		{"host with port", m, "localhost:8883/dev/m/?api-version=2021-04-12"},
		{"legacy device form", d, "localhost/legacy/api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.7"},
		{"legacy module form", m, "localhost/dev/m/api-version=2016-11-14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.newClient(t, overTLS, tt.id.clientID(), dialOpts{username: tt.username, password: e.token(t, tt.id, time.Hour)})
			if rc := c.connect(t); rc != 0 {
				t.Fatalf("CONNACK return code = %d, want 0\nlogs:\n%s", rc, e.logs)
			}
			c.Disconnect(0)
		})
	}
}

func TestTokenExpiryDisconnects(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "short")
	c := e.newClient(t, overTLS, m.clientID(), dialOpts{password: e.token(t, m, 2*time.Second)})
	if rc := c.connect(t); rc != 0 {
		t.Fatalf("CONNACK %d, want 0", rc)
	}
	if got := e.connectionState(t, m); got != iothub.Connected {
		t.Errorf("connectionState while connected = %q, want %q", got, iothub.Connected)
	}
	c.waitLost(t)
	eventually(t, "connectionState is Disconnected", func() bool { return e.connectionState(t, m) == iothub.Disconnected })
}

// TestDeletionClosesConnections: deleting a module closes its connection
// and nobody else's; deleting a device closes its own and its modules';
// the deleted identity's session goes with it.
func TestDeletionClosesConnections(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			m1, m2 := e.module(t, "dev", "m1"), e.module(t, "dev", "m2")
			dev := identity{ref: hub.IdentityRef{DeviceID: "dev"}}
			dev.key = e.deviceKey(t, "dev")
			c1, c2, cd := e.dial(t, tr, m1), e.dial(t, tr, m2), e.dial(t, tr, dev)
			c1.subscribe(t, 1, desiredFilter)
			c2.subscribe(t, 1, desiredFilter)

			e.call(t, http.MethodDelete, m1.path(), `"*"`, nil, nil)
			c1.waitLost(t)
			e.patchDesired(t, m2, `{"still":"here"}`)
			if got, want := c2.next(t).Topic(), desiredTopic(2); got != want {
				t.Errorf("the other module got %q, want %q", got, want)
			}

			// Created again, m1 connects with clean session off to no session.
			m1 = e.module(t, "dev", "m1")
			again := e.newClient(t, tr, m1.clientID(), dialOpts{password: e.token(t, m1, time.Hour)})
			tok := again.Connect()
			if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
				t.Fatalf("connect the new m1: %v", tok.Error())
			}
			if tok.(*paho.ConnectToken).SessionPresent() {
				t.Error("the new m1 got the deleted m1's session")
			}

			e.call(t, http.MethodDelete, dev.path(), `"*"`, nil, nil)
			for _, c := range []*client{again, c2, cd} {
				c.waitLost(t)
			}
		})
	}
}

// TestDisablingClosesConnections: disabling a device closes its
// connection and its modules', and they cannot connect again.
func TestDisablingClosesConnections(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "m")
	dev := identity{ref: hub.IdentityRef{DeviceID: "dev"}}
	dev.key = e.deviceKey(t, "dev")
	cm, cd := e.dial(t, overTLS, m), e.dial(t, overWebSocket, dev)

	e.call(t, http.MethodPut, dev.path(), `"*"`, iothub.Device{DeviceID: "dev", Status: iothub.Disabled}, nil)
	cm.waitLost(t)
	cd.waitLost(t)
	again := e.newClient(t, overTLS, m.clientID(), dialOpts{password: e.token(t, m, time.Hour)})
	if rc := again.connect(t); rc != 5 {
		t.Errorf("module of a disabled device: CONNACK %d, want 5", rc)
	}
	eventually(t, "connectionState is Disconnected", func() bool { return e.connectionState(t, m) == iothub.Disconnected })
}

// TestReconnectKeepsSubscriptions mirrors Microsoft's Node.js SDK, which
// after a reconnect (its token renewal) sends only CONNECT. Patches made
// while it was away are not queued.
func TestReconnectKeepsSubscriptions(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			m := e.module(t, "dev", "node")
			first := e.dial(t, tr, m)
			first.subscribe(t, 0, resFilter, desiredFilter)
			first.Disconnect(100)
			eventually(t, "connectionState is Disconnected", func() bool { return e.connectionState(t, m) == iothub.Disconnected })

			e.patchDesired(t, m, `{"missed":true}`) // version 2, while disconnected

			second := e.dial(t, tr, m) // clean session off, no SUBSCRIBE
			if got := e.connectionState(t, m); got != iothub.Connected {
				t.Errorf("connectionState = %q, want %q\n%s", got, iothub.Connected, e.logs)
			}
			e.patchDesired(t, m, `{"seen":true}`) // version 3
			msg := second.next(t)
			if got, want := msg.Topic(), desiredTopic(3); got != want {
				t.Errorf("first message after reconnect: topic %q, want %q (body %s)", got, want, msg.Payload())
			}
			second.publish(t, "$iothub/twin/GET/?$rid=again", 1, " ")
			if got, want := second.next(t).Topic(), "$iothub/twin/res/200/?$rid=again"; got != want {
				t.Errorf("twin response topic = %q, want %q", got, want)
			}
		})
	}
}

func TestCleanSessionDropsSubscriptions(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "clean")
	first := e.dial(t, overTLS, m)
	first.subscribe(t, 1, desiredFilter)
	first.Disconnect(100)

	second := e.newClient(t, overTLS, m.clientID(), dialOpts{password: e.token(t, m, time.Hour), clean: true})
	if rc := second.connect(t); rc != 0 {
		t.Fatalf("CONNACK %d, want 0", rc)
	}
	e.patchDesired(t, m, `{"x":1}`) // no subscription: not delivered
	second.subscribe(t, 1, resFilter)
	second.publish(t, "$iothub/twin/GET/?$rid=1", 1, " ")
	if got, want := second.next(t).Topic(), "$iothub/twin/res/200/?$rid=1"; got != want {
		t.Errorf("first message = %q, want %q", got, want)
	}
}

// TestSecondConnectionDropsFirst: one connection per identity.
func TestSecondConnectionDropsFirst(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			m := e.module(t, "dev", "twice")
			first := e.dial(t, tr, m)
			first.subscribe(t, 1, desiredFilter)

			second := e.dial(t, tr, m)
			first.waitLost(t)

			// A refused CONNECT for the same client ID leaves the live one alone.
			intruder := e.newClient(t, tr, m.clientID(), dialOpts{password: e.token(t, m, -time.Minute)})
			if rc := intruder.connect(t); rc != 5 {
				t.Errorf("expired intruder: CONNACK %d, want 5", rc)
			}

			e.patchDesired(t, m, `{"to":"second"}`)
			if got, want := second.next(t).Topic(), desiredTopic(2); got != want {
				t.Errorf("second connection got %q, want %q", got, want)
			}
			if got := e.connectionState(t, m); got != iothub.Connected {
				t.Errorf("connectionState = %q, want %q", got, iothub.Connected)
			}
		})
	}
}

func TestSubscriptionRules(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "subs")
	c := e.dial(t, overTLS, m)

	refused := []string{
		"#",
		"$iothub/#",
		"$iothub/twin/res/+",
		"devices/dev/modules/other/#",
		"devices/dev/messages/devicebound/#",
		"$SYS/#",
		"$share/g/$iothub/twin/res/#",
	}
	got := c.subscribe(t, 1, refused...)
	want := map[string]byte{}
	for _, f := range refused {
		want[f] = 0x80
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SUBACK for unsupported filters (-want +got):\n%s", diff)
	}

	if got := c.subscribe(t, 2, resFilter)[resFilter]; got != 1 {
		t.Errorf("SUBACK for QoS 2 = %d, want 1", got)
	}
	for _, f := range []string{desiredFilter, "$iothub/methods/POST/#", "devices/dev/modules/subs/#", "devices/dev/modules/subs/inputs/#"} {
		if got := c.subscribe(t, 1, f)[f]; got != 1 {
			t.Errorf("SUBACK for %s = %d, want 1", f, got)
		}
	}
	if got := c.subscribe(t, 1, resFilter)[resFilter]; got != 1 {
		t.Errorf("SUBACK for a filter held already = %d, want 1", got)
	}
	const sixth = "$iothub/streams/POST/#"
	if got := c.subscribe(t, 1, sixth)[sixth]; got != 0x80 {
		t.Errorf("SUBACK for a 6th subscription = %#x, want 0x80", got)
	}
	if tok := c.Unsubscribe("$iothub/methods/POST/#"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	if got := c.subscribe(t, 1, sixth)[sixth]; got != 1 {
		t.Errorf("SUBACK for the 5th after an unsubscribe = %d, want 1", got)
	}

	// Still connected and served.
	c.publish(t, "$iothub/twin/GET/?$rid=x", 1, " ")
	if got, want := c.next(t).Topic(), "$iothub/twin/res/200/?$rid=x"; got != want {
		t.Errorf("response topic = %q, want %q", got, want)
	}
}

func TestPublishRules(t *testing.T) {
	e := newEnv(t)
	m := e.module(t, "dev", "pub")

	t.Run("telemetry is acknowledged", func(t *testing.T) {
		c := e.dial(t, overTLS, m)
		c.subscribe(t, 1, resFilter)
		c.publish(t, "devices/dev/modules/pub/messages/events/", 1, `{"t":1}`)
		c.publish(t, "devices/dev/modules/pub/messages/events/%24.ct=application%2Fjson", 0, `{"t":2}`)
		c.publish(t, "$iothub/twin/GET/?$rid=after", 1, " ")
		if got, want := c.next(t).Topic(), "$iothub/twin/res/200/?$rid=after"; got != want {
			t.Errorf("first message = %q, want %q", got, want)
		}
	})

	for _, tt := range []struct {
		name, topic string
		qos         byte
	}{
		{"QoS 2", "$iothub/twin/GET/?$rid=1", 2},
		{"another module's telemetry", "devices/dev/modules/other/messages/events/", 1},
		{"a topic IoT Hub does not have", "some/topic", 1},
	} {
		t.Run(tt.name+" closes the connection", func(t *testing.T) {
			c := e.dial(t, overTLS, m)
			c.Publish(tt.topic, tt.qos, false, "{}")
			c.waitLost(t)
		})
	}
}

// TestConnectionState reads connectionState and lastActivityTime over
// REST, for a module and for a device.
func TestConnectionState(t *testing.T) {
	e := newEnv(t)
	for _, id := range []identity{e.module(t, "dev", "state"), e.device(t, "state-device")} {
		t.Run(id.clientID(), func(t *testing.T) { testConnectionState(t, e, id) })
	}
}

func testConnectionState(t *testing.T, e *env, m identity) {
	before := e.registryEntry(t, m)
	if before.ConnectionState != iothub.Disconnected {
		t.Errorf("connectionState before connecting = %q, want %q", before.ConnectionState, iothub.Disconnected)
	}

	c := e.dial(t, overWebSocket, m)
	during := e.registryEntry(t, m)
	if during.ConnectionState != iothub.Connected {
		t.Errorf("connectionState while connected = %q, want %q", during.ConnectionState, iothub.Connected)
	}
	if during.LastActivityTime == before.LastActivityTime {
		t.Errorf("lastActivityTime stayed %q after connecting", during.LastActivityTime)
	}

	c.Disconnect(100)
	eventually(t, "connectionState is Disconnected", func() bool { return e.connectionState(t, m) == iothub.Disconnected })
}

// TestWebSocketSubprotocol checks the upgrade itself, as a raw client sees it.
func TestWebSocketSubprotocol(t *testing.T) {
	e := newEnv(t)
	d := websocket.Dialer{TLSClientConfig: e.clientT, Subprotocols: []string{"mqtt"}, HandshakeTimeout: waitFor}
	ws, resp, err := d.Dial(e.wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", e.wsURL, err)
	}
	defer ws.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
		t.Errorf("negotiated subprotocol = %q, want mqtt", got)
	}

	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: e.clientT}}
	r, err := plain.Get(strings.Replace(e.wsURL, "wss://", "https://", 1))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("GET without upgrade: status %d, want %d", r.StatusCode, http.StatusBadRequest)
	}
}
