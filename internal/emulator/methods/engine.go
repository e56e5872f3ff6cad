// Package methods is the emulator's direct method engine: it matches a
// service call to the one connection of its target identity that listens
// for methods, sends the request there under a fresh $rid, and completes
// the call with that connection's answer, a timeout, or the connection's
// end. The service API and the MQTT gateway reach it through small hooks.
package methods

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// DefaultMaxInFlight bounds the calls waiting for an answer on one
// connection, so that a flood of calls cannot exhaust memory.
const DefaultMaxInFlight = 512

// Options configure an Engine.
type Options struct {
	Logger *slog.Logger // nil discards
	// MaxInFlight bounds the calls in flight per connection
	// (DefaultMaxInFlight when 0). Calls beyond it fail at once with
	// 429 ThrottlingException.
	MaxInFlight int
	// OnCall, if set, is told about every finished call, after it is
	// answered; it must not block.
	OnCall func(Call)
}

// Call describes a finished invocation (never its payloads).
type Call struct {
	Target   hub.IdentityRef
	Method   string
	Start    time.Time
	Duration time.Duration
	// Status is the device's status; 0 when the call failed.
	Status int
	// Err is why the call failed (*Error, or the caller's context error);
	// nil when the device answered.
	Err error
}

// Result is a device's answer.
type Result struct {
	Status int
	// Payload is the body the device answered with, as it sent it; empty
	// when it sent none.
	Payload []byte
}

// Sender delivers method requests to one device connection. Send must
// not block for long: it only queues the request.
type Sender interface {
	Send(method, rid string, payload []byte) error
}

// Engine matches calls to connections. Its methods are safe for
// concurrent use.
type Engine struct {
	log         *slog.Logger
	maxInFlight int
	onCall      func(Call)

	mu      sync.Mutex
	targets map[hub.IdentityRef]*target
}

// target is the state of one identity: the connection answering its
// calls, if any, and a channel closed when one attaches.
type target struct {
	current  *Attachment
	attached chan struct{}
	waiting  int // callers waiting on attached
}

// Attachment is one connection listening for its identity's calls.
// Answers are matched against the calls sent to it only, so an identity
// can answer nothing but its own calls, on the connection that got them.
type Attachment struct {
	e      *Engine
	id     hub.IdentityRef
	sender Sender
	// Guarded by e.mu.
	nextRID uint64
	calls   map[string]chan Result
	closed  bool
}

