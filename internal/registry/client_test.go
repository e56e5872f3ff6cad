package registry

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

func asResponseError(t *testing.T, err error) *ResponseError {
	t.Helper()
	var re *ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *ResponseError", err, err)
	}
	return re
}

func TestCreateDeviceSendsTutorialBody(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	dev, err := c.CreateDevice(context.Background(), iothub.Device{DeviceID: "myFirstDevice"})
	if err != nil {
		t.Fatalf("CreateDevice: %v", err)
	}
	reqs := hub.requests()
	if len(reqs) != 1 {
		t.Fatalf("hub saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPut || r.Path != "/devices/myFirstDevice" {
		t.Errorf("request = %s %s, want PUT /devices/myFirstDevice", r.Method, r.Path)
	}
	if r.IfMatch != nil {
		t.Errorf("create sent If-Match %q, want none", r.IfMatch)
	}
	if r.ContentType != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", r.ContentType)
	}
	want := map[string]any{
		"deviceId": "myFirstDevice", "status": "enabled", "statusReason": nil, "cloudToDeviceMessageCount": float64(0),
		"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": "", "secondaryKey": ""}},
		"capabilities":   map[string]any{"iotEdge": false},
	}
	if diff := cmp.Diff(want, decodeMap(t, r.Body)); diff != "" {
		t.Errorf("create body (-want +got):\n%s", diff)
	}
	if dev.Authentication == nil || dev.Authentication.SymmetricKey == nil || dev.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created device has no generated primary key: %+v", dev.Authentication)
	}
	if dev.ETag == "" || dev.Status != iothub.Enabled {
		t.Errorf("created device etag %q status %q, want an etag and enabled", dev.ETag, dev.Status)
	}
}

func TestCreateModuleSendsTutorialBody(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	if _, err := c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"}); err != nil {
		t.Fatal(err)
	}
	mod, err := c.CreateModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	if err != nil {
		t.Fatalf("CreateModule: %v", err)
	}
	r := hub.requests()[1]
	if r.Method != http.MethodPut || r.Path != "/devices/d1/modules/m1" || r.IfMatch != nil {
		t.Errorf("request = %s %s If-Match %q, want PUT /devices/d1/modules/m1 without If-Match", r.Method, r.Path, r.IfMatch)
	}
	want := map[string]any{
		"deviceId": "d1", "moduleId": "m1", "managedBy": "", "cloudToDeviceMessageCount": float64(0),
		"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": "", "secondaryKey": ""}},
	}
	if diff := cmp.Diff(want, decodeMap(t, r.Body)); diff != "" {
		t.Errorf("create body (-want +got):\n%s", diff)
	}
	if mod.Authentication == nil || mod.Authentication.SymmetricKey == nil || mod.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Errorf("created module has no generated primary key: %+v", mod.Authentication)
	}
}

