package query

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestRawDocLookup(t *testing.T) {
	const doc = ` { "a" : { "b" : [ 1, {"c": "x}]\"y"}, [2] ] , "B": 5},
		"esc\"aped": true, "uni\u00e9": "é", "Case": 1, "case": 2, "n": -1.5e3, "nul": null, "s": "a,b" } `
	for _, tc := range []struct {
		path []any
		want any
		name string
	}{
		{[]any{"a", "b", 0.0}, json.Number("1"), ""},
		{[]any{"a", "b", 1.0, "c"}, `x}]"y`, "c"},
		{[]any{"a", "b", 2.0, 0.0}, json.Number("2"), ""},
		{[]any{"a", "B"}, json.Number("5"), "B"},
		{[]any{`esc"aped`}, true, `esc"aped`},
		{[]any{"unié"}, "é", "unié"},
		{[]any{"case"}, json.Number("2"), "case"},
		{[]any{"CASE"}, json.Number("1"), "Case"},
		{[]any{"n"}, json.Number("-1.5e3"), "n"},
		{[]any{"nul"}, nil, "nul"},
		{[]any{"s"}, "a,b", "s"},
		{[]any{"missing"}, undefined, ""},
		{[]any{"a", "b", 9.0}, undefined, ""},
		{[]any{"s", "x"}, undefined, ""},
		{[]any{"a", "b", "x"}, undefined, ""},
	} {
		v, name := rawDoc(doc).lookup(tc.path)
		if !reflect.DeepEqual(v, tc.want) || name != tc.name {
			t.Errorf("lookup(%v) = %#v, %q; want %#v, %q", tc.path, v, name, tc.want, tc.name)
		}
	}
	for _, bad := range []string{``, `{`, `{"a"`, `{"a":`, `{"a":"x`, `[`, `{"a" 1}`} {
		if v, _ := rawDoc(bad).lookup([]any{"a"}); !isUndefined(v) {
			t.Errorf("lookup in %q = %#v, want undefined", bad, v)
		}
	}
}

// FuzzRawDoc: looking a member up in the text finds what decoding the
// whole object finds.
func FuzzRawDoc(f *testing.F) {
	f.Add(`{"a":{"b":[1,"x"]},"c":"d"}`, "a", "b")
	f.Add(`{"a\u0041":1, "a": {"b": null}}`, "a", "b")
	f.Fuzz(func(t *testing.T, doc, k1, k2 string) {
		var m map[string]any
		if json.Unmarshal([]byte(doc), &m) != nil {
			return
		}
		want := any(undefined)
		if v, ok := m[k1]; ok {
			want = v
			if sub, ok := v.(map[string]any); ok {
				if w, ok := sub[k2]; ok {
					got, _ := rawDoc(doc).lookup([]any{k1, k2})
					if g, _ := json.Marshal(got); string(g) != mustJSON(w) && !isNumberish(got) {
						t.Fatalf("lookup(%q, %q) in %s = %#v, want %#v", k1, k2, doc, got, w)
					}
				}
			}
		}
		got, _ := rawDoc(doc).lookup([]any{k1})
		if isUndefined(want) {
			return // a case-insensitive match may still find one
		}
		if isUndefined(got) {
			t.Fatalf("lookup(%q) in %s = undefined, want %#v", k1, doc, want)
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func isNumberish(v any) bool { _, ok := number(v); return ok }
