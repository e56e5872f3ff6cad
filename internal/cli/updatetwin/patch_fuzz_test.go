package updatetwin

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// FuzzBuildPatch feeds --desired/--tags documents and --set expressions to
// the patch builder: it must never panic, and what it accepts must be a
// patch the hub's rules accept that holds every key a --set named.
func FuzzBuildPatch(f *testing.F) {
	for _, seed := range [][3]string{
		{`{"telemetryInterval": 122, "mode": "eco"}`, "a.b.c=1", "mode=null"},
		{`{"$metadata": {}, "$version": 4, "x": [1, 2, {"y": null}]}`, "x=true", `s="quoted"`},
		{`{"a": {"b": 1}}`, "a.b.c=2", "a=3"},
		{`{"n": 4503599627370496}`, "big=1e400", "neg=-4503599627370497"},
		{"", "k=", "=v"},
		{"", "a..b=1", "a.=1"},
		{`{"a":1} {"b":2}`, "", ""},
		{`[1,2]`, "x={\"nested\":{\"deep\":[[[[[[[[[[1]]]]]]]]]]}}", ""},
		{`{"k\u0000":1}`, "sp ace=1", "dollar$=1"},
		{`{"u":"\ud800"}`, "é=ü", "\xff=1"},
		{`  {"ws" : "x"}  `, "a=[1,", "b={}"},
		{`{"a":` + strings.Repeat(`{"a":`, 12) + `1` + strings.Repeat(`}`, 13), "", ""},
		{`{"s":"` + strings.Repeat("x", 4097) + `"}`, "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	env := &cli.Env{Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	f.Fuzz(func(t *testing.T, doc, set1, set2 string) {
		if doc == "-" || strings.HasPrefix(doc, "@") {
			return // files and stdin are read by cli.ReadInput, tested end to end
		}
		var sets []string
		for _, s := range []string{set1, set2} {
			if s != "" {
				sets = append(sets, s)
			}
		}
		patch, dropped, err := desiredDoc.build(context.Background(), env, doc, sets)
		if err != nil {
			if patch != nil {
				t.Fatalf("build(%q, %q) returned a patch with error %v", doc, sets, err)
			}
			return
		}
		if doc == "" && len(sets) == 0 {
			if patch != nil {
				t.Fatalf("build with nothing given returned %v", patch)
			}
			return
		}
		for _, k := range dropped {
			if k != "$metadata" && k != "$version" {
				t.Fatalf("build(%q, %q) dropped %q", doc, sets, k)
			}
		}
		if err := iothub.ValidateTwinDoc("desired", patch, iothub.MaxDesiredBytes); err != nil {
			t.Fatalf("build(%q, %q) accepted a patch the rules refuse: %v", doc, sets, err)
		}
		body, err := json.Marshal(patch)
		if err != nil {
			t.Fatalf("build(%q, %q): patch does not encode: %v", doc, sets, err)
		}
		if _, err := decodeJSON(body); err != nil {
			t.Fatalf("build(%q, %q): encoded patch %s does not decode: %v", doc, sets, body, err)
		}
		for _, s := range sets {
			path, _, _ := strings.Cut(s, "=")
			top, _, _ := strings.Cut(path, ".")
			if _, ok := patch[top]; !ok && top != "$metadata" && top != "$version" {
				t.Fatalf("build(%q, %q): patch %s lacks %q", doc, sets, body, top)
			}
		}
		// Merged into an empty document (what --replace does with tags),
		// a null removes its member and every other member stays.
		merged, err := iothub.MergeTwinJSON(nil, patch)
		if err != nil {
			t.Fatalf("merge of %s: %v", body, err)
		}
		for k, v := range patch {
			_, kept := merged[k]
			if isNull := bytes.Equal(bytes.TrimSpace(v), []byte("null")); kept == isNull {
				t.Fatalf("merge of %s: member %q (%s) kept = %v", body, k, v, kept)
			}
		}
	})
}
