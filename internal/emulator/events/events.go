// Package events is the emulator's one stream of what the hub does:
// connections, twin changes, messages, registry changes, method calls and
// service API requests. Publishers never wait: each subscriber has a
// bounded buffer, and what does not fit is dropped and counted, so a slow
// reader never slows the hub.
package events

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

// Kind says what an event is about.
type Kind string

// The kinds of events.
const (
	Connected    Kind = "connected"
	Disconnected Kind = "disconnected"
	Twin         Kind = "twin"
	Message      Kind = "message"
	Registry     Kind = "registry"
	Request      Kind = "request"
	Method       Kind = "method"
)

// Kinds lists every kind, in the order help texts show them.
var Kinds = []Kind{Message, Connected, Disconnected, Twin, Registry, Method, Request}

// Event is one thing that happened. DeviceID and ModuleID name the
// identity it concerns (empty for requests); exactly one of the detail
// fields matching Kind is set.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     Kind      `json:"kind"`
	DeviceID string    `json:"deviceId,omitempty"`
	ModuleID string    `json:"moduleId,omitempty"`

	Connection *Connection        `json:"connection,omitempty"`
	Twin       *TwinChange        `json:"twin,omitempty"`
	Message    *telemetry.Message `json:"message,omitempty"`
	Registry   *RegistryChange    `json:"registry,omitempty"`
	Request    *RequestInfo       `json:"request,omitempty"`
	Method     *MethodCall        `json:"method,omitempty"`
}

// Connection details a Connected or Disconnected event.
type Connection struct {
	Transport string `json:"transport"`        // "mqtts" or "wss"
	Remote    string `json:"remote,omitempty"` // the client's address
	Reason    string `json:"reason,omitempty"` // why it ended (Disconnected only)
}

// TwinChange details a Twin event: a committed change of one section.
type TwinChange struct {
	Section string          `json:"section"` // "desired", "reported" or "tags"
	Version int64           `json:"version"` // the section's new $version (tags: the twin's version)
	Patch   json.RawMessage `json:"patch"`   // what changed; null removes a member
}

// RegistryChange details a Registry event.
type RegistryChange struct {
	Operation string `json:"operation"` // "created", "updated" or "deleted"
}

// RequestInfo details a Request event: one service API request. Path has
// no query string; no header is kept, so no key or signature is.
type RequestInfo struct {
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"durationMs"`
}

// MethodCall details a Method event: one direct method invocation.
type MethodCall struct {
	Name       string  `json:"name"`
	Status     int     `json:"status"`          // the device's status, or the hub's error status
	Error      string  `json:"error,omitempty"` // why the hub failed the call
	DurationMS float64 `json:"durationMs"`
}

// Publisher takes events; *Bus implements it. Publish never blocks.
type Publisher interface {
	Publish(Event)
}

// Filter selects events: an empty field matches everything.
type Filter struct {
	Kinds    map[Kind]bool
	DeviceID string
	ModuleID string
}

// Match reports whether e passes f.
func (f Filter) Match(e Event) bool {
	if len(f.Kinds) > 0 && !f.Kinds[e.Kind] {
		return false
	}
	if f.DeviceID != "" && e.DeviceID != f.DeviceID {
		return false
	}
	return f.ModuleID == "" || e.ModuleID == f.ModuleID
}

// Bus delivers published events to its subscribers. The zero value is
// not usable; call NewBus.
type Bus struct {
	now func() time.Time
	seq atomic.Uint64

	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// NewBus returns a bus with no subscribers.
func NewBus() *Bus {
	return &Bus{now: time.Now, subs: map[*Subscription]struct{}{}}
}

// Publish numbers e, stamps it with the time unless it has one, and hands
// it to every subscriber whose filter it passes and whose buffer has room.
func (b *Bus) Publish(e Event) {
	if b == nil {
		return
	}
	e.Seq = b.seq.Add(1)
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	e.Time = e.Time.UTC()
	b.mu.RLock()
	defer b.mu.RUnlock()
	for s := range b.subs {
		if !s.filter.Match(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// DefaultBuffer is a subscription's buffer size when Subscribe gets 0.
const DefaultBuffer = 1024

// Subscribe starts a subscription to the events that pass f, buffering up
// to size of them (DefaultBuffer when size < 1). Close it when done.
func (b *Bus) Subscribe(f Filter, size int) *Subscription {
	if size < 1 {
		size = DefaultBuffer
	}
	s := &Subscription{bus: b, filter: f, ch: make(chan Event, size)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Subscription is one reader's view of a bus.
type Subscription struct {
	bus     *Bus
	filter  Filter
	ch      chan Event
	dropped atomic.Uint64
	once    sync.Once
}

// C delivers the events, in publication order. It is never closed.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped is how many events did not fit in the buffer so far.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription; no more events are buffered.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		s.bus.mu.Unlock()
	})
}
