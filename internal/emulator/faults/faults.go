// Package faults is the emulator's fault-injection seam. A Plan holds
// rules that make chosen operations fail with a real IoT Hub error, wait,
// lose their answer, stall or meet a concurrent change; the service API
// and the MQTT gateway consult it once per operation. An emulator without
// a plan answers as a real hub does.
package faults

import (
	"strings"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Op names a kind of operation the emulator serves.
type Op string

// Service API operations; their target is the request's escaped path.
const (
	DeviceGet    Op = "device.get"
	DevicePut    Op = "device.put"
	DeviceDelete Op = "device.delete"
	DeviceList   Op = "device.list"
	ModuleGet    Op = "module.get"
	ModulePut    Op = "module.put"
	ModuleDelete Op = "module.delete"
	ModuleList   Op = "module.list"
	TwinGet      Op = "twin.get"
	TwinPatch    Op = "twin.patch"
	TwinPut      Op = "twin.put"
	Query        Op = "query" // POST /devices/query
)

// MQTT operations; their target is given with each.
const (
	// MQTTConnect is a CONNECT being authenticated; target: the user name.
	// A failing rule refuses it (CONNACK 5).
	MQTTConnect Op = "mqtt.connect"
	// MQTTSession is an authenticated connection becoming its identity's
	// live one; target: the identity ("device" or "device/module").
	MQTTSession Op = "mqtt.session"
	// MQTTSubscribe is one filter of a SUBSCRIBE; target: the filter. A
	// failing rule refuses it (SUBACK 0x80).
	MQTTSubscribe Op = "mqtt.subscribe"
	// MQTTTwinGet and MQTTTwinReported are twin requests; target: the
	// identity.
	MQTTTwinGet      Op = "mqtt.twin.get"
	MQTTTwinReported Op = "mqtt.twin.reported"
	// MQTTDesiredPush is a desired-property patch sent to a module or
	// device; target: the identity. Drop loses it, Stall holds it back
	// (later pushes overtake it) until Release, Duplicate sends it twice;
	// Delay and Do do not apply.
	MQTTDesiredPush Op = "mqtt.desired"
)

// Rule perturbs operations of one kind. The zero values of its effects do
// nothing, so a rule may combine them: Delay, then Do and ChangeTwin, then
// the failure or Drop (after serving when After is set).
type Rule struct {
	Op Op // "" matches every kind
	// Target, when set, limits the rule to operations whose target starts
	// with it.
	Target string
	// Skip lets that many matching operations through first; Times is how
	// many the rule then applies to (0 = every one, until Clear).
	Skip, Times int

	// Code fails the operation with IoT Hub's error of that code: its
	// status and error body, whose text is Message ("" = a generic one).
	Code    iothub.ErrorCode
	Message string
	// After serves the operation first, keeping its effect, and then
	// fails it or drops its answer: a reply lost on its way back.
	After bool
	// Drop closes the connection instead of answering (for a desired
	// push: loses the push).
	Drop bool
	// Delay waits before serving.
	Delay time.Duration
	// Stall holds the operation until Plan.Release (or the emulator's
	// shutdown).
	Stall bool
	// Duplicate sends a desired push twice (a held one too).
	Duplicate bool
	// ChangeTwin makes another writer change the twin first (twin writes
	// over the service API), so that an etag read before no longer
	// matches.
	ChangeTwin bool
	// TokenLife, on MQTTSession, closes the connection after that long as
	// if its SAS token expired then.
	TokenLife time.Duration
	// Do runs before the operation is served, with the operation's target.
	Do func(target string)
}

// Fails reports whether the rule answers with an error.
func (r Rule) Fails() bool { return r.Code.Number != 0 }

// Effect is what applies to one operation: the matching rule and the
// channel a stalled operation waits on.
type Effect struct {
	Rule
	Released <-chan struct{}
}

// Hook is what the emulator's servers consult. Inject is called once per
// operation, with its kind and target, and returns the effect to apply
// (ok false: serve normally).
type Hook interface {
	Inject(op Op, target string) (e Effect, ok bool)
}

type entry struct {
	Rule
	skipped, applied int
}

// Plan is a Hook driven by rules; its zero value is not usable, use New.
type Plan struct {
	mu       sync.Mutex
	rules    []*entry
	seen     map[Op][]string
	released chan struct{}
}

// New returns an empty plan.
func New() *Plan {
	return &Plan{seen: map[Op][]string{}, released: make(chan struct{})}
}

// Add appends rules; for each operation the first rule that matches
// applies.
func (p *Plan) Add(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rules {
		p.rules = append(p.rules, &entry{Rule: r})
	}
}

// FailNext fails the next n operations of kind op with code.
func (p *Plan) FailNext(op Op, n int, code iothub.ErrorCode, message string) {
	p.Add(Rule{Op: op, Times: n, Code: code, Message: message})
}

// Clear removes every rule and releases stalled operations.
func (p *Plan) Clear() {
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
	p.Release()
}

// Release lets the operations stalled so far go on.
func (p *Plan) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.released)
	p.released = make(chan struct{})
}

// Seen returns the targets of the operations of kind op served so far,
// perturbed or not, in order.
func (p *Plan) Seen(op Op) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen[op]...)
}

// Inject implements Hook.
func (p *Plan) Inject(op Op, target string) (Effect, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[op] = append(p.seen[op], target)
	for i, r := range p.rules {
		if r.Op != "" && r.Op != op || !strings.HasPrefix(target, r.Target) {
			continue
		}
		if r.skipped < r.Skip {
			r.skipped++
			return Effect{}, false
		}
		r.applied++
		if r.Times > 0 && r.applied >= r.Times {
			p.rules = append(p.rules[:i:i], p.rules[i+1:]...)
		}
		return Effect{Rule: r.Rule, Released: p.released}, true
	}
	return Effect{}, false
}

// Wait applies an effect's Delay and Stall, then runs its Do; it returns
// false when done is closed first.
func (e Effect) Wait(target string, done <-chan struct{}) bool {
	if e.Delay > 0 {
		t := time.NewTimer(e.Delay)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return false
		}
	}
	if e.Stall {
		select {
		case <-e.Released:
		case <-done:
			return false
		}
	}
	if e.Do != nil {
		e.Do(target)
	}
	return true
}

// ErrorMessage returns the error text of a failing effect.
func (e Effect) ErrorMessage() string {
	if e.Message != "" {
		return e.Message
	}
	return "fault injected by the emulator's test plan"
}
