package restapi_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCreateDeviceGeneratesKeysAndAnswers200(t *testing.T) {
	e := newEnv(t)
	bodies := map[string]string{
		"minimal":    `{"deviceId":"d-min"}`,
		"empty keys": `{"deviceId":"d-empty","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},"capabilities":{"iotEdge":false}}`,
		"no id":      `{}`,
	}
	ids := map[string]string{"minimal": "d-min", "empty keys": "d-empty", "no id": "d-noid"}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			id := ids[name]
			r := e.mustDo(200, "PUT", "/devices/"+id, body)
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			d := r.json(t)
			if got := r.header.Get("ETag"); got != `"`+d["etag"].(string)+`"` {
				t.Errorf("ETag header = %q; body etag %q", got, d["etag"])
			}
			for _, k := range []string{"primaryKey", "secondaryKey"} {
				key, _ := path(d, "authentication.symmetricKey."+k).(string)
				raw, err := base64.StdEncoding.DecodeString(key)
				if err != nil || len(raw) != 32 {
					t.Errorf("%s = %q; want 32 random bytes in base64", k, key)
				}
			}
			if d["deviceId"] != id || d["status"] != "enabled" || path(d, "authentication.type") != "sas" || path(d, "capabilities.iotEdge") != false {
				t.Errorf("device = %v", d)
			}
			got := e.mustDo(200, "GET", "/devices/"+id, "").json(t)
			if path(got, "authentication.symmetricKey.primaryKey") != path(d, "authentication.symmetricKey.primaryKey") {
				t.Error("GET returns another key than create")
			}
		})
	}
	a := e.mustDo(200, "GET", "/devices/d-min", "").json(t)
	b := e.mustDo(200, "GET", "/devices/d-empty", "").json(t)
	if path(a, "authentication.symmetricKey.primaryKey") == path(b, "authentication.symmetricKey.primaryKey") {
		t.Error("two devices got the same generated key")
	}
}

func TestCreateDeviceKeepsGivenKeysAndRejectsBadOnes(t *testing.T) {
	e := newEnv(t)
	k1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	k2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	d := e.mustDo(200, "PUT", "/devices/d1", `{"authentication":{"symmetricKey":{"primaryKey":"`+k1+`","secondaryKey":"`+k2+`"}}}`).json(t)
	if path(d, "authentication.symmetricKey.primaryKey") != k1 || path(d, "authentication.symmetricKey.secondaryKey") != k2 {
		t.Errorf("keys = %v; want the given ones", path(d, "authentication.symmetricKey"))
	}
	for name, key := range map[string]string{
		"not base64": "***",
		"too short":  base64.StdEncoding.EncodeToString([]byte("short")),
	} {
		t.Run(name, func(t *testing.T) {
			r := e.do("PUT", "/devices/d-bad", `{"authentication":{"symmetricKey":{"primaryKey":"`+key+`","secondaryKey":""}}}`)
			checkError(t, r, 400, "ArgumentInvalid")
			if !strings.Contains(errorMessage(t, r), "primaryKey") {
				t.Errorf("message %q does not name primaryKey", errorMessage(t, r))
			}
		})
	}
}

func TestDeviceUpdateKeepsKeysAndChangesETag(t *testing.T) {
	e := newEnv(t)
	d := e.createDevice("d1")
	etag := d["etag"].(string)
	u := e.mustDo(200, "PUT", "/devices/d1", `{"deviceId":"d1","status":"disabled","statusReason":"maintenance"}`, "If-Match", `"`+etag+`"`).json(t)
	if u["etag"] == etag {
		t.Error("etag did not change on update")
	}
	if u["status"] != "disabled" || u["statusReason"] != "maintenance" {
		t.Errorf("status = %v (%v)", u["status"], u["statusReason"])
	}
	if path(u, "authentication.symmetricKey.primaryKey") != path(d, "authentication.symmetricKey.primaryKey") {
		t.Error("update without keys replaced the keys")
	}
	if u["generationId"] != d["generationId"] {
		t.Error("generationId changed on update")
	}
	if u["statusUpdatedTime"] == "0001-01-01T00:00:00" {
		t.Error("statusUpdatedTime not set when the status changed")
	}
	// The etag is base64 of a decimal number, as a real hub's.
	raw, err := base64.StdEncoding.DecodeString(u["etag"].(string))
	if _, perr := strconv.ParseInt(string(raw), 10, 64); err != nil || perr != nil {
		t.Errorf("etag %q is not base64 of a decimal number", u["etag"])
	}
}