func TestCreateKeepsCallerKeys(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	keys := &iothub.SymmetricKey{PrimaryKey: "cHJpbWFyeSBrZXkgb2YgdGhlIHRlc3QgZGV2aWNl", SecondaryKey: "c2Vjb25kYXJ5IGtleSBvZiB0aGUgdGVzdCBkZXZpY2U="}
	dev, err := c.CreateDevice(context.Background(), iothub.Device{
		DeviceID:       "d1",
		Authentication: &iothub.AuthenticationMechanism{SymmetricKey: keys},
		Capabilities:   &iothub.DeviceCapabilities{IoTEdge: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keys, dev.Authentication.SymmetricKey); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if dev.Authentication.Type != iothub.AuthSAS || !dev.Capabilities.IoTEdge {
		t.Errorf("device auth type %q edge %v, want sas and true", dev.Authentication.Type, dev.Capabilities.IoTEdge)
	}
}

func TestCreateModuleAccepts201(t *testing.T) {
	c := cannedClient(t, canned{status: http.StatusCreated, body: `{"moduleId":"m1","deviceId":"d1","etag":"MQ==","authentication":{"type":"sas","symmetricKey":{"primaryKey":"a2V5","secondaryKey":"a2V5"}}}`})
	mod, err := c.CreateModule(context.Background(), iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	if err != nil {
		t.Fatalf("CreateModule with 201: %v", err)
	}
	if mod.ETag != "MQ==" || mod.Authentication.SymmetricKey.PrimaryKey != "a2V5" {
		t.Errorf("module = %+v, want the 201 body", mod)
	}
}

func TestEnsureExistingReturnsSameKeys(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()

	dev1, created, err := c.EnsureDevice(ctx, iothub.Device{DeviceID: "d1"})
	if err != nil || !created {
		t.Fatalf("first EnsureDevice = created %v, %v; want created", created, err)
	}
	mod1, created, err := c.EnsureModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	if err != nil || !created {
		t.Fatalf("first EnsureModule = created %v, %v; want created", created, err)
	}
	dev2, created, err := c.EnsureDevice(ctx, iothub.Device{DeviceID: "d1"})
	if err != nil || created {
		t.Fatalf("second EnsureDevice = created %v, %v; want existing", created, err)
	}
	mod2, created, err := c.EnsureModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	if err != nil || created {
		t.Fatalf("second EnsureModule = created %v, %v; want existing", created, err)
	}
	// A create's answer writes never-set times without the Z a read
	// gives them, as the real hub does.
	times := cmpopts.IgnoreFields(iothub.Device{}, "ConnectionStateUpdatedTime", "StatusUpdatedTime", "LastActivityTime")
	if diff := cmp.Diff(dev1, dev2, times); diff != "" {
		t.Errorf("existing device differs from the created one (-created +existing):\n%s", diff)
	}
	if diff := cmp.Diff(mod1, mod2, cmpopts.IgnoreFields(iothub.Module{}, "ConnectionStateUpdatedTime", "LastActivityTime")); diff != "" {
		t.Errorf("existing module differs from the created one (-created +existing):\n%s", diff)
	}
	var got []string
	for _, r := range hub.requests()[2:] {
		got = append(got, r.Method+" "+r.Path)
	}
	want := []string{"PUT /devices/d1", "GET /devices/d1", "PUT /devices/d1/modules/m1", "GET /devices/d1/modules/m1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests of the second run (-want +got):\n%s", diff)
	}
}

func TestEnsureFailsOnOtherErrors(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	// The device does not exist, so creating a module on it is a 404.
	_, created, err := c.EnsureModule(context.Background(), iothub.Module{DeviceID: "nope", ModuleID: "m1"})
	if created || StatusCode(err) != http.StatusNotFound {
		t.Fatalf("EnsureModule on a missing device = created %v, %v; want a 404 error", created, err)
	}
	if re := asResponseError(t, err); re.Code != "DeviceNotFound" {
		t.Errorf("code = %q, want DeviceNotFound", re.Code)
	}
}

func TestRetriedPutEndingIn409Succeeds(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	// The hub creates the device but the answer is lost (503); azcore
	// retries the PUT, which now meets the device it created: 409.
	hub.Faults.Add(faults.Rule{Op: faults.DevicePut, Times: 1, After: true, Code: iothub.ServiceUnavailable, Message: "try again"})
	dev, created, err := c.EnsureDevice(context.Background(), iothub.Device{DeviceID: "d1"})
	if err != nil {
		t.Fatalf("EnsureDevice after a lost create: %v", err)
	}
	if created {
		t.Errorf("created = true, want false (the retry met an existing device)")
	}
	stored, err := hub.Hub.Hub().GetDevice("d1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.ETag != stored.ETag || dev.Authentication.SymmetricKey.PrimaryKey != stored.Authentication.SymmetricKey.PrimaryKey {
		t.Errorf("EnsureDevice returned etag %q, want the stored device's %q and its key", dev.ETag, stored.ETag)
	}
	var got []string
	for _, r := range hub.requests() {
		got = append(got, r.Method+" "+r.Path)
	}
	want := []string{"PUT /devices/d1", "PUT /devices/d1", "GET /devices/d1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
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

func TestAuthorizationHeader(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	now := time.Now()
	c.sas.now = func() time.Time { return now }
	if _, err := c.ListDevices(context.Background(), 0); err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	auth := hub.requests()[0].Authorization
	tok, err := sas.ParseToken(auth)
	if err != nil {
		t.Fatalf("ParseToken(Authorization): %v", err)
	}
	key, _ := (connstr.ConnectionString{SharedAccessKey: hub.key()}).Key()
	if !tok.Verify(key) {
		t.Errorf("token signature does not verify with the policy key")
	}
	if tok.KeyName != testPolicy {
		t.Errorf("skn = %q, want %q", tok.KeyName, testPolicy)
	}
	// sr is HostName as written, port included, URL-encoded.
	if want := url.QueryEscape(hub.Host()); tok.RawResource != want {
		t.Errorf("sr = %q, want %q", tok.RawResource, want)
	}
	if want := now.Add(time.Hour).Unix(); tok.Expiry.Unix() != want {
		t.Errorf("se = %d, want now + 1h = %d", tok.Expiry.Unix(), want)
	}
	if !strings.HasPrefix(auth, "SharedAccessSignature sr=") {
		t.Errorf("Authorization = %q, want a SharedAccessSignature", sas.Redact(auth))
	}
}

func TestTokenCachedThenRenewed(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	now := time.Now()
	c.sas.now = func() time.Time { return now }
	ctx := context.Background()
	call := func() string {
		t.Helper()
		if _, err := c.ListDevices(ctx, 0); err != nil {
			t.Fatalf("ListDevices: %v", err)
		}
		r := hub.requests()
		return r[len(r)-1].Authorization
	}
	first := call()
	now = now.Add(TokenTTL - renewBefore - time.Second)
	if second := call(); second != first {
		t.Errorf("token changed before its renewal time")
	}
	now = now.Add(2 * time.Second)
	third := call()
	if third == first {
		t.Errorf("token not renewed %v before expiry", renewBefore-time.Second)
	}
	tok, err := sas.ParseToken(third)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(TokenTTL).Unix(); tok.Expiry.Unix() != want {
		t.Errorf("renewed token expires at %d, want %d", tok.Expiry.Unix(), want)
	}
}

func TestSpecialCharacterIDs(t *testing.T) {
	tests := []struct {
		device, module string
		wantPath       string
	}{
		{"a#b", "c?d", "/devices/a%23b/modules/c%3Fd"},
		{"100%", "50%25", "/devices/100%25/modules/50%2525"},
		{"d;1,x", "m+1=@:", "/devices/d%3B1%2Cx/modules/m%2B1%3D%40%3A"},
		{"$edge'(!)*", "mod.-_", "/devices/%24edge%27%28%21%29%2A/modules/mod.-_"},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			hub := newTestHub(t)
			c := hub.client(t)
			ctx := context.Background()
			dev, created, err := c.EnsureDevice(ctx, iothub.Device{DeviceID: tt.device})
			if err != nil || !created || dev.DeviceID != tt.device {
				t.Fatalf("EnsureDevice(%q) = %q created %v, %v", tt.device, dev.DeviceID, created, err)
			}
			mod, err := c.CreateModule(ctx, iothub.Module{DeviceID: tt.device, ModuleID: tt.module})
			if err != nil || mod.DeviceID != tt.device || mod.ModuleID != tt.module {
				t.Fatalf("CreateModule(%q, %q) = %q/%q, %v", tt.device, tt.module, mod.DeviceID, mod.ModuleID, err)
			}
			if got := hub.requests()[1].Path; got != tt.wantPath {
				t.Errorf("path = %s, want %s", got, tt.wantPath)
			}
			got, err := c.GetModule(ctx, tt.device, tt.module)
			if err != nil || got.ModuleID != tt.module {
				t.Errorf("GetModule(%q, %q) = %q, %v", tt.device, tt.module, got.ModuleID, err)
			}
			if _, err := c.GetModuleTwin(ctx, tt.device, tt.module); err != nil {
				t.Errorf("GetModuleTwin(%q, %q): %v", tt.device, tt.module, err)
			}
			mods, err := c.ListModules(ctx, tt.device)
			if err != nil || len(mods) != 1 || mods[0].ModuleID != tt.module {
				t.Errorf("ListModules(%q) = %v, %v", tt.device, mods, err)
			}
		})
	}
}

func TestInvalidIDsAreNotSent(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	tests := []struct {
		name string
		op   func() error
		want string
	}{
		{"empty device", func() error { _, err := c.GetDevice(ctx, ""); return err }, "device ID is empty"},
		{"slash", func() error { _, err := c.CreateDevice(ctx, iothub.Device{DeviceID: "a/b"}); return err }, "device ID \"a/b\" has character '/'"},
		{"empty module", func() error { _, err := c.GetModuleTwin(ctx, "d1", ""); return err }, "module ID is empty"},
		{"space in module", func() error { return c.DeleteModule(ctx, "d1", "m 1", "") }, "module ID \"m 1\" has character ' '"},
	}
	for _, tt := range tests {
		err := tt.op()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	if n := len(hub.requests()); n != 0 {
		t.Errorf("hub saw %d requests for invalid IDs, want 0", n)
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

func TestDevicesListUpdateDelete(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	for _, id := range []string{"d1", "d2", "d3"} {
		if _, err := c.CreateDevice(ctx, iothub.Device{DeviceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	devs, err := c.ListDevices(ctx, 2)
	if err != nil || len(devs) != 2 {
		t.Fatalf("ListDevices(2) = %d devices, %v; want 2", len(devs), err)
	}
	if got := hub.requests()[3].Query.Get("top"); got != "2" {
		t.Errorf("top = %q, want 2", got)
	}
	if got := hub.requests()[3].Query["top"]; len(got) != 1 {
		t.Errorf("top sent %d times", len(got))
	}
	d1, err := c.GetDevice(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	reason := "maintenance"
	d1.Status, d1.StatusReason = iothub.Disabled, &reason
	up, err := c.UpdateDevice(ctx, d1, d1.ETag)
	if err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	if up.Status != iothub.Disabled || up.ETag == d1.ETag {
		t.Errorf("updated device status %q etag %q (was %q), want disabled and a new etag", up.Status, up.ETag, d1.ETag)
	}
	if _, err := c.UpdateDevice(ctx, d1, d1.ETag); StatusCode(err) != http.StatusPreconditionFailed {
		t.Errorf("UpdateDevice with the old etag: %v, want 412", err)
	}
	if err := c.DeleteDevice(ctx, "d1", d1.ETag); StatusCode(err) != http.StatusPreconditionFailed {
		t.Errorf("DeleteDevice with the old etag: %v, want 412", err)
	}
	if err := c.DeleteDevice(ctx, "d1", up.ETag); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if _, err := c.GetDevice(ctx, "d1"); StatusCode(err) != http.StatusNotFound {
		t.Errorf("GetDevice after delete: %v, want 404", err)
	}
	devs, err = c.ListDevices(ctx, 0)
	if err != nil || len(devs) != 2 {
		t.Errorf("ListDevices(0) = %d devices, %v; want 2", len(devs), err)
	}
	if _, ok := hub.requests()[len(hub.requests())-1].Query["top"]; ok {
		t.Errorf("ListDevices(0) sent top")
	}
}

func TestModulesUpdateDelete(t *testing.T) {
	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"})
	m, err := c.CreateModule(ctx, iothub.Module{DeviceID: "d1", ModuleID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	owner := "SomeChangedValue"
	m.ManagedBy = &owner
	up, err := c.UpdateModule(ctx, m, m.ETag)
	if err != nil {
		t.Fatalf("UpdateModule: %v", err)
	}
	if up.ManagedBy == nil || *up.ManagedBy != owner || up.ETag == m.ETag {
		t.Errorf("updated module managedBy %v etag %q, want %q and a new etag", up.ManagedBy, up.ETag, owner)
	}
	if err := c.DeleteModule(ctx, "d1", "m1", m.ETag); StatusCode(err) != http.StatusPreconditionFailed {
		t.Errorf("DeleteModule with the old etag: %v, want 412", err)
	}
	if err := c.DeleteModule(ctx, "d1", "m1", ""); err != nil {
		t.Fatalf("DeleteModule: %v", err)
	}
	if _, err := c.GetModule(ctx, "d1", "m1"); StatusCode(err) != http.StatusNotFound {
		t.Errorf("GetModule after delete: %v, want 404", err)
	}
	mods, err := c.ListModules(ctx, "d1")
	if err != nil || len(mods) != 0 {
		t.Errorf("ListModules = %v, %v; want none", mods, err)
	}
}

func TestNewClientRejects(t *testing.T) {
	tests := []struct {
		name string
		cs   connstr.ConnectionString
		want string
	}{
		{"module string", connstr.ConnectionString{HostName: "h.azure-devices.net", DeviceID: "d", ModuleID: "m", SharedAccessKey: testKey}, "needs a service connection string"},
		{"device string", connstr.ConnectionString{HostName: "h.azure-devices.net", DeviceID: "d", SharedAccessKey: testKey}, "got a device connection string"},
		{"missing key", connstr.ConnectionString{HostName: "h.azure-devices.net", SharedAccessKeyName: "p"}, "SharedAccessKey: missing"},
		{"bad key", connstr.ConnectionString{HostName: "h.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: "!!"}, "SharedAccessKey: not valid base64"},
	}
	for _, tt := range tests {
		_, err := NewClient(tt.cs, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewClient error = %v, want it to contain %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error reveals the key", tt.name)
		}
	}
}

func TestNewClientDefaults(t *testing.T) {
	cs := connstr.ConnectionString{HostName: "hub.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: testKey}
	c, err := NewClient(cs, nil)
	if err != nil {
		t.Fatalf("NewClient with nil options: %v", err)
	}
	if c.HostName() != "hub.azure-devices.net" || c.endpoint != "https://hub.azure-devices.net" {
		t.Errorf("host %q endpoint %q", c.HostName(), c.endpoint)
	}
	cs.HostName = "localhost:8443"
	c, err = NewClient(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostName() != "localhost:8443" || c.endpoint != "https://localhost:8443" || c.sas.resource != "localhost:8443" {
		t.Errorf("host %q endpoint %q token scope %q, want the port kept", c.HostName(), c.endpoint, c.sas.resource)
	}
}

// countingTransport answers 200 and counts what reaches it.
type countingTransport struct{ n int }

func (c *countingTransport) Do(*http.Request) (*http.Response, error) {
	c.n++
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
}

func TestPolicyRefusesPlainHTTP(t *testing.T) {
	signer, err := sas.NewSigner(testPolicy, testKey)
	if err != nil {
		t.Fatal(err)
	}
	tr := &countingTransport{}
	pl := runtime.NewPipeline("test", "v0.0.1", runtime.PipelineOptions{PerRetry: []policy.Policy{newSASPolicy(signer, "h")}},
		&policy.ClientOptions{Transport: tr, Retry: policy.RetryOptions{RetryDelay: time.Millisecond}})
	req, err := runtime.NewRequest(context.Background(), http.MethodGet, "http://127.0.0.1:1/devices")
	if err != nil {
		t.Fatal(err)
	}
	_, err = pl.Do(req)
	if !errors.Is(err, errNotHTTPS) {
		t.Fatalf("Do(http://…) error = %v, want errNotHTTPS", err)
	}
	var nr interface{ NonRetriable() }
	if !errors.As(err, &nr) {
		t.Errorf("error %v is not marked non-retriable", err)
	}
	if tr.n != 0 {
		t.Errorf("transport saw %d requests, want 0", tr.n)
	}
}

func TestLogShowsEtagsButNoSecrets(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	azlog.SetListener(func(_ azlog.Event, msg string) {
		mu.Lock()
		defer mu.Unlock()
		logs.WriteString(msg + "\n")
	})
	defer azlog.SetListener(nil)

	hub := newTestHub(t)
	c := hub.client(t)
	ctx := context.Background()
	c.CreateDevice(ctx, iothub.Device{DeviceID: "d1"})
	c.DeleteDevice(ctx, "d1", "MTAw") // stale: 412 with iothub-errorcode
	c.ListDevices(ctx, 5)

	mu.Lock()
	out := logs.String()
	mu.Unlock()
	sig := strings.SplitN(strings.SplitN(hub.requests()[0].Authorization, "sig=", 2)[1], "&", 2)[0]
	for _, secret := range []string{sig, hub.key()} {
		if strings.Contains(out, secret) {
			t.Errorf("azcore log contains a secret")
		}
	}
	for _, want := range []string{
		"api-version=" + iothub.APIVersion, "top=5", `If-Match: "MTAw"`,
		"Iothub-Errorcode: PreconditionFailed", "Authorization: REDACTED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("azcore log lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// The telemetry policy must accept the module version.
func TestTelemetryEnabled(t *testing.T) {
	cs := connstr.ConnectionString{HostName: "hub.azure-devices.net", SharedAccessKeyName: "p", SharedAccessKey: testKey}
	if _, err := NewClient(cs, &ClientOptions{azcore.ClientOptions{}}); err != nil {
		t.Fatalf("NewClient with telemetry on: %v", err)
	}
}

func TestUntrustedCertificateIsNotRetried(t *testing.T) {
	hub := newTestHub(t)
	cs := connstr.ConnectionString{HostName: hub.Host(), SharedAccessKeyName: testPolicy, SharedAccessKey: hub.key()}
	// System roots only: the emulator's certificate is not trusted.
	opts := hub.options(t)
	opts.Transport = hubtls.HTTPClient(nil)
	c, err := NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(context.Background(), "d1")
	var certErr *tls.CertificateVerificationError
	if !errors.As(err, &certErr) {
		t.Fatalf("GetDevice against an untrusted hub: %v, want a *tls.CertificateVerificationError in the chain", err)
	}
	if !strings.HasPrefix(err.Error(), "GET /devices/d1: ") {
		t.Errorf("error %q does not name the request", err)
	}
	if StatusCode(err) != 0 {
		t.Errorf("StatusCode = %d, want 0 for a transport error", StatusCode(err))
	}
	if n := len(hub.requests()); n != 1 {
		t.Errorf("client tried %d times, want 1 (no retries)", n)
	}
}
