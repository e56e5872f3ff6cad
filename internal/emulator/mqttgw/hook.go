package mqttgw

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// maxKeepalive caps the client keep-alive the way IoT Hub does: the
// server gives up after 1.5 × keep-alive, at most 1767 s, which is also
// the limit for a client that asks for none.
const maxKeepalive = 1178

// hook is the gateway's part in the broker: authentication, IoT Hub's
// topic rules, twin requests, and per-identity delivery.
type hook struct {
	mqtt.HookBase
	g *Gateway
}

func (h *hook) ID() string { return "iothub" }

func (h *hook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnPacketRead,
		mqtt.OnACLCheck,
		mqtt.OnSubscribe,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribe,
		mqtt.OnUnsubscribed,
		mqtt.OnPublish,
		mqtt.OnPacketEncode,
	}, b) >= 0
}

// OnConnect refuses protocol versions other than MQTT 3.1.1 and applies
// IoT Hub's keep-alive limit.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if pk.ProtocolVersion != 4 {
		err := fmt.Errorf("MQTT protocol version %d is not supported (only 3.1.1)", pk.ProtocolVersion)
		h.g.log.Info("refused MQTT connection", "client", cl.ID, "remote", cl.Net.Remote, "reason", err)
		_ = h.g.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		return err
	}
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKeepalive {
		cl.State.Keepalive = maxKeepalive
	}
	return nil
}

// OnConnectAuthenticate checks the client ID, user name and SAS token. A
// refusal makes the broker answer CONNACK 5 (not authorized).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if !h.g.connectAllowedByPlan(cl, string(pk.Connect.Username)) {
		return false
	}
	id, err := h.g.authenticate(cl.ID, string(pk.Connect.Username), pk.Connect.Password, pk.Connect.PasswordFlag)
	if err != nil {
		h.g.log.Info("refused MQTT connection", "client", cl.ID, "remote", cl.Net.Remote, "reason", err)
		return false
	}
	h.g.log.Debug("MQTT client authenticated", "identity", id.String(), "remote", cl.Net.Remote)
	return true
}

// authenticate checks a CONNECT and returns the identity it is for.
func (g *Gateway) authenticate(clientID, username string, password []byte, hasPassword bool) (hub.IdentityRef, error) {
	id, err := parseClientID(clientID)
	if err != nil {
		return id, err
	}
	if err := checkUsername(username, g.hub.HostName(), clientID); err != nil {
		return id, err
	}
	if !hasPassword || len(password) == 0 {
		return id, errors.New("no password: a SAS token is required (X.509 is not supported)")
	}
	if _, err := g.hub.AuthenticateDevice(id, string(password), time.Now()); err != nil {
		return id, err
	}
	return id, nil
}

// OnSessionEstablish makes the connection its identity's live one. It
// runs before the broker sends CONNACK, so a client that holds a CONNACK
// is already reachable and shown as connected.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	// Both were checked by OnConnectAuthenticate.
	id, err := parseClientID(cl.ID)
	if err != nil {
		cl.Stop(err)
		return
	}
	tok, err := sas.ParseToken(string(pk.Connect.Password))
	if err != nil {
		cl.Stop(errors.New("SAS token no longer parses"))
		return
	}
	c := &conn{cl: cl, id: id, prefix: internalPrefix(cl.ID), gone: make(chan struct{}),
		authMethod: authMethod(id.IsModule(), tok.KeyName != "")}
	c.generation, _ = h.g.hub.GenerationID(id) // a deleted identity fails in connected
	if !h.g.connected(c, h.g.tokenExpiryByPlan(id, tok.Expiry)) {
		return
	}
	h.g.log.Info("MQTT client connected", "identity", id.String(), "remote", cl.Net.Remote,
		"transport", cl.Net.Listener, "cleanSession", cl.Properties.Clean)
	h.g.events.Publish(events.Event{Kind: events.Connected, DeviceID: id.DeviceID, ModuleID: id.ModuleID,
		Connection: &events.Connection{Transport: cl.Net.Listener, Remote: cl.Net.Remote}})
}

