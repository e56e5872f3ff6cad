package query

import (
	"fmt"
	"math"
	"strings"
)

// MaxLength is the longest query the hub takes, in characters.
const MaxLength = 8192

// reserved words cannot start a path.
var reserved = map[string]bool{
	"SELECT": true, "TOP": true, "FROM": true, "WHERE": true, "GROUP": true, "BY": true, "AS": true,
	"AND": true, "OR": true, "NOT": true, "IN": true, "NIN": true, "ORDER": true, "JOIN": true,
	"TRUE": true, "FALSE": true, "NULL": true, "UNDEFINED": true,
}

// Parse reads and checks a query.
func Parse(src string) (*Query, error) {
	if n := len([]rune(src)); n > MaxLength {
		return nil, &Error{Pos: Pos{1, 1}, Msg: fmt.Sprintf("the query is %d characters long (at most %d)", n, MaxLength)}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	if err := check(q); err != nil {
		return nil, err
	}
	return q, nil
}

// parser is a recursive-descent parser over the token list.
type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) peekAt(n int) token {
	if p.i+n < len(p.toks) {
		return p.toks[p.i+n]
	}
	return p.toks[len(p.toks)-1]
}

func (p *parser) take() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

// accept takes the next token when it is s.
func (p *parser) accept(s string) bool {
	if p.peek().is(s) {
		p.i++
		return true
	}
	return false
}

func (p *parser) expect(s, what string) (token, error) {
	t := p.peek()
	if !t.is(s) {
		return t, errAt(t, "unexpected %s, expected %s", t.describe(), what)
	}
	return p.take(), nil
}

func (p *parser) query() (*Query, error) {
	q := &Query{}
	if _, err := p.expect("SELECT", "SELECT"); err != nil {
		return nil, err
	}
	if p.accept("TOP") {
		t := p.take()
		if t.kind != tokNumber || t.num < 1 || t.num != math.Trunc(t.num) || t.num > math.MaxInt32 {
			return nil, errAt(t, "TOP needs a positive whole number, not %s", t.describe())
		}
		q.Top = int(t.num)
	}
	if err := p.selectList(q); err != nil {
		return nil, err
	}
	if _, err := p.expect("FROM", "',' or FROM"); err != nil {
		return nil, err
	}
	if err := p.from(q); err != nil {
		return nil, err
	}
	if p.accept("WHERE") {
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		q.Where = e
	}
	if t := p.peek(); t.is("GROUP") {
		p.take()
		if _, err := p.expect("BY", "BY after GROUP"); err != nil {
			return nil, err
		}
		for {
			path, err := p.path()
			if err != nil {
				return nil, err
			}
			q.GroupBy = append(q.GroupBy, *path)
			if !p.accept(",") {
				break
			}
		}
	}
	return q, p.end()
}

// end refuses anything after the query, naming what SQL users reach for.
func (p *parser) end() error {
	t := p.peek()
	switch {
	case t.kind == tokEOF:
		return nil
	case t.is("ORDER"):
		return errAt(t, "ORDER BY is not supported by the IoT Hub query language")
	case t.is("HAVING"), t.is("LIMIT"), t.is("OFFSET"), t.is("UNION"):
		return errAt(t, "%s is not supported by the IoT Hub query language", strings.ToUpper(t.text))
	case t.is("WHERE"), t.is("GROUP"):
		return errAt(t, "unexpected %s: clauses go in the order SELECT, FROM, WHERE, GROUP BY", t.describe())
	}
	return errAt(t, "unexpected %s after the end of the query", t.describe())
}

func (p *parser) selectList(q *Query) error {
	if p.accept("*") {
		q.Star = true
		return nil
	}
	if t := p.peek(); t.is("DISTINCT") || t.is("VALUE") {
		return errAt(t, "SELECT %s is not supported by the IoT Hub query language", strings.ToUpper(t.text))
	}
	aggs := 0
	for {
		it, err := p.item()
		if err != nil {
			return err
		}
		if it.Agg != "" && it.Name == "" {
			aggs++
			it.Name = fmt.Sprintf("$%d", aggs)
		}
		q.Items = append(q.Items, it)
		if !p.accept(",") {
			return nil
		}
	}
}

