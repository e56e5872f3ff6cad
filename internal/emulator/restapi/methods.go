package restapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
)

// registerMethods mounts direct method invocation on devices and modules.
func (a *api) registerMethods(mux *http.ServeMux, engine *methods.Engine) {
	ops := map[string]operation{
		http.MethodPost: {need: hub.ServiceConnect, run: func(w http.ResponseWriter, r *http.Request) error {
			return a.invokeMethod(w, r, engine)
		}},
	}
	a.route(mux, "/twins/{id}/methods", ops)
	a.route(mux, "/twins/{id}/modules/{mid}/methods", ops)
}

func (a *api) invokeMethod(w http.ResponseWriter, r *http.Request, engine *methods.Engine) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	req, err := methods.ParseRequest(body)
	if err != nil {
		return err
	}
	id := twinRef(r)
	if id.IsModule() {
		_, err = a.hub.GetModule(id.DeviceID, id.ModuleID)
	} else {
		_, err = a.hub.GetDevice(id.DeviceID)
	}
	if err != nil {
		return err
	}
	res, err := engine.Invoke(r.Context(), id, req)
	if ctxErr := r.Context().Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return nil // the caller went away: nobody reads an answer
	}
	if err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, methodResult(res))
	return nil
}

// methodResult is the 200 body: the device's status and its payload as
// the device sent it (IoT Hub does not re-encode it), null when empty.
func methodResult(res methods.Result) []byte {
	payload := res.Payload
	if len(payload) == 0 {
		payload = []byte("null")
	}
	b := make([]byte, 0, len(payload)+40)
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(res.Status), 10)
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	return append(b, '}')
}

// methodErrorBody is the body of a failed invocation: IoT Hub's method
// gateway serialises its own error object into "Message" and leaves
// "ExceptionMessage" empty.
func (a *api) methodErrorBody(requestID string, e *methods.Error) []byte {
	now := a.now().UTC()
	var info json.RawMessage
	if e.Info != nil {
		info, _ = json.Marshal(e.Info) // {} stays {}
	}
	inner, _ := json.Marshal(struct {
		ErrorCode    int             `json:"errorCode"`
		TrackingID   string          `json:"trackingId"`
		Message      string          `json:"message"`
		Info         json.RawMessage `json:"info,omitempty"`
		TimestampUTC string          `json:"timestampUtc"`
	}{
		ErrorCode:    e.Code.Number,
		TrackingID:   strings.ReplaceAll(requestID, "-", "") + "-TimeStamp:" + now.Format("01/02/2006 15:04:05"),
		Message:      e.Message,
		Info:         info,
		TimestampUTC: now.Format("2006-01-02T15:04:05.0000000Z"),
	})
	b, _ := json.Marshal(struct {
		Message          string `json:"Message"`
		ExceptionMessage string `json:"ExceptionMessage"`
	}{string(inner), ""})
	return b
}
