package mqttgw

import (
	"context"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// errDroppedByPlan closes a connection a fault plan drops.
var errDroppedByPlan = errors.New("dropped by the fault plan")

// connectAllowedByPlan applies a fault plan to a CONNECT; false refuses
// it (or the connection was dropped).
func (g *Gateway) connectAllowedByPlan(cl *mqtt.Client, username string) bool {
	if g.faults == nil {
		return true
	}
	e, ok := g.faults.Inject(faults.MQTTConnect, username)
	if !ok {
		return true
	}
	if !e.Wait(username, g.closed) {
		return false
	}
	switch {
	case e.Drop:
		g.log.Info("closing MQTT connection", "client", cl.ID, "reason", errDroppedByPlan)
		cl.Stop(errDroppedByPlan)
		return false
	case e.Fails():
		g.log.Info("refused MQTT connection", "client", cl.ID, "remote", cl.Net.Remote, "reason", "fault plan: "+e.ErrorMessage())
		return false
	}
	return true
}

// tokenExpiryByPlan is when a new live connection's token counts as
// expired: a fault plan's TokenLife may bring it forward.
func (g *Gateway) tokenExpiryByPlan(id hub.IdentityRef, expiry time.Time) time.Time {
	if g.faults == nil {
		return expiry
	}
	e, ok := g.faults.Inject(faults.MQTTSession, id.String())
	if !ok || !e.Wait(id.String(), g.closed) {
		return expiry
	}
	if e.TokenLife > 0 {
		if early := time.Now().Add(e.TokenLife); early.Before(expiry) {
			return early
		}
	}
	return expiry
}

// subscriptionRefusedByPlan reports whether a fault plan refuses a filter.
func (g *Gateway) subscriptionRefusedByPlan(id hub.IdentityRef, filter string) bool {
	if g.faults == nil {
		return false
	}
	e, ok := g.faults.Inject(faults.MQTTSubscribe, filter)
	if !ok || !e.Wait(filter, g.closed) || !e.Fails() {
		return false
	}
	g.log.Info("refused MQTT subscription", "identity", id.String(), "filter", filter, "reason", "fault plan: "+e.ErrorMessage())
	return true
}

// perturbedTwinRequest serves a twin request a fault plan's rule matched.
func (g *Gateway) perturbedTwinRequest(c *conn, rid string, e faults.Effect, serve func() (int, int64, []byte)) {
	if !e.Wait(c.id.String(), g.closed) {
		return
	}
	if !e.Fails() && !e.Drop {
		status, version, body := serve()
		g.respond(c, status, rid, version, body)
		return
	}
	if e.After {
		serve() // done, but its answer is lost
	}
	if e.Drop {
		g.log.Info("closing MQTT connection", "identity", c.id.String(), "reason", errDroppedByPlan)
		c.cl.Stop(errDroppedByPlan)
		return
	}
	g.respond(c, e.Code.Status(), rid, 0, errorBody(&hub.Error{Code: e.Code, Message: e.ErrorMessage()}))
}

// pushedByPlan applies a fault plan to a desired push; true means the
// plan took care of it (lost, held back or sent twice). Pushes go out on
// the hub's committing goroutine, which must not wait, so a held push is
// sent by a goroutine of its own.
func (g *Gateway) pushedByPlan(p hub.DesiredPatch, send func()) bool {
	if g.faults == nil {
		return false
	}
	e, ok := g.faults.Inject(faults.MQTTDesiredPush, p.Identity.String())
	switch {
	case !ok:
		return false
	case e.Drop:
		g.log.Info("desired patch lost", "identity", p.Identity.String(), "version", p.Version, "reason", errDroppedByPlan)
	case e.Stall:
		go func() {
			select {
			case <-e.Released:
				send()
				if e.Duplicate {
					send()
				}
			case <-g.closed:
			}
		}()
	case e.Duplicate:
		send()
		send()
	default:
		return false
	}
	return true
}

// Disconnect closes an identity's live connection, as a network failure
// would, and returns once the identity is shown disconnected (or ctx
// ends); it reports whether there was a connection.
func (g *Gateway) Disconnect(ctx context.Context, id hub.IdentityRef) bool {
	v, ok := g.live.Load(id)
	if !ok {
		return false
	}
	c := v.(*conn)
	g.log.Info("closing MQTT connection", "identity", id.String(), "reason", errDroppedByPlan)
	c.cl.Stop(errDroppedByPlan)
	select {
	case <-c.gone:
	case <-ctx.Done():
	}
	return true
}