var aggregates = map[string]bool{"COUNT": true, "AVG": true, "SUM": true, "MIN": true, "MAX": true}

func (p *parser) item() (Item, error) {
	var it Item
	t := p.peek()
	if t.kind == tokIdent && aggregates[strings.ToUpper(t.text)] && p.peekAt(1).is("(") {
		p.take()
		p.take()
		it.Agg = strings.ToUpper(t.text)
		if it.Agg == "COUNT" {
			if _, err := p.expect(")", "')': COUNT() takes no argument"); err != nil {
				return it, err
			}
		} else {
			path, err := p.path()
			if err != nil {
				return it, err
			}
			it.Path = *path
			if _, err := p.expect(")", "')'"); err != nil {
				return it, err
			}
		}
	} else {
		if t.kind != tokIdent || reserved[strings.ToUpper(t.text)] {
			return it, errAt(t, "unexpected %s, expected '*', a property path or an aggregate (COUNT, AVG, SUM, MIN, MAX)", t.describe())
		}
		path, err := p.path()
		if err != nil {
			return it, err
		}
		if n := p.peek(); n.kind == tokPunct && n.text != "," {
			return it, errAt(n, "unexpected %s: SELECT takes property paths and aggregates, not expressions", n.describe())
		}
		it.Path = *path
		if s, ok := path.Segments[len(path.Segments)-1].(string); ok {
			it.Name = s
		}
	}
	if p.accept("AS") {
		a := p.take()
		if a.kind != tokIdent || reserved[strings.ToUpper(a.text)] {
			return it, errAt(a, "unexpected %s, expected a name after AS", a.describe())
		}
		it.Name, it.Aliased = a.text, true
	}
	if it.Name == "" && it.Agg == "" {
		return it, errAt(t, "a projection ending in an array index needs a name: add AS name")
	}
	return it, nil
}

func (p *parser) from(q *Query) error {
	t := p.take()
	if !t.is("devices") {
		return errAt(t, "unexpected %s, expected devices, devices.modules or devices.jobs", t.describe())
	}
	q.From = Devices
	if p.accept(".") {
		c := p.take()
		switch {
		case c.is("modules"):
			q.From = Modules
		case c.is("jobs"):
			q.From = Jobs
		default:
			return errAt(c, "unexpected %s, expected devices, devices.modules or devices.jobs", c.describe())
		}
	}
	if n := p.peek(); n.is("JOIN") || n.is(",") {
		return errAt(n, "joins are not supported: query devices and devices.modules separately")
	}
	if n := p.peek(); n.kind == tokIdent && !reserved[strings.ToUpper(n.text)] {
		return errAt(n, "unexpected %s: the collection cannot have an alias", n.describe())
	}
	return nil
}

// path reads a member path: name, then .name or [index] or ['name'].
func (p *parser) path() (*Path, error) {
	t := p.take()
	if t.kind != tokIdent || reserved[strings.ToUpper(t.text)] {
		return nil, errAt(t, "unexpected %s, expected a property name", t.describe())
	}
	path := &Path{Segments: []any{t.text}, At: t.pos}
	for {
		switch {
		case p.accept("."):
			n := p.take()
			if n.kind != tokIdent {
				return nil, errAt(n, "unexpected %s, expected a property name after '.'", n.describe())
			}
			path.Segments = append(path.Segments, n.text)
		case p.peek().is("["):
			p.take()
			n := p.take()
			switch {
			case n.kind == tokString:
				path.Segments = append(path.Segments, n.text)
			case n.kind == tokNumber && n.num >= 0 && n.num == math.Trunc(n.num):
				path.Segments = append(path.Segments, n.num)
			default:
				return nil, errAt(n, "unexpected %s, expected a property name in quotes or an array index", n.describe())
			}
			if _, err := p.expect("]", "']'"); err != nil {
				return nil, err
			}
		default:
			return path, nil
		}
	}
}
