package query

import (
	"fmt"
	"slices"
	"strings"
)

// check applies the rules beyond the grammar: known functions with the
// right number of arguments, aggregates only in SELECT, GROUP BY covering
// every plain projection, and no projections over devices.jobs. It also
// drops a leading collection name from paths (devices.modules.moduleId is
// moduleId).
func check(q *Query) error {
	prefix := strings.Split(q.From.String(), ".")
	for i := range q.Items {
		q.Items[i].Path.Segments = stripPrefix(q.Items[i].Path.Segments, prefix)
	}
	for i := range q.GroupBy {
		q.GroupBy[i].Segments = stripPrefix(q.GroupBy[i].Segments, prefix)
	}
	if q.Where != nil {
		if err := checkExpr(q.Where, prefix); err != nil {
			return err
		}
	}
	if q.From == Jobs && (!q.Star || len(q.GroupBy) > 0) {
		return &Error{Pos: Pos{1, 1}, Msg: "queries on devices.jobs support only SELECT *: no projections or aggregations"}
	}
	if len(q.GroupBy) > 0 && q.Star {
		return &Error{Pos: q.GroupBy[0].At, Msg: "GROUP BY needs a SELECT list of grouped properties and aggregates, not *"}
	}
	if !q.Aggregated() {
		return nil
	}
	for _, it := range q.Items {
		if it.Agg != "" {
			continue
		}
		if !slices.ContainsFunc(q.GroupBy, func(g Path) bool { return samePath(g.Segments, it.Path.Segments) }) {
			return &Error{Pos: it.Path.At, Msg: "'" + pathString(it.Path.Segments) + "' is neither aggregated nor in GROUP BY"}
		}
	}
	return nil
}

func checkExpr(e Expr, prefix []string) error {
	switch x := e.(type) {
	case *Path:
		x.Segments = stripPrefix(x.Segments, prefix)
	case *Unary:
		return checkExpr(x.X, prefix)
	case *Binary:
		if err := checkExpr(x.L, prefix); err != nil {
			return err
		}
		return checkExpr(x.R, prefix)
	case *In:
		return checkExpr(x.X, prefix)
	case *ArrayExpr:
		for _, el := range x.Elems {
			if err := checkExpr(el, prefix); err != nil {
				return err
			}
		}
	case *Call:
		if aggregates[x.Name] {
			return &Error{Pos: x.At, Msg: x.Name + " is an aggregate: it is only allowed in SELECT"}
		}
		f, ok := functions[x.Name]
		if !ok {
			return &Error{Pos: x.At, Msg: "unknown function " + x.Name + " (supported: " + functionNames() + ")"}
		}
		if n := len(x.Args); n < f.min || f.max >= 0 && n > f.max {
			return &Error{Pos: x.At, Msg: fmt.Sprintf("%s takes %s, not %d", x.Name, arity(f), len(x.Args))}
		}
		for _, a := range x.Args {
			if err := checkExpr(a, prefix); err != nil {
				return err
			}
		}
	}
	return nil
}

func functionNames() string {
	names := make([]string, 0, len(functions))
	for n := range functions {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func arity(f function) string {
	switch {
	case f.max < 0:
		return fmt.Sprintf("at least %d arguments", f.min)
	case f.min == f.max && f.min == 1:
		return "1 argument"
	case f.min == f.max:
		return fmt.Sprintf("%d arguments", f.min)
	}
	return fmt.Sprintf("%d to %d arguments", f.min, f.max)
}

// stripPrefix drops the collection name at the start of a path (a twin has
// no member called devices, so the name can only mean the collection).
func stripPrefix(segs []any, prefix []string) []any {
	for n := len(prefix); n >= 1; n-- {
		if len(segs) > n && hasPrefix(segs, prefix[:n]) {
			return segs[n:]
		}
	}
	return segs
}

func hasPrefix(segs []any, prefix []string) bool {
	for i, p := range prefix {
		s, ok := segs[i].(string)
		if !ok || !strings.EqualFold(s, p) {
			return false
		}
	}
	return true
}

func samePath(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		sa, aok := a[i].(string)
		sb, bok := b[i].(string)
		if aok != bok || aok && !strings.EqualFold(sa, sb) || !aok && a[i] != b[i] {
			return false
		}
	}
	return true
}

func pathString(segs []any) string {
	var b strings.Builder
	for i, s := range segs {
		switch x := s.(type) {
		case string:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(x)
		case float64:
			fmt.Fprintf(&b, "[%d]", int(x))
		}
	}
	return b.String()
}
