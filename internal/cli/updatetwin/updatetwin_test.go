package updatetwin

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/clitest"
	"github.com/moduletwin/iothub-module-twin/internal/cli/createmodule"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// testCmd is the command with a poll interval short enough for tests.
func testCmd(env *cli.Env) *cobra.Command {
	return NewCmd(env, func(ctx context.Context, o *Options) error {
		o.PollInterval = 2 * time.Millisecond
		return Run(ctx, o)
	})
}

// startHub returns an emulator holding myFirstDevice/myFirstModule.
func startHub(t *testing.T) *clitest.Hub {
	t.Helper()
	hub := clitest.Start(t)
	if res := clitest.Run(t, createmodule.Command, hub.Env(), ""); res.Code != cli.ExitOK {
		t.Fatalf("create-module: exit %d: %s", res.Code, res.Stderr)
	}
	return hub
}

func run(t *testing.T, hub *clitest.Hub, vars map[string]string, stdin string, args ...string) clitest.Result {
	t.Helper()
	res := hub.Run(t, testCmd, vars, stdin, args...)
	if strings.Contains(res.Stdout+res.Stderr, hub.PolicyKey()) {
		t.Errorf("output contains the policy key")
	}
	return res
}

const deviceID, moduleID = "myFirstDevice", "myFirstModule"

// writes returns the twin writes (PATCH/PUT) the hub received since the
// setup's requests.
func writes(hub *clitest.Hub) []clitest.Request {
	var out []clitest.Request
	for _, r := range hub.Requests() {
		if strings.HasPrefix(r.Path, "/twins/") && r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

// twinRequests lists "METHOD If-Match" for the twin requests.
func twinRequests(hub *clitest.Hub) []string {
	var out []string
	for _, r := range hub.Requests() {
		if strings.HasPrefix(r.Path, "/twins/myFirstDevice/modules/myFirstModule") {
			out = append(out, strings.TrimSpace(r.Method+" "+r.IfMatch))
		}
	}
	return out
}

// bodyDoc decodes a written twin body into generic JSON for comparison.
func bodyDoc(t *testing.T, body string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, body)
	}
	return v
}

func jsonOf(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad test JSON %q: %v", s, err)
	}
	return v
}

