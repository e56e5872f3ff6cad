package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// A twin document (tags, desired or reported) is a JSON object decoded
// with UseNumber: values are nil (only in patches), bool, json.Number,
// string, []any or map[string]any.
type object = map[string]any

// meta is the "$metadata" tree of a desired or reported section: when each
// member was last written and, for desired, at which section version.
type meta struct {
	Updated  time.Time        `json:"t"`
	Version  int64            `json:"v,omitempty"`
	Children map[string]*meta `json:"c,omitempty"`
}

// section is a desired or reported document with its version and metadata.
type section struct {
	Props   object `json:"props"`
	Version int64  `json:"version"`
	Meta    *meta  `json:"meta"`
}

func newSection() section {
	return section{Props: object{}, Version: 1, Meta: &meta{}}
}

// decodeObject parses a JSON object, keeping numbers exact.
func decodeObject(raw []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	obj, ok := v.(object)
	if !ok {
		return nil, fmt.Errorf("not a JSON object")
	}
	return obj, nil
}

// validateDoc checks a document or patch against the hub's twin rules.
func validateDoc(name string, doc object, maxBytes int) error {
	raw := make(map[string]json.RawMessage, len(doc))
	for k, v := range doc {
		b, err := json.Marshal(v)
		if err != nil {
			return newError(iothub.ArgumentInvalid, "%s.%s: %v", name, k, err)
		}
		raw[k] = b
	}
	if err := iothub.ValidateTwinDoc(name, raw, maxBytes); err != nil {
		return newError(iothub.ArgumentInvalid, "%v", err)
	}
	return nil
}

// stripReadOnly removes the hub-maintained "$metadata" and "$version"
// members a client may echo back in a section it sends.
func stripReadOnly(doc object) {
	delete(doc, "$metadata")
	delete(doc, "$version")
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case object:
		out := make(object, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func (m *meta) clone() *meta {
	if m == nil {
		return nil
	}
	c := &meta{Updated: m.Updated, Version: m.Version}
	if m.Children != nil {
		c.Children = make(map[string]*meta, len(m.Children))
		for k, v := range m.Children {
			c.Children[k] = v.clone()
		}
	}
	return c
}

// freshMeta builds metadata for a newly written value, one level per
// nested object.
func freshMeta(v any, at time.Time, version int64) *meta {
	m := &meta{Updated: at, Version: version}
	if obj, ok := v.(object); ok {
		m.Children = make(map[string]*meta, len(obj))
		for k, e := range obj {
			m.Children[k] = freshMeta(e, at, version)
		}
	}
	return m
}

// mergeInto applies patch to doc in place by IoT Hub's merge rule and
// updates m alongside when not nil: each written member's metadata says
// when and at which version.
func mergeInto(doc object, m *meta, patch object, at time.Time, version int64) {
	var track iothub.MergeTracker
	if m != nil {
		track = metaTracker{m, at, version}
	}
	iothub.MergeTwinPatch(doc, patch, track)
}

// metaTracker keeps one level of a section's metadata in step with a merge.
type metaTracker struct {
	m       *meta
	at      time.Time
	version int64
}

func (t metaTracker) Removed(key string) { delete(t.m.Children, key) }

func (t metaTracker) Replaced(key string, value any) {
	t.children()[key] = freshMeta(value, t.at, t.version)
}

func (t metaTracker) Merging(key string) iothub.MergeTracker {
	children := t.children()
	child := children[key]
	if child == nil {
		child = &meta{}
		children[key] = child
	}
	return metaTracker{child, t.at, t.version}
}

func (t metaTracker) Merged() { t.m.Updated, t.m.Version = t.at, t.version }

func (t metaTracker) children() map[string]*meta {
	if t.m.Children == nil {
		t.m.Children = map[string]*meta{}
	}
	return t.m.Children
}

// Times as the hub writes them: 7 fractional digits, UTC.
const timeLayout = "2006-01-02T15:04:05.0000000Z"

// formatTime renders t; a never-set time is "0001-01-01T00:00:00Z", or
// without the Z where the hub writes it so (identity create responses).
func formatTime(t time.Time, zeroWithoutZ bool) string {
	if t.IsZero() {
		if zeroWithoutZ {
			return "0001-01-01T00:00:00"
		}
		return "0001-01-01T00:00:00Z"
	}
	return t.UTC().Format(timeLayout)
}

// renderSection writes a section as the hub shows it: members, then
// "$metadata" (when withMeta) and "$version".
func renderSection(buf *bytes.Buffer, s section, withMeta bool) {
	buf.WriteByte('{')
	keys := sortedKeys(s.Props)
	for _, k := range keys {
		writeKey(buf, k)
		writeValue(buf, s.Props[k])
		buf.WriteByte(',')
	}
	if withMeta {
		writeKey(buf, "$metadata")
		renderMeta(buf, s.Meta)
		buf.WriteByte(',')
	}
	writeKey(buf, "$version")
	fmt.Fprintf(buf, "%d", s.Version)
	buf.WriteByte('}')
}

func renderMeta(buf *bytes.Buffer, m *meta) {
	if m == nil {
		m = &meta{}
	}
	buf.WriteByte('{')
	writeKey(buf, "$lastUpdated")
	writeValue(buf, formatTime(m.Updated, false))
	if m.Version != 0 {
		buf.WriteByte(',')
		writeKey(buf, "$lastUpdatedVersion")
		fmt.Fprintf(buf, "%d", m.Version)
	}
	for _, k := range sortedKeys(m.Children) {
		buf.WriteByte(',')
		writeKey(buf, k)
		renderMeta(buf, m.Children[k])
	}
	buf.WriteByte('}')
}

// renderPatch writes a desired patch with its "$version" last.
func renderPatch(patch object, version int64) []byte {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for _, k := range sortedKeys(patch) {
		writeKey(&buf, k)
		writeValue(&buf, patch[k])
		buf.WriteByte(',')
	}
	writeKey(&buf, "$version")
	fmt.Fprintf(&buf, "%d", version)
	buf.WriteByte('}')
	return buf.Bytes()
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func writeKey(buf *bytes.Buffer, k string) {
	writeValue(buf, k)
	buf.WriteByte(':')
}

func writeValue(buf *bytes.Buffer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Documents only ever hold values decoded from JSON.
		panic(fmt.Sprintf("hub: encode twin value: %v", err))
	}
	buf.Write(b)
}

// equalDocs reports whether two documents hold the same members.
func equalDocs(a, b object) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