// TestIfMatchMatrix checks identity PUT and DELETE against every If-Match
// form clients send, on an identity that exists and one that does not.
func TestIfMatchMatrix(t *testing.T) {
	type kind struct {
		name     string
		path     func(i int) string
		body     string
		exists   string // error code for create-only on an existing one
		notFound string
	}
	e := newEnv(t)
	e.createDevice("parent")
	kinds := []kind{
		{"device", func(i int) string { return fmt.Sprintf("/devices/dev%d", i) }, `{}`, "DeviceAlreadyExists", "DeviceNotFound"},
		{"module", func(i int) string { return fmt.Sprintf("/devices/parent/modules/mod%d", i) }, `{}`, "ModuleAlreadyExistsOnDevice", "ModuleNotFound"},
	}
	const current, stale = "<current>", "<stale>"
	type tc struct {
		header   string // with <current>/<stale> standing for the etag
		exists   bool
		method   string
		status   int
		codeFrom string // "exists", "notFound", "precondition" or ""
	}
	cases := []tc{
		// PUT: absent or "" = create only.
		{"", false, "PUT", 200, ""},
		{"", true, "PUT", 409, "exists"},
		{`""`, false, "PUT", 200, ""},
		{`""`, true, "PUT", 409, "exists"},
		// * or "*" = must exist.
		{"*", false, "PUT", 404, "notFound"},
		{"*", true, "PUT", 200, ""},
		{`"*"`, false, "PUT", 404, "notFound"},
		{`"*"`, true, "PUT", 200, ""},
		// An etag must match, quoted, weak or bare.
		{`"` + current + `"`, true, "PUT", 200, ""},
		{`W/"` + current + `"`, true, "PUT", 200, ""},
		{current, true, "PUT", 200, ""},
		{`"` + stale + `"`, true, "PUT", 412, "precondition"},
		{`"` + stale + `"`, false, "PUT", 404, "notFound"},
		// DELETE: absent, "" and * are unconditional; an etag must match.
		{"", true, "DELETE", 204, ""},
		{"", false, "DELETE", 404, "notFound"},
		{`""`, true, "DELETE", 204, ""},
		{"*", true, "DELETE", 204, ""},
		{`"*"`, false, "DELETE", 404, "notFound"},
		{`"` + current + `"`, true, "DELETE", 204, ""},
		{`"` + stale + `"`, true, "DELETE", 412, "precondition"},
	}
	n := 0
	for _, k := range kinds {
		for _, c := range cases {
			n++
			p := k.path(n)
			name := fmt.Sprintf("%s/%s/If-Match=%s/exists=%v", k.name, c.method, c.header, c.exists)
			t.Run(name, func(t *testing.T) {
				header := c.header
				if c.exists {
					created := e.mustDo(200, "PUT", p, k.body).json(t)
					etag := created["etag"].(string)
					header = strings.ReplaceAll(header, current, etag)
					// A stale etag: what the identity had before an update.
					if strings.Contains(header, stale) {
						e.mustDo(200, "PUT", p, k.body, "If-Match", "*")
						header = strings.ReplaceAll(header, stale, etag)
					}
				} else {
					header = strings.ReplaceAll(header, stale, base64.StdEncoding.EncodeToString([]byte("12345")))
				}
				var hdrs []string
				if c.header != "" {
					hdrs = []string{"If-Match", header}
				}
				body := ""
				if c.method == "PUT" {
					body = k.body
				}
				r := e.do(c.method, p, body, hdrs...)
				switch c.codeFrom {
				case "":
					if r.status != c.status {
						t.Fatalf("status = %d %s; want %d", r.status, r.body, c.status)
					}
				case "exists":
					checkError(t, r, c.status, k.exists)
				case "notFound":
					checkError(t, r, c.status, k.notFound)
				case "precondition":
					checkError(t, r, c.status, "PreconditionFailed")
				}
				after := e.do("GET", p, "")
				wantExists := (c.exists && !(c.method == "DELETE" && c.status == 204)) || (!c.exists && c.status == 200)
				if (after.status == 200) != wantExists {
					t.Errorf("after the request GET = %d; want exists=%v", after.status, wantExists)
				}
			})
		}
	}
}

