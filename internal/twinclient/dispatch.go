package twinclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

func (c *Client) requestGet() {
	select {
	case c.getReq <- struct{}{}:
	default: // one is already due; it will see the latest state
	}
}

// parsePatch reads a desired-properties notification. One that cannot be
// placed in order asks for a GET instead, which tells what changed.
func (c *Client) parsePatch(topic string, payload []byte, now time.Time) input {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(payload, &doc); err != nil || doc == nil {
		c.cfg.log.Warn("a desired-properties patch is not a JSON object; reading the twin instead", "topic", topic)
		return input{check: true}
	}
	v := iothub.DocVersion(doc)
	if v == 0 {
		v, _ = topics.DesiredPatchVersion(topic)
	}
	if v <= 0 {
		c.cfg.log.Warn("a desired-properties patch has no $version; reading the twin instead", "topic", topic)
		return input{check: true}
	}
	stripHubMembers(doc)
	return input{patch: &Event{Type: EventPatch, Version: v, Desired: doc, Time: now}}
}

func stripHubMembers(doc map[string]json.RawMessage) {
	delete(doc, "$version")
	delete(doc, "$metadata")
}

// parseTwin reads the body of a twin GET response.
func parseTwin(body []byte) (snapshot, error) {
	var twin struct {
		Desired map[string]json.RawMessage `json:"desired"`
	}
	if err := json.Unmarshal(body, &twin); err != nil {
		return snapshot{}, fmt.Errorf("twin document is not valid JSON: %v", err)
	}
	if twin.Desired == nil {
		return snapshot{}, errors.New("twin document has no desired properties")
	}
	v := iothub.DocVersion(twin.Desired)
	stripHubMembers(twin.Desired)
	return snapshot{version: v, desired: twin.Desired}, nil
}

// fetchTwins performs the GETs the connection manager and the dispatcher
// ask for and hands the snapshots to the dispatcher.
func (c *Client) fetchTwins(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.getReq:
		}
		for attempt := 1; ; attempt++ {
			err := c.fetchTwin(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			if errors.Is(err, errSessionLost) {
				continue // on the next connection, without waiting
			}
			wait := c.backoff(attempt)
			c.cfg.log.Debug(fmt.Sprintf("read twin: %v; retrying in %s", err, wait.Round(time.Millisecond)), "err", err)
			if !sleep(ctx, wait) {
				return
			}
		}
	}
}

func (c *Client) fetchTwin(ctx context.Context) error {
	s, err := c.waitLive(ctx)
	if err != nil {
		return err
	}
	floor := c.floor.Load()
	r, err := c.request(ctx, s, topics.TwinGet, []byte{})
	if err != nil {
		return err
	}
	if r.status != 200 {
		return &StatusError{Op: "read twin", Status: r.status, Message: string(r.body)}
	}
	snap, err := parseTwin(r.body)
	if err != nil {
		return err
	}
	snap.floor, snap.time = floor, r.at
	handled := make(chan struct{})
	select {
	case c.in <- input{snap: &snap, handled: handled}:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The next GET's floor must include what this one delivered.
	select {
	case <-handled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dispatch owns the tracker: it orders patches and snapshots into events.
// It asks for a GET when a patch is stale, and when a grace period passes
// with patches still held behind a missing version. A held snapshot is
// reported as a resync once its own grace period, counted from its
// arrival, has passed.
func (c *Client) dispatch(ctx context.Context, q *queue) {
	t := newTracker()
	grace := c.cfg.gapGrace
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		deadline time.Time // when timer fires; zero while it is stopped
		gapSince time.Time // since when patches wait behind a missing version with no snapshot held
	)
	for {
		var handled chan struct{}
		select {
		case <-ctx.Done():
			return
		case in := <-c.in:
			handled = in.handled
			switch {
			case in.patch != nil:
				evs, stale := t.patch(*in.patch)
				q.push(evs)
				if stale {
					c.requestGet()
				}
			case in.snap != nil:
				q.push(t.snapshot(*in.snap))
			case in.check:
				c.requestGet()
			}
		case <-timer.C:
			now := time.Now()
			deadline = time.Time{}
			q.push(t.expire(now.Add(-grace)))
			if _, held := t.heldSince(); !held && t.gap() && !gapSince.After(now.Add(-grace)) {
				c.cfg.log.Debug("a desired-properties version is missing; reading the twin")
				c.requestGet()
				gapSince = now
			}
		}
		c.floor.Store(t.floor())
		if handled != nil {
			close(handled)
		}

		// A held snapshot settles the gap below it when its grace period
		// ends; without one, a gap that lasts a grace period asks for a GET.
		var next time.Time
		if at, held := t.heldSince(); held {
			next = at.Add(grace)
			gapSince = time.Time{}
		} else if t.gap() {
			if gapSince.IsZero() {
				gapSince = time.Now()
			}
			next = gapSince.Add(grace)
		} else {
			gapSince = time.Time{}
		}
		if !next.Equal(deadline) {
			timer.Stop()
			if !next.IsZero() {
				timer.Reset(time.Until(next))
			}
			deadline = next
		}
	}
}
