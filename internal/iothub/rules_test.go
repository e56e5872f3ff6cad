package iothub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidateIDAcceptsEveryDocumentedCharacter(t *testing.T) {
	// The documented set: ASCII letters and digits plus these 18.
	const specials = "- : . + % _ # * ? ! ( ) , = @ ; $ '"
	allowed := map[byte]bool{}
	for _, f := range strings.Fields(specials) {
		allowed[f[0]] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		allowed[byte(c)], allowed[byte(c-'a'+'A')] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		allowed[byte(c)] = true
	}
	if len(allowed) != 26+26+10+18 {
		t.Fatalf("test table has %d characters", len(allowed))
	}
	for c := 0; c < 128; c++ {
		id := "a" + string(rune(c)) + "z"
		err := ValidateID("device ID", id)
		if allowed[byte(c)] && err != nil {
			t.Errorf("ValidateID(%q) = %v, want ok", id, err)
		}
		if !allowed[byte(c)] && err == nil {
			t.Errorf("ValidateID(%q) = ok, want an error", id)
		}
	}
}

func TestValidateIDErrors(t *testing.T) {
	tests := []struct {
		what, id, want string
	}{
		{"device ID", "", "device ID is empty"},
		{"module ID", strings.Repeat("m", 129), "module ID is 129 characters long (at most 128)"},
		{"device ID", "my device", `device ID "my device" has character ' ' at position 3 (allowed: ASCII letters, digits and -:.+%_#*?!(),=@;$')`},
		{"device ID", "a/b", `device ID "a/b" has character '/' at position 2`},
		{"module ID", "modé", `module ID "modé" has character 'é' at position 4`},
		{"device ID", ".", `device ID "." is not allowed ("." and ".." would address another resource on the hub)`},
		{"module ID", "..", `module ID ".." is not allowed`},
	}
	for _, tt := range tests {
		err := ValidateID(tt.what, tt.id)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ValidateID(%q, %q) = %v, want %q", tt.what, tt.id, err, tt.want)
		}
	}
	if err := ValidateID("device ID", strings.Repeat("d", 128)); err != nil {
		t.Errorf("a 128-character ID: %v", err)
	}
	for _, id := range []string{"...", ".a", "a..", "%2E%2E"} {
		if err := ValidateID("device ID", id); err != nil {
			t.Errorf("ValidateID(%q) = %v, want ok", id, err)
		}
	}
}

