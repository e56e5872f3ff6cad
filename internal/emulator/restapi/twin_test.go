package restapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// desired returns the desired members of a twin without $metadata and $version.
func desired(t *testing.T, tw map[string]any) map[string]any {
	t.Helper()
	d, _ := path(tw, "properties.desired").(map[string]any)
	out := map[string]any{}
	for k, v := range d {
		if !strings.HasPrefix(k, "$") {
			out[k] = v
		}
	}
	return out
}

func TestTwinPatchMergesAndNullDeletes(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	const p = "/twins/d1/modules/m1"
	steps := []struct {
		body        string
		wantDesired map[string]any
		wantTags    map[string]any
	}{
		{`{"properties":{"desired":{"telemetryInterval":122,"nested":{"a":1,"b":{"c":true}}}}}`,
			map[string]any{"telemetryInterval": 122.0, "nested": map[string]any{"a": 1.0, "b": map[string]any{"c": true}}}, nil},
		{`{"properties":{"desired":{"nested":{"a":null,"b":{"d":"x"}},"list":[1,"two",null]}}}`,
			map[string]any{"telemetryInterval": 122.0, "nested": map[string]any{"b": map[string]any{"c": true, "d": "x"}}, "list": []any{1.0, "two", nil}}, nil},
		{`{"tags":{"site":"lab","owner":{"name":"ann"}}}`,
			map[string]any{"telemetryInterval": 122.0, "nested": map[string]any{"b": map[string]any{"c": true, "d": "x"}}, "list": []any{1.0, "two", nil}},
			map[string]any{"site": "lab", "owner": map[string]any{"name": "ann"}}},
		{`{"tags":{"owner":null},"properties":{"desired":{"nested":null,"list":null,"replaced":{"new":{"x":null,"y":2}}}}}`,
			map[string]any{"telemetryInterval": 122.0, "replaced": map[string]any{"new": map[string]any{"y": 2.0}}},
			map[string]any{"site": "lab"}},
	}
	version := 2.0
	desiredVersion := 1.0
	etags := map[string]bool{"AAAAAAAAAAE=": true}
	for i, s := range steps {
		tw := e.mustDo(200, "PATCH", p, s.body).json(t)
		version++
		if strings.Contains(s.body, "desired") {
			desiredVersion++
		}
		if diff := cmp.Diff(s.wantDesired, desired(t, tw)); diff != "" {
			t.Errorf("step %d: desired (-want +got):\n%s", i, diff)
		}
		gotTags, _ := tw["tags"].(map[string]any)
		if s.wantTags == nil {
			s.wantTags = map[string]any(nil)
		}
		if diff := cmp.Diff(s.wantTags, gotTags); diff != "" {
			t.Errorf("step %d: tags (-want +got):\n%s", i, diff)
		}
		if tw["version"] != version || path(tw, "properties.desired.$version") != desiredVersion {
			t.Errorf("step %d: version %v desired $version %v; want %v %v", i, tw["version"], path(tw, "properties.desired.$version"), version, desiredVersion)
		}
		if etags[tw["etag"].(string)] {
			t.Errorf("step %d: etag %v repeats", i, tw["etag"])
		}
		etags[tw["etag"].(string)] = true
		// GET shows what PATCH returned.
		if got := e.mustDo(200, "GET", p, "").json(t); !cmp.Equal(got, tw) {
			t.Errorf("step %d: GET differs from the PATCH response: %s", i, cmp.Diff(tw, got))
		}
	}
}