func TestModulesPerDeviceLimit(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	for i := range 50 {
		e.createModule("d1", fmt.Sprintf("m%02d", i))
	}
	r := e.do("PUT", "/devices/d1/modules/one-too-many", `{}`)
	checkError(t, r, 413, "TooManyModulesOnDevice")
	// Updating one of the 50 still works, and so does a module elsewhere.
	e.mustDo(200, "PUT", "/devices/d1/modules/m00", `{}`, "If-Match", "*")
	e.createDevice("d2")
	e.createModule("d2", "m")
	list := e.mustDo(200, "GET", "/devices/d1/modules", "")
	var mods []map[string]any
	if err := json.Unmarshal(list.body, &mods); err != nil {
		t.Fatal(err)
	}
	if len(mods) != 50 {
		t.Errorf("device has %d modules; want 50", len(mods))
	}
}

func TestModuleErrors(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"module on missing device", "PUT", "/devices/nope/modules/m1", `{}`, 404, "DeviceNotFound"},
		{"get missing module", "GET", "/devices/d1/modules/nope", "", 404, "ModuleNotFound"},
		{"get module of missing device", "GET", "/devices/nope/modules/m1", "", 404, "DeviceNotFound"},
		{"delete missing module", "DELETE", "/devices/d1/modules/nope", "", 404, "ModuleNotFound"},
		{"create existing module", "PUT", "/devices/d1/modules/m1", `{}`, 409, "ModuleAlreadyExistsOnDevice"},
		{"body names another module", "PUT", "/devices/d1/modules/m2", `{"moduleId":"other"}`, 400, "ArgumentInvalid"},
		{"body names another device", "PUT", "/devices/d1/modules/m2", `{"deviceId":"other"}`, 400, "ArgumentInvalid"},
		{"bad module id", "PUT", "/devices/d1/modules/" + url.PathEscape("a/b"), `{}`, 400, "ArgumentInvalid"},
		{"bad device id", "PUT", "/devices/" + url.PathEscape("dé"), `{}`, 400, "ArgumentInvalid"},
		{"device id too long", "PUT", "/devices/" + strings.Repeat("a", 129), `{}`, 400, "ArgumentInvalid"},
		{"malformed json", "PUT", "/devices/d9", `{"deviceId":`, 400, "IotHubFormatError"},
		{"wrong json type", "PUT", "/devices/d9", `{"deviceId":42}`, 400, "IotHubFormatError"},
		{"bad status", "PUT", "/devices/d9", `{"status":"sleeping"}`, 400, "ArgumentInvalid"},
		{"bad auth type", "PUT", "/devices/d9", `{"authentication":{"type":"password"}}`, 400, "ArgumentInvalid"},
		{"missing device", "GET", "/devices/nope", "", 404, "DeviceNotFound"},
		{"delete missing device", "DELETE", "/devices/nope", "", 404, "DeviceNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkError(t, e.do(tt.method, tt.path, tt.body), tt.status, tt.code)
		})
	}
	// The offending character is named.
	r := e.do("PUT", "/devices/"+url.PathEscape("bad dev"), `{}`)
	if msg := errorMessage(t, r); !strings.Contains(msg, `' '`) {
		t.Errorf("message %q does not name the space", msg)
	}
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown route", "GET", "/nothing/here", 404, "NotFound"},
		{"root", "GET", "/", 404, "NotFound"},
		{"trailing slash", "GET", "/devices/d1/", 404, "NotFound"},
		{"wrong method on device", "POST", "/devices/d1", 405, "MethodNotAllowed"},
		{"wrong method on twin", "DELETE", "/twins/d1", 405, "MethodNotAllowed"},
		{"wrong method on list", "DELETE", "/devices", 405, "MethodNotAllowed"},
		{"wrong method on health", "POST", "/health", 405, "MethodNotAllowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkError(t, e.do(tt.method, tt.path, ""), tt.status, tt.code)
		})
	}
}

