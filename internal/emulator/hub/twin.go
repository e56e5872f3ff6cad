package hub

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// twinView is a twin's identity part in the order a real hub writes it.
type twinView struct {
	DeviceID                  string                     `json:"deviceId"`
	ModuleID                  string                     `json:"moduleId,omitempty"`
	ETag                      string                     `json:"etag"`
	DeviceETag                string                     `json:"deviceEtag"`
	Status                    string                     `json:"status"`
	StatusUpdateTime          string                     `json:"statusUpdateTime"`
	ConnectionState           string                     `json:"connectionState"`
	LastActivityTime          string                     `json:"lastActivityTime"`
	CloudToDeviceMessageCount int                        `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string                     `json:"authenticationType"`
	X509Thumbprint            iothub.X509Thumbprint      `json:"x509Thumbprint"`
	Version                   int64                      `json:"version"`
	Tags                      json.RawMessage            `json:"tags,omitempty"`
	Properties                json.RawMessage            `json:"properties"`
	Capabilities              *iothub.DeviceCapabilities `json:"capabilities,omitempty"`
}

// renderTwin writes the full twin of id as the service API returns it.
// Callers hold h.mu.
func (h *Hub) renderTwin(id *identity) []byte { return h.renderTwinAs(id, false) }

// renderTwinAs renders a twin; inQuery selects the form of query results,
// where module twins carry their device's capabilities too (as a real hub
// answers).
func (h *Hub) renderTwinAs(id *identity, inQuery bool) []byte {
	d := h.devices[id.DeviceID].identity
	l := h.links[id.ref()]
	v := twinView{
		DeviceID:           id.DeviceID,
		ModuleID:           id.ModuleID,
		ETag:               iothub.TwinETag(id.Twin.ETag),
		DeviceETag:         iothub.IdentityETag(id.ETag),
		Status:             d.Status,
		StatusUpdateTime:   formatTime(d.StatusUpdated, false),
		ConnectionState:    l.state(),
		LastActivityTime:   formatTime(l.lastActivity, false),
		AuthenticationType: id.Auth.Type,
		X509Thumbprint:     iothub.X509Thumbprint{PrimaryThumbprint: id.Auth.PrimaryThumbprint, SecondaryThumbprint: id.Auth.SecondaryThumbprint},
		Version:            id.Twin.Version,
	}
	if !id.ref().IsModule() || inQuery {
		v.Capabilities = &iothub.DeviceCapabilities{IoTEdge: d.IoTEdge}
	}
	if len(id.Twin.Tags) > 0 {
		var tags bytes.Buffer
		writeValue(&tags, id.Twin.Tags)
		v.Tags = tags.Bytes()
	}
	var props bytes.Buffer
	props.WriteString(`{"desired":`)
	renderSection(&props, id.Twin.Desired, true)
	props.WriteString(`,"reported":`)
	renderSection(&props, id.Twin.Reported, true)
	props.WriteByte('}')
	v.Properties = props.Bytes()
	b, err := json.Marshal(v)
	if err != nil {
		panic("hub: encode twin: " + err.Error())
	}
	return b
}

// Twin returns the twin of r as JSON.
func (h *Hub) Twin(r IdentityRef) ([]byte, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	id, err := h.lookup(r)
	if err != nil {
		return nil, err
	}
	return h.renderTwin(id), nil
}

// TwinProperties returns {"desired":…,"reported":…} for the device side.
func (h *Hub) TwinProperties(r IdentityRef) ([]byte, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	id, err := h.lookup(r)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"desired":`)
	renderSection(&b, id.Twin.Desired, false)
	b.WriteString(`,"reported":`)
	renderSection(&b, id.Twin.Reported, false)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// twinRequest is what a service request may change: tags and desired.
// Everything else in the body is read-only and ignored.
type twinRequest struct {
	tags    object // nil when absent or null
	desired object // nil when absent or null
}

func parseTwinRequest(body []byte) (twinRequest, error) {
	var req twinRequest
	doc, err := decodeObject(body)
	if err != nil {
		return req, newError(iothub.IotHubFormatError, "twin body is not a JSON object: %v", err)
	}
	if raw, ok := doc["tags"]; ok && raw != nil {
		tags, ok := raw.(object)
		if !ok {
			return req, newError(iothub.ArgumentInvalid, "tags must be a JSON object")
		}
		req.tags = tags
	}
	if raw, ok := doc["properties"]; ok && raw != nil {
		props, ok := raw.(object)
		if !ok {
			return req, newError(iothub.ArgumentInvalid, "properties must be a JSON object")
		}
		// properties.reported belongs to the device; the service's copy is
		// ignored as the hub does.
		if raw, ok := props["desired"]; ok && raw != nil {
			desired, ok := raw.(object)
			if !ok {
				return req, newError(iothub.ArgumentInvalid, "properties.desired must be a JSON object")
			}
			stripReadOnly(desired)
			req.desired = desired
		}
	}
	if req.tags != nil {
		if err := validateDoc("tags", req.tags, iothub.MaxTagsBytes); err != nil {
			return req, err
		}
	}
	if req.desired != nil {
		if err := validateDoc("desired", req.desired, iothub.MaxDesiredBytes); err != nil {
			return req, err
		}
	}
	return req, nil
}

func checkTwinCondition(id *identity, cond IfMatch) error {
	if cond.ETag != "" && cond.ETag != iothub.TwinETag(id.Twin.ETag) {
		return newError(iothub.PreconditionFailed, "ETag mismatch for device ID '%s'", id.DeviceID)
	}
	return nil
}

// UpdateTwin merges tags and desired properties from a PATCH body (null
// deletes) and returns the new twin.
func (h *Hub) UpdateTwin(r IdentityRef, body []byte, cond IfMatch) ([]byte, error) {
	req, err := parseTwinRequest(body)
	if err != nil {
		return nil, err
	}
	return h.changeTwin(r, cond, func(t *twin, now time.Time) (object, bool, error) {
		if len(req.tags) > 0 {
			tags := deepCopy(t.Tags).(object)
			mergeInto(tags, nil, req.tags, now, 0)
			if err := validateDoc("tags", tags, iothub.MaxTagsBytes); err != nil {
				return nil, false, err
			}
			t.Tags = tags
		}
		if len(req.desired) == 0 {
			return nil, len(req.tags) > 0, nil
		}
		d := section{Props: deepCopy(t.Desired.Props).(object), Version: t.Desired.Version + 1, Meta: t.Desired.Meta.clone()}
		mergeInto(d.Props, d.Meta, req.desired, now, d.Version)
		if err := validateDoc("desired", d.Props, iothub.MaxDesiredBytes); err != nil {
			return nil, false, err
		}
		t.Desired = d
		return req.desired, true, nil
	})
}

// ReplaceTwin replaces tags and desired properties from a PUT body and
// returns the new twin. Subscribers get the new desired document with null
// for each member it no longer has.
func (h *Hub) ReplaceTwin(r IdentityRef, body []byte, cond IfMatch) ([]byte, error) {
	req, err := parseTwinRequest(body)
	if err != nil {
		return nil, err
	}
	tags, _ := iothub.WithoutNulls(orEmpty(req.tags)).(object)
	desired, _ := iothub.WithoutNulls(orEmpty(req.desired)).(object)
	return h.changeTwin(r, cond, func(t *twin, now time.Time) (object, bool, error) {
		tagsChanged := !equalDocs(t.Tags, tags)
		t.Tags = tags
		if equalDocs(t.Desired.Props, desired) {
			return nil, tagsChanged, nil
		}
		v := t.Desired.Version + 1
		patch := deepCopy(desired).(object)
		for k := range t.Desired.Props {
			if _, ok := desired[k]; !ok {
				patch[k] = nil
			}
		}
		t.Desired = section{Props: desired, Version: v, Meta: freshMeta(desired, now, v)}
		return patch, true, nil
	})
}

// changeTwin runs change on a copy of r's twin, under the lock and once
// cond holds. change reports whether tags or desired properties changed
// and returns the desired patch (nil when desired did not change; the
// desired $version is then already the new one). A changed twin gets a
// new version and etag and is committed; subscribers get the patch.
func (h *Hub) changeTwin(r IdentityRef, cond IfMatch, change func(t *twin, now time.Time) (patch object, changed bool, err error)) ([]byte, error) {
	h.mu.Lock()
	id, err := h.lookup(r)
	if err == nil {
		err = checkTwinCondition(id, cond)
	}
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	t := id.Twin
	patch, changed, err := change(&t, h.now())
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	if !changed {
		out := h.renderTwin(id)
		h.mu.Unlock()
		return out, nil
	}
	var n notices
	if !equalDocs(id.Twin.Tags, t.Tags) {
		n.twins = append(n.twins, TwinChange{Identity: r, Section: "tags", Version: t.Version + 1, Patch: renderTags(t.Tags)})
	}
	if patch != nil {
		v := t.Desired.Version
		body := renderPatch(patch, v)
		n.patches = []DesiredPatch{{Identity: r, Version: v, Body: body}}
		n.twins = append(n.twins, TwinChange{Identity: r, Section: "desired", Version: v, Patch: body})
	}
	t.Version++
	t.ETag++
	id.Twin = t
	out := h.renderTwin(id)
	p := h.commit(h.putOps(id), n)
	h.mu.Unlock()
	if err := h.wait(p); err != nil {
		return nil, err
	}
	return out, nil
}

// renderTags is the whole tags document: a tags change is shown whole.
func renderTags(tags object) []byte {
	b, err := json.Marshal(tags)
	if err != nil {
		panic("hub: encode tags: " + err.Error()) // only plain data
	}
	return b
}

func orEmpty(o object) object {
	if o == nil {
		return object{}
	}
	return o
}

// UpdateReported merges a reported-properties patch from the device side
// and returns the new reported $version.
func (h *Hub) UpdateReported(r IdentityRef, body []byte) (int64, error) {
	patch, err := decodeObject(body)
	if err != nil {
		return 0, newError(iothub.IotHubFormatError, "reported properties are not a JSON object: %v", err)
	}
	if err := validateDoc("reported", patch, iothub.MaxReportedBytes); err != nil {
		return 0, err
	}
	h.mu.Lock()
	id, err := h.lookup(r)
	if err != nil {
		h.mu.Unlock()
		return 0, err
	}
	now := h.now()
	t := id.Twin
	rep := section{Props: deepCopy(t.Reported.Props).(object), Version: t.Reported.Version + 1, Meta: t.Reported.Meta.clone()}
	mergeInto(rep.Props, rep.Meta, patch, now, 0)
	if err := validateDoc("reported", rep.Props, iothub.MaxReportedBytes); err != nil {
		h.mu.Unlock()
		return 0, err
	}
	t.Reported = rep
	t.ETag++
	id.Twin = t
	change := TwinChange{Identity: r, Section: "reported", Version: rep.Version, Patch: renderPatch(patch, rep.Version)}
	p := h.commit(h.putOps(id), notices{twins: []TwinChange{change}})
	h.mu.Unlock()
	if err := h.wait(p); err != nil {
		return 0, err
	}
	return rep.Version, nil
}
