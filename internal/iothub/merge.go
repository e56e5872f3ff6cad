package iothub

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MergeTwinPatch applies a twin patch to doc in place, as IoT Hub merges a
// PATCH of tags, desired or reported properties: a null member removes
// the member, an object patched onto an object merges into it level by
// level, and any other value replaces the member, without the nulls it
// holds (there is nothing for them to remove). Documents are decoded JSON:
// nil, bool, json.Number or float64, string, []any and map[string]any.
//
// track, when not nil, is told of each change at the top level and hands
// out a tracker for each level merged into, so that bookkeeping kept
// beside the document (the hub's $metadata) follows it.
func MergeTwinPatch(doc, patch map[string]any, track MergeTracker) {
	for k, pv := range patch {
		if pv == nil {
			delete(doc, k)
			if track != nil {
				track.Removed(k)
			}
			continue
		}
		pobj, pIsObj := pv.(map[string]any)
		dobj, dIsObj := doc[k].(map[string]any)
		if pIsObj && dIsObj {
			var sub MergeTracker
			if track != nil {
				sub = track.Merging(k)
			}
			MergeTwinPatch(dobj, pobj, sub)
			continue
		}
		nv := WithoutNulls(pv)
		doc[k] = nv
		if track != nil {
			track.Replaced(k, nv)
		}
	}
	if track != nil {
		track.Merged()
	}
}

// A MergeTracker follows MergeTwinPatch through one level of a document.
type MergeTracker interface {
	Removed(key string)              // the member was removed
	Replaced(key string, value any)  // the member now holds value
	Merging(key string) MergeTracker // the patch merges into the member's object
	Merged()                         // every member of this level's patch is applied
}

// WithoutNulls returns v with null members of objects removed, at every
// depth: in a document that replaces another a null has nothing to remove.
func WithoutNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if e != nil {
				out[k] = WithoutNulls(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = WithoutNulls(e)
		}
		return out
	}
	return v
}

// MergeTwinJSON is MergeTwinPatch for documents held as raw JSON members:
// it returns base with patch applied and leaves both unchanged.
func MergeTwinJSON(base, patch map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	doc, err := decodeMembers(base)
	if err != nil {
		return nil, err
	}
	p, err := decodeMembers(patch)
	if err != nil {
		return nil, err
	}
	MergeTwinPatch(doc, p, nil)
	out := make(map[string]json.RawMessage, len(doc))
	for k, v := range doc {
		if out[k], err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("member %q: %w", k, err)
		}
	}
	return out, nil
}

// decodeMembers decodes each member of a raw document, keeping numbers
// exact.
func decodeMembers(raw map[string]json.RawMessage) (map[string]any, error) {
	doc := make(map[string]any, len(raw))
	for k, r := range raw {
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("member %q is not valid JSON: %w", k, err)
		}
		doc[k] = v
	}
	return doc, nil
}
