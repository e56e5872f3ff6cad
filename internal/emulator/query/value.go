package query

import (
	"encoding/json"
	"strings"
)

// undefinedValue is the value of a path a document does not have. It
// matches nothing: every comparison with it is undefined, and a WHERE
// clause keeps a document only when its condition is true.
type undefinedValue struct{}

var undefined any = undefinedValue{}

func isUndefined(v any) bool { _, ok := v.(undefinedValue); return ok }

// number returns v as a float64 when it is a number.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// kind classes values for the typing rule: comparisons only between
// values of the same primitive type.
type kind int

const (
	kindUndefined kind = iota
	kindNull
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func kindOf(v any) kind {
	switch v.(type) {
	case nil:
		return kindNull
	case bool:
		return kindBool
	case float64, json.Number:
		return kindNumber
	case string:
		return kindString
	case []any:
		return kindArray
	case map[string]any:
		return kindObject
	}
	return kindUndefined
}

func isPrimitive(k kind) bool { return k >= kindNull && k <= kindString }

// compare orders two primitive values of the same type: -1, 0 or 1, and
// ok false when they cannot be compared (different types, or not
// primitive, or undefined).
func compare(a, b any) (int, bool) {
	ka, kb := kindOf(a), kindOf(b)
	if ka != kb || !isPrimitive(ka) {
		return 0, false
	}
	switch ka {
	case kindNull:
		return 0, true
	case kindBool:
		x, y := a.(bool), b.(bool)
		switch {
		case x == y:
			return 0, true
		case !x:
			return -1, true
		}
		return 1, true
	case kindNumber:
		x, _ := number(a)
		y, _ := number(b)
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	}
	return strings.Compare(a.(string), b.(string)), true
}
