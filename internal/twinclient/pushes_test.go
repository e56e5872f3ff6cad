package twinclient

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
)

func TestOutOfOrderAndDuplicatePushes(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, opts...)
	r.next(t)
	// The push of version 2 is held back until version 3's is out, then
	// sent twice: the notifications arrive 3, 2, 2.
	h.Faults.Add(faults.Rule{Op: faults.MQTTDesiredPush, Times: 1, Stall: true, Duplicate: true})
	h.patchDesired(`{"x":1}`)
	h.patchDesired(`{"y":2}`)
	for deadline := time.Now().Add(10 * time.Second); len(h.Faults.Seen(faults.MQTTDesiredPush)) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("version 3 not pushed within 10s")
		}
	}
	h.Faults.Release()
	want := []string{`patch 2 {"x":1}`, `patch 3 {"y":2}`}
	got := []string{brief(r.next(t)), brief(r.next(t))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	v := h.patchDesired(`{"z":3}`)
	if got, want := brief(r.next(t)), fmt.Sprintf(`patch %d {"z":3}`, v); got != want {
		t.Errorf("next event = %s, want %s (the duplicate must not show)", got, want)
	}
}

func TestLostPushIsRecoveredByReadingTheTwin(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, append(opts, WithResyncGrace(50*time.Millisecond))...)
	r.next(t)
	// Versions 2 and 3 are committed but only 3 is pushed: 2 never comes.
	h.Faults.Add(faults.Rule{Op: faults.MQTTDesiredPush, Times: 1, Drop: true})
	h.patchDesired(`{"x":1}`)
	h.patchDesired(`{"y":2}`)
	if got, want := brief(r.next(t)), `resync 3 {"x":1,"y":2}`; got != want {
		t.Errorf("event = %s, want %s", got, want)
	}
}

// TestMissingVersionResyncedWhilePatchesKeepComing loses one version while
// patches keep coming and GETs come faster than the grace period
// (duplicate pushes ask for them, as token renewals do): the missing
// version must be resynced after a grace period, not once the flow stops.
func TestMissingVersionResyncedWhilePatchesKeepComing(t *testing.T) {
	t.Parallel()
	h := newTestHub(t)
	cs, opts := transports[0].setup(h)
	r := startClient(t, cs, append(opts, WithResyncGrace(time.Second))...)
	r.next(t)
	h.Faults.Add(faults.Rule{Op: faults.MQTTDesiredPush, Times: 1, Drop: true})
	h.patchDesired(`{"lost":true}`) // version 2: committed, never pushed

	var resync Event
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := int64(2)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; resync.Type == ""; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("version 2 not resynced within 15s while patches kept coming; log:\n%s", r.logs)
		}
		if i%5 == 0 {
			// A duplicate push: the client reads the twin.
			h.Faults.Add(faults.Rule{Op: faults.MQTTDesiredPush, Times: 1, Duplicate: true})
		}
		last = h.patchDesired(fmt.Sprintf(`{"seq":%d}`, i))
		select {
		case ev := <-r.events:
			resync = ev
		case <-tick.C:
		}
	}
	if resync.Type != EventResync || resync.Version < 2 || string(resync.Desired["lost"]) != "true" {
		t.Fatalf("first event after the loss = %s, want a resync with lost=true", brief(resync))
	}
	for v := resync.Version + 1; v <= last; v++ {
		if got, want := brief(r.next(t)), fmt.Sprintf(`patch %d {"seq":%d}`, v, v-3); got != want {
			t.Fatalf("event = %s, want %s", got, want)
		}
	}
}
