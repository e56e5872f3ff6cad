package emulatortest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// module runs a twin client for d1/m1 over MQTT/TLS until the test ends.
type module struct {
	c      *twinclient.Client
	events chan twinclient.Event
	done   chan error
}

func runModule(t *testing.T, h *emulatortest.Hub, cs connstr.ConnectionString) *module {
	t.Helper()
	c, err := twinclient.New(cs, twinclient.WithTLSConfig(h.ClientTLS()), twinclient.WithMQTTAddr(h.MQTTAddr()),
		twinclient.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &module{c: c, events: make(chan twinclient.Event, 100), done: make(chan error, 1)}
	go func() { m.done <- c.Run(ctx, func(ev twinclient.Event) { m.events <- ev }) }()
	t.Cleanup(func() {
		cancel()
		<-m.done
	})
	return m
}

func (m *module) next(t *testing.T) twinclient.Event {
	t.Helper()
	select {
	case ev := <-m.events:
		return ev
	case err := <-m.done:
		t.Fatalf("client stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return twinclient.Event{}
}

// eventually waits (10 s at most: a hang guard) until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
	}
}

func TestTokenLifeClosesTheConnectionEarly(t *testing.T) {
	h := emulatortest.Start(t)
	cs := h.CreateModule("d1", "m1")
	h.Faults.Add(faults.Rule{Op: faults.MQTTSession, Times: 1, TokenLife: 50 * time.Millisecond})
	m := runModule(t, h, cs)
	m.next(t)
	eventually(t, "the hub closes the connection as its token expires, and the client comes back", func() bool {
		return strings.Contains(h.Logs(), "its SAS token expired") && len(h.Faults.Seen(faults.MQTTSession)) >= 2
	})
	v := h.PatchDesired("d1", "m1", `{"after":1}`)
	for {
		if ev := m.next(t); ev.Version == v {
			break
		}
	}
}

func TestRefusedConnect(t *testing.T) {
	h := emulatortest.Start(t)
	cs := h.CreateModule("d1", "m1")
	h.Faults.FailNext(faults.MQTTConnect, 1, iothub.IotHubUnauthorized, "")
	m := runModule(t, h, cs)
	var ce *twinclient.ConnectError
	select {
	case err := <-m.done:
		if !errors.As(err, &ce) || !ce.Unauthorized() {
			t.Errorf("Run = %v, want a refused CONNECT", err)
		}
		m.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after a refused CONNECT")
	}
}

func TestFailedTwinRequests(t *testing.T) {
	h := emulatortest.Start(t)
	cs := h.CreateModule("d1", "m1")
	h.Faults.FailNext(faults.MQTTTwinGet, 2, iothub.ThrottlingException, "")
	m := runModule(t, h, cs)
	if ev := m.next(t); ev.Type != twinclient.EventTwin {
		t.Fatalf("first event %s, want the twin", ev.Type)
	}
	if n := len(h.Faults.Seen(faults.MQTTTwinGet)); n != 3 {
		t.Errorf("%d twin GETs, want 3 (two throttled)", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A 500 after the patch was applied: the client retries it.
	h.Faults.Add(faults.Rule{Op: faults.MQTTTwinReported, Times: 1, After: true, Code: iothub.ServerError})
	if _, err := m.c.UpdateReported(ctx, []byte(`{"kept":true}`)); err != nil {
		t.Fatalf("UpdateReported after one 500: %v", err)
	}
	if n := len(h.Faults.Seen(faults.MQTTTwinReported)); n != 2 {
		t.Errorf("%d reported patches, want 2 (one retry)", n)
	}
	// A 400 is final and changes nothing.
	h.Faults.FailNext(faults.MQTTTwinReported, 1, iothub.ArgumentInvalid, "no")
	_, err := m.c.UpdateReported(ctx, []byte(`{"refused":true}`))
	var se *twinclient.StatusError
	if !errors.As(err, &se) || se.Status != 400 {
		t.Fatalf("UpdateReported = %v, want a 400", err)
	}
	rep := h.Twin("d1", "m1").Properties.Reported
	if string(rep["kept"]) != "true" || rep["refused"] != nil {
		t.Errorf("reported = %v, want kept and not refused", rep)
	}
}

func TestStalledReconnect(t *testing.T) {
	h := emulatortest.Start(t)
	cs := h.CreateModule("d1", "m1")
	m := runModule(t, h, cs)
	m.next(t)
	h.Faults.Add(faults.Rule{Op: faults.MQTTConnect, Stall: true})
	h.Disconnect("d1", "m1")
	h.PatchDesired("d1", "m1", `{"missed":1}`) // no connection to push it to
	eventually(t, "the client tries to reconnect", func() bool { return len(h.Faults.Seen(faults.MQTTConnect)) >= 2 })
	h.Faults.Clear()
	ev := m.next(t)
	if ev.Type != twinclient.EventResync || string(ev.Desired["missed"]) != "1" {
		t.Errorf("event after the stall = %s %v, want a resync with the missed patch", ev.Type, ev.Desired)
	}
}