// OnSessionEstablished runs once CONNACK is out and the session, with the
// subscriptions of a connection it took over, is in place: desired patches
// held since the connection became live can now be sent.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if c := h.g.connOf(cl); c != nil {
		h.g.acknowledged(c)
	}
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if cause := cl.StopCause(); cause != nil {
		err = cause
	}
	c, wasLive := h.g.disconnected(cl.Net.Conn, errText(err))
	if c == nil {
		return
	}
	if errors.Is(err, errDeleted) && !expire && !cl.IsTakenOver() {
		// A deleted identity's session goes with it: an identity created
		// again under the same ID starts without subscriptions.
		if cur, ok := h.g.srv.Clients.Get(cl.ID); ok && cur == cl {
			cl.ClearInflights()
			h.g.srv.UnsubscribeClient(cl)
			h.g.srv.Clients.Delete(cl.ID)
		}
	}
	h.g.log.Info("MQTT client disconnected", "identity", c.id.String(), "remote", cl.Net.Remote,
		"replaced", !wasLive, "reason", errText(err))
}

func errText(err error) string {
	if err == nil {
		return "client disconnected"
	}
	return err.Error()
}

// OnPacketRead closes the connection of a client that publishes with QoS 2,
// as IoT Hub does.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 1 {
		h.g.log.Info("closing MQTT connection: QoS 2 is not supported", "client", cl.ID, "topic", pk.TopicName)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnACLCheck allows a client to publish IoT Hub's documented topics for
// its own identity, and to receive only what was addressed to it.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c := h.g.connOf(cl)
	if c == nil || !c.live.Load() {
		return false
	}
	if write {
		if classifyPublish(c.id, topic) == publishDenied {
			h.g.log.Info("refused MQTT publish: not an IoT Hub topic of this identity", "identity", c.id.String(), "topic", topic)
			return false
		}
		return true
	}
	return strings.HasPrefix(topic, c.prefix)
}

// OnSubscribe moves allowed filters under the client's internal prefix and
// spoils the others (no such filter, or more than maxSubscriptions), which
// the broker then refuses with SUBACK 0x80.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	c := h.g.connOf(cl)
	filters := make(packets.Subscriptions, len(pk.Filters))
	held := cl.State.Subscriptions.Len()
	for i, sub := range pk.Filters {
		original := sub.Filter
		sub.Filter = ""
		switch {
		case c == nil:
		case !allowedFilter(c.id, original):
			h.g.log.Info("refused MQTT subscription: not an IoT Hub topic filter of this identity",
				"identity", c.id.String(), "filter", original)
		case h.g.subscriptionRefusedByPlan(c.id, original):
		default:
			internal := c.prefix + original
			if _, ok := cl.State.Subscriptions.Get(internal); !ok && !holdsFilter(filters[:i], internal) {
				if held >= maxSubscriptions {
					h.g.log.Info("refused MQTT subscription: at most 5 subscriptions",
						"identity", c.id.String(), "filter", original)
					break
				}
				held++
			}
			sub.Filter = internal
			sub.Qos = min(sub.Qos, 1)
		}
		filters[i] = sub
	}
	if c != nil {
		h.g.touch(c)
	}
	pk.Filters = filters
	return pk
}

// OnSubscribed starts direct method delivery once the methods filter is
// granted; it runs before the SUBACK goes out, so a client holding that
// SUBACK can already be called.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if c := h.g.connOf(cl); c != nil && hasMethodsFilter(c, filterNames(pk.Filters), codes) {
		h.g.attachMethods(c)
	}
}

// OnUnsubscribed stops direct method delivery when the methods filter goes.
func (h *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if c := h.g.connOf(cl); c != nil && hasMethodsFilter(c, filterNames(pk.Filters), nil) {
		h.g.detachMethods(c)
	}
}

func filterNames(subs packets.Subscriptions) []string {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.Filter
	}
	return names
}

