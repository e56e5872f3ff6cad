package hub_test

import (
	"encoding/base64"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/store"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

const host = "hub.test"

func newHub(t *testing.T, st *store.Store, policies []hub.Policy) *hub.Hub {
	t.Helper()
	if policies == nil {
		var err error
		if policies, err = hub.DefaultPolicies(); err != nil {
			t.Fatal(err)
		}
	}
	h, err := hub.New(hub.Options{HostName: host, Port: "8443", Policies: policies, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func token(t *testing.T, keyName, key, resource string, exp time.Time) string {
	t.Helper()
	s, err := sas.NewSigner(keyName, key)
	if err != nil {
		t.Fatal(err)
	}
	return s.TokenAt(resource, exp)
}

func TestAuthenticateDevice(t *testing.T) {
	h := newHub(t, nil, nil)
	dev, err := h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{})
	if err != nil {
		t.Fatal(err)
	}
	mod, err := h.CreateOrUpdateModule("d1", "m#1", iothub.Module{}, hub.IfMatch{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := h.CreateOrUpdateModule("d1", "other", iothub.Module{}, hub.IfMatch{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateOrUpdateDevice("off", iothub.Device{Status: iothub.Disabled}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	offDev, _ := h.GetDevice("off")
	devKey := dev.Authentication.SymmetricKey.PrimaryKey
	devKey2 := dev.Authentication.SymmetricKey.SecondaryKey
	modKey := mod.Authentication.SymmetricKey.PrimaryKey
	otherKey := other.Authentication.SymmetricKey.PrimaryKey
	devicePolicy, _ := h.Policy(hub.PolicyDevice)
	servicePolicy, _ := h.Policy(hub.PolicyService)
	owner, _ := h.Policy(hub.PolicyOwner)

	now := time.Now()
	soon := now.Add(time.Hour)
	d1 := hub.IdentityRef{DeviceID: "d1"}
	m1 := hub.IdentityRef{DeviceID: "d1", ModuleID: "m#1"}
	modRes := host + "/devices/d1/modules/m#1"
	tests := []struct {
		name  string
		id    hub.IdentityRef
		token string
		ok    bool
	}{
		{"device key", d1, token(t, "", devKey, host+"/devices/d1", soon), true},
		{"device secondary key", d1, token(t, "", devKey2, host+"/devices/d1", soon), true},
		{"device key, host with port", d1, token(t, "", devKey, host+":8443/devices/d1", soon), true},
		{"device key, upper-case host", d1, token(t, "", devKey, "HUB.TEST/devices/d1", soon), true},
		{"module key", m1, token(t, "", modKey, modRes, soon), true},
		{"module key, id percent-encoded in scope", m1, token(t, "", modKey, host+"/devices/d1/modules/"+url.PathEscape("m#1"), soon), true},
		{"device policy covering the hub", m1, token(t, hub.PolicyDevice, devicePolicy.PrimaryKey, host, soon), true},
		{"device policy covering the device", m1, token(t, hub.PolicyDevice, devicePolicy.PrimaryKey, host+"/devices/d1", soon), true},
		{"owner policy", d1, token(t, hub.PolicyOwner, owner.PrimaryKey, host+"/devices/d1", soon), true},

		{"expired", d1, token(t, "", devKey, host+"/devices/d1", now.Add(-time.Second)), false},
		{"expiry exactly now", d1, token(t, "", devKey, host+"/devices/d1", time.Unix(now.Unix(), 0)), false},
		{"another identity's key", m1, token(t, "", otherKey, modRes, soon), false},
		{"device key for a module", m1, token(t, "", devKey, modRes, soon), false},
		{"module key for its device", d1, token(t, "", modKey, host+"/devices/d1", soon), false},
		{"module token scoped to the device", m1, token(t, "", modKey, host+"/devices/d1", soon), false},
		{"scope of another module", m1, token(t, "", modKey, host+"/devices/d1/modules/other", soon), false},
		{"scope of another hub", d1, token(t, "", devKey, "evil.test/devices/d1", soon), false},
		{"scope with another port", d1, token(t, "", devKey, host+":1/devices/d1", soon), false},
		{"id case differs", d1, token(t, "", devKey, host+"/devices/D1", soon), false},
		{"segment prefix is not string prefix", d1, token(t, hub.PolicyDevice, devicePolicy.PrimaryKey, host+"/devices/d", soon), false},
		{"policy scoped to another device", d1, token(t, hub.PolicyDevice, devicePolicy.PrimaryKey, host+"/devices/d2", soon), false},
		{"policy without DeviceConnect", d1, token(t, hub.PolicyService, servicePolicy.PrimaryKey, host, soon), false},
		{"unknown policy", d1, token(t, "ghost", devicePolicy.PrimaryKey, host, soon), false},
		{"forged", d1, token(t, "", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")), host+"/devices/d1", soon), false},
		{"unknown device", hub.IdentityRef{DeviceID: "ghost"}, token(t, hub.PolicyDevice, devicePolicy.PrimaryKey, host, soon), false},
		{"unknown module", hub.IdentityRef{DeviceID: "d1", ModuleID: "ghost"}, token(t, "", modKey, host+"/devices/d1/modules/ghost", soon), false},
		{"disabled device", hub.IdentityRef{DeviceID: "off"}, token(t, "", offDev.Authentication.SymmetricKey.PrimaryKey, host+"/devices/off", soon), false},
		{"garbage", d1, "password", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, err := h.AuthenticateDevice(tt.id, tt.token, now)
			if tt.ok {
				if err != nil {
					t.Fatalf("AuthenticateDevice = %v; want success", err)
				}
				if got, want := exp, tokenExpiry(t, tt.token); !got.Equal(want) {
					t.Errorf("expiry = %v; want %v", got, want)
				}
				return
			}
			if err == nil {
				t.Fatal("AuthenticateDevice succeeded; want refusal")
			}
			if hub.StatusOf(err) != 401 {
				t.Errorf("StatusOf = %d; want 401", hub.StatusOf(err))
			}
			if strings.Contains(err.Error(), "sig=") {
				t.Errorf("error %q shows a signature", err)
			}
		})
	}
}

func tokenExpiry(t *testing.T, tok string) time.Time {
	t.Helper()
	p, err := sas.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return p.Expiry
}

func TestReportedProperties(t *testing.T) {
	h := newHub(t, nil, nil)
	if _, err := h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateOrUpdateModule("d1", "m1", iothub.Module{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	m1 := hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}
	if _, err := h.UpdateTwin(m1, []byte(`{"properties":{"desired":{"interval":5}}}`), hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	v, err := h.UpdateReported(m1, []byte(`{"temp":21.5,"nested":{"a":1,"b":2}}`))
	if err != nil || v != 2 {
		t.Fatalf("UpdateReported = %d, %v; want 2", v, err)
	}
	v, err = h.UpdateReported(m1, []byte(`{"nested":{"a":null},"temp":null,"big":12345678901234}`))
	if err != nil || v != 3 {
		t.Fatalf("UpdateReported = %d, %v; want 3", v, err)
	}
	got, err := h.TwinProperties(m1)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"desired":{"interval":5,"$version":2},"reported":{"big":12345678901234,"nested":{"b":2},"$version":3}}`
	if string(got) != want {
		t.Errorf("TwinProperties =\n%s\nwant\n%s", got, want)
	}
	// The device twin is separate.
	if got, _ := h.TwinProperties(hub.IdentityRef{DeviceID: "d1"}); string(got) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Errorf("device TwinProperties = %s", got)
	}

	for name, patch := range map[string]string{
		"not JSON":      `{"a":`,
		"not an object": `[1]`,
		"bad key":       `{"a.b":1}`,
		"dollar key":    `{"$version":4}`,
		"too deep":      strings.Repeat(`{"a":`, 13) + "1" + strings.Repeat("}", 13),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := h.UpdateReported(m1, []byte(patch)); hub.StatusOf(err) != 400 {
				t.Errorf("UpdateReported(%s) = %v; want a 400 error", patch, err)
			}
		})
	}
	if _, err := h.UpdateReported(hub.IdentityRef{DeviceID: "d1", ModuleID: "ghost"}, []byte(`{}`)); hub.StatusOf(err) != 404 {
		t.Errorf("UpdateReported on a missing module = %v; want 404", err)
	}
	if got, _ := h.TwinProperties(m1); !strings.Contains(string(got), `"$version":3}}`) {
		t.Errorf("a refused patch changed reported: %s", got)
	}
}

func TestConnectionState(t *testing.T) {
	h := newHub(t, nil, nil)
	if _, err := h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateOrUpdateModule("d1", "m1", iothub.Module{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	m1 := hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	h.SetConnectionState(m1, true, t0)
	h.RecordActivity(m1, t0.Add(time.Second))
	h.RecordActivity(m1, t0) // older: ignored
	m, _ := h.GetModule("d1", "m1")
	if m.ConnectionState != "Connected" || m.ConnectionStateUpdatedTime != "2026-01-02T03:04:05.6000000Z" || m.LastActivityTime != "2026-01-02T03:04:06.6000000Z" {
		t.Errorf("module = %s %s %s", m.ConnectionState, m.ConnectionStateUpdatedTime, m.LastActivityTime)
	}
	if d, _ := h.GetDevice("d1"); d.ConnectionState != "Disconnected" {
		t.Errorf("device connection state = %s; want Disconnected (only its module connected)", d.ConnectionState)
	}
	h.SetConnectionState(m1, false, t0.Add(time.Minute))
	m, _ = h.GetModule("d1", "m1")
	if m.ConnectionState != "Disconnected" || m.ConnectionStateUpdatedTime != "2026-01-02T03:05:05.6000000Z" {
		t.Errorf("after disconnect: %s %s", m.ConnectionState, m.ConnectionStateUpdatedTime)
	}
	h.SetConnectionState(hub.IdentityRef{DeviceID: "ghost"}, true, t0) // must not panic
}

func TestPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	policies, err := hub.DefaultPolicies()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(path, hub.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hub.Options{HostName: host, Policies: policies, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mustOK := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustOK(h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{}))
	mustOK(h.CreateOrUpdateDevice("gone", iothub.Device{}, hub.IfMatch{}))
	mustOK(h.CreateOrUpdateModule("d1", "m1", iothub.Module{}, hub.IfMatch{}))
	mustOK(h.CreateOrUpdateModule("d1", "m2", iothub.Module{}, hub.IfMatch{}))
	mustOK(h.CreateOrUpdateModule("gone", "m", iothub.Module{}, hub.IfMatch{}))
	m1 := hub.IdentityRef{DeviceID: "d1", ModuleID: "m1"}
	mustOK(h.UpdateTwin(m1, []byte(`{"tags":{"t":1},"properties":{"desired":{"big":4503599627370495,"f":1.5}}}`), hub.IfMatch{}))
	mustOK(h.UpdateReported(m1, []byte(`{"r":"x"}`)))
	if err := h.DeleteModule("d1", "m2", hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteDevice("gone", hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	before, _ := h.Twin(m1)
	devBefore, _ := h.GetDevice("d1")
	modBefore, _ := h.GetModule("d1", "m1")
	h.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = store.Open(path, hub.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h = newHub(t, st, policies)
	after, err := h.Twin(m1)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("twin after restart:\n%s\nbefore:\n%s", after, before)
	}
	devAfter, _ := h.GetDevice("d1")
	modAfter, _ := h.GetModule("d1", "m1")
	if diff := cmp.Diff(devBefore, devAfter); diff != "" {
		t.Errorf("device after restart (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(modBefore, modAfter); diff != "" {
		t.Errorf("module after restart (-before +after):\n%s", diff)
	}
	if _, err := h.GetModule("d1", "m2"); hub.StatusOf(err) != 404 {
		t.Errorf("deleted module is back: %v", err)
	}
	if _, err := h.GetDevice("gone"); hub.StatusOf(err) != 404 {
		t.Errorf("deleted device is back: %v", err)
	}
	if got := h.ListModules("gone"); len(got) != 0 {
		t.Errorf("modules of a deleted device are back: %v", got)
	}
	// Identity etags keep increasing: a stale etag from before the restart
	// never matches a new identity.
	d2, err := h.CreateOrUpdateDevice("d2", iothub.Device{}, hub.IfMatch{})
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{devBefore.ETag, modBefore.ETag} {
		if d2.ETag == old {
			t.Errorf("new device got etag %s again", old)
		}
	}
}

func TestSubscribeCancel(t *testing.T) {
	h := newHub(t, nil, nil)
	if _, err := h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var a, b int
	cancelA := h.Subscribe(hub.Events{Desired: func(hub.DesiredPatch) { mu.Lock(); a++; mu.Unlock() }})
	cancelB := h.Subscribe(hub.Events{Desired: func(hub.DesiredPatch) { mu.Lock(); b++; mu.Unlock() }})
	defer cancelB()
	d1 := hub.IdentityRef{DeviceID: "d1"}
	if _, err := h.UpdateTwin(d1, []byte(`{"properties":{"desired":{"x":1}}}`), hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	cancelA()
	if _, err := h.UpdateTwin(d1, []byte(`{"properties":{"desired":{"x":2}}}`), hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	// Reported and tag changes are not desired changes.
	if _, err := h.UpdateTwin(d1, []byte(`{"tags":{"x":2}}`), hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.UpdateReported(d1, []byte(`{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if a != 1 || b != 2 {
		t.Errorf("calls: cancelled subscriber %d (want 1), live subscriber %d (want 2)", a, b)
	}
}

func TestRevocations(t *testing.T) {
	h := newHub(t, nil, nil)
	var mu sync.Mutex
	var got []hub.Revocation
	defer h.Subscribe(hub.Events{Revoked: func(r hub.Revocation) { mu.Lock(); got = append(got, r); mu.Unlock() }})()
	mustOK := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"d1", "d2"} {
		mustOK(h.CreateOrUpdateDevice(d, iothub.Device{}, hub.IfMatch{}))
		mustOK(h.CreateOrUpdateModule(d, "m1", iothub.Module{}, hub.IfMatch{}))
	}
	mustOK(h.CreateOrUpdateModule("d1", "m2", iothub.Module{}, hub.IfMatch{}))
	// Updates that leave the device enabled, or keep it disabled, revoke nothing.
	mustOK(h.CreateOrUpdateDevice("d1", iothub.Device{Status: iothub.Enabled}, hub.IfMatch{Any: true}))
	mustOK(h.CreateOrUpdateDevice("d1", iothub.Device{Status: iothub.Disabled}, hub.IfMatch{Any: true}))
	mustOK(h.CreateOrUpdateDevice("d1", iothub.Device{Status: iothub.Disabled}, hub.IfMatch{Any: true}))
	if err := h.DeleteModule("d2", "m1", hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteDevice("d1", hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	ref := func(d, m string) hub.IdentityRef { return hub.IdentityRef{DeviceID: d, ModuleID: m} }
	want := []hub.Revocation{
		{Identity: ref("d1", "")}, {Identity: ref("d1", "m1")}, {Identity: ref("d1", "m2")},
		{Identity: ref("d2", "m1"), Deleted: true},
		{Identity: ref("d1", ""), Deleted: true}, {Identity: ref("d1", "m1"), Deleted: true}, {Identity: ref("d1", "m2"), Deleted: true},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("revocations (-want +got):\n%s", diff)
	}
}

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		in   string
		want hub.IfMatch
	}{
		{"", hub.IfMatch{}},
		{`""`, hub.IfMatch{}},
		{" ", hub.IfMatch{}},
		{"*", hub.IfMatch{Any: true}},
		{`"*"`, hub.IfMatch{Any: true}},
		{`"MQ=="`, hub.IfMatch{ETag: "MQ=="}},
		{`W/"MQ=="`, hub.IfMatch{ETag: "MQ=="}},
		{`MQ==`, hub.IfMatch{ETag: "MQ=="}},
	}
	for _, tt := range tests {
		if got := hub.ParseIfMatch(tt.in); got != tt.want {
			t.Errorf("ParseIfMatch(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

func TestRights(t *testing.T) {
	for _, r := range []hub.Rights{0, hub.RegistryRead, hub.RegistryRead | hub.RegistryWrite, hub.RegistryRead | hub.RegistryWrite | hub.ServiceConnect | hub.DeviceConnect} {
		got, err := hub.ParseRights(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", r.String(), got, err, r)
		}
	}
	if _, err := hub.ParseRights("RegistryRead, Admin"); err == nil {
		t.Error("ParseRights accepted an unknown right")
	}
}

// A write the store fails to commit leaves no trace: the client got a 500,
// so the hub must not show the change, push it, or build on it.
func TestFailedWriteLeavesNoTrace(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "hub.db"), hub.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := newHub(t, st, nil)
	if _, err := h.CreateOrUpdateDevice("d1", iothub.Device{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}
	d1 := hub.IdentityRef{DeviceID: "d1"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h.SetConnectionState(d1, true, t0)
	var pushed []int64
	var mu sync.Mutex
	var revoked []hub.Revocation
	defer h.Subscribe(hub.Events{
		Desired: func(p hub.DesiredPatch) { mu.Lock(); pushed = append(pushed, p.Version); mu.Unlock() },
		Revoked: func(r hub.Revocation) { mu.Lock(); revoked = append(revoked, r); mu.Unlock() },
	})()
	twinBefore, _ := h.Twin(d1)
	devBefore, _ := h.GetDevice("d1")

	disk := errors.New("disk full")
	failures := []struct {
		name  string
		write func() error
	}{
		{"patch twin", func() error {
			_, err := h.UpdateTwin(d1, []byte(`{"tags":{"t":1},"properties":{"desired":{"x":1}}}`), hub.IfMatch{})
			return err
		}},
		{"replace twin", func() error {
			_, err := h.ReplaceTwin(d1, []byte(`{"properties":{"desired":{"y":1}}}`), hub.IfMatch{})
			return err
		}},
		{"report", func() error { _, err := h.UpdateReported(d1, []byte(`{"r":1}`)); return err }},
		{"update device", func() error {
			_, err := h.CreateOrUpdateDevice("d1", iothub.Device{Status: iothub.Disabled}, hub.IfMatch{Any: true})
			return err
		}},
		{"create device", func() error { _, err := h.CreateOrUpdateDevice("d2", iothub.Device{}, hub.IfMatch{}); return err }},
		{"create module", func() error { _, err := h.CreateOrUpdateModule("d1", "m1", iothub.Module{}, hub.IfMatch{}); return err }},
		{"delete device", func() error { return h.DeleteDevice("d1", hub.IfMatch{}) }},
	}
	for _, f := range failures {
		st.InjectFault(disk)
		if err := f.write(); hub.StatusOf(err) != 500 {
			t.Errorf("%s with a failing store = %v; want a 500", f.name, err)
		}
	}

	if got, _ := h.Twin(d1); string(got) != string(twinBefore) {
		t.Errorf("twin after failed writes:\n%s\nwant:\n%s", got, twinBefore)
	}
	if got, err := h.GetDevice("d1"); err != nil {
		t.Errorf("device after a failed delete: %v", err)
	} else if diff := cmp.Diff(devBefore, got); diff != "" {
		t.Errorf("device after failed writes (-want +got):\n%s", diff)
	}
	if _, err := h.GetDevice("d2"); hub.StatusOf(err) != 404 {
		t.Errorf("device whose create failed: %v; want 404", err)
	}
	if got := h.ListModules("d1"); len(got) != 0 {
		t.Errorf("module whose create failed is listed: %v", got)
	}
	mu.Lock()
	if len(pushed) != 0 || len(revoked) != 0 {
		t.Errorf("failed writes were announced: desired versions %v, revocations %v", pushed, revoked)
	}
	mu.Unlock()

	// The hub goes on from what the store holds.
	twin, err := h.UpdateTwin(d1, []byte(`{"properties":{"desired":{"x":2}}}`), hub.IfMatch{})
	if err != nil {
		t.Fatalf("write after the store recovered: %v", err)
	}
	if !strings.Contains(string(twin), `"$version":2`) {
		t.Errorf("twin after one successful patch: %s; want desired $version 2", twin)
	}
	mu.Lock()
	if len(pushed) != 1 || pushed[0] != 2 {
		t.Errorf("desired versions pushed = %v; want [2]", pushed)
	}
	mu.Unlock()
}
