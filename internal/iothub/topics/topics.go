// Package topics is IoT Hub's MQTT vocabulary: the topic names and filters
// of twins, direct methods and telemetry, how a request ID ($rid), a
// version and a property bag ride in a topic, and the client ID and user
// name of a CONNECT. Device clients build what they publish from it and
// the emulator's gateway parses the same names with it.
package topics

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Twin topics: a device asks on the GET and reported PATCH topics and
// hears answers on the response topics and desired patches on the desired
// ones.
const (
	TwinResponseFilter  = "$iothub/twin/res/#"
	TwinResponsePrefix  = "$iothub/twin/res/"
	DesiredPatchFilter  = "$iothub/twin/PATCH/properties/desired/#"
	DesiredPatchPrefix  = "$iothub/twin/PATCH/properties/desired/"
	TwinGetPrefix       = "$iothub/twin/GET/"
	ReportedPatchPrefix = "$iothub/twin/PATCH/properties/reported/"
)

// Direct method and device stream topics.
const (
	MethodsFilter        = "$iothub/methods/POST/#"
	MethodRequestPrefix  = "$iothub/methods/POST/"
	MethodResponsePrefix = "$iothub/methods/res/"
	StreamsFilter        = "$iothub/streams/POST/#"
)

// Query keys IoT Hub puts in topics.
const (
	RequestIDKey = "$rid"
	VersionKey   = "$version"
)

// TwinGet is the topic of a twin GET request with request ID rid.
func TwinGet(rid string) string { return TwinGetPrefix + "?" + RequestIDKey + "=" + rid }

// ReportedPatch is the topic of a reported-properties PATCH request.
func ReportedPatch(rid string) string {
	return ReportedPatchPrefix + "?" + RequestIDKey + "=" + rid
}

// TwinResponse is the topic of the hub's answer to twin request rid:
// $iothub/twin/res/{status}/?$rid={rid}, with &$version={n} after a
// reported PATCH (version > 0).
func TwinResponse(status int, rid string, version int64) string {
	t := TwinResponsePrefix + strconv.Itoa(status) + "/?" + RequestIDKey + "=" + rid
	if version > 0 {
		t += "&" + VersionKey + "=" + strconv.FormatInt(version, 10)
	}
	return t
}

// DesiredPatch is the topic a desired-properties patch of version version
// is sent on.
func DesiredPatch(version int64) string {
	return DesiredPatchPrefix + "?" + VersionKey + "=" + strconv.FormatInt(version, 10)
}

// MethodRequest is the topic the hub calls direct method name on:
// $iothub/methods/POST/{name}/?$rid={rid}.
func MethodRequest(name, rid string) string {
	return MethodRequestPrefix + name + "/?" + RequestIDKey + "=" + rid
}

// MethodResponse is the topic a device answers method call rid on:
// $iothub/methods/res/{status}/?$rid={rid}.
func MethodResponse(status int, rid string) string {
	return MethodResponsePrefix + strconv.Itoa(status) + "/?" + RequestIDKey + "=" + rid
}

// Response is a parsed twin or method response topic.
type Response struct {
	Status  int
	RID     string // as written in the topic
	Version int64  // $version (reported, after a reported PATCH); 0 if absent
}

// ParseTwinResponse reads $iothub/twin/res/{status}/?$rid={rid}[&$version={n}].
func ParseTwinResponse(topic string) (Response, error) {
	return parseResponse(topic, TwinResponsePrefix, "twin response")
}

// ParseMethodResponse reads $iothub/methods/res/{status}/?$rid={rid}.
// A device may answer with any integer status.
func ParseMethodResponse(topic string) (Response, error) {
	return parseResponse(topic, MethodResponsePrefix, "method response")
}

func parseResponse(topic, prefix, what string) (Response, error) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return Response{}, fmt.Errorf("topic %q is not a %s", topic, what)
	}
	status, _, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(status)
	if err != nil {
		return Response{}, fmt.Errorf("%s topic %q: status %q is not an integer", what, topic, status)
	}
	if prefix == TwinResponsePrefix && (n < 100 || n > 599) {
		return Response{}, fmt.Errorf("%s topic %q: status %q is not an HTTP status", what, topic, status)
	}
	r := Response{Status: n}
	if r.RID, ok = Param(topic, RequestIDKey); !ok || r.RID == "" {
		return Response{}, fmt.Errorf("%s topic %q has no %s", what, topic, RequestIDKey)
	}
	if v, ok := Param(topic, VersionKey); ok {
		if r.Version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return Response{}, fmt.Errorf("%s topic %q: %s %q is not a number", what, topic, VersionKey, v)
		}
	}
	return r, nil
}

// ParseMethodRequest reads $iothub/methods/POST/{name}/?$rid={rid}.
func ParseMethodRequest(topic string) (name, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, MethodRequestPrefix)
	if !ok {
		return "", "", fmt.Errorf("topic %q is not a method request", topic)
	}
	name, _, ok = strings.Cut(rest, "/")
	if !ok || name == "" {
		return "", "", fmt.Errorf("method request topic %q names no method", topic)
	}
	if rid, ok = Param(topic, RequestIDKey); !ok || rid == "" {
		return "", "", fmt.Errorf("method request topic %q has no %s", topic, RequestIDKey)
	}
	return name, rid, nil
}

