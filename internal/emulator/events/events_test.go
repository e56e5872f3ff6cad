package events_test

import (
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
)

func TestFullSubscriberDropsAndCounts(t *testing.T) {
	b := events.NewBus()
	slow := b.Subscribe(events.Filter{}, 2)
	defer slow.Close()
	mods := b.Subscribe(events.Filter{Kinds: map[events.Kind]bool{events.Message: true}, ModuleID: "m"}, 10)
	defer mods.Close()
	for range 5 {
		b.Publish(events.Event{Kind: events.Message, DeviceID: "d", ModuleID: "m"})
		b.Publish(events.Event{Kind: events.Twin, DeviceID: "d", ModuleID: "m"})
		b.Publish(events.Event{Kind: events.Message, DeviceID: "d"})
	}
	if got := slow.Dropped(); got != 13 {
		t.Errorf("a subscriber of 2 that read nothing of 15: %d dropped, want 13", got)
	}
	if first := <-slow.C(); first.Seq != 1 || first.Time.IsZero() {
		t.Errorf("first event %+v: want seq 1, stamped", first)
	}
	if len(mods.C()) != 5 || mods.Dropped() != 0 {
		t.Errorf("filtered subscriber holds %d, dropped %d; want 5, 0", len(mods.C()), mods.Dropped())
	}
	slow.Close()
	b.Publish(events.Event{Kind: events.Message})
	if slow.Dropped() != 13 || len(slow.C()) != 1 {
		t.Error("a closed subscription still takes events")
	}
}
