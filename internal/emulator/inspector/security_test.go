package inspector_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// Checks no browser is needed for: the one-time link, the Host check, and
// writes without Origin or CSRF token.
func TestInspectorRefusesWhatABrowserWouldNotSend(t *testing.T) {
	h := start(t)
	h.createModule(t, "d1", "m1")
	base := "http://" + h.em.InspectorAddr()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: hangGuard, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	status := func(req *http.Request) int {
		t.Helper()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	get := func(u string) int {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		return status(req)
	}

	if got := get(base + "/twin?device=d1&module=m1"); got != http.StatusUnauthorized {
		t.Errorf("before login: %d, want 401", got)
	}
	login := h.em.InspectorURL()
	if got := get(login); got != http.StatusSeeOther {
		t.Fatalf("login: %d, want 303", got)
	}
	cookies := jar.Cookies(&url.URL{Scheme: "http", Host: h.em.InspectorAddr()})
	if len(cookies) != 1 {
		t.Fatalf("cookies after login: %v", cookies)
	}
	if got := get(login); got != http.StatusUnauthorized {
		t.Errorf("the login link a second time: %d, want 401", got)
	}
	if got := get(base + "/twin?device=d1&module=m1"); got != http.StatusOK {
		t.Errorf("after login: %d, want 200", got)
	}

	// A name rebound to 127.0.0.1 brings its own Host.
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Host = "attacker.example:" + strings.Split(h.em.InspectorAddr(), ":")[1]
	if got := status(req); got != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %d, want 421", got)
	}

	post := func(origin, csrf string) int {
		form := url.Values{"device": {"d1"}, "module": {"m1"}, "etag": {h.twinETag(t, "d1", "m1")}, "desired": {`{"x":1}`}, "csrf": {csrf}}
		req, _ := http.NewRequest(http.MethodPost, base+"/twin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		return status(req)
	}
	if got := post("", "x"); got != http.StatusForbidden {
		t.Errorf("POST without Origin: %d, want 403", got)
	}
	if got := post(base, "wrong"); got != http.StatusForbidden {
		t.Errorf("POST with a wrong CSRF token: %d, want 403", got)
	}
	if d := h.desired(t, "d1", "m1"); d["x"] != nil {
		t.Errorf("a refused write changed the twin: %v", d)
	}
}
