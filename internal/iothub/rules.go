package iothub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// Limits IoT Hub applies to identities and twins.
const (
	MaxIDLength         = 128
	MaxModulesPerDevice = 50
	MaxTwinDepth        = 10
	MaxTwinKeyBytes     = 1024
	MaxTwinStringBytes  = 4096
	MaxTagsBytes        = 8 * 1024
	MaxDesiredBytes     = 32 * 1024
	MaxReportedBytes    = 32 * 1024
	MaxSafeTwinInteger  = 4503599627370495
	MinSafeTwinInteger  = -4503599627370496
	idSpecialCharacters = "-:.+%_#*?!(),=@;$'"
)

// ValidateID checks a device or module ID against the hub's rules: 1 to 128
// ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ', and not
// "." or "..", which in a request path would name another resource. what
// names the ID in the error ("device ID", "module ID").
func ValidateID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if id == "." || id == ".." {
		return fmt.Errorf(`%s %q is not allowed ("." and ".." would address another resource on the hub)`, what, id)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%s is %d characters long (at most %d)", what, len(id), MaxIDLength)
	}
	for i, r := range id {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(idSpecialCharacters, r)) {
			continue
		}
		return fmt.Errorf("%s %q has character %q at position %d (allowed: ASCII letters, digits and %s)", what, id, r, i+1, idSpecialCharacters)
	}
	return nil
}

// TwinError describes a twin document that breaks a rule. Path is the
// dotted path of the offending key, when there is one.
type TwinError struct {
	Path   string
	Reason string
}

func (e *TwinError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return fmt.Sprintf("key %q: %s", e.Path, e.Reason)
}

// ValidateTwinKey checks one member name of a twin document.
func ValidateTwinKey(key string) string {
	switch {
	case key == "":
		return "empty key"
	case len(key) > MaxTwinKeyBytes:
		return fmt.Sprintf("key longer than %d bytes", MaxTwinKeyBytes)
	case !utf8.ValidString(key):
		return "key is not valid UTF-8"
	}
	for _, r := range key {
		switch {
		case r == '.':
			return "key contains '.' (not allowed in twin keys)"
		case r == '$':
			return "key contains '$' (not allowed in twin keys)"
		case r == ' ':
			return "key contains a space (not allowed in twin keys)"
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return "key contains a control character"
		}
	}
	return ""
}

// ValidateTwinDoc checks a tags, desired or reported document (or a patch
// of one): keys, value types, integer range, string length, depth and size.
// section names the document in errors ("desired", "tags") and maxBytes is
// its size limit. "$version" and "$metadata" at the top must be stripped by
// the caller. A patch may hold null values.
func ValidateTwinDoc(section string, doc map[string]json.RawMessage, maxBytes int) error {
	size := 0
	for k, raw := range doc {
		n, err := checkMember(section, k, raw, 1)
		if err != nil {
			return err
		}
		size += n
	}
	if size > maxBytes {
		return &TwinError{Reason: fmt.Sprintf("%s is %d bytes (at most %d)", section, size, maxBytes)}
	}
	return nil
}

// checkMember validates the member key: raw and returns its size as the hub
// counts it. An object or array value would open nesting level level (1
// for the document's own members).
func checkMember(path, key string, raw json.RawMessage, level int) (int, error) {
	p := path + "." + key
	if reason := ValidateTwinKey(key); reason != "" {
		return 0, &TwinError{Path: p, Reason: reason}
	}
	n, err := checkValue(p, raw, level)
	if err != nil {
		return 0, err
	}
	return len(key) + n, nil
}

// checkValue validates a member value or array element. An object or
// array value opens nesting level level, which may be at most
// MaxTwinDepth: the hub's own example of the limit nests ten objects and
// puts a scalar member inside the tenth.
func checkValue(p string, raw json.RawMessage, level int) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, &TwinError{Path: p, Reason: "missing value"}
	}
	switch raw[0] {
	case '{', '[':
		if level > MaxTwinDepth {
			return 0, &TwinError{Path: p, Reason: fmt.Sprintf("nested deeper than %d levels", MaxTwinDepth)}
		}
	}
	switch raw[0] {
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		size := 0
		for k, v := range obj {
			n, err := checkMember(p, k, v, level+1)
			if err != nil {
				return 0, err
			}
			size += n
		}
		return size, nil
	case '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(raw, &arr); err != nil {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		size := 0
		for i, v := range arr {
			n, err := checkValue(fmt.Sprintf("%s[%d]", p, i), v, level+1)
			if err != nil {
				return 0, err
			}
			size += n
		}
		return size, nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		if len(s) > MaxTwinStringBytes {
			return 0, &TwinError{Path: p, Reason: fmt.Sprintf("string longer than %d bytes", MaxTwinStringBytes)}
		}
		n := 0
		for _, r := range s {
			if r >= 0x20 && !(r >= 0x7f && r <= 0x9f) {
				n++
			}
		}
		return n, nil
	case 't', 'f':
		if string(raw) != "true" && string(raw) != "false" {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		return 4, nil
	case 'n':
		if string(raw) != "null" {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		return 0, nil
	default:
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			return 0, &TwinError{Path: p, Reason: "not valid JSON"}
		}
		if f == math.Trunc(f) && !bytes.ContainsAny(raw, ".eE") && (f > MaxSafeTwinInteger || f < MinSafeTwinInteger) {
			return 0, &TwinError{Path: p, Reason: fmt.Sprintf("integer outside [%d, %d]", int64(MinSafeTwinInteger), int64(MaxSafeTwinInteger))}
		}
		return 8, nil
	}
}
