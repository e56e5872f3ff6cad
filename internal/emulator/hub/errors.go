package hub

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Error is a failure the hub reports to clients: an IoT Hub error code and
// a message that is safe to show (no key, no signature).
type Error struct {
	Code    iothub.ErrorCode
	Message string
}

func (e *Error) Error() string { return e.Code.Name + ": " + e.Message }

func newError(code iothub.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// StatusOf returns the HTTP status for err: 200 for nil, the code's status
// for a *Error, 500 for anything else.
func StatusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code.Status()
	}
	return http.StatusInternalServerError
}

// CodeOf returns the IoT Hub error code of err, ServerError when it has none.
func CodeOf(err error) iothub.ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return iothub.ServerError
}

func unauthorized(format string, args ...any) *Error {
	return newError(iothub.IotHubUnauthorizedAccess, format, args...)
}

func deviceNotFound(id string) *Error { return newError(iothub.DeviceNotFound, "%s", id) }

func moduleNotFound(deviceID, moduleID string) *Error {
	return newError(iothub.ModuleNotFound, "%s/%s", deviceID, moduleID)
}
