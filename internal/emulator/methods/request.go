package methods

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Limits of a method invocation, as IoT Hub documents them.
const (
	DefaultResponseTimeout = 30 * time.Second
	MinResponseTimeout     = 5 * time.Second
	MaxResponseTimeout     = 300 * time.Second
	DefaultConnectTimeout  = 0
	MaxConnectTimeout      = 300 * time.Second
	// MaxPayloadBytes bounds the request payload (128 KB).
	MaxPayloadBytes = 128 * 1024
)

// Request is a validated method invocation.
type Request struct {
	Name string
	// Payload is the request payload as JSON ("null" when the caller sent
	// none); the device receives it as the PUBLISH body.
	Payload         []byte
	ResponseTimeout time.Duration
	ConnectTimeout  time.Duration
}

// invocation is the body of POST /twins/{id}[/modules/{mid}]/methods.
type invocation struct {
	MethodName      json.RawMessage `json:"methodName"`
	Payload         json.RawMessage `json:"payload"`
	ResponseTimeout json.RawMessage `json:"responseTimeoutInSeconds"`
	ConnectTimeout  json.RawMessage `json:"connectTimeoutInSeconds"`
}

// ParseRequest reads and checks an invocation body. Failures are *Error
// with code ArgumentInvalid (400004), as the hub answers them.
func ParseRequest(body []byte) (Request, error) {
	var inv invocation
	if err := json.Unmarshal(body, &inv); err != nil {
		return Request{}, invalid("the request body is not a JSON object: %v", err)
	}
	var r Request
	if len(inv.MethodName) == 0 || isNull(inv.MethodName) {
		return Request{}, invalid("methodName is required")
	}
	if err := json.Unmarshal(inv.MethodName, &r.Name); err != nil {
		return Request{}, invalid("methodName must be a string")
	}
	if err := checkMethodName(r.Name); err != nil {
		return Request{}, err
	}
	var err error
	if r.ResponseTimeout, err = seconds(inv.ResponseTimeout, "responseTimeoutInSeconds",
		DefaultResponseTimeout, MinResponseTimeout, MaxResponseTimeout); err != nil {
		return Request{}, err
	}
	if r.ConnectTimeout, err = seconds(inv.ConnectTimeout, "connectTimeoutInSeconds",
		DefaultConnectTimeout, 0, MaxConnectTimeout); err != nil {
		return Request{}, err
	}
	r.Payload = []byte("null")
	if len(inv.Payload) > 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, inv.Payload); err != nil {
			return Request{}, invalid("payload is not valid JSON: %v", err)
		}
		if compact.Len() > MaxPayloadBytes {
			return Request{}, invalid("payload is %d bytes of JSON; at most %d (128 KB) are allowed", compact.Len(), MaxPayloadBytes)
		}
		r.Payload = compact.Bytes()
	}
	return r, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// seconds reads a timeout in whole seconds; absent or null means def.
func seconds(raw json.RawMessage, field string, def, lo, hi time.Duration) (time.Duration, error) {
	if len(raw) == 0 || isNull(raw) {
		return def, nil
	}
	rangeErr := invalid("%s must be within [%d; %d].", field, int(lo.Seconds()), int(hi.Seconds()))
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, invalid("%s must be an integer number of seconds", field)
	}
	if f != math.Trunc(f) {
		return 0, invalid("%s must be an integer number of seconds", field)
	}
	if f < lo.Seconds() || f > hi.Seconds() {
		return 0, rangeErr
	}
	return time.Duration(f) * time.Second, nil
}

// nameForbidden are the characters IoT Hub does not allow in a method
// name besides spaces, controls and non-ASCII; '#' and '+' cannot appear
// in an MQTT topic name, which the name becomes part of.
const nameForbidden = `$()<>@,;:\"/[]?={}#+`

// checkMethodName applies the direct methods guide's rule: US-ASCII
// printable characters except $ ( ) < > @ , ; : \ " / [ ] ? = { } SP HT.
func checkMethodName(name string) error {
	if name == "" {
		return invalid("methodName is required")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(nameForbidden, c) >= 0 {
			return invalid("methodName %q: character %q at position %d is not allowed (printable US-ASCII except %s and space)",
				name, rune(c), i+1, nameForbidden)
		}
	}
	return nil
}

func invalid(format string, args ...any) *Error {
	return &Error{Code: iothub.ArgumentInvalid, Message: fmt.Sprintf(format, args...)}
}