func TestPatchSourcesMerge(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "desired.json")
	if err := os.WriteFile(file, []byte(`{"mode": "eco", "limits": {"max": 9}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tagFile := filepath.Join(dir, "tags.json")
	if err := os.WriteFile(tagFile, []byte(`{"site": "lab-1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string // the request body
	}{
		{"set number", "", []string{"--set", "telemetryInterval=122"},
			`{"properties":{"desired":{"telemetryInterval":122}}}`},
		{"set string, bool, object, quoted number, empty", "", []string{"--set", "name=sensor one", "--set", "on=true", "--set", `o={"x":[1,2]}`, "--set", `s="122"`, "--set", "e="},
			`{"properties":{"desired":{"name":"sensor one","on":true,"o":{"x":[1,2]},"s":"122","e":""}}}`},
		{"nested paths", "", []string{"--set", "a.b.c=1", "--set", "a.b.d=x", "--set", "a.e=null"},
			`{"properties":{"desired":{"a":{"b":{"c":1,"d":"x"},"e":null}}}}`},
		{"inline desired and set", "", []string{"--desired", `{"telemetryInterval": 60, "limits": {"min": 1}}`, "--set", "limits.max=10", "--set", "telemetryInterval=null"},
			`{"properties":{"desired":{"telemetryInterval":null,"limits":{"min":1,"max":10}}}}`},
		{"desired from file", "", []string{"--desired", "@" + file},
			`{"properties":{"desired":{"mode":"eco","limits":{"max":9}}}}`},
		{"desired from stdin", `{"fromStdin": 1.5}`, []string{"--desired", "-"},
			`{"properties":{"desired":{"fromStdin":1.5}}}`},
		{"big integer kept exact", "", []string{"--set", "big=4503599627370495"},
			`{"properties":{"desired":{"big":4503599627370495}}}`},
		{"tags only", "", []string{"--tags", "@" + tagFile, "--set-tag", "owner.team=iot"},
			`{"tags":{"site":"lab-1","owner":{"team":"iot"}}}`},
		{"tags from stdin and desired", `{"site": null}`, []string{"--tags", "-", "--set", "x=1"},
			`{"tags":{"site":null},"properties":{"desired":{"x":1}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := startHub(t)
			res := run(t, hub, hub.Env(), tt.stdin, tt.args...)
			if res.Code != cli.ExitOK {
				t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
			}
			w := writes(hub)
			if len(w) != 1 {
				t.Fatalf("%d twin writes, want 1", len(w))
			}
			if w[0].Method != http.MethodPatch || w[0].IfMatch != `"AAAAAAAAAAE="` {
				t.Errorf("write = %s If-Match %s, want PATCH If-Match \"AAAAAAAAAAE=\"", w[0].Method, w[0].IfMatch)
			}
			if diff := cmp.Diff(jsonOf(t, tt.want), bodyDoc(t, w[0].Body)); diff != "" {
				t.Errorf("request body (-want +got):\n%s", diff)
			}
			if strings.Contains(w[0].Body, "$") {
				t.Errorf("request body carries a $ member: %s", w[0].Body)
			}
		})
	}
}

func TestTextOutputAndRemoval(t *testing.T) {
	hub := startHub(t)
	if res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=122", "--set", "mode=eco"); res.Code != cli.ExitOK {
		t.Fatalf("first update: exit %d: %s", res.Code, res.Stderr)
	}
	res := run(t, hub, hub.Env(), "", "--set", "mode=null", "--set-tag", "site=lab")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	want := "before: etag AAAAAAAAAAI=, desired $version 2, reported $version 1\n" +
		"  tags:     {}\n" +
		`  desired:  {"$version":2,"mode":"eco","telemetryInterval":122}` + "\n" +
		`  reported: {"$version":1}` + "\n" +
		"after: etag AAAAAAAAAAM=, desired $version 3, reported $version 1\n" +
		`  tags:     {"site":"lab"}` + "\n" +
		`  desired:  {"$version":3,"telemetryInterval":122}` + "\n" +
		`  reported: {"$version":1}` + "\n"
	if diff := cmp.Diff(want, res.Stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if res.Stderr != "" {
		t.Errorf("stderr = %q, want nothing", res.Stderr)
	}
	if _, ok := hub.Twin("myFirstDevice", "myFirstModule").Properties.Desired["mode"]; ok {
		t.Error("mode is still a desired property on the hub")
	}
}

func TestJSONOutput(t *testing.T) {
	hub := startHub(t)
	before := hub.Twin("myFirstDevice", "myFirstModule")
	res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=122", "-o", "json")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	var got Report
	dec := json.NewDecoder(strings.NewReader(res.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, res.Stdout)
	}
	want := Report{Before: before, After: hub.Twin("myFirstDevice", "myFirstModule")}
	if diff := cmp.Diff(want, got, cmp.Transformer("json", func(r json.RawMessage) any {
		var v any
		_ = json.Unmarshal(r, &v)
		return v
	})); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if v := iothub.DocVersion(got.After.Properties.Desired); v != 2 {
		t.Errorf("after desired $version = %d, want 2", v)
	}
}

func TestConcurrency(t *testing.T) {
	const firstETag, secondETag = `"AAAAAAAAAAE="`, `"AAAAAAAAAAI="`
	tests := []struct {
		name       string
		concurrent int // writes another writer wins
		args       []string
		wantCode   int
		wantReqs   []string
		wantStderr []string
	}{
		{
			name: "412 once then retried", concurrent: 1, args: []string{"--set", "x=1"}, wantCode: cli.ExitOK,
			wantReqs:   []string{"GET", "PATCH " + firstETag, "GET", "PATCH " + secondETag},
			wantStderr: []string{"note: the twin changed after it was read (412 Precondition Failed); reading it again and retrying in ", "(retry 1)\n"},
		},
		{
			name: "lost several races", concurrent: 3, args: []string{"--set", "x=1"}, wantCode: cli.ExitOK,
			wantReqs:   []string{"GET", "PATCH " + firstETag, "GET", "PATCH " + secondETag, "GET", `PATCH "AAAAAAAAAAM="`, "GET", `PATCH "AAAAAAAAAAQ="`},
			wantStderr: []string{"(retry 3)\n"},
		},
		{
			name: "no retry allowed", concurrent: 1, args: []string{"--set", "x=1", "--retry-timeout", "0"}, wantCode: cli.ExitFailed,
			wantReqs: []string{"GET", "PATCH " + firstETag},
			wantStderr: []string{
				"update-module-twin: update module twin myFirstDevice/myFirstModule: the twin kept changing while it was updated; gave up after 1 attempt in ",
				"(--retry-timeout 0s)\n",
				"hint: other writers keep changing this twin; run again, or allow more time with --retry-timeout\n"},
		},
		{
			name: "strict etag that still matches", args: []string{"--set", "x=1", "--etag", "AAAAAAAAAAE="}, wantCode: cli.ExitOK,
			wantReqs: []string{"GET", "PATCH " + firstETag},
		},
		{
			name: "strict etag, twin changed", concurrent: 1, args: []string{"--set", "x=1", "--etag", "AAAAAAAAAAE="}, wantCode: cli.ExitFailed,
			wantReqs: []string{"GET", "PATCH " + firstETag},
			wantStderr: []string{
				"update-module-twin: update module twin myFirstDevice/myFirstModule: the twin changed: its etag is no longer AAAAAAAAAAE= (it was AAAAAAAAAAE= when read)\n",
				"hint: run again without --etag",
			},
		},
		{
			name: "strict stale etag", args: []string{"--set", "x=1", "--etag", "c3RhbGU="}, wantCode: cli.ExitFailed,
			wantReqs:   []string{"GET", `PATCH "c3RhbGU="`},
			wantStderr: []string{"its etag is no longer c3RhbGU= (it was AAAAAAAAAAE= when read)"},
		},
		{
			name: "force", concurrent: 1, args: []string{"--set", "x=1", "--force"}, wantCode: cli.ExitOK,
			wantReqs: []string{"GET", `PATCH "*"`},
		},
		{
			name: "replace retried", concurrent: 1, args: []string{"--set", "x=1", "--replace"}, wantCode: cli.ExitOK,
			wantReqs:   []string{"GET", "PUT " + firstETag, "GET", "PUT " + secondETag},
			wantStderr: []string{"(retry 1)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := startHub(t)
			if tt.concurrent > 0 {
				hub.Faults.Add(faults.Rule{Op: faults.TwinPatch, Times: tt.concurrent, ChangeTwin: true},
					faults.Rule{Op: faults.TwinPut, Times: tt.concurrent, ChangeTwin: true})
			}
			res := run(t, hub, hub.Env(), "", tt.args...)
			if res.Code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.Code, tt.wantCode, res.Stderr)
			}
			if diff := cmp.Diff(tt.wantReqs, twinRequests(hub)); diff != "" {
				t.Errorf("twin requests (-want +got):\n%s", diff)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", res.Stderr, w)
				}
			}
			twin := hub.Twin("myFirstDevice", "myFirstModule")
			_, written := twin.Properties.Desired["x"]
			if written != (tt.wantCode == cli.ExitOK) {
				t.Errorf("x written to the hub = %v, want %v", written, tt.wantCode == cli.ExitOK)
			}
		})
	}
}

func TestReplace(t *testing.T) {
	hub := startHub(t)
	if res := run(t, hub, hub.Env(), "", "--desired", `{"a":1,"b":{"c":2}}`, "--set-tag", "site=lab", "--set-tag", "owner=me"); res.Code != cli.ExitOK {
		t.Fatalf("setup update: exit %d: %s", res.Code, res.Stderr)
	}
	res := run(t, hub, hub.Env(), "", "--replace", "--desired", `{"b":{"d":3}}`, "--set-tag", "owner=null")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	w := writes(hub)
	last := w[len(w)-1]
	if last.Method != http.MethodPut {
		t.Errorf("method = %s, want PUT", last.Method)
	}
	wantBody := `{"tags":{"site":"lab"},"properties":{"desired":{"b":{"d":3}}}}`
	if diff := cmp.Diff(jsonOf(t, wantBody), bodyDoc(t, last.Body)); diff != "" {
		t.Errorf("PUT body (-want +got):\n%s", diff)
	}
	twin := hub.Twin("myFirstDevice", "myFirstModule")
	if got := compactDoc(twin.Properties.Desired); got != `{"$version":3,"b":{"d":3}}` {
		t.Errorf("desired on the hub = %s, want only b and the new $version", got)
	}
	if got := compactDoc(twin.Tags); got != `{"site":"lab"}` {
		t.Errorf("tags on the hub = %s, want site kept and owner removed", got)
	}

	// Without --tags, replace keeps the tags as they are.
	if res := run(t, hub, hub.Env(), "", "--replace", "--set", "z=1"); res.Code != cli.ExitOK {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if got := compactDoc(hub.Twin("myFirstDevice", "myFirstModule").Tags); got != `{"site":"lab"}` {
		t.Errorf("tags after a replace without --tags = %s, want them kept", got)
	}
}

func TestUsageErrors(t *testing.T) {
	hub := startHub(t)
	dir := t.TempDir()
	deep := `{"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":{"l10":{"l11":{"l12":1}}}}}}}}}}}}`
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no patch", "", nil, "nothing to update: give --desired, --set, --tags or --set-tag"},
		{"dollar in key", "", []string{"--desired", `{"a":{"b$c":1}}`}, `invalid desired properties: key "desired.a.b$c": key contains '$'`},
		{"space in set key", "", []string{"--set", "my key=1"}, `key "desired.my key": key contains a space`},
		{"dot in tag key", "", []string{"--tags", `{"a.b":1}`}, `invalid tags properties: key "tags.a.b": key contains '.'`},
		{"too deep", "", []string{"--desired", deep}, `key "desired.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11": nested deeper than 10 levels`},
		{"integer out of range", "", []string{"--set", "n=4503599627370496"}, `key "desired.n": integer outside`},
		{"too big", "", []string{"--set", "s=" + strings.Repeat("x", 4000), "--set", "t=" + strings.Repeat("x", 4000),
			"--set", "u=" + strings.Repeat("x", 4000), "--set", "v=" + strings.Repeat("x", 4000), "--set", "w=" + strings.Repeat("x", 4000),
			"--set", "x=" + strings.Repeat("x", 4000), "--set", "y=" + strings.Repeat("x", 4000), "--set", "z=" + strings.Repeat("x", 4000),
			"--set", "zz=" + strings.Repeat("x", 1000)}, "desired is 33010 bytes (at most 32768)"},
		{"not an object", "", []string{"--desired", `[1,2]`}, "--desired: want a JSON object, got an array"},
		{"not JSON", "", []string{"--desired", `{"a":`}, "--desired: not valid JSON"},
		{"trailing data", "", []string{"--desired", `{"a":1} {}`}, "unexpected data after the JSON value"},
		{"empty stdin", "", []string{"--desired", "-"}, "--desired -: not valid JSON: empty input"},
		{"missing file", "", []string{"--desired", "@" + filepath.Join(dir, "nope.json")}, "--desired: open " + filepath.Join(dir, "nope.json")},
		{"set without value", "", []string{"--set", "telemetryInterval"}, `--set "telemetryInterval": want PATH=VALUE`},
		{"set empty key", "", []string{"--set", "a..b=1"}, `path "a..b" has an empty key`},
		{"set below a scalar", "", []string{"--set", "a=1", "--set", "a.b=2"}, `--set "a.b=2": "a" is already set to a number, not an object`},
		{"two stdin readers", "{}", []string{"--desired", "-", "--tags", "-"}, "only one of --desired, --tags and --connection-string-file can read stdin"},
		{"etag and force", "", []string{"--set", "a=1", "--etag", "x", "--force"}, "[etag force] were all set"},
		{"replace without desired", "", []string{"--replace", "--set-tag", "a=1"}, "--replace needs the new desired properties"},
		{"replace with null", "", []string{"--replace", "--set", "a=1", "--set", "b.c=null"}, `--replace: desired property "b.c" is null`},
		{"wait-ack without desired", "", []string{"--set-tag", "a=1", "--wait-ack", "1s"}, "--wait-ack: the update sets no desired property to wait for"},
		{"wait-ack with removals only", "", []string{"--set", "a=null", "--wait-ack", "1s"}, "no desired property to wait for"},
		{"bad wait-ack", "", []string{"--set", "a=1", "--wait-ack", "soon"}, `invalid argument "soon" for "--wait-ack"`},
		{"bad device id", "", []string{"--set", "a=1", "--device-id", "a b"}, `--device-id: device ID "a b" has character ' '`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(hub.Requests())
			res := run(t, hub, hub.Env(), tt.stdin, tt.args...)
			if res.Code != cli.ExitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.Code, cli.ExitUsage, res.Stderr)
			}
			if !strings.Contains(res.Stderr, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", res.Stderr, tt.want)
			}
			if n := len(hub.Requests()) - before; n != 0 {
				t.Errorf("%d requests reached the hub, want none", n)
			}
		})
	}
}

func TestHubMaintainedMembersAreDropped(t *testing.T) {
	hub := startHub(t)
	res := run(t, hub, hub.Env(), "", "--desired", `{"$version": 7, "$metadata": {}, "a": 1}`)
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	for _, want := range []string{`note: ignoring "$version" in --desired`, `note: ignoring "$metadata" in --desired`} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr = %q, want it to contain %q", res.Stderr, want)
		}
	}
	if body := writes(hub)[0].Body; body != `{"properties":{"desired":{"a":1}}}` {
		t.Errorf("body = %s, want only a", body)
	}
}

func TestHubErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*clitest.Hub) map[string]string
		args  []string
		want  []string
	}{
		{"device missing", nil, []string{"--set", "a=1", "--device-id", "nodev"}, []string{
			`update-module-twin: read module twin nodev/myFirstModule: device "nodev" does not exist on localhost:`,
			"hint: create it with: create-module --device-id nodev --module-id myFirstModule"}},
		{"module missing", nil, []string{"--set", "a=1", "--module-id", "no#mod"}, []string{
			`module "no#mod" does not exist on device "myFirstDevice"`,
			"hint: create it with: create-module --device-id myFirstDevice --module-id 'no#mod'"}},
		{"wrong key", func(hub *clitest.Hub) map[string]string {
			env := hub.Env()
			env[cli.EnvConnectionString] = strings.Replace(hub.ConnectionString(), hub.PolicyKey(), "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", 1)
			return env
		}, []string{"--set", "a=1"}, []string{
			"the hub refused the connection string's credentials (401 IotHubUnauthorizedAccess)",
			"needs the ServiceConnect permission (for example the built-in iothubowner or service policy)"}},
		{"bad request", func(hub *clitest.Hub) map[string]string {
			hub.Faults.FailNext(faults.TwinPatch, 0, iothub.ArgumentInvalid, "Twin size exceeds the limit")
			return hub.Env()
		}, []string{"--set", "a=1"}, []string{
			"update-module-twin: update module twin myFirstDevice/myFirstModule: the hub rejected the request (400 ArgumentInvalid): Twin size exceeds the limit"}},
		{"throttled", func(hub *clitest.Hub) map[string]string {
			hub.Faults.FailNext(faults.TwinGet, 0, iothub.ThrottlingException, "throttled")
			return hub.Env()
		}, []string{"--set", "a=1"}, []string{"read module twin myFirstDevice/myFirstModule: the hub is throttling requests and still was after several retries"}},
		{"server error", func(hub *clitest.Hub) map[string]string {
			hub.Faults.FailNext(faults.TwinPatch, 0, iothub.ServiceUnavailable, "busy")
			return hub.Env()
		}, []string{"--set", "a=1"}, []string{"the hub failed to handle the request (503 ServiceUnavailable): busy", "tracking ID "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := startHub(t)
			vars := hub.Env()
			if tt.setup != nil {
				vars = tt.setup(hub)
			}
			res := run(t, hub, vars, "", tt.args...)
			if res.Code != cli.ExitFailed {
				t.Errorf("exit %d, want 1; stderr:\n%s", res.Code, res.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", res.Stderr, w)
				}
			}
		})
	}
}

func TestHelpHidesSecrets(t *testing.T) {
	hub := startHub(t)
	res := run(t, hub, hub.Env(), "", "--help")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d", res.Code)
	}
	for _, leak := range []string{hub.PolicyKey(), hub.Host()} {
		if strings.Contains(res.Stdout, leak) {
			t.Errorf("--help shows %q", leak)
		}
	}
	for _, want := range []string{"--set PATH=VALUE", "--wait-ack DURATION", "ServiceConnect", `"ac": 200`, "130"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