// New returns an engine with no connection attached.
func New(opts Options) *Engine {
	e := &Engine{log: opts.Logger, maxInFlight: opts.MaxInFlight, onCall: opts.OnCall,
		targets: map[hub.IdentityRef]*target{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.maxInFlight <= 0 {
		e.maxInFlight = DefaultMaxInFlight
	}
	return e
}

// targetLocked returns id's state, creating it; e.mu must be held.
func (e *Engine) targetLocked(id hub.IdentityRef) *target {
	t, ok := e.targets[id]
	if !ok {
		t = &target{attached: make(chan struct{})}
		e.targets[id] = t
	}
	return t
}

// forgetLocked drops id's state when nothing refers to it; e.mu must be
// held.
func (e *Engine) forgetLocked(id hub.IdentityRef, t *target) {
	if t.current == nil && t.waiting == 0 {
		delete(e.targets, id)
	}
}

// Attach makes s the connection that answers id's calls: the connection
// is live and subscribed to $iothub/methods/POST/#. Callers waiting for
// id to connect send their requests now. A connection attached earlier
// for id keeps its calls in flight until it detaches.
func (e *Engine) Attach(id hub.IdentityRef, s Sender) *Attachment {
	a := &Attachment{e: e, id: id, sender: s, calls: map[string]chan Result{}}
	e.mu.Lock()
	t := e.targetLocked(id)
	t.current = a
	close(t.attached)
	t.attached = make(chan struct{})
	e.mu.Unlock()
	return a
}

// Detach ends a's part: its identity gets no more calls through it, and
// every call in flight on it fails at once (the device went away). It is
// safe to call more than once.
func (a *Attachment) Detach() {
	e := a.e
	e.mu.Lock()
	if a.closed {
		e.mu.Unlock()
		return
	}
	a.closed = true
	if t, ok := e.targets[a.id]; ok && t.current == a {
		t.current = nil
		e.forgetLocked(a.id, t)
	}
	calls := a.calls
	a.calls = nil
	e.mu.Unlock()
	for _, ch := range calls {
		close(ch) // a closed channel without a result: disconnected
	}
}

// Respond completes the call with request ID rid sent through a. It
// reports false, completing nothing, when no such call is in flight on a:
// an ID the hub never issued here, a call already answered, timed out or
// abandoned.
func (a *Attachment) Respond(status int, rid string, body []byte) bool {
	e := a.e
	e.mu.Lock()
	ch, ok := a.calls[rid]
	if ok {
		delete(a.calls, rid)
	}
	e.mu.Unlock()
	if !ok {
		return false
	}
	ch <- Result{Status: status, Payload: body} // buffered: never blocks
	return true
}

// Invoke calls a method on id and waits for the device's answer. It
// fails with *Error: DeviceNotOnline when no connection of id listens for
// methods within the connect timeout, GatewayTimeout when the answer does
// not come within the response timeout, DeviceConnectionClosedRemotely
// when the connection ends first, ThrottlingException when too many calls
// are in flight on it; or with ctx's error when the caller gives up.
func (e *Engine) Invoke(ctx context.Context, id hub.IdentityRef, r Request) (Result, error) {
	start := time.Now()
	res, err := e.invoke(ctx, id, r)
	c := Call{Target: id, Method: r.Name, Start: start, Duration: time.Since(start), Status: res.Status, Err: err}
	e.logCall(c)
	if e.onCall != nil {
		e.onCall(c)
	}
	return res, err
}

func (e *Engine) invoke(ctx context.Context, id hub.IdentityRef, r Request) (Result, error) {
	a, rid, answer, err := e.send(ctx, id, r)
	if err != nil {
		return Result{}, err
	}
	timer := time.NewTimer(r.ResponseTimeout)
	defer timer.Stop()
	select {
	case res, ok := <-answer:
		if !ok {
			return Result{}, disconnected()
		}
		return res, nil
	case <-timer.C:
		err = responseTimeout()
	case <-ctx.Done():
		err = ctx.Err()
	}
	if a.abandon(rid) {
		return Result{}, err
	}
	// The answer or the disconnect won the race.
	if res, ok := <-answer; ok {
		return res, nil
	}
	return Result{}, disconnected()
}

// send waits up to r.ConnectTimeout for a connection of id to listen,
// registers the call on it and sends the request.
func (e *Engine) send(ctx context.Context, id hub.IdentityRef, r Request) (*Attachment, string, chan Result, error) {
	var deadline <-chan time.Time
	if r.ConnectTimeout > 0 {
		timer := time.NewTimer(r.ConnectTimeout)
		defer timer.Stop()
		deadline = timer.C
	}
	for {
		e.mu.Lock()
		t := e.targetLocked(id)
		if a := t.current; a != nil {
			if len(a.calls) >= e.maxInFlight {
				e.mu.Unlock()
				return nil, "", nil, busy(e.maxInFlight)
			}
			a.nextRID++
			rid := strconv.FormatUint(a.nextRID, 10)
			answer := make(chan Result, 1)
			a.calls[rid] = answer
			e.mu.Unlock()
			if err := a.sender.Send(r.Name, rid, r.Payload); err != nil {
				a.abandon(rid)
				e.log.Debug("direct method request not delivered", "target", id.String(), "method", r.Name, "error", err)
				return nil, "", nil, disconnected()
			}
			return a, rid, answer, nil
		}
		if deadline == nil {
			e.forgetLocked(id, t)
			e.mu.Unlock()
			return nil, "", nil, notOnline(r.ConnectTimeout)
		}
		attached := t.attached
		t.waiting++
		e.mu.Unlock()
		e.log.Debug("direct method call waits for its target to connect and subscribe",
			"target", id.String(), "method", r.Name, "connectTimeout", r.ConnectTimeout)
		var err error
		select {
		case <-attached:
		case <-deadline:
			err = notOnline(r.ConnectTimeout)
		case <-ctx.Done():
			err = ctx.Err()
		}
		e.mu.Lock()
		t.waiting--
		e.forgetLocked(id, t)
		e.mu.Unlock()
		if err != nil {
			return nil, "", nil, err
		}
	}
}

// abandon forgets call rid; it reports false when the call was already
// answered or its connection detached.
func (a *Attachment) abandon(rid string) bool {
	a.e.mu.Lock()
	defer a.e.mu.Unlock()
	if _, ok := a.calls[rid]; !ok {
		return false
	}
	delete(a.calls, rid)
	return true
}

// logCall writes one info line per call: method, target, outcome and
// duration, never a payload.
func (e *Engine) logCall(c Call) {
	attrs := []any{"method", c.Method, "target", c.Target.String(), "duration", c.Duration}
	var me *Error
	switch {
	case c.Err == nil:
		attrs = append(attrs, "status", c.Status)
	case errors.As(c.Err, &me):
		attrs = append(attrs, "error", me.Code.Name, "errorCode", me.Code.Number)
	default:
		attrs = append(attrs, "error", "caller went away")
	}
	e.log.Info("direct method call", attrs...)
}
