// Package telemetry keeps the device-to-cloud messages devices and modules
// send: their body, application and system properties and the hub's own
// stamps, in a bounded in-memory buffer that drops the oldest first.
package telemetry

import (
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// MaxSize is the largest message IoT Hub accepts: body plus the names and
// values of its properties.
const MaxSize = 256 * 1024

// Message is one device-to-cloud message as the hub received it.
type Message struct {
	// Seq numbers messages in the order the buffer took them (from 1).
	Seq      uint64 `json:"seq"`
	DeviceID string `json:"deviceId"`
	ModuleID string `json:"moduleId,omitempty"`
	// EnqueuedTime is when the hub received it (iothub-enqueuedtime).
	EnqueuedTime time.Time `json:"enqueuedTime"`
	Body         []byte    `json:"body"`
	// System properties by their AMQP names (message-id, content-type…),
	// application properties as the device named them, and the hub's
	// stamps (iothub-connection-device-id…).
	SystemProperties      map[string]string `json:"systemProperties,omitempty"`
	ApplicationProperties map[string]string `json:"applicationProperties,omitempty"`
	Annotations           map[string]string `json:"annotations,omitempty"`
}

// Size is what counts against MaxSize: the body and every property the
// device set, names and values.
func (m *Message) Size() int {
	n := len(m.Body)
	for _, props := range []map[string]string{m.SystemProperties, m.ApplicationProperties} {
		for k, v := range props {
			n += len(k) + len(v)
		}
	}
	return n
}

// systemNames maps the property bag's system keys to the names the hub
// gives those properties.
var systemNames = map[string]string{
	"$.mid":   "message-id",
	"$.cid":   "correlation-id",
	"$.uid":   "user-id",
	"$.to":    "to",
	"$.ct":    "content-type",
	"$.ce":    "content-encoding",
	"$.exp":   "absolute-expiry-time",
	"$.ctime": "iothub-creation-time-utc",
	"$.sub":   "dt-subject",
}

// SplitProperties decodes a telemetry topic's property bag (see
// topics.ParseProperties) into system properties, named as the hub names
// them, and application properties.
func SplitProperties(bag string) (system, application map[string]string) {
	system, application = map[string]string{}, map[string]string{}
	for k, v := range topics.ParseProperties(bag) {
		if name, ok := systemNames[k]; ok {
			system[name] = v
		} else if strings.HasPrefix(k, "$.") {
			system[k] = v // a system key this hub does not know: kept under its own name
		} else {
			application[k] = v
		}
	}
	return system, application
}
