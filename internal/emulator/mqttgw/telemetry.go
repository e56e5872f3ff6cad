package mqttgw

import (
	"errors"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// errTooLarge closes the connection of a client that sends a message over
// the limit: IoT Hub drops such a connection without a PUBACK.
var errTooLarge = errors.New("message larger than 256 KB")

// telemetry takes a device-to-cloud message: it decodes the property bag,
// stamps what the hub stamps, keeps it and publishes it as an event. It
// returns errTooLarge, having kept nothing, for a message over the limit.
func (g *Gateway) telemetry(c *conn, pk packets.Packet) error {
	bag, _ := topics.EventsBag(c.id.DeviceID, c.id.ModuleID, pk.TopicName)
	system, app := telemetry.SplitProperties(bag)
	if pk.FixedHeader.Retain {
		app["mqtt-retain"] = "true"
	}
	now := time.Now().UTC()
	m := telemetry.Message{
		DeviceID:              c.id.DeviceID,
		ModuleID:              c.id.ModuleID,
		EnqueuedTime:          now,
		Body:                  pk.Payload,
		SystemProperties:      system,
		ApplicationProperties: app,
	}
	if m.Size() > telemetry.MaxSize {
		return errTooLarge
	}
	m.Annotations = map[string]string{
		"iothub-connection-device-id":          c.id.DeviceID,
		"iothub-connection-auth-method":        c.authMethod,
		"iothub-connection-auth-generation-id": c.generation,
		"iothub-enqueuedtime":                  now.Format("2006-01-02T15:04:05.000Z"),
		"iothub-message-source":                "Telemetry",
	}
	if c.id.IsModule() {
		m.Annotations["iothub-connection-module-id"] = c.id.ModuleID
	}
	if g.messages != nil {
		m = g.messages.Add(m)
	}
	g.events.Publish(events.Event{Time: now, Kind: events.Message, DeviceID: m.DeviceID, ModuleID: m.ModuleID, Message: &m})
	return nil
}

// authMethod is iothub-connection-auth-method for a SAS connection: scope
// "hub" when a shared access policy signed the token, else the identity's.
func authMethod(module, policySigned bool) string {
	scope := "device"
	switch {
	case policySigned:
		scope = "hub"
	case module:
		scope = "module"
	}
	return `{"scope":"` + scope + `","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
}
