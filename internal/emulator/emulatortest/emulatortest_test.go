package emulatortest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// service sends one service API request with an iothubowner token.
func service(t *testing.T, h *emulatortest.Hub, c *http.Client, method, path, ifMatch, body string) (int, http.Header, string, error) {
	t.Helper()
	cs, err := connstr.Parse(h.ConnectionString(hub.PolicyOwner))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := signer.Token(cs.Host(), time.Hour)
	req, err := http.NewRequest(method, h.URL()+path+"?api-version="+iothub.APIVersion, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), nil
}

func TestStartServesTheServiceAPIWithIdentities(t *testing.T) {
	h := emulatortest.Start(t)
	cs := h.CreateModule("d1", "m1")
	if cs.HostName != h.Host() || cs.SharedAccessKey == "" || cs.ModuleID != "m1" {
		t.Errorf("module connection string %+v", cs)
	}
	c := h.HTTPClient()
	status, _, body, err := service(t, h, c, http.MethodGet, "/devices/d1/modules/m1", "", "")
	if err != nil || status != http.StatusOK || !strings.Contains(body, `"moduleId":"m1"`) {
		t.Fatalf("GET module = %d %s, %v", status, body, err)
	}
	v := h.PatchDesired("d1", "m1", `{"a":{"b":1}}`)
	h.PatchDesired("d1", "m1", `{"a":{"c":2}}`)
	tw := h.Twin("d1", "m1")
	if got := string(tw.Properties.Desired["a"]); got != `{"b":1,"c":2}` || iothub.DocVersion(tw.Properties.Desired) != v+1 {
		t.Errorf("desired a = %s at $version %d; want the recursive merge at %d", got, iothub.DocVersion(tw.Properties.Desired), v+1)
	}
	for _, p := range []string{hub.PolicyOwner, "service", "registryRead"} {
		if cs := h.ConnectionString(p); !strings.Contains(cs, "SharedAccessKeyName="+p) {
			t.Errorf("%s connection string %q", p, cs)
		}
	}
}

func TestFailNextAnswersWithTheHubsErrorBody(t *testing.T) {
	h := emulatortest.Start(t)
	h.CreateModule("d1", "m1")
	c := h.HTTPClient()
	h.Faults.FailNext(faults.TwinPatch, 2, iothub.ThrottlingException, "slow down")
	for i := range 3 {
		status, hdr, body, err := service(t, h, c, http.MethodPatch, "/twins/d1/modules/m1", "*", `{"tags":{"n":1}}`)
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if status != http.StatusOK {
				t.Errorf("third PATCH = %d %s, want 200", status, body)
			}
			break
		}
		var eb struct{ Message, ExceptionMessage string }
		_ = json.Unmarshal([]byte(body), &eb)
		if status != 429 || hdr.Get("iothub-errorcode") != "ThrottlingException" ||
			eb.Message != "ErrorCode:ThrottlingException;slow down" || !strings.HasPrefix(eb.ExceptionMessage, "Tracking ID:") {
			t.Errorf("PATCH %d = %d %v %s, want the hub's 429", i, status, hdr, body)
		}
	}
	if tw := h.Twin("d1", "m1"); string(tw.Tags["n"]) != "1" {
		t.Errorf("tags = %v, want the third PATCH applied only", tw.Tags)
	}
	if n := len(h.Faults.Seen(faults.TwinPatch)); n != 3 {
		t.Errorf("plan saw %d twin PATCHes, want 3", n)
	}
}

func TestFailedQuery(t *testing.T) {
	h := emulatortest.Start(t)
	h.CreateModule("d1", "m1")
	c := h.HTTPClient()
	h.Faults.FailNext(faults.Query, 1, iothub.ThrottlingException, "")
	for _, want := range []int{http.StatusTooManyRequests, http.StatusOK} {
		status, _, body, err := service(t, h, c, http.MethodPost, "/devices/query", "", `{"query":"SELECT * FROM devices"}`)
		if err != nil || status != want {
			t.Errorf("query = %d %s, %v; want %d", status, body, err, want)
		}
	}
}

func TestChangeTwinMakesTheEtagStale(t *testing.T) {
	h := emulatortest.Start(t)
	h.CreateModule("d1", "m1")
	etag := h.Twin("d1", "m1").ETag
	h.Faults.Add(faults.Rule{Op: faults.TwinPatch, Times: 1, ChangeTwin: true})
	c := h.HTTPClient()
	status, _, body, err := service(t, h, c, http.MethodPatch, "/twins/d1/modules/m1", `"`+etag+`"`, `{"tags":{"n":1}}`)
	if err != nil || status != http.StatusPreconditionFailed || !strings.Contains(body, "PreconditionFailed") {
		t.Errorf("PATCH with the etag read before = %d %s, %v; want 412", status, body, err)
	}
}

func TestAfterAppliesThenLosesTheAnswer(t *testing.T) {
	h := emulatortest.Start(t)
	c := h.HTTPClient()
	h.Faults.Add(faults.Rule{Op: faults.DevicePut, Times: 1, After: true, Code: iothub.ServiceUnavailable})
	status, _, _, err := service(t, h, c, http.MethodPut, "/devices/d1", "", `{"deviceId":"d1"}`)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("PUT = %d, %v; want 503", status, err)
	}
	if _, err := h.Hub().GetDevice("d1"); err != nil {
		t.Errorf("device not created behind the 503: %v", err)
	}
	h.Faults.Add(faults.Rule{Op: faults.DeviceGet, Times: 1, Drop: true})
	if _, _, _, err := service(t, h, c, http.MethodGet, "/devices/d1", "", ""); err == nil {
		t.Error("GET got an answer; want the connection dropped")
	}
	if status, _, _, err := service(t, h, c, http.MethodGet, "/devices/d1", "", ""); err != nil || status != http.StatusOK {
		t.Errorf("GET after the drop = %d, %v; want 200", status, err)
	}
}

func TestStallHoldsUntilRelease(t *testing.T) {
	h := emulatortest.Start(t)
	h.CreateDevice("d1")
	c := h.HTTPClient()
	h.Faults.Add(faults.Rule{Op: faults.DeviceGet, Times: 1, Stall: true})
	done := make(chan int)
	go func() {
		status, _, _, _ := service(t, h, c, http.MethodGet, "/devices/d1", "", "")
		done <- status
	}()
	for len(h.Faults.Seen(faults.DeviceGet)) == 0 {
		time.Sleep(time.Millisecond) // until the request is held
	}
	select {
	case <-done:
		t.Fatal("the stalled GET was answered before Release")
	default:
	}
	h.Faults.Release()
	if status := <-done; status != http.StatusOK {
		t.Errorf("GET after Release = %d, want 200", status)
	}
}

func TestPlanSkipTimesTarget(t *testing.T) {
	p := faults.New()
	p.Add(faults.Rule{Op: faults.TwinGet, Target: "/twins/a", Skip: 1, Times: 2, Code: iothub.ServerError})
	var got []bool
	for _, target := range []string{"/twins/b", "/twins/a", "/twins/a", "/twins/a", "/twins/a"} {
		e, ok := p.Inject(faults.TwinGet, target)
		got = append(got, ok && e.Fails())
	}
	if want := []bool{false, false, true, true, false}; !slices.Equal(got, want) {
		t.Errorf("applied = %v, want %v", got, want)
	}
	if _, ok := p.Inject(faults.TwinPatch, "/twins/a"); ok {
		t.Error("a twin.get rule applied to twin.patch")
	}
	if _, ok := p.Inject(faults.TwinGet, "/twins/a"); ok {
		t.Error("rule applied after its Times")
	}
}
