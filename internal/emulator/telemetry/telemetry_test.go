package telemetry_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

func TestSplitProperties(t *testing.T) {
	sys, app := telemetry.SplitProperties("%24.mid=1&$.cid=2&%24.sub=thermostat1&$.ifid=x&k%26=v%3D&bad=%zz&&k2")
	wantSys := map[string]string{"message-id": "1", "correlation-id": "2", "dt-subject": "thermostat1", "$.ifid": "x"}
	wantApp := map[string]string{"k&": "v=", "bad": "%zz", "k2": ""}
	if d := cmp.Diff(wantSys, sys); d != "" {
		t.Errorf("system (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantApp, app); d != "" {
		t.Errorf("application (-want +got):\n%s", d)
	}
}

func TestBufferDropsOldestAndCounts(t *testing.T) {
	b := telemetry.NewBuffer(3, 0)
	for i := range 5 {
		b.Add(telemetry.Message{DeviceID: "d", Body: []byte{byte('a' + i)}})
	}
	b.Add(telemetry.Message{DeviceID: "d", ModuleID: "m", Body: []byte("z")})
	if s := b.Stats(); s.Held != 3 || s.Dropped != 3 || s.Received != 6 || s.Bytes != 3 {
		t.Errorf("stats %+v; want 3 held, 3 dropped, 6 received, 3 bytes", s)
	}
	got := b.Of("d", "", 0)
	if len(got) != 2 || string(got[0].Body) != "d" || got[1].Seq != 5 {
		t.Errorf("device messages %+v; want d and e", got)
	}
	if m := b.Of("d", "m", 1); len(m) != 1 || string(m[0].Body) != "z" {
		t.Errorf("module messages %+v", m)
	}

	bySize := telemetry.NewBuffer(100, 10)
	bySize.Add(telemetry.Message{Body: []byte(strings.Repeat("x", 6))})
	bySize.Add(telemetry.Message{Body: []byte(strings.Repeat("y", 6))})
	if s := bySize.Stats(); s.Held != 1 || s.Dropped != 1 {
		t.Errorf("size-bound buffer: %+v; want the older dropped", s)
	}
}
