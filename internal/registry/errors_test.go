package registry

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

func asResponseError(t *testing.T, err error) *ResponseError {
	t.Helper()
	var re *ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *ResponseError", err, err)
	}
	return re
}

func TestRetry503Then200(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"}); err != nil {
		t.Fatal(err)
	}
	hub.Faults.FailNext(faults.DeviceGet, 1, iothub.ServiceUnavailable, "busy")
	dev, err := c.GetDevice(ctx, "d1")
	if err != nil {
		t.Fatalf("GetDevice after one 503: %v", err)
	}
	if dev.DeviceID != "d1" {
		t.Errorf("device ID = %q, want d1", dev.DeviceID)
	}
	reqs := hub.requests()[1:]
	if len(reqs) != 2 {
		t.Fatalf("hub saw %d GETs, want 2 (one retry)", len(reqs))
	}
	for i, r := range reqs {
		if r.Authorization == "" {
			t.Errorf("try %d carried no Authorization", i+1)
		}
	}
}

func Test429SurfacesAfterRetries(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	hub.Faults.FailNext(faults.DeviceGet, 4, iothub.ThrottlingBacklogTimeout,
		"The request has been throttled. Wait 10 seconds and try again. Operation type: CRUD")
	_, err := c.GetDevice(context.Background(), "d1")
	want := &ResponseError{
		Method: "GET", Path: "/devices/d1", StatusCode: 429, Code: "ThrottlingBacklogTimeout", Number: 429003,
		Message: "The request has been throttled. Wait 10 seconds and try again. Operation type: CRUD",
	}
	got := asResponseError(t, err)
	if len(got.TrackingID) != 32 {
		t.Errorf("tracking ID %q, want the hub's 32 hex digits", got.TrackingID)
	}
	got.TrackingID = ""
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if n := len(hub.requests()); n != 4 {
		t.Errorf("hub saw %d tries, want 4 (1 + MaxRetries 3)", n)
	}
}

func TestErrorShapes(t *testing.T) {
	tests := []struct {
		name  string
		fault canned
		want  ResponseError
	}{{
		name: "message with ErrorCode prefix and header",
		fault: canned{status: 404, header: "DeviceNotFound",
			body: `{"Message":"ErrorCode:DeviceNotFound;sensor-thl-001","ExceptionMessage":"Tracking ID:1f2e3d4c5b6a-G:10-TimeStamp:12/09/2021 20:21:43"}`},
		want: ResponseError{StatusCode: 404, Code: "DeviceNotFound", Number: 404001, Message: "sensor-thl-001", TrackingID: "1f2e3d4c5b6a"},
	}, {
		name:  "prefix without header",
		fault: canned{status: 409, body: `{"Message":"ErrorCode:DeviceAlreadyExists;A device with ID 'd1' is already registered.","ExceptionMessage":""}`},
		want:  ResponseError{StatusCode: 409, Code: "DeviceAlreadyExists", Number: 409001, Message: "A device with ID 'd1' is already registered."},
	}, {
		name: "JSON inside Message, with header",
		fault: canned{status: 404, header: "ModuleNotFound",
			body: `{"Message":"{\"errorCode\":404010,\"trackingId\":\"abc123-G:3\",\"message\":\"Module m1 not found\",\"timestampUtc\":\"2021-07-07T20:47:33Z\"}","ExceptionMessage":""}`},
		want: ResponseError{StatusCode: 404, Code: "ModuleNotFound", Number: 404010, Message: "Module m1 not found", TrackingID: "abc123-G:3"},
	}, {
		name:  "JSON inside Message, number only",
		fault: canned{status: 401, body: `{"Message":"{\"errorCode\":401002,\"trackingId\":\"t1\",\"message\":\"Unauthorized\",\"timestampUtc\":\"\"}","ExceptionMessage":""}`},
		want:  ResponseError{StatusCode: 401, Code: "IotHubUnauthorizedAccess", Number: 401002, Message: "Unauthorized", TrackingID: "t1"},
	}, {
		name:  "header only, empty body",
		fault: canned{status: 412, header: "PreconditionFailed"},
		want:  ResponseError{StatusCode: 412, Code: "PreconditionFailed", Number: 412001},
	}, {
		name:  "unknown code name",
		fault: canned{status: 400, header: "SomethingNew", body: `{"Message":"ErrorCode:SomethingNew;new text","ExceptionMessage":""}`},
		want:  ResponseError{StatusCode: 400, Code: "SomethingNew", Message: "new text"},
	}, {
		name:  "not JSON",
		fault: canned{status: 400, body: "<html>\n  bad   request\n</html>"},
		want:  ResponseError{StatusCode: 400, Message: "<html> bad request </html>"},
	}, {
		name:  "Message without prefix",
		fault: canned{status: 400, body: `{"Message":"plain words"}`},
		want:  ResponseError{StatusCode: 400, Message: "plain words"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cannedClient(t, tt.fault)
			_, err := c.GetDevice(context.Background(), "d1")
			want := tt.want
			want.Method, want.Path = "GET", "/devices/d1"
			if diff := cmp.Diff(&want, asResponseError(t, err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResponseErrorText(t *testing.T) {
	tests := []struct {
		err  ResponseError
		want string
	}{
		{ResponseError{Method: "PUT", Path: "/devices/d1", StatusCode: 409, Code: "DeviceAlreadyExists", Message: "A device with ID 'd1' is already registered."},
			"PUT /devices/d1: 409 DeviceAlreadyExists: A device with ID 'd1' is already registered."},
		{ResponseError{Method: "GET", Path: "/devices", StatusCode: 502}, "GET /devices: 502 Bad Gateway"},
		{ResponseError{Method: "GET", Path: "/devices", StatusCode: 400, Message: "oops"}, "GET /devices: 400: oops"},
		{ResponseError{Method: "PATCH", Path: "/twins/d", StatusCode: 412, Code: "PreconditionFailed"}, "PATCH /twins/d: 412 PreconditionFailed"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestStatusCode(t *testing.T) {
	re := &ResponseError{StatusCode: 404}
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 0},
		{re, 404},
		{wrap(re), 404},
	}
	for _, tt := range tests {
		if got := StatusCode(tt.err); got != tt.want {
			t.Errorf("StatusCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func wrap(err error) error { return &wrapped{err} }

type wrapped struct{ error }

func (w *wrapped) Unwrap() error { return w.error }

func TestUnauthorizedWithWrongKey(t *testing.T) {
	hub := newTestHub(t)
	cs := connstr.ConnectionString{HostName: hub.Host(), SharedAccessKeyName: testPolicy, SharedAccessKey: "d3Jvbmcga2V5"}
	c, err := NewClient(cs, hub.options(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(context.Background(), "d1")
	re := asResponseError(t, err)
	if re.StatusCode != 401 || re.Code != "IotHubUnauthorizedAccess" || re.Number != 401002 {
		t.Errorf("error = %+v, want 401 IotHubUnauthorizedAccess 401002", re)
	}
	if n := len(hub.requests()); n != 1 {
		t.Errorf("hub saw %d tries, want 1 (401 is not retried)", n)
	}
}
