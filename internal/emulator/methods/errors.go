package methods

import (
	"fmt"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Error is a failed invocation as the hub reports it. The service API
// writes these in the shape IoT Hub's method gateway uses: a JSON error
// object serialised into the "Message" member, with "info" when set.
type Error struct {
	Code    iothub.ErrorCode
	Message string
	// Info is the error's "info" object; nil leaves the member out.
	Info map[string]string
}

func (e *Error) Error() string { return e.Code.Name + ": " + e.Message }

// The messages IoT Hub writes for the failures of a call.
const (
	msgNotOnline = "The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103"
	msgTimeout   = "Timed out waiting for the response from device."
	msgGone      = "Device unavailable"
	msgBusy      = "Too many direct method calls are in flight to this device; at most %d are allowed."
)

// notOnline: the target was not connected and subscribed to methods
// within the connect timeout; info.timeout is that timeout.
func notOnline(connectTimeout time.Duration) *Error {
	return &Error{Code: iothub.DeviceNotOnline, Message: msgNotOnline,
		Info: map[string]string{"timeout": timeSpan(connectTimeout)}}
}

func responseTimeout() *Error {
	return &Error{Code: iothub.GatewayTimeout, Message: msgTimeout, Info: map[string]string{}}
}

// disconnected: the target's connection ended while the call was in
// flight.
func disconnected() *Error {
	return &Error{Code: iothub.DeviceConnectionClosedRemotely, Message: msgGone, Info: map[string]string{}}
}

func busy(limit int) *Error {
	return &Error{Code: iothub.ThrottlingException, Message: fmt.Sprintf(msgBusy, limit), Info: map[string]string{}}
}

// timeSpan formats d as .NET prints a TimeSpan of whole seconds: hh:mm:ss.
func timeSpan(d time.Duration) string {
	s := int(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}
