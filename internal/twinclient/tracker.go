package twinclient

import (
	"encoding/json"
	"slices"
	"time"
)

// EventType says what an Event carries.
type EventType string

const (
	// EventTwin is the desired state read when the client first connects.
	EventTwin EventType = "twin"
	// EventPatch is a desired-properties patch pushed by the hub.
	EventPatch EventType = "patch"
	// EventResync is the full desired state after changes the client did
	// not receive as patches (made while it was disconnected, or after the
	// twin was deleted and created again).
	EventResync EventType = "resync"
)

// Event is one change of the desired properties, delivered in $version
// order, each $version at most once.
type Event struct {
	Type    EventType
	Version int64
	// Desired is the patch (null values mean removal) for EventPatch, the
	// whole desired document for EventTwin and EventResync; the hub's
	// "$version" and "$metadata" members are removed.
	Desired map[string]json.RawMessage
	// Time is when the client received it.
	Time time.Time
}

// snapshot is the desired state read with a twin GET. floor is the last
// version the tracker had delivered when the GET was sent (-1 if none): a
// GET sent after version v was delivered cannot show less than v unless the
// twin was deleted and created again. time is when the answer arrived: the
// patches that raced with the GET were in flight then.
type snapshot struct {
	version int64
	desired map[string]json.RawMessage
	floor   int64
	time    time.Time
}

// tracker turns patches (possibly duplicated or out of order) and twin
// snapshots into an ordered stream of events. It is not safe for
// concurrent use; the client's dispatcher owns it.
//
// A snapshot newer than the last delivered version is not reported at
// once: the patches in between may still be on their way (the GET raced
// with them). It is held for a grace period counted from its own arrival
// (expire) and dropped if the patches catch up meanwhile. A later, newer
// snapshot is held beside it and does not postpone it: were it replaced,
// GETs coming faster than the grace period would hold back a missing
// version, and every patch behind it, for as long as they kept coming.
type tracker struct {
	have    bool            // a baseline version is known
	last    int64           // version of the last delivered event
	pending map[int64]Event // patches newer than last+1, held until the gap closes
	held    []snapshot      // newer snapshots in arrival and version order, waiting for patches in flight
}

func newTracker() *tracker { return &tracker{pending: map[int64]Event{}} }

// floor is the last delivered version, or -1 before the first snapshot.
func (t *tracker) floor() int64 {
	if !t.have {
		return -1
	}
	return t.last
}

// patch takes a pushed patch. It returns the events that are now in order,
// and check=true when the patch is not newer than what was delivered: a
// duplicate, or a sign that the twin was recreated, which a fresh GET tells
// apart.
func (t *tracker) patch(ev Event) (out []Event, check bool) {
	if t.have && ev.Version <= t.last {
		return nil, true
	}
	t.pending[ev.Version] = ev
	if !t.have {
		return nil, false
	}
	out = t.flush(nil)
	t.dropCaughtUp()
	return out, false
}

// dropCaughtUp forgets the held snapshots that the delivered versions
// reached: nothing before them was missed.
func (t *tracker) dropCaughtUp() {
	i := 0
	for i < len(t.held) && t.held[i].version <= t.last {
		i++
	}
	t.held = slices.Delete(t.held, 0, i)
}

// snapshot takes the result of a GET.
func (t *tracker) snapshot(s snapshot) []Event {
	switch {
	case !t.have:
		t.have = true
		return t.deliver(Event{Type: EventTwin, Version: s.version, Desired: s.desired, Time: s.time})
	case s.version < s.floor && s.version < t.last:
		// The version went back below one delivered before the GET was
		// sent: the identity was deleted and created again. Anything held
		// belongs to the old twin.
		clear(t.pending)
		t.held = t.held[:0]
		return t.deliver(Event{Type: EventResync, Version: s.version, Desired: s.desired, Time: s.time})
	case s.version > t.last:
		if n := len(t.held); n == 0 || s.version > t.held[n-1].version {
			t.held = append(t.held, s)
		}
	}
	return nil // not newer: the GET raced with patches already delivered
}

// heldSince is when the oldest held snapshot arrived, whose grace period
// ends first; ok is false when none is held.
func (t *tracker) heldSince() (at time.Time, ok bool) {
	if len(t.held) == 0 {
		return time.Time{}, false
	}
	return t.held[0].time, true
}

// expire ends the grace period of the snapshots that arrived at or before
// cutoff: the newest of them, which the patches did not catch up with, is
// reported as a resync. Newer snapshots stay held for their own grace.
func (t *tracker) expire(cutoff time.Time) []Event {
	i := 0
	for i < len(t.held) && !t.held[i].time.After(cutoff) {
		i++
	}
	if i == 0 {
		return nil
	}
	s := t.held[i-1]
	t.held = slices.Delete(t.held, 0, i)
	if s.version <= t.last {
		return nil
	}
	return t.deliver(Event{Type: EventResync, Version: s.version, Desired: s.desired, Time: s.time})
}

// deliver makes ev the new baseline, drops held patches it covers and
// returns it followed by the held patches that now follow without a gap.
func (t *tracker) deliver(ev Event) []Event {
	t.last = ev.Version
	for v := range t.pending {
		if v <= t.last {
			delete(t.pending, v)
		}
	}
	out := t.flush([]Event{ev})
	t.dropCaughtUp()
	return out
}

// flush appends to out the held patches that follow last without a gap.
func (t *tracker) flush(out []Event) []Event {
	for {
		ev, ok := t.pending[t.last+1]
		if !ok {
			return out
		}
		delete(t.pending, ev.Version)
		t.last = ev.Version
		out = append(out, ev)
	}
}

// waiting reports whether something waits for a grace period: a held
// snapshot, or patches held behind a missing version.
func (t *tracker) waiting() bool { return len(t.held) > 0 || t.gap() }

// gap reports whether patches are held behind a missing version.
func (t *tracker) gap() bool { return t.have && len(t.pending) > 0 }
