package registry

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

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
		{"dot device", func() error { _, err := c.GetDevice(ctx, "."); return err }, `device ID "." is not allowed`},
		{"dot-dot module", func() error { _, err := c.GetModuleTwin(ctx, "d1", ".."); return err }, `module ID ".." is not allowed`},
		{"dot-dot twin update", func() error {
			_, err := c.UpdateModuleTwin(ctx, "..", "m", iothub.Twin{}, "*")
			return err
		}, `device ID ".." is not allowed`},
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
