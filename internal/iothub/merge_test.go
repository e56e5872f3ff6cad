package iothub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var mergeTests = []struct {
	name, doc, patch, want string
}{
	{"adds a member", `{"a":1}`, `{"b":2}`, `{"a":1,"b":2}`},
	{"replaces a scalar", `{"a":1}`, `{"a":"x"}`, `{"a":"x"}`},
	{"null removes", `{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
	{"null of a missing member", `{"a":1}`, `{"z":null}`, `{"a":1}`},
	{"objects merge recursively", `{"a":{"b":{"c":1,"d":2},"e":3}}`, `{"a":{"b":{"c":9}}}`, `{"a":{"b":{"c":9,"d":2},"e":3}}`},
	{"null removes deep", `{"a":{"b":{"c":1,"d":2}}}`, `{"a":{"b":{"d":null}}}`, `{"a":{"b":{"c":1}}}`},
	{"object replaces a scalar, without its nulls", `{"a":1}`, `{"a":{"b":null,"c":{"d":null,"e":1}}}`, `{"a":{"c":{"e":1}}}`},
	{"new object loses its nulls", `{}`, `{"a":{"b":null,"c":2}}`, `{"a":{"c":2}}`},
	{"scalar replaces an object", `{"a":{"b":1}}`, `{"a":true}`, `{"a":true}`},
	{"arrays replace whole", `{"a":[1,2,3]}`, `{"a":[{"x":null,"y":1}]}`, `{"a":[{"y":1}]}`},
	{"large integers stay exact", `{}`, `{"n":4503599627370495}`, `{"n":4503599627370495}`},
}

func TestMergeTwinPatch(t *testing.T) {
	for _, tt := range mergeTests {
		t.Run(tt.name, func(t *testing.T) {
			doc := decode(t, tt.doc)
			MergeTwinPatch(doc, decode(t, tt.patch), nil)
			if got := encode(t, doc); got != tt.want {
				t.Errorf("merge %s into %s = %s, want %s", tt.patch, tt.doc, got, tt.want)
			}
		})
	}
}

func TestMergeTwinJSON(t *testing.T) {
	raw := func(s string) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tt := range mergeTests {
		t.Run(tt.name, func(t *testing.T) {
			base, patch := raw(tt.doc), raw(tt.patch)
			before := encode(t, base)
			got, err := MergeTwinJSON(base, patch)
			if err != nil {
				t.Fatal(err)
			}
			if s := encode(t, got); s != tt.want {
				t.Errorf("merge %s into %s = %s, want %s", tt.patch, tt.doc, s, tt.want)
			}
			if after := encode(t, base); after != before {
				t.Errorf("base changed from %s to %s", before, after)
			}
		})
	}
	if _, err := MergeTwinJSON(map[string]json.RawMessage{"a": json.RawMessage(`{`)}, nil); err == nil {
		t.Error("MergeTwinJSON accepted a member that is not JSON")
	}
}

// recorder notes what MergeTwinPatch tells a tracker, one line a call,
// with the path of the level it follows.
type recorder struct {
	path string
	log  *[]string
}

func (r recorder) Removed(key string) { *r.log = append(*r.log, "removed "+r.path+key) }
func (r recorder) Replaced(key string, value any) {
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(value)
	*r.log = append(*r.log, fmt.Sprintf("replaced %s%s = %s", r.path, key, strings.TrimSpace(buf.String())))
}
func (r recorder) Merging(key string) MergeTracker {
	*r.log = append(*r.log, "merging "+r.path+key)
	return recorder{r.path + key + ".", r.log}
}
func (r recorder) Merged() { *r.log = append(*r.log, "merged "+r.path) }

func TestMergeTwinPatchTracker(t *testing.T) {
	doc := decode(t, `{"a":{"b":1,"c":2},"d":3}`)
	var log []string
	// One member per level, so that the calls come in a known order.
	MergeTwinPatch(doc, decode(t, `{"a":{"b":null}}`), recorder{log: &log})
	MergeTwinPatch(doc, decode(t, `{"d":{"e":null,"f":4}}`), recorder{log: &log})
	want := []string{
		"merging a", "removed a.b", "merged a.", "merged ",
		`replaced d = {"f":4}`, "merged ",
	}
	if !slices.Equal(log, want) {
		t.Errorf("tracker calls:\n%s\nwant:\n%s", strings.Join(log, "\n"), strings.Join(want, "\n"))
	}
	if got := encode(t, doc); got != `{"a":{"c":2},"d":{"f":4}}` {
		t.Errorf("document = %s", got)
	}
}
