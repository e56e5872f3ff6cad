package query

import "strings"

// Expressions, lowest precedence first: OR, AND, NOT, comparison (and IN,
// NIN), + -, * / %, unary - +.

func (p *parser) expr() (Expr, error) { return p.or() }

func (p *parser) or() (Expr, error) {
	l, err := p.and()
	for err == nil && p.peek().is("OR") {
		t := p.take()
		var r Expr
		if r, err = p.and(); err == nil {
			l = &Binary{Op: "OR", L: l, R: r, At: t.pos}
		}
	}
	return l, err
}

func (p *parser) and() (Expr, error) {
	l, err := p.not()
	for err == nil && p.peek().is("AND") {
		t := p.take()
		var r Expr
		if r, err = p.not(); err == nil {
			l = &Binary{Op: "AND", L: l, R: r, At: t.pos}
		}
	}
	return l, err
}

func (p *parser) not() (Expr, error) {
	if t := p.peek(); t.is("NOT") {
		p.take()
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return &Unary{Op: "NOT", X: x, At: t.pos}, nil
	}
	return p.comparison()
}

var comparisons = map[string]string{"=": "=", "!=": "!=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}

func (p *parser) comparison() (Expr, error) {
	l, err := p.additive()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tokPunct && comparisons[t.text] != "":
		p.take()
		r, err := p.additive()
		if err != nil {
			return nil, err
		}
		l = &Binary{Op: comparisons[t.text], L: l, R: r, At: t.pos}
	case t.is("IN"), t.is("NIN"):
		p.take()
		list, err := p.constantArray()
		if err != nil {
			return nil, err
		}
		l = &In{X: l, List: list, Not: t.is("NIN"), At: t.pos}
	case t.is("NOT") && (p.peekAt(1).is("IN") || p.peekAt(1).is("LIKE")):
		return nil, errAt(t, "NOT %s is not supported: use NIN for not in", strings.ToUpper(p.peekAt(1).text))
	case t.is("LIKE"), t.is("BETWEEN"), t.is("IS"):
		return nil, errAt(t, "%s is not supported by the IoT Hub query language (see STARTSWITH, ENDSWITH, IS_DEFINED, IS_NULL)", strings.ToUpper(t.text))
	}
	if n := p.peek(); n.kind == tokPunct && comparisons[n.text] != "" {
		return nil, errAt(n, "unexpected %s: comparisons do not chain; use AND", n.describe())
	}
	return l, nil
}

func (p *parser) additive() (Expr, error) {
	l, err := p.multiplicative()
	for err == nil && (p.peek().is("+") || p.peek().is("-")) {
		t := p.take()
		var r Expr
		if r, err = p.multiplicative(); err == nil {
			l = &Binary{Op: t.text, L: l, R: r, At: t.pos}
		}
	}
	return l, err
}

func (p *parser) multiplicative() (Expr, error) {
	l, err := p.unary()
	for err == nil && (p.peek().is("*") || p.peek().is("/") || p.peek().is("%")) {
		t := p.take()
		var r Expr
		if r, err = p.unary(); err == nil {
			l = &Binary{Op: t.text, L: l, R: r, At: t.pos}
		}
	}
	return l, err
}

func (p *parser) unary() (Expr, error) {
	if t := p.peek(); t.is("-") || t.is("+") {
		p.take()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &Unary{Op: t.text, X: x, At: t.pos}, nil
	}
	return p.primary()
}

func (p *parser) primary() (Expr, error) {
	t := p.peek()
	switch {
	case t.kind == tokNumber:
		p.take()
		return &Literal{Value: t.num, At: t.pos}, nil
	case t.kind == tokString:
		p.take()
		return &Literal{Value: t.text, At: t.pos}, nil
	case t.is("("):
		p.take()
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(")", "')'"); err != nil {
			return nil, err
		}
		return e, nil
	case t.is("["):
		p.take()
		a := &ArrayExpr{At: t.pos}
		if p.accept("]") {
			return a, nil
		}
		for {
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			a.Elems = append(a.Elems, e)
			if p.accept("]") {
				return a, nil
			}
			if _, err := p.expect(",", "',' or ']'"); err != nil {
				return nil, err
			}
		}
	case t.kind == tokIdent:
		if v, ok := keywordConstant(t); ok {
			p.take()
			return &Literal{Value: v, At: t.pos}, nil
		}
		if p.peekAt(1).is("(") {
			return p.call()
		}
		if reserved[strings.ToUpper(t.text)] {
			return nil, errAt(t, "unexpected %s, expected an expression", t.describe())
		}
		return p.path()
	}
	return nil, errAt(t, "unexpected %s, expected an expression", t.describe())
}

func keywordConstant(t token) (any, bool) {
	switch strings.ToUpper(t.text) {
	case "TRUE":
		return true, true
	case "FALSE":
		return false, true
	case "NULL":
		return nil, true
	case "UNDEFINED":
		return undefined, true
	}
	return nil, false
}

func (p *parser) call() (Expr, error) {
	name := p.take()
	p.take() // (
	c := &Call{Name: strings.ToUpper(name.text), At: name.pos}
	if p.accept(")") {
		return c, nil
	}
	for {
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.Args = append(c.Args, e)
		if p.accept(")") {
			return c, nil
		}
		if _, err := p.expect(",", "',' or ')'"); err != nil {
			return nil, err
		}
	}
}

// constantArray reads the [c, …] of IN and NIN: constants only.
func (p *parser) constantArray() ([]any, error) {
	if _, err := p.expect("[", "'[' (IN and NIN take an array of constants)"); err != nil {
		return nil, err
	}
	var out []any
	if p.accept("]") {
		return out, nil
	}
	for {
		v, err := p.constant()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if p.accept("]") {
			return out, nil
		}
		if _, err := p.expect(",", "',' or ']'"); err != nil {
			return nil, err
		}
	}
}

func (p *parser) constant() (any, error) {
	t := p.take()
	neg := false
	if t.is("-") {
		neg = true
		t = p.take()
	}
	switch {
	case t.kind == tokNumber:
		if neg {
			return -t.num, nil
		}
		return t.num, nil
	case neg:
		return nil, errAt(t, "unexpected %s, expected a number after '-'", t.describe())
	case t.kind == tokString:
		return t.text, nil
	case t.kind == tokIdent:
		if v, ok := keywordConstant(t); ok {
			return v, nil
		}
	}
	return nil, errAt(t, "unexpected %s, expected a constant (string, number, true, false or null)", t.describe())
}
