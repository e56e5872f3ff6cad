package query

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// group is the documents sharing GROUP BY values, with one accumulator per
// SELECT item.
type group struct {
	key  string
	vals []any // the GROUP BY values
	accs []accumulator
}

type accumulator struct {
	count    int     // documents (COUNT)
	sum      float64 // of numeric values (SUM, AVG)
	n        int     // numeric values seen
	min, max any     // over primitive values (MIN, MAX)
	set      bool    // min and max hold a value
}

func (q *Query) runAggregate(scan Scanner, cur Cursor, limit int, page Page) (Page, error) {
	groups := map[string]*group{}
	if len(q.GroupBy) == 0 {
		groups[""] = &group{key: "", accs: make([]accumulator, len(q.Items))}
	}
	scan(q.From, Key{}, func(k Key, twin []byte) bool {
		doc := rawDoc(twin)
		if !q.Matches(twin) {
			return true
		}
		vals := make([]any, len(q.GroupBy))
		for i, g := range q.GroupBy {
			vals[i], _ = doc.lookup(g.Segments)
		}
		key := groupKey(vals)
		g := groups[key]
		if g == nil {
			g = &group{key: key, vals: vals, accs: make([]accumulator, len(q.Items))}
			groups[key] = g
		}
		for i, it := range q.Items {
			if it.Agg == "" {
				continue
			}
			var v any
			if it.Agg != "COUNT" {
				v, _ = doc.lookup(it.Path.Segments)
			}
			g.accs[i].add(v)
		}
		return true
	})
	keys := make([]string, 0, len(groups))
	for k := range groups {
		if cur.Group == "" || k > cur.Group {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	last := ""
	for _, k := range keys {
		if len(page.Items) == limit {
			emitted := cur.Emitted + len(page.Items)
			if q.Top == 0 || emitted < q.Top {
				page.Next = &Cursor{Emitted: emitted, Group: last}
			}
			break
		}
		page.Items = append(page.Items, q.aggregateRow(groups[k]))
		last = k
	}
	return page, nil
}

func (a *accumulator) add(v any) {
	a.count++
	if n, ok := number(v); ok {
		a.sum += n
		a.n++
	}
	if !isPrimitive(kindOf(v)) {
		return
	}
	if !a.set {
		a.min, a.max, a.set = v, v, true
		return
	}
	if order(v, a.min) < 0 {
		a.min = v
	}
	if order(v, a.max) > 0 {
		a.max = v
	}
}

// order ranks primitive values across types (null, booleans, numbers,
// strings), as MIN and MAX see them.
func order(a, b any) int {
	ka, kb := kindOf(a), kindOf(b)
	if ka != kb {
		return int(ka) - int(kb)
	}
	c, _ := compare(a, b)
	return c
}

func (a *accumulator) result(agg string) any {
	switch agg {
	case "COUNT":
		return float64(a.count)
	case "SUM":
		return a.sum
	case "AVG":
		if a.n == 0 {
			return undefined
		}
		return a.sum / float64(a.n)
	case "MIN":
		if !a.set {
			return undefined
		}
		return a.min
	case "MAX":
		if !a.set {
			return undefined
		}
		return a.max
	}
	return undefined
}

func (q *Query) aggregateRow(g *group) json.RawMessage {
	var row rowWriter
	for i, it := range q.Items {
		if it.Agg != "" {
			row.add(it.Name, g.accs[i].result(it.Agg))
			continue
		}
		for j, gb := range q.GroupBy {
			if samePath(gb.Segments, it.Path.Segments) {
				row.add(it.Name, g.vals[j])
				break
			}
		}
	}
	return row.close()
}

// groupKey is a canonical string for GROUP BY values: equal values (1 and
// 1.0 too) give equal keys, and keys are never empty.
func groupKey(vals []any) string {
	var b strings.Builder
	for _, v := range vals {
		b.WriteByte('|')
		switch {
		case isUndefined(v):
			b.WriteByte('u')
		case kindOf(v) == kindNumber:
			n, _ := number(v)
			b.WriteString("n" + strconv.FormatFloat(n, 'g', -1, 64))
		default:
			j, _ := json.Marshal(v)
			b.WriteString("j" + string(j))
		}
	}
	return b.String()
}
