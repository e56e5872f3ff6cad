package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// ResponseError is a response from the hub with an unexpected status.
type ResponseError struct {
	Method, Path string // Path is the escaped request path, without query
	StatusCode   int
	Code         string // IoT Hub error code name, e.g. "DeviceNotFound" ("" when unknown)
	Number       int    // e.g. 404001 (0 when unknown)
	Message      string // the hub's text without the "ErrorCode:Name;" prefix
	TrackingID   string
}

func (e *ResponseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.StatusCode)
	switch {
	case e.Code != "":
		b.WriteString(" " + e.Code)
	case e.Message == "":
		b.WriteString(" " + http.StatusText(e.StatusCode))
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// StatusCode returns the HTTP status of a *ResponseError in err's chain, or
// 0 when there is none.
func StatusCode(err error) int {
	var re *ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// maxMessage bounds the text taken from a body that is not the hub's JSON
// (a proxy's HTML page, say).
const maxMessage = 200

// newResponseError reads an error response. IoT Hub uses two body shapes:
//
//	{"Message":"ErrorCode:Name;text","ExceptionMessage":"Tracking ID:…-G:…-TimeStamp:…"}
//	{"Message":"{\"errorCode\":404001,\"trackingId\":\"…\",\"message\":\"text\",…}","ExceptionMessage":""}
//
// and names the code in the iothub-errorcode header.
func newResponseError(method, path string, resp *http.Response) *ResponseError {
	e := &ResponseError{Method: method, Path: path, StatusCode: resp.StatusCode}
	e.Code = strings.TrimSpace(resp.Header.Get("iothub-errorcode"))
	payload, _ := runtime.Payload(resp)
	parseErrorBody(e, payload)
	if e.Number == 0 && e.Code != "" {
		if c, ok := iothub.LookupErrorCode(e.Code); ok {
			e.Number = c.Number
		}
	}
	if e.Code == "" && e.Number != 0 {
		if c, ok := iothub.LookupErrorNumber(e.Number); ok {
			e.Code = c.Name
		}
	}
	if e.TrackingID == "" {
		e.TrackingID = resp.Header.Get("x-ms-request-id")
	}
	e.Message = sas.Redact(e.Message)
	return e
}

func parseErrorBody(e *ResponseError, payload []byte) {
	var outer struct {
		Message          string
		ExceptionMessage string
	}
	if err := json.Unmarshal(payload, &outer); err != nil || outer.Message == "" {
		e.Message = plainText(payload)
		return
	}
	e.TrackingID = trackingID(outer.ExceptionMessage)
	msg := strings.TrimSpace(outer.Message)
	if strings.HasPrefix(msg, "{") {
		var inner struct {
			ErrorCode  int    `json:"errorCode"`
			TrackingID string `json:"trackingId"`
			Message    string `json:"message"`
		}
		if json.Unmarshal([]byte(msg), &inner) == nil {
			e.Number = inner.ErrorCode
			if inner.TrackingID != "" {
				e.TrackingID = inner.TrackingID
			}
			e.Message = inner.Message
			return
		}
	}
	if rest, ok := strings.CutPrefix(msg, "ErrorCode:"); ok {
		name, text, found := strings.Cut(rest, ";")
		if found {
			if e.Code == "" {
				e.Code = strings.TrimSpace(name)
			}
			msg = text
		}
	}
	e.Message = msg
}

// trackingID extracts the ID from "Tracking ID:<id>-G:<n>-TimeStamp:<t>".
func trackingID(s string) string {
	id, ok := strings.CutPrefix(strings.TrimSpace(s), "Tracking ID:")
	if !ok {
		return ""
	}
	for _, sep := range []string{"-G:", "-TimeStamp:"} {
		if i := strings.Index(id, sep); i >= 0 {
			id = id[:i]
		}
	}
	return strings.TrimSpace(id)
}

// plainText returns a short single-line excerpt of a non-JSON body.
func plainText(payload []byte) string {
	s := strings.Join(strings.Fields(string(payload)), " ")
	if len(s) > maxMessage {
		s = strings.ToValidUTF8(s[:maxMessage], "") + "…"
	}
	return s
}
