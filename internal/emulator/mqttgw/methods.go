package mqttgw

import (
	"errors"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

// A connection answers its identity's direct method calls from the moment
// it is live, acknowledged and subscribed to topics.MethodsFilter (by SUBSCRIBE,
// or inherited with a resumed session) until it unsubscribes, is replaced
// or ends.

// attachMethods makes c the connection its identity's calls go to.
func (g *Gateway) attachMethods(c *conn) {
	if g.methods == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.methods != nil || !c.acked || !c.live.Load() {
		return
	}
	c.methods = g.methods.Attach(c.id, methodSender{g: g, c: c})
	g.log.Debug("listening for direct methods", "identity", c.id.String())
}

// detachMethods ends c's part in direct methods: its calls in flight fail
// at once.
func (g *Gateway) detachMethods(c *conn) {
	c.mu.Lock()
	a := c.methods
	c.methods = nil
	c.mu.Unlock()
	if a != nil {
		a.Detach()
	}
}

// subscribedToMethods reports whether c's session holds the methods filter,
// as a resumed session does when the client subscribed before.
func (g *Gateway) subscribedToMethods(c *conn) bool {
	_, ok := c.cl.State.Subscriptions.Get(c.prefix + topics.MethodsFilter)
	return ok
}

// methodSender sends requests to one connection, QoS 0, as IoT Hub does.
type methodSender struct {
	g *Gateway
	c *conn
}

var errNotLive = errors.New("the connection is no longer its identity's live one")

func (s methodSender) Send(method, rid string, payload []byte) error {
	if !s.c.live.Load() {
		return errNotLive
	}
	return s.g.srv.Publish(s.c.prefix+topics.MethodRequest(method, rid), payload, false, 0)
}

// methodResponse hands a device's answer to the call it names. Answers
// that name no call in flight on this connection, or whose status is not
// an integer, complete nothing; the hub drops them.
func (g *Gateway) methodResponse(c *conn, topic string, body []byte) {
	r, err := topics.ParseMethodResponse(topic)
	if err != nil {
		g.log.Info("dropped direct method response", "identity", c.id.String(), "reason", err)
		return
	}
	c.mu.Lock()
	a := c.methods
	c.mu.Unlock()
	if a == nil || !a.Respond(r.Status, r.RID, body) {
		g.log.Info("dropped direct method response: no call with this $rid is in flight on this connection",
			"identity", c.id.String(), "rid", r.RID, "status", r.Status)
	}
}

var _ methods.Sender = methodSender{}

// hasMethodsFilter reports whether filters, in internal form, hold c's
// methods filter accepted with a SUBACK code below 0x80.
func hasMethodsFilter(c *conn, filters []string, codes []byte) bool {
	for i, f := range filters {
		if f == c.prefix+topics.MethodsFilter && (codes == nil || (i < len(codes) && codes[i] < 0x80)) {
			return true
		}
	}
	return false
}
