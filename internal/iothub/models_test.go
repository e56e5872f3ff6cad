package iothub

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readJSON(t *testing.T, name string, v any) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/models/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// jsonNames returns the JSON member names of a struct type.
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func TestModelsMatchSwagger(t *testing.T) {
	var defs map[string]struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	readJSON(t, "swagger-models.json", &defs)
	types := map[string]reflect.Type{
		"Device":                  reflect.TypeOf(Device{}),
		"Module":                  reflect.TypeOf(Module{}),
		"Twin":                    reflect.TypeOf(Twin{}),
		"TwinProperties":          reflect.TypeOf(TwinProperties{}),
		"AuthenticationMechanism": reflect.TypeOf(AuthenticationMechanism{}),
		"SymmetricKey":            reflect.TypeOf(SymmetricKey{}),
		"X509Thumbprint":          reflect.TypeOf(X509Thumbprint{}),
		"DeviceCapabilities":      reflect.TypeOf(DeviceCapabilities{}),
	}
	for name, typ := range types {
		def, ok := defs[name]
		if !ok {
			t.Errorf("swagger has no definition %s", name)
			continue
		}
		var want []string
		for p := range def.Properties {
			want = append(want, p)
		}
		sort.Strings(want)
		if diff := cmp.Diff(want, jsonNames(typ)); diff != "" {
			t.Errorf("%s members (-swagger +model):\n%s", name, diff)
		}
	}
}

// roundTrip decodes a recorded body into v, encodes v again and compares
// the two as generic JSON. ignore lists members the model may drop.
func roundTrip(t *testing.T, name string, v any, ignore ...string) {
	t.Helper()
	raw := readJSON(t, name, v)
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]any
	json.Unmarshal(raw, &want)
	json.Unmarshal(out, &got)
	for _, k := range ignore {
		delete(want, k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s does not survive a decode/encode (-recorded +encoded):\n%s", name, diff)
	}
}

func TestRecordedBodiesRoundTrip(t *testing.T) {
	var d Device
	roundTrip(t, "device-created.json", &d)
	if d.DeviceID != "IdentityLifecycleDevice1435349618" || d.ETag != "NjA0MTA2NjM=" || d.Status != Enabled ||
		d.Authentication.Type != AuthSAS || d.Authentication.SymmetricKey.PrimaryKey != "Sanitized" ||
		d.Capabilities == nil || d.Capabilities.IoTEdge || d.StatusReason != nil {
		t.Errorf("device decoded as %+v", d)
	}

	var m Module
	roundTrip(t, "module-created.json", &m)
	if m.ModuleID != "IdentityLifecycleModule283281563" || m.ManagedBy != nil || m.ETag != "MTU0MDQ2NTQw" {
		t.Errorf("module decoded as %+v", m)
	}
	var mu Module
	roundTrip(t, "module-updated.json", &mu)
	if mu.ManagedBy == nil || *mu.ManagedBy != "SomeChangedValue" || mu.ETag != "MTU0MDQ2NTQx" {
		t.Errorf("updated module decoded as %+v", mu)
	}

	// Twin omits a zero cloudToDeviceMessageCount so that a patch built
	// from a Twin does not carry it.
	var tw Twin
	roundTrip(t, "module-twin-new.json", &tw, "cloudToDeviceMessageCount")
	if tw.Version != 2 || tw.ETag != "AAAAAAAAAAE=" || tw.DeviceETag != "OTY2Mjc2NTM2" ||
		DocVersion(tw.Properties.Desired) != 1 || DocVersion(tw.Properties.Reported) != 1 || tw.Tags != nil {
		t.Errorf("new twin decoded as %+v", tw)
	}
	var tp Twin
	roundTrip(t, "module-twin-patched.json", &tp, "cloudToDeviceMessageCount")
	if tp.Version != 3 || string(tp.Properties.Desired["username"]) != `"userA"` || DocVersion(tp.Properties.Desired) != 2 {
		t.Errorf("patched twin decoded as %+v", tp)
	}
}

func TestPatchEncoding(t *testing.T) {
	// The tutorial's patch: only the desired member travels.
	patch := Twin{Properties: &TwinProperties{Desired: map[string]json.RawMessage{"telemetryInterval": json.RawMessage("122")}}}
	b, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"properties":{"desired":{"telemetryInterval":122}}}`; got != want {
		t.Errorf("patch encodes as %s, want %s", got, want)
	}
}

func TestDocVersion(t *testing.T) {
	tests := []struct {
		doc  map[string]json.RawMessage
		want int64
	}{
		{nil, 0},
		{map[string]json.RawMessage{"a": json.RawMessage("1")}, 0},
		{map[string]json.RawMessage{"$version": json.RawMessage("7")}, 7},
		{map[string]json.RawMessage{"$version": json.RawMessage("9007199254740993")}, 9007199254740993},
		{map[string]json.RawMessage{"$version": json.RawMessage(`"7"`)}, 0},
	}
	for _, tt := range tests {
		if got := DocVersion(tt.doc); got != tt.want {
			t.Errorf("DocVersion(%v) = %d, want %d", tt.doc, got, tt.want)
		}
	}
}
