package query

import "math"

// eval computes e over doc. Any operation on values it is not defined for
// (a comparison across types, arithmetic on a string, a missing member)
// yields undefined, which no condition accepts.
func eval(e Expr, doc rawDoc) any {
	switch x := e.(type) {
	case *Literal:
		return x.Value
	case *Path:
		v, _ := doc.lookup(x.Segments)
		return v
	case *Unary:
		return evalUnary(x.Op, eval(x.X, doc))
	case *Binary:
		return evalBinary(x.Op, eval(x.L, doc), eval(x.R, doc))
	case *In:
		return evalIn(eval(x.X, doc), x.List, x.Not)
	case *Call:
		args := make([]any, len(x.Args))
		for i, a := range x.Args {
			args[i] = eval(a, doc)
		}
		return functions[x.Name].fn(args)
	case *ArrayExpr:
		out := make([]any, 0, len(x.Elems))
		for _, el := range x.Elems {
			if v := eval(el, doc); !isUndefined(v) {
				out = append(out, v)
			}
		}
		return out
	}
	return undefined
}

// Matches reports whether the twin doc (JSON) satisfies the query's
// WHERE clause.
func (q *Query) Matches(doc []byte) bool {
	if q.Where == nil {
		return true
	}
	return eval(q.Where, rawDoc(doc)) == true
}

func evalUnary(op string, v any) any {
	if op == "NOT" {
		if b, ok := v.(bool); ok {
			return !b
		}
		return undefined
	}
	n, ok := number(v)
	if !ok {
		return undefined
	}
	if op == "-" {
		return -n
	}
	return n
}

func evalBinary(op string, l, r any) any {
	switch op {
	case "AND":
		lb, lok := l.(bool)
		rb, rok := r.(bool)
		switch {
		case lok && !lb, rok && !rb:
			return false
		case lok && rok:
			return true
		}
		return undefined
	case "OR":
		lb, lok := l.(bool)
		rb, rok := r.(bool)
		switch {
		case lok && lb, rok && rb:
			return true
		case lok && rok:
			return false
		}
		return undefined
	case "=", "!=", "<", ">", "<=", ">=":
		c, ok := compare(l, r)
		if !ok {
			return undefined
		}
		switch op {
		case "=":
			return c == 0
		case "!=":
			return c != 0
		case "<":
			return c < 0
		case ">":
			return c > 0
		case "<=":
			return c <= 0
		}
		return c >= 0
	}
	a, aok := number(l)
	b, bok := number(r)
	if !aok || !bok {
		return undefined
	}
	var v float64
	switch op {
	case "+":
		v = a + b
	case "-":
		v = a - b
	case "*":
		v = a * b
	case "/":
		if b == 0 {
			return undefined
		}
		v = a / b
	case "%":
		if b == 0 {
			return undefined
		}
		v = math.Mod(a, b)
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return undefined
	}
	return v
}

func evalIn(v any, list []any, not bool) any {
	if !isPrimitive(kindOf(v)) {
		return undefined
	}
	for _, c := range list {
		if d, ok := compare(v, c); ok && d == 0 {
			return !not
		}
	}
	return not
}
