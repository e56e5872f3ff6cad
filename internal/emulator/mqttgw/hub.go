// Package mqttgw is the emulator's device side: IoT Hub's MQTT dialect over
// TLS and WebSockets on an embedded broker.
package mqttgw

import (
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// Hub is what the MQTT gateway needs from the emulator's hub core.
// *hub.Hub implements it.
type Hub interface {
	// HostName is the hub's host name without port (e.g. "localhost").
	HostName() string

	// AuthenticateDevice checks an MQTT CONNECT password (a SAS token) for
	// id at now: signed by that identity's primary or secondary key with
	// sr covering exactly that identity's resource (host with or without
	// the listen port), or signed by a shared access policy with
	// DeviceConnect (skn set) whose sr covers the identity by path-segment
	// prefix. The identity must exist and its device must be enabled.
	// It returns the token's expiry. Any failure returns a non-nil error
	// whose text is safe to log (no key, no signature).
	AuthenticateDevice(id hub.IdentityRef, token string, now time.Time) (expiry time.Time, err error)

	// TwinProperties returns the body of a twin GET response:
	// {"desired":{…,"$version":N},"reported":{…,"$version":M}} (no tags,
	// no $metadata).
	TwinProperties(id hub.IdentityRef) ([]byte, error)

	// UpdateReported merges a reported-properties patch (null deletes) and
	// returns the new reported $version. A bad patch (not a JSON object,
	// bad key, too deep, too large) returns an error for which
	// hub.StatusOf(err) is 400.
	UpdateReported(id hub.IdentityRef, patch []byte) (version int64, err error)

	// Subscribe registers callbacks for committed changes of any
	// identity, called in commit order on the committing goroutine (they
	// must not block): Desired for every desired change, Revoked when an
	// identity may no longer connect (deleted, or its device disabled).
	// The returned func unregisters them.
	Subscribe(ev hub.Events) (cancel func())

	// SetConnectionState records that id connected (true) or disconnected
	// (false) at t; it also sets lastActivityTime when connecting. It
	// fails when id is not registered or, when connecting, its device is
	// disabled: the identity lost its right to connect after it
	// authenticated, and the connection must be closed.
	SetConnectionState(id hub.IdentityRef, connected bool, t time.Time) error

	// GenerationID returns id's generationId.
	GenerationID(id hub.IdentityRef) (string, error)

	// RecordActivity sets id's lastActivityTime to t (cheap; may coalesce).
	RecordActivity(id hub.IdentityRef, t time.Time)
}
