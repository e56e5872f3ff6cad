package restapi_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// operation is one service API call and the right it needs. prepare sets
// up what the call expects and returns its path.
type operation struct {
	name    string
	method  string
	body    string
	need    hub.Rights
	success int
	prepare func(e *env, n int) string
}

var operations = []operation{
	{"list devices", "GET", "", hub.RegistryRead, 200, func(e *env, n int) string { return "/devices" }},
	{"get device", "GET", "", hub.RegistryRead, 200, func(e *env, n int) string { return "/devices/base" }},
	{"create device", "PUT", `{}`, hub.RegistryWrite, 200, func(e *env, n int) string { return fmt.Sprintf("/devices/new%d", n) }},
	{"delete device", "DELETE", "", hub.RegistryWrite, 204, func(e *env, n int) string {
		e.createDevice(fmt.Sprintf("del%d", n))
		return fmt.Sprintf("/devices/del%d", n)
	}},
	{"list modules", "GET", "", hub.RegistryRead, 200, func(e *env, n int) string { return "/devices/base/modules" }},
	{"get module", "GET", "", hub.RegistryRead, 200, func(e *env, n int) string { return "/devices/base/modules/m" }},
	{"create module", "PUT", `{}`, hub.RegistryWrite, 200, func(e *env, n int) string { return fmt.Sprintf("/devices/base/modules/new%d", n) }},
	{"delete module", "DELETE", "", hub.RegistryWrite, 204, func(e *env, n int) string {
		e.createModule("base", fmt.Sprintf("del%d", n))
		return fmt.Sprintf("/devices/base/modules/del%d", n)
	}},
	{"get device twin", "GET", "", hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base" }},
	{"patch device twin", "PATCH", `{"tags":{"a":1}}`, hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base" }},
	{"replace device twin", "PUT", `{"tags":{"a":2}}`, hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base" }},
	{"get module twin", "GET", "", hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base/modules/m" }},
	{"patch module twin", "PATCH", `{"properties":{"desired":{"x":1}}}`, hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base/modules/m" }},
	{"replace module twin", "PUT", `{}`, hub.ServiceConnect, 200, func(e *env, n int) string { return "/twins/base/modules/m" }},
}

// TestAuthorizationMatrix runs every operation with every policy of a new
// hub: allowed exactly when the policy has the operation's right.
func TestAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	e.createDevice("base")
	e.createModule("base", "m")
	n := 0
	for _, name := range []string{hub.PolicyOwner, hub.PolicyService, hub.PolicyDevice, hub.PolicyRegistryRead, hub.PolicyRegistryReadWrite} {
		p := e.policies[name]
		for _, op := range operations {
			n++
			allowed := p.Rights&op.need == op.need
			t.Run(fmt.Sprintf("%s/%s", name, op.name), func(t *testing.T) {
				path := op.prepare(e, n)
				r := e.do(op.method, path, op.body, "Authorization", e.token(name))
				if allowed {
					if r.status != op.success {
						t.Fatalf("%s with %s = %d %s; want %d", op.name, name, r.status, r.body, op.success)
					}
					return
				}
				checkError(t, r, 401, "IotHubUnauthorizedAccess")
				// A refused write changed nothing.
				if op.method == "PUT" && strings.HasPrefix(path, "/devices/new") {
					checkError(t, e.do("GET", path, ""), 404, "DeviceNotFound")
				}
			})
		}
	}
}

// TestRefusedTokens checks tokens that must never be accepted, on a read
// every policy with RegistryRead could do.
func TestRefusedTokens(t *testing.T) {
	e := newEnv(t)
	dev := e.createDevice("d1")
	mod := e.createModule("d1", "m1")
	devKey := path(dev, "authentication.symmetricKey.primaryKey").(string)
	modKey := path(mod, "authentication.symmetricKey.primaryKey").(string)
	owner := e.policies[hub.PolicyOwner]
	forged := base64.StdEncoding.EncodeToString([]byte("not the key of any policy at all!"))
	signAt := func(keyName, key, resource string, exp time.Time) string {
		s, err := sas.NewSigner(keyName, key)
		if err != nil {
			t.Fatal(err)
		}
		return s.TokenAt(resource, exp)
	}
	valid := e.token(hub.PolicyOwner)
	tests := []struct {
		name  string
		token string
	}{
		{"no header", ""},
		{"not a token", "Bearer abc"},
		{"device key", e.tokenFor("", devKey, testHost+"/devices/d1", time.Hour)},
		{"module key", e.tokenFor("", modKey, testHost+"/devices/d1/modules/m1", time.Hour)},
		{"device key with owner's name", e.tokenFor(hub.PolicyOwner, devKey, testHost, time.Hour)},
		{"forged signature", e.tokenFor(hub.PolicyOwner, forged, testHost, time.Hour)},
		{"signature of another policy", e.tokenFor(hub.PolicyOwner, e.policies[hub.PolicyService].PrimaryKey, testHost, time.Hour)},
		{"tampered expiry", strings.Replace(valid, "&se=", "&se=9", 1)},
		{"expired", signAt(hub.PolicyOwner, owner.PrimaryKey, testHost, time.Now().Add(-time.Second))},
		{"another hub", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, "otherhub.local", time.Hour)},
		{"another port", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost+":1", time.Hour)},
		{"scoped to a device", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost+"/devices/d1", time.Hour)},
		{"unknown policy", e.tokenFor("nobody", owner.PrimaryKey, testHost, time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("GET", "/devices/d1", "", "Authorization", tt.token)
			checkError(t, r, 401, "IotHubUnauthorizedAccess")
			if strings.Contains(string(r.body), "sig=") || (tt.token != "" && strings.Contains(string(r.body), tt.token)) {
				t.Errorf("error body echoes the token: %s", r.body)
			}
		})
	}
	// The log says why each request was refused, and shows no signature.
	logs := e.logs.String()
	if n := strings.Count(logs, `error="IotHubUnauthorizedAccess: `); n != len(tests) {
		t.Errorf("%d refusals logged with their reason; want %d\n%s", n, len(tests), logs)
	}
	for _, tt := range tests {
		if tok, err := sas.ParseToken(tt.token); err == nil {
			sig := base64.StdEncoding.EncodeToString(tok.Signature)
			if strings.Contains(logs, sig) || strings.Contains(logs, url.QueryEscape(sig)) {
				t.Errorf("the log shows the signature of %q", tt.name)
			}
		}
	}
}

// TestAcceptedTokenForms checks the token variants Microsoft's SDKs send.
func TestAcceptedTokenForms(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d1")
	owner := e.policies[hub.PolicyOwner]
	reorder := func(tok string) string {
		// sig first, then se, skn, sr: members may come in any order.
		rest := strings.TrimPrefix(tok, sas.Prefix)
		parts := strings.Split(rest, "&")
		return sas.Prefix + strings.Join([]string{parts[1], parts[2], parts[3], parts[0]}, "&")
	}
	// %3a rather than %3A: the signature covers sr exactly as sent.
	lowerEncoded := func() string {
		key, err := base64.StdEncoding.DecodeString(owner.PrimaryKey)
		if err != nil {
			t.Fatal(err)
		}
		sr := strings.ToLower(url.QueryEscape(testHost + ":" + e.port))
		se := fmt.Sprint(time.Now().Add(time.Hour).Unix())
		return sas.Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sas.Sign(key, sr, se)) + "&se=" + se + "&skn=" + hub.PolicyOwner
	}
	tests := []struct {
		name  string
		token string
	}{
		{"host", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost, time.Hour)},
		{"host with port", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost+":"+e.port, time.Hour)},
		{"upper-case host", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, strings.ToUpper(testHost), time.Hour)},
		{"trailing slash", e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost+"/", time.Hour)},
		{"secondary key", e.tokenFor(hub.PolicyOwner, owner.SecondaryKey, testHost, time.Hour)},
		{"members reordered", reorder(e.tokenFor(hub.PolicyOwner, owner.PrimaryKey, testHost, time.Hour))},
		{"lower-case percent-encoding", lowerEncoded()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.mustDo(200, "GET", "/devices/d1", "", "Authorization", tt.token)
		})
	}
}
