package hub

import (
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/store"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// IfMatch is a parsed If-Match header. The zero value means the header was
// absent or "" (create-only for identity PUTs, unconditional otherwise).
type IfMatch struct {
	Any  bool   // * or "*": the target must exist
	ETag string // an etag, unquoted
}

// ParseIfMatch reads an If-Match value in any form clients send: *, "*",
// "etag", W/"etag", "" or a bare etag.
func ParseIfMatch(v string) IfMatch {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	switch v {
	case "":
		return IfMatch{}
	case "*":
		return IfMatch{Any: true}
	}
	return IfMatch{ETag: v}
}

// IsSet reports whether the header names a condition.
func (c IfMatch) IsSet() bool { return c.Any || c.ETag != "" }

// etagNumber decodes a client's identity etag for error texts, or -1.
func etagNumber(s string) int64 {
	if n, ok := iothub.ParseIdentityETag(s); ok {
		return n
	}
	return -1
}

func checkIdentityCondition(id *identity, cond IfMatch, what string) error {
	if cond.ETag != "" && cond.ETag != iothub.IdentityETag(id.ETag) {
		return newError(iothub.PreconditionFailed, "Precondition failed: %s version did not match, existingVersion:%d newVersion:%d", what, id.ETag, etagNumber(cond.ETag))
	}
	return nil
}

// buildAuth turns a requested authentication mechanism into what the hub
// stores, generating keys the client left out. prev is the current record
// on update (nil on create): its keys are kept when the client sends none.
func buildAuth(req *iothub.AuthenticationMechanism, prev *authRecord) (authRecord, error) {
	var a authRecord
	typ := iothub.AuthSAS
	if req != nil && req.Type != "" {
		typ = req.Type
	}
	a.Type = typ
	switch typ {
	case iothub.AuthSAS:
		if req != nil && req.SymmetricKey != nil {
			a.PrimaryKey, a.SecondaryKey = req.SymmetricKey.PrimaryKey, req.SymmetricKey.SecondaryKey
		}
		if a.PrimaryKey == "" && a.SecondaryKey == "" && prev != nil && prev.Type == iothub.AuthSAS {
			a.PrimaryKey, a.SecondaryKey = prev.PrimaryKey, prev.SecondaryKey
		}
		for _, k := range []struct {
			field string
			v     *string
		}{{"authentication.symmetricKey.primaryKey", &a.PrimaryKey}, {"authentication.symmetricKey.secondaryKey", &a.SecondaryKey}} {
			if *k.v == "" {
				key, err := NewKey()
				if err != nil {
					return a, err
				}
				*k.v = key
				continue
			}
			if err := checkKey(k.field, *k.v); err != nil {
				return a, newError(iothub.ArgumentInvalid, "%v", err)
			}
		}
	case iothub.AuthSelfSigned:
		var t iothub.X509Thumbprint
		if req.X509Thumbprint != nil {
			t = *req.X509Thumbprint
		}
		if t.PrimaryThumbprint == nil || *t.PrimaryThumbprint == "" {
			return a, newError(iothub.ArgumentInvalid, "authentication.x509Thumbprint.primaryThumbprint is required with type selfSigned")
		}
		a.PrimaryThumbprint, a.SecondaryThumbprint = t.PrimaryThumbprint, t.SecondaryThumbprint
	case iothub.AuthCertificateAuthority, iothub.AuthNone:
	default:
		return a, newError(iothub.ArgumentInvalid, "authentication.type %q is not one of sas, selfSigned, certificateAuthority, none", typ)
	}
	return a, nil
}

func (a authRecord) view() *iothub.AuthenticationMechanism {
	m := &iothub.AuthenticationMechanism{
		SymmetricKey:   &iothub.SymmetricKey{PrimaryKey: a.PrimaryKey, SecondaryKey: a.SecondaryKey},
		X509Thumbprint: &iothub.X509Thumbprint{PrimaryThumbprint: a.PrimaryThumbprint, SecondaryThumbprint: a.SecondaryThumbprint},
		Type:           a.Type,
	}
	return m
}

const maxStatusReason = 128

// CreateOrUpdateDevice creates (cond unset) or updates (cond set) a
// device from a request body whose deviceId, when set, must be deviceID.
func (h *Hub) CreateOrUpdateDevice(deviceID string, req iothub.Device, cond IfMatch) (iothub.Device, error) {
	if err := iothub.ValidateID("device ID", deviceID); err != nil {
		return iothub.Device{}, newError(iothub.ArgumentInvalid, "%v", err)
	}
	if req.DeviceID != "" && req.DeviceID != deviceID {
		return iothub.Device{}, newError(iothub.ArgumentInvalid, "deviceId %q in the body does not match device ID %q in the path", req.DeviceID, deviceID)
	}
	switch req.Status {
	case "", iothub.Enabled, iothub.Disabled:
	default:
		return iothub.Device{}, newError(iothub.ArgumentInvalid, "status %q is not enabled or disabled", req.Status)
	}
	if req.StatusReason != nil && len(*req.StatusReason) > maxStatusReason {
		return iothub.Device{}, newError(iothub.ArgumentInvalid, "statusReason is %d characters long (at most %d)", len(*req.StatusReason), maxStatusReason)
	}

	h.mu.Lock()
	now := h.now()
	d := h.devices[deviceID]
	var prev *authRecord
	switch {
	case d == nil && cond.IsSet():
		h.mu.Unlock()
		return iothub.Device{}, deviceNotFound(deviceID)
	case d != nil && !cond.IsSet():
		h.mu.Unlock()
		return iothub.Device{}, newError(iothub.DeviceAlreadyExists, "A device with ID '%s' is already registered.", deviceID)
	case d != nil:
		if err := checkIdentityCondition(d.identity, cond, "Device"); err != nil {
			h.mu.Unlock()
			return iothub.Device{}, err
		}
		prev = &d.Auth
	}
	auth, err := buildAuth(req.Authentication, prev)
	if err != nil {
		h.mu.Unlock()
		return iothub.Device{}, err
	}
	var id *identity
	if d == nil {
		id = &identity{DeviceID: deviceID, GenerationID: generationID(now), Status: iothub.Enabled, Twin: newTwin()}
		d = &device{identity: id, modules: map[string]*identity{}}
		delete(h.links, id.ref()) // left by an earlier device of that ID
	} else {
		c := *d.identity // update a copy, so a failed validation leaves no trace
		id = &c
	}
	var n notices
	if req.Status != "" && req.Status != id.Status {
		id.Status = req.Status
		id.StatusUpdated = now
		if id.Status == iothub.Disabled {
			n.revoked = revokeDevice(d, false)
		}
	}
	id.StatusReason = req.StatusReason
	id.Auth = auth
	id.IoTEdge = req.Capabilities != nil && req.Capabilities.IoTEdge
	id.DeviceScope = req.DeviceScope
	id.ParentScopes = req.ParentScopes
	id.ETag = h.nextETag()
	created := prev == nil
	d.identity = id
	h.devices[deviceID] = d
	view := h.deviceView(id, created)
	n.registry = []RegistryChange{{Identity: id.ref(), Operation: operation(created)}}
	p := h.commit(h.putOps(id), n)
	h.mu.Unlock()
	if err := h.wait(p); err != nil {
		return iothub.Device{}, err
	}
	return view, nil
}

// GetDevice returns a device.
func (h *Hub) GetDevice(deviceID string) (iothub.Device, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	d := h.devices[deviceID]
	if d == nil {
		return iothub.Device{}, deviceNotFound(deviceID)
	}
	return h.deviceView(d.identity, false), nil
}

// MaxListDevices is the most devices one list request returns.
const MaxListDevices = 1000

// ListDevices returns up to top devices in ID order; top outside
// 1..MaxListDevices means MaxListDevices.
func (h *Hub) ListDevices(top int) []iothub.Device {
	if top < 1 || top > MaxListDevices {
		top = MaxListDevices
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	ids := sortedKeys(h.devices)
	if len(ids) > top {
		ids = ids[:top]
	}
	out := make([]iothub.Device, 0, len(ids))
	for _, id := range ids {
		out = append(out, h.deviceView(h.devices[id].identity, false))
	}
	return out
}

// DeleteDevice deletes a device with its modules and twins.
func (h *Hub) DeleteDevice(deviceID string, cond IfMatch) error {
	h.mu.Lock()
	d := h.devices[deviceID]
	if d == nil {
		h.mu.Unlock()
		return deviceNotFound(deviceID)
	}
	if err := checkIdentityCondition(d.identity, cond, "Device"); err != nil {
		h.mu.Unlock()
		return err
	}
	delete(h.devices, deviceID)
	ops := []store.Op{{Bucket: bucketIdentities, Key: deviceID}}
	for mid := range d.modules {
		ops = append(ops, store.Op{Bucket: bucketIdentities, Key: identityKey(IdentityRef{deviceID, mid})})
	}
	revoked := revokeDevice(d, true)
	deleted := make([]RegistryChange, 0, len(revoked))
	for _, r := range revoked {
		deleted = append(deleted, RegistryChange{Identity: r.Identity, Operation: "deleted"})
	}
	p := h.commit(ops, notices{revoked: revoked, registry: deleted})
	h.mu.Unlock()
	return h.wait(p)
}

// CreateOrUpdateModule creates (cond unset) or updates (cond set) a module.
func (h *Hub) CreateOrUpdateModule(deviceID, moduleID string, req iothub.Module, cond IfMatch) (iothub.Module, error) {
	if err := iothub.ValidateID("device ID", deviceID); err != nil {
		return iothub.Module{}, newError(iothub.ArgumentInvalid, "%v", err)
	}
	if err := iothub.ValidateID("module ID", moduleID); err != nil {
		return iothub.Module{}, newError(iothub.ArgumentInvalid, "%v", err)
	}
	if req.DeviceID != "" && req.DeviceID != deviceID {
		return iothub.Module{}, newError(iothub.ArgumentInvalid, "deviceId %q in the body does not match device ID %q in the path", req.DeviceID, deviceID)
	}
	if req.ModuleID != "" && req.ModuleID != moduleID {
		return iothub.Module{}, newError(iothub.ArgumentInvalid, "moduleId %q in the body does not match module ID %q in the path", req.ModuleID, moduleID)
	}

	h.mu.Lock()
	now := h.now()
	d := h.devices[deviceID]
	if d == nil {
		h.mu.Unlock()
		return iothub.Module{}, deviceNotFound(deviceID)
	}
	m := d.modules[moduleID]
	var prev *authRecord
	switch {
	case m == nil && cond.IsSet():
		h.mu.Unlock()
		return iothub.Module{}, moduleNotFound(deviceID, moduleID)
	case m != nil && !cond.IsSet():
		h.mu.Unlock()
		return iothub.Module{}, newError(iothub.ModuleAlreadyExistsOnDevice, "A module with ID '%s' is already registered on device '%s'.", moduleID, deviceID)
	case m == nil && len(d.modules) >= iothub.MaxModulesPerDevice:
		h.mu.Unlock()
		return iothub.Module{}, newError(iothub.TooManyModulesOnDevice, "Device '%s' already has the maximum of %d modules.", deviceID, iothub.MaxModulesPerDevice)
	case m != nil:
		if err := checkIdentityCondition(m, cond, "Module"); err != nil {
			h.mu.Unlock()
			return iothub.Module{}, err
		}
		prev = &m.Auth
	}
	auth, err := buildAuth(req.Authentication, prev)
	if err != nil {
		h.mu.Unlock()
		return iothub.Module{}, err
	}
	var id *identity
	if m == nil {
		id = &identity{DeviceID: deviceID, ModuleID: moduleID, GenerationID: generationID(now), Twin: newTwin()}
		delete(h.links, id.ref()) // left by an earlier module of that ID
	} else {
		c := *m
		id = &c
	}
	id.ManagedBy = req.ManagedBy
	id.Auth = auth
	id.ETag = h.nextETag()
	d.modules[moduleID] = id
	view := h.moduleView(id, m == nil)
	p := h.commit(h.putOps(id), notices{registry: []RegistryChange{{Identity: id.ref(), Operation: operation(m == nil)}}})
	h.mu.Unlock()
	if err := h.wait(p); err != nil {
		return iothub.Module{}, err
	}
	return view, nil
}

func operation(created bool) string {
	if created {
		return "created"
	}
	return "updated"
}

// GenerationID returns an identity's generationId.
func (h *Hub) GenerationID(r IdentityRef) (string, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	id, err := h.lookup(r)
	if err != nil {
		return "", err
	}
	return id.GenerationID, nil
}

// GetModule returns a module.
func (h *Hub) GetModule(deviceID, moduleID string) (iothub.Module, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	m, err := h.lookup(IdentityRef{deviceID, moduleID})
	if err != nil {
		return iothub.Module{}, err
	}
	return h.moduleView(m, false), nil
}

// ListModules returns the modules of a device in ID order (none for a
// device that does not exist, as the real hub answers).
func (h *Hub) ListModules(deviceID string) []iothub.Module {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := []iothub.Module{}
	d := h.devices[deviceID]
	if d == nil {
		return out
	}
	for _, id := range sortedKeys(d.modules) {
		out = append(out, h.moduleView(d.modules[id], false))
	}
	return out
}

// DeleteModule deletes a module and its twin.
func (h *Hub) DeleteModule(deviceID, moduleID string, cond IfMatch) error {
	h.mu.Lock()
	m, err := h.lookup(IdentityRef{deviceID, moduleID})
	if err == nil {
		err = checkIdentityCondition(m, cond, "Module")
	}
	if err != nil {
		h.mu.Unlock()
		return err
	}
	delete(h.devices[deviceID].modules, moduleID)
	p := h.commit([]store.Op{{Bucket: bucketIdentities, Key: identityKey(m.ref())}},
		notices{revoked: []Revocation{{Identity: m.ref(), Deleted: true}}, registry: []RegistryChange{{Identity: m.ref(), Operation: "deleted"}}})
	h.mu.Unlock()
	return h.wait(p)
}

// revokeDevice lists the revocations of a device and its modules, in ID
// order.
func revokeDevice(d *device, deleted bool) []Revocation {
	out := []Revocation{{Identity: d.ref(), Deleted: deleted}}
	for _, mid := range sortedKeys(d.modules) {
		out = append(out, Revocation{Identity: d.modules[mid].ref(), Deleted: deleted})
	}
	return out
}

func (l link) state() string {
	if l.connected {
		return iothub.Connected
	}
	return iothub.Disconnected
}

// deviceView renders a device; justCreated selects the never-set time form
// a real hub uses in the response to a create ("0001-01-01T00:00:00",
// without the Z it writes everywhere else).
func (h *Hub) deviceView(id *identity, justCreated bool) iothub.Device {
	l := h.links[id.ref()]
	return iothub.Device{
		DeviceID:                   id.DeviceID,
		GenerationID:               id.GenerationID,
		ETag:                       iothub.IdentityETag(id.ETag),
		ConnectionState:            l.state(),
		Status:                     id.Status,
		StatusReason:               id.StatusReason,
		ConnectionStateUpdatedTime: formatTime(l.updated, justCreated),
		StatusUpdatedTime:          formatTime(id.StatusUpdated, justCreated),
		LastActivityTime:           formatTime(l.lastActivity, justCreated),
		Authentication:             id.Auth.view(),
		Capabilities:               &iothub.DeviceCapabilities{IoTEdge: id.IoTEdge},
		DeviceScope:                id.DeviceScope,
		ParentScopes:               id.ParentScopes,
	}
}

func (h *Hub) moduleView(id *identity, justCreated bool) iothub.Module {
	l := h.links[id.ref()]
	return iothub.Module{
		ModuleID:                   id.ModuleID,
		ManagedBy:                  id.ManagedBy,
		DeviceID:                   id.DeviceID,
		GenerationID:               id.GenerationID,
		ETag:                       iothub.IdentityETag(id.ETag),
		ConnectionState:            l.state(),
		ConnectionStateUpdatedTime: formatTime(l.updated, justCreated),
		LastActivityTime:           formatTime(l.lastActivity, justCreated),
		Authentication:             id.Auth.view(),
	}
}
