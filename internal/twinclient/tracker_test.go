package twinclient

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// step is one input to the tracker: a patch "p<version>", a snapshot
// "s<version>" (GET sent after the tracker's current floor) or
// "s<version>@<floor>" (GET sent when the floor was lower), or "expire".
type step string

// got is an emitted event in short form, e.g. "patch 3".
func short(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%s %d", ev.Type, ev.Version))
	}
	return out
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name      string
		steps     []step
		want      []string
		wantCheck int  // stale patches that asked for a GET
		waiting   bool // something still waits for the grace period
	}{
		{
			name:  "twin then patches in order",
			steps: []step{"s2", "p3", "p4", "p5"},
			want:  []string{"twin 2", "patch 3", "patch 4", "patch 5"},
		},
		{
			name:  "patches before the first snapshot are held and replayed past it",
			steps: []step{"p3", "p4", "s3", "p5"},
			want:  []string{"twin 3", "patch 4", "patch 5"},
		},
		{
			name:  "out of order patches come out in order",
			steps: []step{"s1", "p3", "p2", "p5", "p4"},
			want:  []string{"twin 1", "patch 2", "patch 3", "patch 4", "patch 5"},
		},
		{
			name:      "duplicates are dropped and asked about",
			steps:     []step{"s1", "p2", "p2", "p3", "p2"},
			want:      []string{"twin 1", "patch 2", "patch 3"},
			wantCheck: 2,
		},
		{
			name:    "a gap holds later patches",
			steps:   []step{"s1", "p2", "p4", "p5"},
			want:    []string{"twin 1", "patch 2"},
			waiting: true,
		},
		{
			name:  "a newer snapshot closes a gap as a resync after the grace period",
			steps: []step{"s1", "p2", "p4", "p5", "s4", "expire"},
			want:  []string{"twin 1", "patch 2", "resync 4", "patch 5"},
		},
		{
			name:  "a newer snapshot is dropped when the patches in flight catch up",
			steps: []step{"s1", "s3", "p2", "p3", "expire", "p4"},
			want:  []string{"twin 1", "patch 2", "patch 3", "patch 4"},
		},
		{
			name:  "missed changes come as one resync",
			steps: []step{"s1", "p2", "s6", "expire", "p7"},
			want:  []string{"twin 1", "patch 2", "resync 6", "patch 7"},
		},
		{
			name:  "the newest of several held snapshots wins",
			steps: []step{"s1", "s5", "s4", "s7", "expire"},
			want:  []string{"twin 1", "resync 7"},
		},
		{
			name:  "a snapshot equal to the last version changes nothing",
			steps: []step{"s1", "p2", "s2", "p3"},
			want:  []string{"twin 1", "patch 2", "patch 3"},
		},
		{
			name:  "a stale snapshot from before recent patches is not a reset",
			steps: []step{"s1", "p2", "p3", "p4", "s3@2"},
			want:  []string{"twin 1", "patch 2", "patch 3", "patch 4"},
		},
		{
			name:  "a lower version than one known before the GET means the twin was recreated",
			steps: []step{"s1", "p2", "p3", "p4", "s2", "p3", "s3"},
			want:  []string{"twin 1", "patch 2", "patch 3", "patch 4", "resync 2", "patch 3"},
		},
		{
			name:      "patches of the recreated twin that look stale trigger a check that resyncs",
			steps:     []step{"s1", "p2", "p3", "p2", "s2"},
			want:      []string{"twin 1", "patch 2", "patch 3", "resync 2"},
			wantCheck: 1,
		},
		{
			name:  "a second GET sent before the reset was seen does not repeat it",
			steps: []step{"s1", "p2", "p3", "p4", "s2", "s2@4", "p3"},
			want:  []string{"twin 1", "patch 2", "patch 3", "patch 4", "resync 2", "patch 3"},
		},
		{
			name:  "a reset drops patches held for the old twin",
			steps: []step{"s1", "p2", "p9", "s1"},
			want:  []string{"twin 1", "patch 2", "resync 1"},
		},
		{
			name:  "expire with nothing held does nothing",
			steps: []step{"s1", "expire", "p2"},
			want:  []string{"twin 1", "patch 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			var got []Event
			checks := 0
			for _, s := range tt.steps {
				var v, floor int64
				switch {
				case s == "expire":
					got = append(got, tr.expire(time.Now())...)
				case s[0] == 'p':
					mustScan(t, string(s[1:]), "%d", &v)
					evs, check := tr.patch(Event{Type: EventPatch, Version: v})
					got = append(got, evs...)
					if check {
						checks++
					}
				case s[0] == 's':
					floor = tr.floor()
					if _, err := fmt.Sscanf(string(s[1:]), "%d@%d", &v, &floor); err != nil {
						mustScan(t, string(s[1:]), "%d", &v)
					}
					got = append(got, tr.snapshot(snapshot{version: v, floor: floor})...)
				default:
					t.Fatalf("bad step %q", s)
				}
			}
			if diff := cmp.Diff(tt.want, short(got)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if checks != tt.wantCheck {
				t.Errorf("stale patches asking for a GET = %d, want %d", checks, tt.wantCheck)
			}
			if w := tr.waiting(); w != tt.waiting {
				t.Errorf("waiting() = %v, want %v", w, tt.waiting)
			}
		})
	}
}