func TestValidateTwinKey(t *testing.T) {
	tests := []struct {
		key, want string
	}{
		{"telemetryInterval", ""},
		{"ünïcødé-key_1", ""},
		{strings.Repeat("k", 1024), ""},
		{"", "empty key"},
		{strings.Repeat("k", 1025), "key longer than 1024 bytes"},
		{"a.b", "key contains '.' (not allowed in twin keys)"},
		{"$version", "key contains '$' (not allowed in twin keys)"},
		{"a b", "key contains a space (not allowed in twin keys)"},
		{"a\tb", "key contains a control character"},
		{"a\u0085b", "key contains a control character"},
		{"a\x7fb", "key contains a control character"},
		{"a\xffb", "key is not valid UTF-8"},
	}
	for _, tt := range tests {
		if got := ValidateTwinKey(tt.key); got != tt.want {
			t.Errorf("ValidateTwinKey(%.20q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// nest wraps inner in objects with the keys given, outermost first.
func nest(inner string, keys ...string) string {
	for i := len(keys) - 1; i >= 0; i-- {
		inner = fmt.Sprintf(`{%q:%s}`, keys[i], inner)
	}
	return inner
}

func doc(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("test document %s: %v", s, err)
	}
	return m
}

func TestValidateTwinDoc(t *testing.T) {
	ten := []string{"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
	tests := []struct {
		name string
		doc  string
		max  int
		want *TwinError // nil: valid
	}{
		{"tutorial patch", `{"telemetryInterval":122}`, MaxDesiredBytes, nil},
		{"every value type", `{"b":true,"n":null,"s":"x","f":1.5,"i":-3,"o":{"k":[1,"a",{"z":false}]}}`, MaxDesiredBytes, nil},
		// The depth example the device twin guide calls valid.
		{"ten nested objects", nest(`{"property":"value"}`, ten...), MaxTagsBytes, nil},
		{"eleven nested objects", nest(`{"property":{"x":1}}`, ten...), MaxTagsBytes,
			&TwinError{Path: "tags.one.two.three.four.five.six.seven.eight.nine.ten.property", Reason: "nested deeper than 10 levels"}},
		{"array as the eleventh level", nest(`{"property":[1]}`, ten...), MaxTagsBytes,
			&TwinError{Path: "tags.one.two.three.four.five.six.seven.eight.nine.ten.property", Reason: "nested deeper than 10 levels"}},
		{"ten levels ending in an array", nest(`[1]`, ten...), MaxTagsBytes, nil},
		{"arrays count as levels", nest(`[[1]]`, ten...), MaxTagsBytes,
			&TwinError{Path: "tags.one.two.three.four.five.six.seven.eight.nine.ten[0]", Reason: "nested deeper than 10 levels"}},
		{"largest safe integer", `{"i":4503599627370495,"j":-4503599627370496}`, MaxDesiredBytes, nil},
		{"integer too large", `{"i":4503599627370496}`, MaxDesiredBytes,
			&TwinError{Path: "tags.i", Reason: "integer outside [-4503599627370496, 4503599627370495]"}},
		{"integer too small", `{"o":{"i":-4503599627370497}}`, MaxDesiredBytes,
			&TwinError{Path: "tags.o.i", Reason: "integer outside [-4503599627370496, 4503599627370495]"}},
		{"large float is fine", `{"f":1e20,"g":4503599627370496.0}`, MaxDesiredBytes, nil},
		{"4 KB string", fmt.Sprintf(`{"s":%q}`, strings.Repeat("x", 4096)), MaxDesiredBytes, nil},
		{"string too long", fmt.Sprintf(`{"s":%q}`, strings.Repeat("x", 4097)), MaxDesiredBytes,
			&TwinError{Path: "tags.s", Reason: "string longer than 4096 bytes"}},
		{"bad nested key", `{"a":{"b.c":1}}`, MaxDesiredBytes,
			&TwinError{Path: "tags.a.b.c", Reason: "key contains '.' (not allowed in twin keys)"}},
		{"bad key in an array element", `{"a":[{"$x":1}]}`, MaxDesiredBytes,
			&TwinError{Path: "tags.a[0].$x", Reason: "key contains '$' (not allowed in twin keys)"}},
		{"size at the limit", `{"telemetryInterval":122}`, 25, nil},
		{"size over the limit", `{"telemetryInterval":122}`, 24, &TwinError{Reason: "tags is 25 bytes (at most 24)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTwinDoc("tags", doc(t, tt.doc), tt.max)
			if tt.want == nil {
				if err != nil {
					t.Errorf("ValidateTwinDoc = %v, want ok", err)
				}
				return
			}
			var te *TwinError
			if !errors.As(err, &te) {
				t.Fatalf("ValidateTwinDoc = %v, want a *TwinError", err)
			}
			if diff := cmp.Diff(tt.want, te); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTwinDocSize(t *testing.T) {
	// Sizes worked out by hand from the guide's rules: key length plus 8
	// per number, 4 per boolean, characters (controls excluded) per string,
	// nested objects as the sum of their members.
	tests := []struct {
		doc  string
		size int
	}{
		{`{"telemetryInterval":122}`, 17 + 8},
		{`{"a":{"bb":"xyz","c":true}}`, 1 + (2 + 3) + (1 + 4)},
		{`{"k":"a\u0001b\u0085c"}`, 1 + 3},
		{`{"é":"日本"}`, 2 + 2},
		{`{"gone":null}`, 4},
		{`{"arr":[1,true,"xy"]}`, 3 + 8 + 4 + 2},
	}
	for _, tt := range tests {
		d := doc(t, tt.doc)
		if err := ValidateTwinDoc("desired", d, tt.size); err != nil {
			t.Errorf("%s with limit %d: %v, want ok", tt.doc, tt.size, err)
		}
		err := ValidateTwinDoc("desired", d, tt.size-1)
		want := fmt.Sprintf("desired is %d bytes (at most %d)", tt.size, tt.size-1)
		if err == nil || err.Error() != want {
			t.Errorf("%s with limit %d: %v, want %q", tt.doc, tt.size-1, err, want)
		}
	}
}

func TestTwinErrorText(t *testing.T) {
	tests := []struct {
		err  TwinError
		want string
	}{
		{TwinError{Reason: "desired is 40000 bytes (at most 32768)"}, "desired is 40000 bytes (at most 32768)"},
		{TwinError{Path: "desired.a.b", Reason: "empty key"}, `key "desired.a.b": empty key`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