func TestBodyCap(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	big := `{"deviceId":"d1","statusReason":"` + strings.Repeat("x", 300*1024) + `"}`
	checkError(t, e.do("PUT", "/devices/d2", big), 413, "MessageTooLarge")
	checkError(t, e.do("PATCH", "/twins/d1", `{"tags":{"a":"`+strings.Repeat("x", 300*1024)+`"}}`), 413, "MessageTooLarge")
}

func TestHealthNeedsNoToken(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/health", "", "Authorization", "")
	if r.status != 200 || string(r.body) != `{"status":"ok"}` {
		t.Errorf("GET /health = %d %s", r.status, r.body)
	}
}

func TestListDevicesTop(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"c", "a", "b"} {
		e.createDevice(id)
	}
	tests := []struct {
		top  string
		want []string
	}{
		{"2", []string{"a", "b"}},
		{"1", []string{"a"}},
		{"0", []string{"a", "b", "c"}},
		{"-3", []string{"a", "b", "c"}},
		{"1001", []string{"a", "b", "c"}},
		{"many", []string{"a", "b", "c"}},
		{"", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run("top="+tt.top, func(t *testing.T) {
			p := "/devices"
			if tt.top != "" {
				p += "?top=" + tt.top
			}
			// do adds api-version; keep top in the query it builds.
			r := e.mustDo(200, "GET", p, "")
			var list []struct{ DeviceID string }
			if err := json.Unmarshal(r.body, &list); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range list {
				got = append(got, d.DeviceID)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("devices (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCascadeDelete(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	e.createModule("d1", "m1")
	e.createModule("d1", "m2")
	e.mustDo(200, "PATCH", "/twins/d1/modules/m1", `{"properties":{"desired":{"x":1}}}`)
	e.mustDo(204, "DELETE", "/devices/d1", "", "If-Match", "*")
	checkError(t, e.do("GET", "/devices/d1/modules/m1", ""), 404, "DeviceNotFound")
	checkError(t, e.do("GET", "/twins/d1/modules/m1", ""), 404, "DeviceNotFound")
	checkError(t, e.do("GET", "/twins/d1", ""), 404, "DeviceNotFound")
	e.createDevice("d1")
	if r := e.mustDo(200, "GET", "/devices/d1/modules", ""); string(r.body) != "[]" {
		t.Errorf("modules after re-create = %s; want []", r.body)
	}
	e.createModule("d1", "m1")
	tw := e.mustDo(200, "GET", "/twins/d1/modules/m1", "").json(t)
	if path(tw, "properties.desired.x") != nil || tw["etag"] != "AAAAAAAAAAE=" {
		t.Errorf("re-created module has the old twin: %v", tw)
	}
}

func TestPercentEncodedIDs(t *testing.T) {
	e := newEnv(t)
	ids := []string{"dev#1", "a?b", "p%q", "x+y", "semi;colon", "all-of:.+%_#*?!(),=@;$'"}
	for _, id := range ids {
		t.Run(id, func(t *testing.T) {
			p := "/devices/" + url.PathEscape(id)
			d := e.mustDo(200, "PUT", p, `{}`).json(t)
			if d["deviceId"] != id {
				t.Errorf("deviceId = %q; want %q", d["deviceId"], id)
			}
			m := e.mustDo(200, "PUT", p+"/modules/"+url.PathEscape("mod#"+id), `{}`).json(t)
			if m["moduleId"] != "mod#"+id || m["deviceId"] != id {
				t.Errorf("module = %v/%v", m["deviceId"], m["moduleId"])
			}
		})
	}
}

// GET /devices/ lists devices too: Microsoft's Node.js SDK asks for it.
func TestListDevicesWithTrailingSlash(t *testing.T) {
	e := newEnv(t)
	e.createDevice("listed")
	r := e.mustDo(200, "GET", "/devices/", "")
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || list[0]["deviceId"] != "listed" {
		t.Fatalf("GET /devices/ = %s (%v), want the one device", r.body, err)
	}
}
