package inspector_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// envSkipBrowser opts out of the browser test on a machine without
// Chromium; CI installs it, and without the opt-out its absence fails.
const envSkipBrowser = "IOTHUB_SKIP_BROWSER_TEST"

func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv(envSkipBrowser) == "1" {
		t.Skipf("%s=1: the web inspector is not tested in a browser", envSkipBrowser)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium to test the web inspector in: install Debian's chromium package, or set %s=1 to skip this test", envSkipBrowser)
	return ""
}

// browser starts headless Chromium with a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	// A hang guard for the whole test, not a timing assertion.
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	return ctx
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits until a JavaScript predicate holds on the page. It asks
// again while a navigation replaces the page (the question then fails).
func waitFor(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](predicate))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("%s: not true after %v (last error %v)\npage:\n%s", what, hangGuard, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// screenshot saves the page as a test artifact (go test -artifacts keeps them).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; less is JPEG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the %s view: %s", name, path)
}

func TestInspectorInABrowser(t *testing.T) {
	ctx := browser(t)
	h := start(t)
	base := "http://" + h.em.InspectorAddr()
	login := h.em.InspectorURL()

	// No access without the token, nor with a wrong one.
	do(t, ctx, chromedp.Navigate(base+"/"))
	if s := text(t, ctx, "#denied"); !strings.Contains(s, "link iothub-emulator printed") {
		t.Errorf("without the token the page says %q", s)
	}
	screenshot(t, ctx, "denied")
	do(t, ctx, chromedp.Navigate(base+"/login?token=0123"))
	if s := text(t, ctx, "#denied"); !strings.Contains(s, "wrong or was used") {
		t.Errorf("with a wrong token the page says %q", s)
	}

	// The link opens the identities view; a module created meanwhile
	// appears, and shows connected once its twin client is up.
	do(t, ctx, chromedp.Navigate(login))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); loc != base+"/" {
		t.Errorf("after login the browser is at %s, want %s/ (the token out of the address bar)", loc, base)
	}
	waitFor(t, ctx, "the empty identities view", `document.getElementById("none") !== null`)
	live := `document.body.dataset.live === "yes"`
	waitFor(t, ctx, "the page's event stream", live)
	h.createModule(t, "d1", "m1")
	waitFor(t, ctx, "the new module in the list", `document.querySelector('tr[data-identity="d1/m1"]') !== null`)
	rx := h.receiver(t, "d1", "m1")
	first := rx.next(t)
	waitFor(t, ctx, "the module shown connected", `document.querySelector('tr[data-identity="d1/m1"] td.conn.Connected') !== null`)
	screenshot(t, ctx, "identities")

	// Its twin, desired and reported side by side with their versions.
	do(t, ctx, chromedp.Click(chromedp.CSS(`tr[data-identity="d1/m1"] a.twin-link`)))
	waitFor(t, ctx, "the twin view's stream", live)
	if v := text(t, ctx, "#desired-version"); v != fmt.Sprint(first.Version) {
		t.Errorf("desired $version shown %q, the module read %d", v, first.Version)
	}
	if v := text(t, ctx, "#reported-version"); v != "1" {
		t.Errorf("reported $version shown %q, want 1", v)
	}

	// A desired property set on the page reaches the connected module.
	do(t, ctx,
		chromedp.SetValue(chromedp.CSS("#desired-patch"), `{"telemetryInterval": 42}`),
		chromedp.SetValue(chromedp.CSS("#tags-patch"), `{"site": "lab-1"}`),
		chromedp.Click(chromedp.CSS("#save")),
	)
	waitFor(t, ctx, "the saved twin", `document.getElementById("result") && document.getElementById("result").textContent === "Saved." && `+live)
	patch := rx.next(t)
	if string(patch.Desired["telemetryInterval"]) != "42" || patch.Type != twinclient.EventPatch {
		t.Fatalf("the module got %+v, want a patch with telemetryInterval 42", patch)
	}
	if v := text(t, ctx, "#desired-version"); v != fmt.Sprint(patch.Version) {
		t.Errorf("desired $version shown %q after saving, the module got %d", v, patch.Version)
	}
	if s := text(t, ctx, "#tags"); !strings.Contains(s, `"site": "lab-1"`) {
		t.Errorf("tags shown %q", s)
	}
	// What the module reports shows up live.
	if _, err := rx.c.UpdateReported(ctx, twinclient.WritableAck(patch)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the reported acknowledgement", `document.getElementById("reported").textContent.includes('"av"')`)
	screenshot(t, ctx, "twin")

	// A stale etag is refused as the REST API refuses it.
	h.patchDesired(t, "d1", "m1", `{"mode":"eco"}`)
	waitFor(t, ctx, "the twin refreshed", `document.getElementById("desired").textContent.includes("eco")`)
	do(t, ctx, chromedp.SetValue(chromedp.CSS("#etag"), "AAAAAAAAAAE="),
		chromedp.SetValue(chromedp.CSS("#desired-patch"), `{"mode":"sport"}`),
		chromedp.Click(chromedp.CSS("#save")))
	waitFor(t, ctx, "the etag refusal", `document.querySelector("#result.error") !== null`)
	if s := text(t, ctx, "#result"); !strings.Contains(s, "The twin changed") {
		t.Errorf("stale etag: the page says %q", s)
	}
	if d := h.desired(t, "d1", "m1"); d["mode"] != "eco" {
		t.Errorf("a write with a stale etag changed the twin: %v", d)
	}

	// Telemetry of the device arrives live.
	do(t, ctx, chromedp.Navigate(base+"/telemetry?device=d1&module="))
	waitFor(t, ctx, "the telemetry view's stream", live)
	dev := h.dial(t, "d1", "", true)
	if tk := dev.Publish("devices/d1/messages/events/%24.ct=application%2Fjson&room=kitchen", 1, false, `{"temperature":21.5}`); !tk.WaitTimeout(time.Minute) || tk.Error() != nil {
		t.Fatalf("publish: %v", tk.Error())
	}
	waitFor(t, ctx, "the message on the page", `document.querySelector("#messages tr.msg") !== null && document.querySelector("#messages tr.msg").textContent.includes("temperature")`)
	if s := text(t, ctx, "#messages tr.msg"); !strings.Contains(s, "room=kitchen") || !strings.Contains(s, "content-type=application/json") {
		t.Errorf("message row %q lacks its properties", s)
	}
	screenshot(t, ctx, "telemetry")

	// The live event stream, filtered to twin changes.
	do(t, ctx, chromedp.Navigate(base+"/events?kind=twin&device=d1"))
	waitFor(t, ctx, "the events view's stream", live)
	h.patchDesired(t, "d1", "m1", `{"mode":"away"}`)
	waitFor(t, ctx, "the twin event", `document.querySelector("#events tr.event.twin") !== null && document.querySelector("#events tr.event.twin").textContent.includes("away")`)
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#events tr.event:not(.twin)").length`)); n != 0 {
		t.Errorf("%d events of other kinds passed the filter", n)
	}
	screenshot(t, ctx, "events")

	// A page elsewhere that posts to the inspector is refused: from another
	// site the strict cookie does not go along; from the same site on
	// another port it does, and the Origin check refuses it.
	etag := h.twinETag(t, "d1", "m1")
	attacker := attackerSite(t, base, etag)
	for origin, want := range map[string]string{
		"http://localhost:" + attacker: "Open the inspector with the link", // no cookie: 401
		"http://127.0.0.1:" + attacker: `refused: the request did not come from this inspector's page (Origin "http://127.0.0.1:` + attacker + `")`,
	} {
		do(t, ctx, chromedp.Navigate(origin+"/"))
		waitFor(t, ctx, "the forged post's answer", `location.pathname === "/twin"`)
		if body := text(t, ctx, "body"); !strings.Contains(body, want) {
			t.Errorf("forged post from %s: the inspector answered %q, want %q", origin, body, want)
		}
		if d := h.desired(t, "d1", "m1"); d["evil"] != nil {
			t.Fatalf("a forged post from %s changed the twin: %v", origin, d)
		}
	}
	screenshot(t, ctx, "forged-post")
}

// attackerSite serves a page that posts a desired patch to the inspector
// as soon as it loads; it returns its port.
func attackerSite(t *testing.T, inspector, etag string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := `<!doctype html><form id="f" method="post" action="` + inspector + `/twin">` +
		`<input name="device" value="d1"><input name="module" value="m1"><input name="etag" value="` + etag + `">` +
		`<input name="csrf" value="guess"><textarea name="desired">{"evil":1}</textarea></form>` +
		`<script>document.getElementById("f").submit()</script>`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
