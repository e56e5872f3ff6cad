package updatetwin

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/clitest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// ackAfterPolls acts as the module acknowledging, once the twin was read
// polls times after a desired-property write, every desired property in
// its reported properties (IoT Plug and Play convention, status code ac).
func ackAfterPolls(hub *clitest.Hub, polls, ac int) {
	base := iothub.DocVersion(hub.Twin(deviceID, moduleID).Properties.Desired)
	seen, done := 0, false
	hub.Faults.Add(faults.Rule{Op: faults.TwinGet, Do: func(string) {
		desired := hub.Twin(deviceID, moduleID).Properties.Desired
		v := iothub.DocVersion(desired)
		if done || v <= base {
			return
		}
		if seen++; seen <= polls {
			return
		}
		done = true
		acks := map[string]any{}
		for k, val := range desired {
			if !strings.HasPrefix(k, "$") {
				acks[k] = map[string]any{"value": val, "ac": ac, "av": v, "ad": "done"}
			}
		}
		b, _ := json.Marshal(acks)
		hub.PatchReported(deviceID, moduleID, string(b))
	}})
}

func TestWaitAck(t *testing.T) {
	t.Run("acknowledged after a few polls", func(t *testing.T) {
		hub := startHub(t)
		ackAfterPolls(hub, 2, 200)
		res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=122", "--set", "mode=null", "--wait-ack", "1m")
		if res.Code != cli.ExitOK {
			t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
		}
		wantAck := "acknowledged by the module (desired $version 2):\n" +
			`  telemetryInterval: {"ac":200,"ad":"done","av":2,"value":122}` + "\n"
		if !strings.HasSuffix(res.Stdout, wantAck) {
			t.Errorf("stdout = %q, want it to end with %q", res.Stdout, wantAck)
		}
		if want := "waiting up to 1m0s for the module to acknowledge telemetryInterval (desired $version 2)\n"; res.Stderr != want {
			t.Errorf("stderr = %q, want %q", res.Stderr, want)
		}
		// GET, PATCH, then at least three polls: two without the ack, one with.
		if reqs := twinRequests(hub); len(reqs) < 5 {
			t.Errorf("twin requests = %v, want the ack to need several polls", reqs)
		}
	})
	t.Run("json", func(t *testing.T) {
		hub := startHub(t)
		ackAfterPolls(hub, 1, 200)
		res := run(t, hub, hub.Env(), "", "--desired", `{"a":{"b":1}}`, "--wait-ack", "1m", "-o", "json")
		if res.Code != cli.ExitOK {
			t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
		}
		var got Report
		if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, res.Stdout)
		}
		if diff := cmp.Diff(map[string]any{"a": jsonOf(t, `{"value":{"b":1},"ac":200,"av":2,"ad":"done"}`)},
			map[string]any{"a": jsonOf(t, string(got.Acknowledged["a"]))}); diff != "" || len(got.Acknowledged) != 1 {
			t.Errorf("acknowledged (-want +got):\n%s", diff)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		hub := startHub(t)
		res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=122", "--set", "mode=eco", "--wait-ack", "30ms")
		if res.Code != cli.ExitFailed {
			t.Fatalf("exit %d, want 1; stderr:\n%s", res.Code, res.Stderr)
		}
		want := "update-module-twin: no acknowledgement of desired $version 2 within 30ms for: mode (not reported); telemetryInterval (not reported)\n" +
			"hint: is the module connected?"
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr = %q, want it to contain %q", res.Stderr, want)
		}
		if !strings.Contains(res.Stdout, "after: etag") {
			t.Errorf("stdout = %q, want the twin after the (successful) update", res.Stdout)
		}
	})
	t.Run("stale acknowledgement", func(t *testing.T) {
		hub := startHub(t)
		// The module acknowledged an older version of the property.
		ackAfterPolls(hub, 0, 200)
		if res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=60", "--wait-ack", "1m"); res.Code != cli.ExitOK {
			t.Fatalf("first update: exit %d: %s", res.Code, res.Stderr)
		}
		res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=122", "--wait-ack", "30ms")
		if res.Code != cli.ExitFailed || !strings.Contains(res.Stderr, "telemetryInterval (acknowledges desired $version 2, waiting for 3)") {
			t.Errorf("exit %d, stderr %q; want 1 and the stale version", res.Code, res.Stderr)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		hub := startHub(t)
		ackAfterPolls(hub, 0, 400)
		res := run(t, hub, hub.Env(), "", "--set", "telemetryInterval=-1", "--wait-ack", "1m")
		if res.Code != cli.ExitFailed || !strings.Contains(res.Stderr, `the module rejected desired property "telemetryInterval": rejected with ac 400: done`) {
			t.Errorf("exit %d, stderr %q; want 1 and the rejection", res.Code, res.Stderr)
		}
	})
}

func TestCheckAck(t *testing.T) {
	tests := []struct {
		name     string
		reported string
		want     ackStatus
	}{
		{"missing", "", ackStatus{reason: "not reported"}},
		{"plain value", `122`, ackStatus{reason: "reported, but not as an acknowledgement {value, ac, av}"}},
		{"no av", `{"value":122,"ac":200}`, ackStatus{reason: "reported, but not as an acknowledgement {value, ac, av}"}},
		{"old version", `{"value":122,"ac":200,"av":4}`, ackStatus{reason: "acknowledges desired $version 4, waiting for 5"}},
		{"other value", `{"value":121,"ac":200,"av":5}`, ackStatus{reason: "acknowledged value 121 is not the desired value"}},
		{"ok", `{"value":122,"ac":200,"av":5}`, ackStatus{done: true}},
		{"later version ok", `{"value":122.0,"ac":203,"av":6}`, ackStatus{done: true}},
		{"merged value ok", `{"value":{"a":1,"b":2},"ac":200,"av":5}`, ackStatus{done: true}},
		{"rejected", `{"value":122,"ac":500,"av":5,"ad":"out of range"}`, ackStatus{rejected: true, reason: "rejected with ac 500: out of range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reported json.RawMessage
			if tt.reported != "" {
				reported = json.RawMessage(tt.reported)
			}
			wants := []json.RawMessage{json.RawMessage(`122`)}
			if strings.HasPrefix(tt.name, "merged") {
				wants = []json.RawMessage{json.RawMessage(`{"b":2}`), json.RawMessage(`{"b":2,"a":1}`)}
			}
			got := checkAck(reported, 5, wants...)
			if got != tt.want {
				t.Errorf("checkAck(%s) = %+v, want %+v", tt.reported, got, tt.want)
			}
		})
	}
}
