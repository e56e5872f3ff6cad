package twinclient

import (
	"encoding/json"
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
// twin was deleted and created again.
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
// with them). It is held until the grace period ends (expire) and dropped
// if the patches catch up meanwhile.
type tracker struct {
	have    bool            // a baseline version is known
	last    int64           // version of the last delivered event
	pending map[int64]Event // patches newer than last+1, held until the gap closes
	held    *snapshot       // a newer snapshot, waiting for patches in flight
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
	if t.held != nil && t.held.version <= t.last {
		t.held = nil // the patches caught up; nothing was missed
	}
	return out, false
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
		t.held = nil
		return t.deliver(Event{Type: EventResync, Version: s.version, Desired: s.desired, Time: s.time})
	case s.version > t.last:
		if t.held == nil || s.version > t.held.version {
			t.held = &s
		}
	}
	return nil // not newer: the GET raced with patches already delivered
}

// expire ends the grace period: a held snapshot that the patches did not
// catch up with is reported as a resync.
func (t *tracker) expire() []Event {
	s := t.held
	t.held = nil
	if s == nil || s.version <= t.last {
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
	return t.flush([]Event{ev})
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

// waiting reports whether something waits for the grace period: a held
// snapshot, or patches held behind a missing version.
func (t *tracker) waiting() bool { return t.held != nil || (t.have && len(t.pending) > 0) }
