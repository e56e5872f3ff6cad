package query

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// tokenKind is the class of a lexical token.
type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokNumber
	tokString
	tokPunct // operators and punctuation: = != <> < > <= >= + - * / % ( ) [ ] , .
)

// token is one lexical token of a query, with where it starts.
type token struct {
	kind tokenKind
	text string  // as written (for strings: the decoded value)
	num  float64 // tokNumber only
	pos  Pos
}

// Pos is a position in a query: line from 1, column from 1 (in runes).
type Pos struct {
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("Line %d:%d", p.Line, p.Col) }

// describe names a token the way error messages quote it.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of query"
	case tokString:
		return strconv.Quote(t.text)
	}
	return "'" + t.text + "'"
}

// is reports whether t is the keyword or punctuation s (keywords are
// case-insensitive).
func (t token) is(s string) bool {
	switch t.kind {
	case tokIdent:
		return strings.EqualFold(t.text, s)
	case tokPunct:
		return t.text == s
	}
	return false
}

// lex splits src into tokens, ending with tokEOF.
func lex(src string) ([]token, error) {
	l := lexer{src: src, line: 1, col: 1}
	var out []token
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		if t.kind == tokEOF {
			return out, nil
		}
	}
}

type lexer struct {
	src       string
	off       int
	line, col int
}

func (l *lexer) peek() (rune, int) {
	if l.off >= len(l.src) {
		return 0, 0
	}
	return utf8.DecodeRuneInString(l.src[l.off:])
}

func (l *lexer) advance() rune {
	r, n := l.peek()
	l.off += n
	if r == '\n' {
		l.line++
		l.col = 1
	} else {
		l.col++
	}
	return r
}

func (l *lexer) pos() Pos { return Pos{l.line, l.col} }

func isIdentStart(r rune) bool { return r == '_' || r == '$' || unicode.IsLetter(r) }
func isIdentPart(r rune) bool  { return isIdentStart(r) || unicode.IsDigit(r) }

func (l *lexer) next() (token, error) {
	for {
		r, n := l.peek()
		if n == 0 || !unicode.IsSpace(r) {
			break
		}
		l.advance()
	}
	start := l.pos()
	r, n := l.peek()
	switch {
	case n == 0:
		return token{kind: tokEOF, pos: start}, nil
	case r == utf8.RuneError && n == 1:
		return token{}, &Error{Pos: start, Msg: "the query is not valid UTF-8"}
	case isIdentStart(r):
		from := l.off
		for r, n := l.peek(); n > 0 && isIdentPart(r); r, n = l.peek() {
			l.advance()
		}
		return token{kind: tokIdent, text: l.src[from:l.off], pos: start}, nil
	case r >= '0' && r <= '9' || r == '.' && l.digitAfterDot():
		return l.number(start)
	case r == '\'' || r == '"':
		return l.str(start, r)
	}
	l.advance()
	text := string(r)
	if next, _ := l.peek(); (r == '!' || r == '<' || r == '>') && next == '=' || r == '<' && next == '>' {
		l.advance()
		text += string(next)
	}
	switch text {
	case "=", "!=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",", ".":
		return token{kind: tokPunct, text: text, pos: start}, nil
	}
	return token{}, &Error{Pos: start, Msg: fmt.Sprintf("unexpected character %q", r)}
}

func (l *lexer) digitAfterDot() bool {
	return l.off+1 < len(l.src) && l.src[l.off+1] >= '0' && l.src[l.off+1] <= '9'
}

func (l *lexer) number(start Pos) (token, error) {
	from := l.off
	if strings.HasPrefix(l.src[l.off:], "0x") || strings.HasPrefix(l.src[l.off:], "0X") {
		l.advance()
		l.advance()
		for r, n := l.peek(); n > 0 && isIdentPart(r); r, n = l.peek() {
			l.advance()
		}
		text := l.src[from:l.off]
		v, err := strconv.ParseUint(text[2:], 16, 64)
		if err != nil {
			return token{}, &Error{Pos: start, Msg: fmt.Sprintf("%q is not a hexadecimal number", text)}
		}
		return token{kind: tokNumber, text: text, num: float64(v), pos: start}, nil
	}
	digits := func() {
		for r, n := l.peek(); n > 0 && r >= '0' && r <= '9'; r, n = l.peek() {
			l.advance()
		}
	}
	digits()
	if r, _ := l.peek(); r == '.' {
		l.advance()
		digits()
	}
	if r, _ := l.peek(); r == 'e' || r == 'E' {
		l.advance()
		if r, _ := l.peek(); r == '+' || r == '-' {
			l.advance()
		}
		digits()
	}
	// A number runs into a letter only when it is malformed (12ab).
	for r, n := l.peek(); n > 0 && isIdentPart(r); r, n = l.peek() {
		l.advance()
	}
	text := l.src[from:l.off]
	v, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return token{}, &Error{Pos: start, Msg: fmt.Sprintf("%q is not a number", text)}
	}
	return token{kind: tokNumber, text: text, num: v, pos: start}, nil
}

// str reads a string literal quoted by q. Escapes: \' \" \\ \/ \b \f \n
// \r \t and \uXXXX.
func (l *lexer) str(start Pos, q rune) (token, error) {
	l.advance()
	var b strings.Builder
	for {
		r, n := l.peek()
		if n == 0 {
			return token{}, &Error{Pos: start, Msg: "string literal is not closed"}
		}
		l.advance()
		if r == q {
			return token{kind: tokString, text: b.String(), pos: start}, nil
		}
		if r != '\\' {
			b.WriteRune(r)
			continue
		}
		escPos := l.pos()
		e, n := l.peek()
		if n == 0 {
			return token{}, &Error{Pos: start, Msg: "string literal is not closed"}
		}
		l.advance()
		switch e {
		case '\'', '"', '\\', '/':
			b.WriteRune(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			if l.off+4 > len(l.src) {
				return token{}, &Error{Pos: escPos, Msg: "\\u needs 4 hexadecimal digits"}
			}
			v, err := strconv.ParseUint(l.src[l.off:l.off+4], 16, 32)
			if err != nil {
				return token{}, &Error{Pos: escPos, Msg: "\\u needs 4 hexadecimal digits"}
			}
			for range 4 {
				l.advance()
			}
			b.WriteRune(rune(v))
		default:
			return token{}, &Error{Pos: escPos, Msg: fmt.Sprintf("unknown escape \\%c in a string literal", e)}
		}
	}
}
