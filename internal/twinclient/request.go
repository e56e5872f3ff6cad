package twinclient

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// request publishes a twin request on s and waits for its answer.
func (c *Client) request(ctx context.Context, s *session, topic func(rid string) string, payload []byte) (reply, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	ch := make(chan reply, 1)
	c.mu.Lock()
	c.waiters[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, rid)
		c.mu.Unlock()
	}()

	// QoS 0: the answer is the acknowledgement, and an unanswered request
	// is sent again on the next connection.
	pub, err := c.send(ctx, s, func() mqtt.Token { return s.mc.Publish(topic(rid), 0, false, payload) })
	if err != nil {
		return reply{}, err
	}
	published := pub.Done()
	timer := time.NewTimer(c.cfg.requestTimeout)
	defer timer.Stop()
	for {
		select {
		case r := <-ch:
			return r, nil
		case <-published:
			if pub.Error() != nil {
				return reply{}, errSessionLost
			}
			published = nil
		case <-s.lost:
			return reply{}, errSessionLost
		case <-ctx.Done():
			return reply{}, ctx.Err()
		case <-c.stopped:
			return reply{}, ErrClosed
		case <-timer.C:
			return reply{}, fmt.Errorf("the hub did not answer within %s", c.cfg.requestTimeout)
		}
	}
}

// onMessage runs on a paho goroutine of its own for every message
// (SetOrderMatters(false)); it only parses and hands over.
func (c *Client) onMessage(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	topic := m.Topic()
	switch {
	case strings.HasPrefix(topic, topics.TwinResponsePrefix):
		r, err := topics.ParseTwinResponse(topic)
		if err != nil {
			c.cfg.log.Debug("ignoring a twin response: "+err.Error(), "topic", topic)
			return
		}
		c.mu.Lock()
		ch := c.waiters[r.RID]
		c.mu.Unlock()
		if ch == nil {
			c.cfg.log.Debug("ignoring a twin response to no open request", "topic", topic)
			return
		}
		select {
		case ch <- reply{status: r.Status, version: r.Version, body: m.Payload(), at: now}:
		default: // a duplicate
		}
	case strings.HasPrefix(topic, topics.DesiredPatchPrefix):
		in := c.parsePatch(topic, m.Payload(), now)
		select {
		case c.in <- in:
		case <-c.stopped:
		}
	default:
		c.cfg.log.Debug("ignoring a message on an unexpected topic", "topic", topic)
	}
}

// UpdateReported sends a reported-properties patch (null removes a member)
// and returns the new reported $version. It waits for a connection, sends
// again if the connection drops before the answer, and retries throttling
// and server errors a few times.
func (c *Client) UpdateReported(ctx context.Context, patch []byte) (int64, error) {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		s, err := c.waitLive(ctx)
		if err != nil {
			return 0, fmt.Errorf("update reported properties: %w", err)
		}
		r, err := c.request(ctx, s, topics.ReportedPatch, patch)
		switch {
		case errors.Is(err, errSessionLost):
			continue
		case err != nil:
			return 0, fmt.Errorf("update reported properties: %w", err)
		case r.status >= 200 && r.status < 300:
			return r.version, nil
		case (r.status == 429 || r.status >= 500) && attempt < attempts:
			if !sleep(ctx, c.backoff(attempt)) {
				return 0, fmt.Errorf("update reported properties: %w", ctx.Err())
			}
		default:
			return 0, &StatusError{Op: "update reported properties", Status: r.status, Message: string(r.body)}
		}
	}
}

// StatusError is a twin request the hub answered with an error status.
type StatusError struct {
	Op      string
	Status  int
	Message string // the hub's response body, if any
}

func (e *StatusError) Error() string {
	msg := strings.TrimSpace(e.Message)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		return fmt.Sprintf("%s: hub answered status %d", e.Op, e.Status)
	}
	return fmt.Sprintf("%s: hub answered status %d: %s", e.Op, e.Status, msg)
}
