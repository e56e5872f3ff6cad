package query

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// function is a built-in: its arity and what it computes. Arguments of
// the wrong type give undefined.
type function struct {
	min, max int // max -1: any number
	fn       func(args []any) any
}

var functions map[string]function

func init() {
	typeCheck := func(test func(kind) bool) function {
		return function{1, 1, func(a []any) any { return test(kindOf(a[0])) }}
	}
	functions = map[string]function{
		"IS_DEFINED":   {1, 1, func(a []any) any { return !isUndefined(a[0]) }},
		"IS_NULL":      typeCheck(func(k kind) bool { return k == kindNull }),
		"IS_BOOL":      typeCheck(func(k kind) bool { return k == kindBool }),
		"IS_NUMBER":    typeCheck(func(k kind) bool { return k == kindNumber }),
		"IS_STRING":    typeCheck(func(k kind) bool { return k == kindString }),
		"IS_ARRAY":     typeCheck(func(k kind) bool { return k == kindArray }),
		"IS_OBJECT":    typeCheck(func(k kind) bool { return k == kindObject }),
		"IS_PRIMITIVE": typeCheck(isPrimitive),

		"STARTSWITH":  strings2(func(s, t string) any { return strings.HasPrefix(s, t) }),
		"STARTS_WITH": strings2(func(s, t string) any { return strings.HasPrefix(s, t) }),
		"ENDSWITH":    strings2(func(s, t string) any { return strings.HasSuffix(s, t) }),
		"ENDS_WITH":   strings2(func(s, t string) any { return strings.HasSuffix(s, t) }),
		"CONTAINS":    strings2(func(s, t string) any { return strings.Contains(s, t) }),
		"INDEX_OF": strings2(func(s, t string) any {
			i := strings.Index(s, t)
			if i < 0 {
				return float64(-1)
			}
			return float64(utf8.RuneCountInString(s[:i]))
		}),
		"LENGTH":    string1(func(s string) any { return float64(utf8.RuneCountInString(s)) }),
		"LOWER":     string1(func(s string) any { return strings.ToLower(s) }),
		"UPPER":     string1(func(s string) any { return strings.ToUpper(s) }),
		"CONCAT":    {2, -1, concat},
		"SUBSTRING": {2, 3, substring},
		"AS_NUMBER": {1, 1, func(a []any) any {
			if n, ok := number(a[0]); ok {
				return n
			}
			if s, ok := a[0].(string); ok {
				if n, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && !math.IsInf(n, 0) && !math.IsNaN(n) {
					return n
				}
			}
			return undefined
		}},

		"ABS":     math1(math.Abs),
		"EXP":     math1(math.Exp),
		"SQUARE":  math1(func(x float64) float64 { return x * x }),
		"SQRT":    math1(math.Sqrt),
		"CEILING": math1(math.Ceil),
		"FLOOR":   math1(math.Floor),
		"SIGN": math1(func(x float64) float64 {
			switch {
			case x > 0:
				return 1
			case x < 0:
				return -1
			}
			return 0
		}),
		"POWER": {2, 2, func(a []any) any {
			x, ok1 := number(a[0])
			y, ok2 := number(a[1])
			if !ok1 || !ok2 {
				return undefined
			}
			return finite(math.Pow(x, y))
		}},
	}
}

func finite(v float64) any {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return undefined
	}
	return v
}

func math1(f func(float64) float64) function {
	return function{1, 1, func(a []any) any {
		x, ok := number(a[0])
		if !ok {
			return undefined
		}
		return finite(f(x))
	}}
}

func string1(f func(string) any) function {
	return function{1, 1, func(a []any) any {
		s, ok := a[0].(string)
		if !ok {
			return undefined
		}
		return f(s)
	}}
}

func strings2(f func(s, t string) any) function {
	return function{2, 2, func(a []any) any {
		s, ok1 := a[0].(string)
		t, ok2 := a[1].(string)
		if !ok1 || !ok2 {
			return undefined
		}
		return f(s, t)
	}}
}

func concat(a []any) any {
	var b strings.Builder
	for _, v := range a {
		s, ok := v.(string)
		if !ok {
			return undefined
		}
		b.WriteString(s)
	}
	return b.String()
}

// substring is SUBSTRING(s, start[, length]), zero-based, in characters.
func substring(a []any) any {
	s, ok := a[0].(string)
	start, ok2 := number(a[1])
	if !ok || !ok2 {
		return undefined
	}
	r := []rune(s)
	from := int(math.Max(0, math.Min(float64(len(r)), math.Floor(start))))
	to := len(r)
	if len(a) == 3 {
		n, ok := number(a[2])
		if !ok {
			return undefined
		}
		to = int(math.Max(float64(from), math.Min(float64(len(r)), float64(from)+math.Floor(n))))
	}
	return string(r[from:to])
}