// OnUnsubscribe maps filters to their internal form.
func (h *hook) OnUnsubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	c := h.g.connOf(cl)
	if c == nil {
		return pk
	}
	filters := make(packets.Subscriptions, len(pk.Filters))
	for i, sub := range pk.Filters {
		if allowedFilter(c.id, sub.Filter) {
			sub.Filter = c.prefix + sub.Filter
		}
		filters[i] = sub
	}
	pk.Filters = filters
	return pk
}

// OnPublish serves twin requests and method answers and drops everything else a client
// publishes: nothing is ever routed from one client to another. The
// broker still acknowledges QoS 1 publishes.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	c := h.g.connOf(cl)
	if c == nil {
		return pk, packets.ErrRejectPacket
	}
	h.g.touch(c)
	switch classifyPublish(c.id, pk.TopicName) {
	case publishTwinGet:
		h.g.twinRequest(c, faults.MQTTTwinGet, pk.TopicName, func() (int, int64, []byte) { return h.g.twinGet(c) })
	case publishTwinReported:
		h.g.twinRequest(c, faults.MQTTTwinReported, pk.TopicName, func() (int, int64, []byte) { return h.g.twinReported(c, pk.Payload) })
	case publishTelemetry:
		if err := h.g.telemetry(c, pk); err != nil {
			h.g.log.Info("closing MQTT connection", "identity", c.id.String(), "reason", err, "bytes", len(pk.Payload))
			cl.Stop(err)
			return pk, packets.ErrRejectPacket
		}
	case publishMethodResult:
		h.g.methodResponse(c, pk.TopicName, pk.Payload)
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPacketEncode gives outgoing messages back their IoT Hub topic name.
func (h *hook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		pk.TopicName = externalTopic(pk.TopicName)
	}
	return pk
}

// twinRequest answers a twin request on topic with what serve returns:
// status, reported $version (0 for none) and body.
func (g *Gateway) twinRequest(c *conn, op faults.Op, topic string, serve func() (int, int64, []byte)) {
	rid, ok := topics.RequestID(topic)
	if !ok {
		g.respond(c, http.StatusBadRequest, "", 0, errorBody(badRequest("the topic has no $rid")))
		return
	}
	if g.faults != nil {
		if e, ok := g.faults.Inject(op, c.id.String()); ok {
			g.perturbedTwinRequest(c, rid, e, serve)
			return
		}
	}
	status, version, body := serve()
	g.respond(c, status, rid, version, body)
}

func (g *Gateway) twinGet(c *conn) (int, int64, []byte) {
	body, err := g.hub.TwinProperties(c.id)
	if err != nil {
		return hub.StatusOf(err), 0, errorBody(err)
	}
	return http.StatusOK, 0, body
}

func (g *Gateway) twinReported(c *conn, patch []byte) (int, int64, []byte) {
	version, err := g.hub.UpdateReported(c.id, patch)
	if err != nil {
		g.log.Debug("reported properties patch refused", "identity", c.id.String(), "error", err)
		return hub.StatusOf(err), 0, errorBody(err)
	}
	return http.StatusNoContent, version, nil
}

func badRequest(msg string) error {
	return &hub.Error{Code: iothub.ArgumentInvalid, Message: msg}
}

// errorBody is the JSON body of a failed twin request, in the shape of
// IoT Hub's error payloads.
func errorBody(err error) []byte {
	code := hub.CodeOf(err)
	msg := err.Error()
	var he *hub.Error
	if errors.As(err, &he) {
		msg = he.Message
	}
	if code.Status() >= 500 {
		msg = "internal server error"
	}
	var tracking [16]byte
	_, _ = rand.Read(tracking[:])
	b, _ := json.Marshal(struct {
		ErrorCode    int    `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUTC string `json:"timestampUtc"`
	}{code.Number, hex.EncodeToString(tracking[:]), msg, time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z")})
	return b
}

// holdsFilter reports whether subs has a subscription to filter.
func holdsFilter(subs packets.Subscriptions, filter string) bool {
	for _, s := range subs {
		if s.Filter == filter {
			return true
		}
	}
	return false
}