// DesiredPatchVersion reads the $version of a desired patch topic.
func DesiredPatchVersion(topic string) (int64, bool) {
	if !strings.HasPrefix(topic, DesiredPatchPrefix) {
		return 0, false
	}
	v, ok := Param(topic, VersionKey)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// RequestID returns the raw value of "$rid" in a topic's query part, as
// the client wrote it, so that it can be echoed verbatim.
func RequestID(topic string) (string, bool) { return Param(topic, RequestIDKey) }

// Param returns the raw value of key in a topic's query part (after "?").
func Param(topic, key string) (string, bool) {
	_, query, ok := strings.Cut(topic, "?")
	if !ok {
		return "", false
	}
	for pair := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if name, err := url.QueryUnescape(k); err == nil && name == key {
			return v, true
		}
	}
	return "", false
}

// ClientID is the MQTT client identifier of a device ("{deviceId}") or a
// module ("{deviceId}/{moduleId}").
func ClientID(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}

// ParseClientID reads a client identifier and checks both IDs against the
// hub's ID rules.
func ParseClientID(clientID string) (deviceID, moduleID string, err error) {
	deviceID, moduleID, isModule := strings.Cut(clientID, "/")
	if err := iothub.ValidateID("device ID", deviceID); err != nil {
		return "", "", fmt.Errorf("client ID: %w", err)
	}
	if isModule {
		if err := iothub.ValidateID("module ID", moduleID); err != nil {
			return "", "", fmt.Errorf("client ID: %w", err)
		}
	}
	return deviceID, moduleID, nil
}

// Username is the CONNECT user name IoT Hub expects: the hub's host name
// without port, the client ID, the API version and the client's type
// (its user agent).
func Username(host, clientID, clientType string) string {
	return host + "/" + clientID + "/?api-version=" + iothub.APIVersion + "&DeviceClientType=" + url.QueryEscape(clientType)
}

// Telemetry: a device sends events on devices/{d}/messages/events/{bag}, a
// module on devices/{d}/modules/{m}/messages/events/{bag}.

// EventsTopic is the topic identity (deviceID, moduleID) sends telemetry
// on, without a property bag and without the "/" before one.
func EventsTopic(deviceID, moduleID string) string {
	if moduleID == "" {
		return "devices/" + deviceID + "/messages/events"
	}
	return "devices/" + deviceID + "/modules/" + moduleID + "/messages/events"
}

// Events is the topic of a telemetry message with properties props (nil
// for none): the events topic, "/", and the encoded property bag.
func Events(deviceID, moduleID string, props map[string]string) string {
	return EventsTopic(deviceID, moduleID) + "/" + EncodeProperties(props)
}

// EventsBag reports whether topic is a telemetry topic of identity
// (deviceID, moduleID) and returns its property bag, still encoded.
func EventsBag(deviceID, moduleID, topic string) (bag string, ok bool) {
	rest, ok := strings.CutPrefix(topic, EventsTopic(deviceID, moduleID))
	switch {
	case !ok:
		return "", false
	case rest == "":
		return "", true
	case rest[0] == '/':
		return rest[1:], true
	}
	return "", false
}

// DeviceBoundFilter is the filter of a device's cloud-to-device messages.
func DeviceBoundFilter(deviceID string) string {
	return "devices/" + deviceID + "/messages/devicebound/#"
}

// ModuleFilter is the filter of everything sent to a module.
func ModuleFilter(deviceID, moduleID string) string {
	return "devices/" + deviceID + "/modules/" + moduleID + "/#"
}

// ModuleInputsFilter is the filter of messages routed to a module's inputs.
func ModuleInputsFilter(deviceID, moduleID string) string {
	return "devices/" + deviceID + "/modules/" + moduleID + "/inputs/#"
}

// EncodeProperties writes a property bag: key=value pairs joined by "&",
// keys in sorted order, both sides percent-encoded (a space as %20 and a
// '+' as %2B, as Microsoft's SDKs write them: a topic name cannot hold
// '+'). System properties use their "$." keys ($.mid, $.cid, $.ct, …).
func EncodeProperties(props map[string]string) string {
	v := url.Values{}
	for k, p := range props {
		v.Set(k, p)
	}
	return strings.ReplaceAll(v.Encode(), "+", "%20")
}

// ParseProperties reads a property bag. Keys and values are
// percent-decoded, so "%24.ct" (as the Azure SDK for C writes it) is
// "$.ct"; a part that does not decode is kept as written. A later pair
// with the same key wins.
func ParseProperties(bag string) map[string]string {
	props := map[string]string{}
	for pair := range strings.SplitSeq(bag, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		props[unescape(k)] = unescape(v)
	}
	return props
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
