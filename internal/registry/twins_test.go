package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

func TestTwinPatchWithStaleETag(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	if _, _, err := c.EnsureDevice(ctx, iothub.Device{DeviceID: "d1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.EnsureModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"}); err != nil {
		t.Fatal(err)
	}
	tw, err := c.GetModuleTwin(ctx, "d1", "m1")
	if err != nil {
		t.Fatalf("GetModuleTwin: %v", err)
	}
	if tw.ETag != "AAAAAAAAAAE=" || tw.Version != 2 || iothub.DocVersion(tw.Properties.Desired) != 1 {
		t.Fatalf("new twin etag %q version %d desired $version %d, want AAAAAAAAAAE= 2 1",
			tw.ETag, tw.Version, iothub.DocVersion(tw.Properties.Desired))
	}
	patch := iothub.Twin{Properties: &iothub.TwinProperties{Desired: map[string]json.RawMessage{"telemetryInterval": json.RawMessage("122")}}}
	tw2, err := c.UpdateModuleTwin(ctx, "d1", "m1", patch, tw.ETag)
	if err != nil {
		t.Fatalf("UpdateModuleTwin with the current etag: %v", err)
	}
	if got := string(tw2.Properties.Desired["telemetryInterval"]); got != "122" || tw2.ETag != "AAAAAAAAAAI=" {
		t.Errorf("patched twin telemetryInterval %s etag %q, want 122 and AAAAAAAAAAI=", got, tw2.ETag)
	}
	last := hub.requests()[len(hub.requests())-1]
	if diff := cmp.Diff([]string{`"AAAAAAAAAAE="`}, last.IfMatch); diff != "" {
		t.Errorf("If-Match (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"properties": map[string]any{"desired": map[string]any{"telemetryInterval": float64(122)}}}, decodeMap(t, last.Body)); diff != "" {
		t.Errorf("patch body (-want +got):\n%s", diff)
	}

	_, err = c.UpdateModuleTwin(ctx, "d1", "m1", patch, tw.ETag)
	want := &ResponseError{
		Method: "PATCH", Path: "/twins/d1/modules/m1", StatusCode: 412, Code: "PreconditionFailed", Number: 412001,
		Message: "ETag mismatch for device ID 'd1'",
	}
	got := asResponseError(t, err)
	got.TrackingID = ""
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stale etag error (-want +got):\n%s", diff)
	}
	if got := len(hub.requests()); got != 5 {
		t.Errorf("hub saw %d requests, want 5 (412 is not retried)", got)
	}
}

func TestDeviceTwinReplaceAndPatch(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"}); err != nil {
		t.Fatal(err)
	}
	tags := map[string]json.RawMessage{"site": json.RawMessage(`"north"`)}
	tw, err := c.UpdateDeviceTwin(ctx, "d1", iothub.Twin{Tags: tags}, "")
	if err != nil {
		t.Fatalf("UpdateDeviceTwin: %v", err)
	}
	if diff := cmp.Diff(tags, tw.Tags); diff != "" {
		t.Errorf("tags after patch (-want +got):\n%s", diff)
	}
	desired := map[string]json.RawMessage{"mode": json.RawMessage(`"eco"`)}
	tw, err = c.ReplaceDeviceTwin(ctx, "d1", iothub.Twin{Properties: &iothub.TwinProperties{Desired: desired}}, tw.ETag)
	if err != nil {
		t.Fatalf("ReplaceDeviceTwin: %v", err)
	}
	if tw.Tags != nil || string(tw.Properties.Desired["mode"]) != `"eco"` {
		t.Errorf("after replace tags %v desired %v, want no tags and mode eco", tw.Tags, tw.Properties.Desired)
	}
	got, err := c.GetDeviceTwin(ctx, "d1")
	if err != nil {
		t.Fatalf("GetDeviceTwin: %v", err)
	}
	if diff := cmp.Diff(tw, got); diff != "" {
		t.Errorf("GET after replace (-replaced +got):\n%s", diff)
	}
	var methods []string
	for _, r := range hub.requests()[1:] {
		methods = append(methods, r.Method+" "+r.Path)
	}
	want := []string{"PATCH /twins/d1", "PUT /twins/d1", "GET /twins/d1"}
	if diff := cmp.Diff(want, methods); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestModuleTwinReplace(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"})
	c.CreateModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	desired := map[string]json.RawMessage{"a": json.RawMessage(`1`)}
	tw, err := c.ReplaceModuleTwin(ctx, "d1", "m1", iothub.Twin{Properties: &iothub.TwinProperties{Desired: desired}}, "")
	if err != nil {
		t.Fatalf("ReplaceModuleTwin: %v", err)
	}
	if string(tw.Properties.Desired["a"]) != "1" || tw.ModuleID != "m1" {
		t.Errorf("replaced twin = %+v", tw)
	}
	last := hub.requests()[len(hub.requests())-1]
	if last.Method != http.MethodPut || last.Path != "/twins/d1/modules/m1" {
		t.Errorf("request = %s %s, want PUT /twins/d1/modules/m1", last.Method, last.Path)
	}
}

func TestIfMatchQuoting(t *testing.T) {
	tests := []struct {
		etag, want string
	}{
		{"", `"*"`},
		{"*", `"*"`},
		{`"*"`, `"*"`},
		{"MTU0MDQ2NTQw", `"MTU0MDQ2NTQw"`},
		{`"MTU0MDQ2NTQw"`, `"MTU0MDQ2NTQw"`},
		{`W/"MTU0MDQ2NTQw"`, `W/"MTU0MDQ2NTQw"`},
		{"AAAAAAAAAAE=", `"AAAAAAAAAAE="`},
	}
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	ops := map[string]func(etag string){
		"UpdateDevice":      func(e string) { c.UpdateDevice(ctx, iothub.Device{DeviceID: "d1"}, e) },
		"DeleteDevice":      func(e string) { c.DeleteDevice(ctx, "d1", e) },
		"UpdateModule":      func(e string) { c.UpdateModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"}, e) },
		"DeleteModule":      func(e string) { c.DeleteModule(ctx, "d1", "m1", e) },
		"UpdateDeviceTwin":  func(e string) { c.UpdateDeviceTwin(ctx, "d1", iothub.Twin{}, e) },
		"ReplaceDeviceTwin": func(e string) { c.ReplaceDeviceTwin(ctx, "d1", iothub.Twin{}, e) },
		"UpdateModuleTwin":  func(e string) { c.UpdateModuleTwin(ctx, "d1", "m1", iothub.Twin{}, e) },
		"ReplaceModuleTwin": func(e string) { c.ReplaceModuleTwin(ctx, "d1", "m1", iothub.Twin{}, e) },
	}
	for name, op := range ops {
		for _, tt := range tests {
			n := len(hub.requests())
			op(tt.etag)
			reqs := hub.requests()
			if len(reqs) != n+1 {
				t.Fatalf("%s(%q) sent %d requests, want 1", name, tt.etag, len(reqs)-n)
			}
			if diff := cmp.Diff([]string{tt.want}, reqs[n].IfMatch); diff != "" {
				t.Errorf("%s(%q): If-Match (-want +got):\n%s", name, tt.etag, diff)
			}
		}
	}
}