func TestTwinETagAndMetadataFollowTheRecordings(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	tw := e.mustDo(200, "GET", "/twins/d1/modules/m1", "").json(t)
	want := map[string]any{
		"desired":  map[string]any{"$metadata": map[string]any{"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1.0},
		"reported": map[string]any{"$metadata": map[string]any{"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1.0},
	}
	if diff := cmp.Diff(want, tw["properties"]); diff != "" {
		t.Errorf("new twin properties (-want +got):\n%s", diff)
	}
	if tw["etag"] != "AAAAAAAAAAE=" || tw["version"] != 2.0 || tw["status"] != "enabled" || tw["authenticationType"] != "sas" {
		t.Errorf("new twin = %v", tw)
	}
	if _, ok := tw["tags"]; ok {
		t.Error("new twin has a tags member")
	}
	mod := e.mustDo(200, "GET", "/devices/d1/modules/m1", "").json(t)
	if tw["deviceEtag"] != mod["etag"] {
		t.Errorf("deviceEtag = %v; want the module's etag %v", tw["deviceEtag"], mod["etag"])
	}

	tw = e.mustDo(200, "PATCH", "/twins/d1/modules/m1", `{"properties":{"desired":{"username":"userA","deep":{"x":1}}}}`, "If-Match", `"AAAAAAAAAAE="`).json(t)
	if tw["etag"] != "AAAAAAAAAAI=" || tw["version"] != 3.0 {
		t.Errorf("after PATCH etag %v version %v; want AAAAAAAAAAI= 3", tw["etag"], tw["version"])
	}
	md, _ := path(tw, "properties.desired.$metadata").(map[string]any)
	stamp, _ := md["$lastUpdated"].(string)
	if len(stamp) != len("2021-07-07T20:46:40.2842371Z") || !strings.HasSuffix(stamp, "Z") {
		t.Errorf("$lastUpdated = %q; want 7 fractional digits and Z", stamp)
	}
	leaf := map[string]any{"$lastUpdated": stamp, "$lastUpdatedVersion": 2.0}
	wantMeta := map[string]any{
		"$lastUpdated": stamp, "$lastUpdatedVersion": 2.0,
		"username": leaf,
		"deep":     map[string]any{"$lastUpdated": stamp, "$lastUpdatedVersion": 2.0, "x": leaf},
	}
	if diff := cmp.Diff(wantMeta, md); diff != "" {
		t.Errorf("desired $metadata (-want +got):\n%s", diff)
	}
}

func TestTwinPatchIgnoresReadOnlyMembers(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	// The whole twin echoed back, as the C# SDK sends it.
	body := `{"deviceId":"d1","moduleId":"m1","properties":{"desired":{"$metadata":{"$lastUpdated":"0001-01-01T00:00:00Z"},"$version":1,"username":"userA"},"reported":{"$metadata":{"$lastUpdated":"0001-01-01T00:00:00Z"},"$version":1,"sneaky":1}},"etag":"AAAAAAAAAAE=","version":2,"deviceEtag":"xx","status":"disabled","statusUpdateTime":"0001-01-01T00:00:00Z","connectionState":"Connected","lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":7,"authenticationType":"none","x509Thumbprint":{}}`
	tw := e.mustDo(200, "PATCH", "/twins/d1/modules/m1", body, "If-Match", "*").json(t)
	if path(tw, "properties.desired.username") != "userA" {
		t.Errorf("desired = %v", path(tw, "properties.desired"))
	}
	if path(tw, "properties.reported.sneaky") != nil || path(tw, "properties.reported.$version") != 1.0 {
		t.Errorf("the service changed reported properties: %v", path(tw, "properties.reported"))
	}
	if tw["status"] != "enabled" || tw["connectionState"] != "Disconnected" || tw["authenticationType"] != "sas" || tw["cloudToDeviceMessageCount"] != 0.0 {
		t.Errorf("read-only members changed: %v", tw)
	}
}

func TestTwinPutReplacesTagsAndDesired(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.mustDo(200, "PATCH", "/twins/d1", `{"tags":{"a":1,"b":2},"properties":{"desired":{"x":1,"y":{"z":2}}}}`)
	tw := e.mustDo(200, "PUT", "/twins/d1", `{"tags":{"b":3},"properties":{"desired":{"y":{"w":4},"$version":99}}}`).json(t)
	if diff := cmp.Diff(map[string]any{"b": 3.0}, tw["tags"]); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"y": map[string]any{"w": 4.0}}, desired(t, tw)); diff != "" {
		t.Errorf("desired (-want +got):\n%s", diff)
	}
	if path(tw, "properties.desired.$version") != 3.0 {
		t.Errorf("desired $version = %v; want 3", path(tw, "properties.desired.$version"))
	}
	// A PUT without tags or desired clears both.
	tw = e.mustDo(200, "PUT", "/twins/d1", `{}`).json(t)
	if _, ok := tw["tags"]; ok || len(desired(t, tw)) != 0 {
		t.Errorf("after PUT {} tags %v desired %v; want none", tw["tags"], desired(t, tw))
	}
	// Device twins carry capabilities; module twins do not.
	if path(tw, "capabilities.iotEdge") != false || tw["moduleId"] != nil {
		t.Errorf("device twin = %v", tw)
	}
}

func TestTwinIfMatch(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	for _, h := range []string{"", `""`, "*", `"*"`, `"AAAAAAAAAAE="`} {
		t.Run("If-Match="+h, func(t *testing.T) {
			e.mustDo(204, "DELETE", "/devices/d1", "")
			e.createDevice("d1")
			var hdrs []string
			if h != "" {
				hdrs = []string{"If-Match", h}
			}
			e.mustDo(200, "PATCH", "/twins/d1", `{"tags":{"a":1}}`, hdrs...)
		})
	}
	// Stale etags fail for PATCH and PUT with the recorded message.
	for _, m := range []string{"PATCH", "PUT"} {
		r := e.do(m, "/twins/d1", `{"tags":{"a":2}}`, "If-Match", `"AAAAAAAAAAE="`)
		checkError(t, r, 412, "PreconditionFailed")
		if got := errorMessage(t, r); got != "ErrorCode:PreconditionFailed;ETag mismatch for device ID 'd1'" {
			t.Errorf("message = %q", got)
		}
	}
	checkError(t, e.do("PATCH", "/twins/nope", `{}`), 404, "DeviceNotFound")
	checkError(t, e.do("GET", "/twins/d1/modules/nope", ""), 404, "ModuleNotFound")
	checkError(t, e.do("PUT", "/twins/nope/modules/m", `{}`), 404, "DeviceNotFound")
}

func TestTwinLimits(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	deep := `1`
	for i := range 13 {
		deep = fmt.Sprintf(`{"l%d":%s}`, 12-i, deep)
	}
	fill := func(n int) string { return strings.Repeat("v", n) }
	tests := []struct {
		name, body string
		code       string
		mention    string
	}{
		{"dot in key", `{"properties":{"desired":{"a.b":1}}}`, "ArgumentInvalid", "a.b"},
		{"dollar in key", `{"properties":{"desired":{"x":{"$y":1}}}}`, "ArgumentInvalid", "$y"},
		{"space in key", `{"tags":{"a b":1}}`, "ArgumentInvalid", "a b"},
		{"too deep", `{"properties":{"desired":` + deep + `}}`, "ArgumentInvalid", "deeper"},
		{"long string", `{"properties":{"desired":{"s":"` + fill(4097) + `"}}}`, "ArgumentInvalid", "desired.s"},
		{"integer too big", `{"properties":{"desired":{"n":4503599627370496}}}`, "ArgumentInvalid", "desired.n"},
		{"tags too large", `{"tags":{"a":"` + fill(4000) + `","b":"` + fill(4000) + `","c":"` + fill(400) + `"}}`, "ArgumentInvalid", "tags"},
		{"desired not an object", `{"properties":{"desired":[1]}}`, "ArgumentInvalid", "desired"},
		{"tags not an object", `{"tags":"x"}`, "ArgumentInvalid", "tags"},
		{"malformed", `{"tags":`, "IotHubFormatError", ""},
		{"not an object", `[1,2]`, "IotHubFormatError", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("PATCH", "/twins/d1", tt.body)
			checkError(t, r, 400, tt.code)
			if msg := errorMessage(t, r); !strings.Contains(msg, tt.mention) {
				t.Errorf("message %q does not mention %q", msg, tt.mention)
			}
		})
	}
	// Each patch is small, but together they exceed 32 KB of desired.
	for i := range 8 {
		e.mustDo(200, "PATCH", "/twins/d1", fmt.Sprintf(`{"properties":{"desired":{"k%d":"%s"}}}`, i, fill(4000)))
	}
	r := e.do("PATCH", "/twins/d1", `{"properties":{"desired":{"k8":"`+fill(4000)+`"}}}`)
	checkError(t, r, 400, "ArgumentInvalid")
	if msg := errorMessage(t, r); !strings.Contains(msg, "desired") {
		t.Errorf("message %q does not name desired", msg)
	}
	// A rejected patch changed nothing.
	tw := e.mustDo(200, "GET", "/twins/d1", "").json(t)
	if tw["version"] != 10.0 || path(tw, "properties.desired.k8") != nil {
		t.Errorf("after the rejected patch version = %v, k8 = %v", tw["version"], path(tw, "properties.desired.k8"))
	}
	// The boundary values themselves are accepted.
	e.mustDo(200, "PATCH", "/twins/d1", `{"tags":{"n":4503599627370495,"m":-4503599627370496,"s":"`+fill(4096)+`"}}`)
}

func TestDesiredChangesReachSubscribersInOrder(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	var mu sync.Mutex
	var got []hub.DesiredPatch
	cancel := e.hub.Subscribe(hub.Events{Desired: func(p hub.DesiredPatch) {
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}})
	defer cancel()
	e.mustDo(200, "PATCH", "/twins/d1/modules/m1", `{"properties":{"desired":{"telemetryInterval":122}}}`)
	e.mustDo(200, "PATCH", "/twins/d1/modules/m1", `{"tags":{"only":"tags"}}`)
	e.mustDo(200, "PATCH", "/twins/d1/modules/m1", `{"properties":{"desired":{"a":{"b":1},"telemetryInterval":null}}}`)
	e.mustDo(200, "PUT", "/twins/d1/modules/m1", `{"properties":{"desired":{"c":3}}}`)
	e.mustDo(200, "PATCH", "/twins/d1", `{"properties":{"desired":{"dev":true}}}`)
	mu.Lock()
	defer mu.Unlock()
	m1 := hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}
	want := []hub.DesiredPatch{
		{Identity: m1, Version: 2, Body: []byte(`{"telemetryInterval":122,"$version":2}`)},
		{Identity: m1, Version: 3, Body: []byte(`{"a":{"b":1},"telemetryInterval":null,"$version":3}`)},
		{Identity: m1, Version: 4, Body: []byte(`{"a":null,"c":3,"$version":4}`)},
		{Identity: hub.IdentityRef{DeviceID: "d1"}, Version: 2, Body: []byte(`{"dev":true,"$version":2}`)},
	}
	if diff := cmp.Diff(want, got, cmp.Transformer("string", func(b []byte) string { return string(b) })); diff != "" {
		t.Errorf("patches (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if !json.Valid(p.Body) {
			t.Errorf("patch body %s is not JSON", p.Body)
		}
	}
}

func TestConcurrentPatchesAllLand(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("PATCH", "/twins/d1", fmt.Sprintf(`{"properties":{"desired":{"k%d":%d}}}`, i, i))
			if r.status != 200 {
				errs <- fmt.Sprintf("PATCH k%d = %d %s", i, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	tw := e.mustDo(200, "GET", "/twins/d1", "").json(t)
	if len(desired(t, tw)) != n || path(tw, "properties.desired.$version") != float64(n+1) || tw["version"] != float64(n+2) {
		t.Errorf("after %d concurrent patches: %d members, $version %v, version %v", n, len(desired(t, tw)), path(tw, "properties.desired.$version"), tw["version"])
	}
	if tw["etag"] != "AAAAAAAAACk=" { // 41
		t.Errorf("etag = %v; want base64 of 41", tw["etag"])
	}
}
