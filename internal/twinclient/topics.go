package twinclient

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// IoT Hub's twin topics for a device or module identity.
const (
	topicResponses    = "$iothub/twin/res/"
	filterResponses   = "$iothub/twin/res/#"
	topicDesired      = "$iothub/twin/PATCH/properties/desired/"
	filterDesired     = "$iothub/twin/PATCH/properties/desired/#"
	topicGetTwin      = "$iothub/twin/GET/?$rid="
	topicPatchReport  = "$iothub/twin/PATCH/properties/reported/?$rid="
	maxResponseStatus = 599
)

// response is a parsed twin response topic:
// $iothub/twin/res/{status}/?$rid={rid}[&$version={n}].
type response struct {
	status  int
	rid     string
	version int64 // reported $version after a reported PATCH; 0 if absent
}

func parseResponseTopic(topic string) (response, error) {
	rest, ok := strings.CutPrefix(topic, topicResponses)
	if !ok {
		return response{}, fmt.Errorf("topic %q is not a twin response", topic)
	}
	status, query, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(status)
	if err != nil || n < 100 || n > maxResponseStatus {
		return response{}, fmt.Errorf("twin response topic %q: status %q is not an HTTP status", topic, status)
	}
	q, err := url.ParseQuery(strings.TrimPrefix(query, "?"))
	if err != nil {
		return response{}, fmt.Errorf("twin response topic %q: %v", topic, err)
	}
	r := response{status: n, rid: q.Get("$rid")}
	if r.rid == "" {
		return response{}, fmt.Errorf("twin response topic %q has no $rid", topic)
	}
	if v := q.Get("$version"); v != "" {
		r.version, err = strconv.ParseInt(v, 10, 64)
		if err != nil {
			return response{}, fmt.Errorf("twin response topic %q: $version %q is not a number", topic, v)
		}
	}
	return r, nil
}

// username is what IoT Hub expects in CONNECT: the hub host without port,
// the identity, the API version and the client type.
func username(host, deviceID, moduleID, userAgent string) string {
	id := deviceID
	if moduleID != "" {
		id += "/" + moduleID
	}
	return host + "/" + id + "/?api-version=" + iothub.APIVersion + "&DeviceClientType=" + url.QueryEscape(userAgent)
}

// clientID is the MQTT client identifier of a device or module.
func clientID(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}
