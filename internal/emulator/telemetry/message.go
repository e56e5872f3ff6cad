// Package telemetry keeps the device-to-cloud messages devices and modules
// send: their body, application and system properties and the hub's own
// stamps, in a bounded in-memory buffer that drops the oldest first.
package telemetry

import (
	"net/url"
	"strings"
	"time"
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

// SplitProperties decodes a telemetry topic's property bag (the part
// after "messages/events/": URL-encoded key=value pairs joined by "&")
// into system properties, named as the hub names them, and application
// properties. Keys and values are percent-decoded first, so "%24.mid" is
// "$.mid"; a pair that does not decode is kept as written. A later pair
// with the same key wins.
func SplitProperties(bag string) (system, application map[string]string) {
	system, application = map[string]string{}, map[string]string{}
	for pair := range strings.SplitSeq(bag, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, v = unescape(k), unescape(v)
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

// unescape percent-decodes s. A topic name cannot hold '+', so the SDKs
// write it %2B and a space %20.
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
