package mqttgw_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

// A message's property bag, RETAIN flag and identity come out decoded and
// stamped, from devices and modules over both transports.
func TestTelemetryKeptWithProperties(t *testing.T) {
	e := newEnv(t)
	sub := e.em.Events().Subscribe(events.Filter{Kinds: map[events.Kind]bool{events.Message: true}}, 100)
	defer sub.Close()
	ids := []identity{e.device(t, "dev-1"), e.module(t, "dev-2", "mod-1")}
	for _, tr := range transports {
		for _, id := range ids {
			c := e.dial(t, tr, id)
			topic := "devices/" + id.ref.DeviceID + "/messages/events/"
			if id.ref.IsModule() {
				topic = "devices/" + id.ref.DeviceID + "/modules/" + id.ref.ModuleID + "/messages/events/"
			}
			bag := "%24.mid=m-1&$.cid=c%2F1&%24.ct=application%2Fjson&%24.ce=utf-8&$.uid=user&%24.to=%2Fdevices%2Fx" +
				"&%24.ctime=2026-12-02T10%3A00%3A00.000Z&%24.exp=2026-12-03T10%3A00%3A00.000Z" +
				"&temp%20unit=%C2%B0C&plain=a%2Bb%20c&empty=&noValue"
			tok := c.Publish(topic+bag, 1, true, `{"t":21.5}`)
			if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
				t.Fatalf("%s over %s: publish not acknowledged: %v", id.clientID(), tr, tok.Error())
			}
			var got events.Event
			select {
			case got = <-sub.C():
			default:
				t.Fatalf("%s over %s: no message event once PUBACK arrived", id.clientID(), tr)
			}
			m := got.Message
			if m == nil || got.DeviceID != id.ref.DeviceID || got.ModuleID != id.ref.ModuleID || string(m.Body) != `{"t":21.5}` {
				t.Fatalf("%s over %s: event %+v", id.clientID(), tr, got)
			}
			wantSys := map[string]string{
				"message-id": "m-1", "correlation-id": "c/1", "content-type": "application/json", "content-encoding": "utf-8",
				"user-id": "user", "to": "/devices/x", "iothub-creation-time-utc": "2026-12-02T10:00:00.000Z",
				"absolute-expiry-time": "2026-12-03T10:00:00.000Z",
			}
			if diff := cmp.Diff(wantSys, m.SystemProperties); diff != "" {
				t.Errorf("%s over %s: system properties (-want +got):\n%s", id.clientID(), tr, diff)
			}
			wantApp := map[string]string{"temp unit": "°C", "plain": "a+b c", "empty": "", "noValue": "", "mqtt-retain": "true"}
			if diff := cmp.Diff(wantApp, m.ApplicationProperties); diff != "" {
				t.Errorf("%s over %s: application properties (-want +got):\n%s", id.clientID(), tr, diff)
			}
			gen, err := e.em.Hub().GenerationID(id.ref)
			if err != nil {
				t.Fatal(err)
			}
			scope := "device"
			if id.ref.IsModule() {
				scope = "module"
			}
			a := m.Annotations
			if a["iothub-connection-device-id"] != id.ref.DeviceID || a["iothub-connection-module-id"] != id.ref.ModuleID ||
				a["iothub-connection-auth-generation-id"] != gen ||
				a["iothub-connection-auth-method"] != `{"scope":"`+scope+`","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}` ||
				!strings.HasPrefix(a["iothub-enqueuedtime"], m.EnqueuedTime.Format("2006-01-02T15:04:05")) {
				t.Errorf("%s over %s: annotations %v", id.clientID(), tr, a)
			}
			kept := e.em.Messages().Of(id.ref.DeviceID, id.ref.ModuleID, 1)
			if len(kept) != 1 || kept[0].Seq != m.Seq {
				t.Errorf("%s over %s: buffer holds %+v, want message %d", id.clientID(), tr, kept, m.Seq)
			}
			c.Disconnect(0)
		}
	}
}

// A message over 256 KB is refused as IoT Hub refuses it over MQTT: the
// connection is closed without a PUBACK and nothing is kept. One of
// exactly 256 KB passes.
func TestTelemetryOverLimitClosesConnection(t *testing.T) {
	e := newEnv(t)
	id := e.module(t, "dev", "mod")
	topic := "devices/dev/modules/mod/messages/events/"
	c := e.dial(t, overTLS, id)
	c.publish(t, topic+"k=v", 1, strings.Repeat("x", telemetry.MaxSize-2))
	if n := e.em.Messages().Stats().Held; n != 1 {
		t.Fatalf("a message of exactly %d bytes: %d kept, want 1", telemetry.MaxSize, n)
	}
	tok := c.Publish(topic+"k=v", 1, false, strings.Repeat("x", telemetry.MaxSize-1))
	c.waitLost(t)
	if tok.WaitTimeout(0) && tok.Error() == nil {
		t.Error("the message over the limit was acknowledged")
	}
	if s := e.em.Messages().Stats(); s.Held != 1 || s.Received != 1 {
		t.Errorf("after a refused message: %+v, want only the first kept", s)
	}
	if !strings.Contains(e.logs.String(), "message larger than 256 KB") {
		t.Errorf("the log does not say why the connection was closed:\n%s", e.logs)
	}
}