// TestTrackerHeldSnapshotsExpireInTurn shows that each held snapshot waits
// one grace period from its own arrival: a later GET neither postpones the
// resync of a missing version nor turns patches still in flight for its
// own version into a resync.
func TestTrackerHeldSnapshotsExpireInTurn(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	snap := func(tr *tracker, v int64, d time.Duration) []Event {
		return tr.snapshot(snapshot{version: v, floor: tr.floor(), time: at(d)})
	}
	patches := func(tr *tracker, from, to int64) []Event {
		var out []Event
		for v := from; v <= to; v++ {
			evs, _ := tr.patch(Event{Type: EventPatch, Version: v})
			out = append(out, evs...)
		}
		return out
	}

	t.Run("a missing version is resynced on time while GETs keep coming", func(t *testing.T) {
		const grace = 2 * time.Second
		tr := newTracker()
		got := snap(tr, 1, 0)
		got = append(got, patches(tr, 2, 3)...)
		// Version 4 never comes. Every second a GET answers and ten more
		// patches arrive; the grace period is two seconds.
		for i := range int64(6) {
			now := time.Duration(i) * time.Second
			got = append(got, snap(tr, 10+10*i, now)...)
			got = append(got, patches(tr, 5+10*i, 14+10*i)...)
			if h, ok := tr.heldSince(); i < 2 && (!ok || !h.Equal(at(0))) {
				t.Fatalf("at %s: oldest held snapshot from %v (held %v), want %v", now, h, ok, at(0))
			}
			got = append(got, tr.expire(at(now-grace))...)
		}
		// The first GET's grace ends at 2s: it is the resync, and every
		// later version arrives as a patch.
		want := []string{"twin 1", "patch 2", "patch 3", "resync 10"}
		for v := 11; v <= 64; v++ {
			want = append(want, fmt.Sprintf("patch %d", v))
		}
		if diff := cmp.Diff(want, short(got)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if tr.waiting() {
			t.Errorf("still waiting after the patches caught up; %d snapshots held", len(tr.held))
		}
	})

	t.Run("a later snapshot keeps its own grace once the patches pass the earlier one", func(t *testing.T) {
		tr := newTracker()
		got := snap(tr, 1, 0)
		got = append(got, snap(tr, 3, 0)...)
		got = append(got, snap(tr, 6, time.Second)...)
		got = append(got, patches(tr, 2, 4)...)
		// The first snapshot's grace ends: the patches passed it, and the
		// second one has a second to go.
		got = append(got, tr.expire(at(0))...)
		got = append(got, patches(tr, 5, 6)...)
		got = append(got, tr.expire(at(time.Second))...)
		want := []string{"twin 1", "patch 2", "patch 3", "patch 4", "patch 5", "patch 6"}
		if diff := cmp.Diff(want, short(got)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func mustScan(t *testing.T, s, format string, v *int64) {
	t.Helper()
	if _, err := fmt.Sscanf(s, format, v); err != nil {
		t.Fatalf("scan %q: %v", s, err)
	}
}

func TestTrackerSnapshotCarriesDesired(t *testing.T) {
	tr := newTracker()
	desired := map[string]json.RawMessage{"a": json.RawMessage(`1`)}
	got := tr.snapshot(snapshot{version: 4, desired: desired, floor: -1})
	if len(got) != 1 || got[0].Type != EventTwin || got[0].Version != 4 || string(got[0].Desired["a"]) != "1" {
		t.Fatalf("first snapshot = %+v, want twin 4 with a=1", got)
	}
}
