package hub

import (
	"encoding/base64"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// AuthorizeService checks the Authorization header of a service API
// request: a token signed by a shared access policy (skn) that has all of
// need, for this hub, not expired at now. Tokens signed with an identity's
// key never reach the service API. Errors are IotHubUnauthorizedAccess and
// their text names no key or signature.
func (h *Hub) AuthorizeService(authorization string, need Rights, now time.Time) error {
	return h.authorizeService(authorization, need, true, now)
}

// AuthorizeServiceAny is AuthorizeService for an operation that any one of
// the rights in anyOf allows.
func (h *Hub) AuthorizeServiceAny(authorization string, anyOf Rights, now time.Time) error {
	return h.authorizeService(authorization, anyOf, false, now)
}

func (h *Hub) authorizeService(authorization string, need Rights, all bool, now time.Time) error {
	if authorization == "" {
		return unauthorized("missing Authorization header (want a SharedAccessSignature token)")
	}
	tok, err := sas.ParseToken(authorization)
	if err != nil {
		return unauthorized("%v", err)
	}
	if tok.KeyName == "" {
		return unauthorized("token has no skn: device and module keys cannot use the service API")
	}
	p, ok := h.policies[tok.KeyName]
	if !ok {
		return unauthorized("no shared access policy %q", tok.KeyName)
	}
	if !verifyWith(tok, p.PrimaryKey, p.SecondaryKey) {
		return unauthorized("token signature does not match policy %q", tok.KeyName)
	}
	if tok.Expired(now) {
		return unauthorized("token expired at %s", tok.Expiry.UTC().Format(time.RFC3339))
	}
	host, path := splitResource(tok.Resource)
	if !h.isOwnHost(host) || len(path) > 0 {
		return unauthorized("token scope %q is not this hub (%s)", tok.Resource, h.host)
	}
	if !all {
		if need&p.Rights == 0 {
			return unauthorized("policy %q has none of %s (any one allows this operation)", tok.KeyName, need)
		}
		return nil
	}
	if missing := need &^ p.Rights; missing != 0 {
		return unauthorized("policy %q lacks %s", tok.KeyName, missing)
	}
	return nil
}

// AuthenticateDevice checks an MQTT CONNECT password for id; see the
// mqttgw.Hub contract.
func (h *Hub) AuthenticateDevice(r IdentityRef, token string, now time.Time) (time.Time, error) {
	tok, err := sas.ParseToken(token)
	if err != nil {
		return time.Time{}, unauthorized("%v", err)
	}
	host, path := splitResource(tok.Resource)
	if !h.isOwnHost(host) {
		return time.Time{}, unauthorized("token scope %q is not this hub (%s)", tok.Resource, h.host)
	}
	want := []string{"devices", r.DeviceID}
	if r.IsModule() {
		want = append(want, "modules", r.ModuleID)
	}

	h.mu.RLock()
	id, lookupErr := h.lookup(r)
	var keys [2]string
	enabled := false
	if lookupErr == nil {
		keys = [2]string{id.Auth.PrimaryKey, id.Auth.SecondaryKey}
		enabled = h.devices[r.DeviceID].Status != iothub.Disabled
	}
	h.mu.RUnlock()

	if tok.KeyName != "" {
		p, ok := h.policies[tok.KeyName]
		switch {
		case !ok:
			return time.Time{}, unauthorized("no shared access policy %q", tok.KeyName)
		case !verifyWith(tok, p.PrimaryKey, p.SecondaryKey):
			return time.Time{}, unauthorized("token signature does not match policy %q", tok.KeyName)
		case p.Rights&DeviceConnect == 0:
			return time.Time{}, unauthorized("policy %q lacks DeviceConnect", tok.KeyName)
		case !segmentPrefix(path, want):
			return time.Time{}, unauthorized("token scope %q does not cover %s", tok.Resource, r)
		}
	} else {
		switch {
		case lookupErr != nil:
			return time.Time{}, unauthorized("%s is not registered", r)
		case !verifyWith(tok, keys[0], keys[1]):
			return time.Time{}, unauthorized("token signature does not match the keys of %s", r)
		case len(path) != len(want) || !segmentPrefix(path, want):
			return time.Time{}, unauthorized("token scope %q is not %s", tok.Resource, r)
		}
	}
	if tok.Expired(now) {
		return time.Time{}, unauthorized("token expired at %s", tok.Expiry.UTC().Format(time.RFC3339))
	}
	if lookupErr != nil {
		return time.Time{}, unauthorized("%s is not registered", r)
	}
	if !enabled {
		return time.Time{}, unauthorized("device %s is disabled", r.DeviceID)
	}
	return tok.Expiry, nil
}

// verifyWith reports whether tok was signed by one of the base64 keys.
func verifyWith(tok sas.Token, keys ...string) bool {
	ok := false
	for _, k := range keys {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) == 0 {
			continue
		}
		if tok.Verify(raw) {
			ok = true
		}
	}
	return ok
}

// splitResource splits a decoded token scope into its host and path
// segments ("host/devices/d" → "host", ["devices","d"]).
func splitResource(res string) (string, []string) {
	res = strings.TrimSuffix(res, "/")
	host, rest, _ := strings.Cut(res, "/")
	if rest == "" {
		return host, nil
	}
	return host, strings.Split(rest, "/")
}

// isOwnHost accepts the hub host with or without its listen port.
func (h *Hub) isOwnHost(host string) bool {
	if strings.EqualFold(host, h.host) {
		return true
	}
	return h.port != "" && strings.EqualFold(host, net.JoinHostPort(h.host, h.port))
}

// segmentPrefix reports whether path is a prefix of want, segment by
// segment. "devices" and "modules" compare case-insensitively, IDs
// exactly, either as written or once percent-decoded (SDKs encode IDs
// inside the scope).
func segmentPrefix(path, want []string) bool {
	if len(path) > len(want) {
		return false
	}
	for i, seg := range path {
		if i%2 == 0 {
			if !strings.EqualFold(seg, want[i]) {
				return false
			}
			continue
		}
		if seg == want[i] {
			continue
		}
		if dec, err := url.PathUnescape(seg); err != nil || dec != want[i] {
			return false
		}
	}
	return true
}
