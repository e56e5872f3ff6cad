package mqttgw

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// maxSubscriptions is how many topic filters a client may hold at once.
const maxSubscriptions = 5

// parseClientID reads an MQTT client identifier: "{deviceId}" or
// "{deviceId}/{moduleId}".
func parseClientID(clientID string) (hub.IdentityRef, error) {
	deviceID, moduleID, err := topics.ParseClientID(clientID)
	if err != nil {
		return hub.IdentityRef{}, err
	}
	return hub.IdentityRef{DeviceID: deviceID, ModuleID: moduleID}, nil
}

// checkUsername checks an MQTT CONNECT user name against the hub's host
// and the client identifier. Accepted forms:
//
//	{host}/{clientId}/?api-version=…[&DeviceClientType=…&model-id=…]
//	{host}/{clientId}/api-version=…[&…]   (legacy, no "?")
//
// where {host} is the hub's host name, with or without a port.
func checkUsername(username, host, clientID string) error {
	if username == "" {
		return errors.New("user name is empty")
	}
	userHost, rest, ok := strings.Cut(username, "/")
	if !ok {
		return errors.New("user name has no \"/\" after the host name")
	}
	if !sameHost(userHost, host) {
		return fmt.Errorf("user name names host %q, not this hub (%q)", userHost, host)
	}
	query, ok := strings.CutPrefix(rest, clientID+"/")
	if !ok {
		return fmt.Errorf("user name does not name the client ID %q after the host", clientID)
	}
	if q, isQuery := strings.CutPrefix(query, "?"); isQuery {
		query = q
	} else if query != "" && !hasPrefixFold(query, "api-version=") {
		return fmt.Errorf("user name has %q after the client ID (want \"?api-version=…\")", query)
	}
	if _, err := url.ParseQuery(query); err != nil {
		return errors.New("user name query is not a valid URL query")
	}
	return nil
}

// sameHost reports whether got is host, optionally followed by ":port".
func sameHost(got, host string) bool {
	name, port, hasPort := strings.Cut(got, ":")
	if !strings.EqualFold(name, host) {
		return false
	}
	if !hasPort {
		return true
	}
	if port == "" || len(port) > 5 {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// allowedFilter reports whether a client with identity id may subscribe
// to filter: only IoT Hub's documented filters, for its own identity.
func allowedFilter(id hub.IdentityRef, filter string) bool {
	switch filter {
	case topics.TwinResponseFilter, topics.DesiredPatchFilter, topics.MethodsFilter, topics.StreamsFilter:
		return true
	}
	if id.IsModule() {
		return filter == topics.ModuleFilter(id.DeviceID, id.ModuleID) || filter == topics.ModuleInputsFilter(id.DeviceID, id.ModuleID)
	}
	return filter == topics.DeviceBoundFilter(id.DeviceID)
}

// publishKind classifies what a client publishes.
type publishKind int

const (
	publishDenied publishKind = iota
	publishTwinGet
	publishTwinReported
	publishMethodResult
	publishTelemetry
)

// classifyPublish says what a PUBLISH to topic by identity id is; topics
// outside IoT Hub's documented set, or another identity's, are denied.
func classifyPublish(id hub.IdentityRef, topic string) publishKind {
	switch {
	case strings.HasPrefix(topic, topics.TwinGetPrefix+"?"):
		return publishTwinGet
	case strings.HasPrefix(topic, topics.ReportedPatchPrefix+"?"):
		return publishTwinReported
	case strings.HasPrefix(topic, topics.MethodResponsePrefix):
		return publishMethodResult
	}
	if _, ok := topics.EventsBag(id.DeviceID, id.ModuleID, topic); ok {
		return publishTelemetry
	}
	return publishDenied
}

// Subscriptions and deliveries live in the broker under a per-identity
// prefix, so that the identical IoT Hub topic strings of different clients
// never meet in the broker's topic index: a message published under one
// identity's prefix can only match that identity's own subscriptions. The
// prefix is stripped again when a packet is written to the client. Hex
// keeps characters IoT Hub allows in IDs ('+', '#') out of the filter.
func internalPrefix(clientID string) string {
	return "@" + hex.EncodeToString([]byte(clientID)) + "/"
}

// externalTopic strips the internal prefix from a topic, if it has one.
func externalTopic(topic string) string {
	if len(topic) == 0 || topic[0] != '@' {
		return topic
	}
	if i := strings.IndexByte(topic, '/'); i >= 0 {
		return topic[i+1:]
	}
	return topic
}
