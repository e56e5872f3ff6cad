package query

import (
	"bytes"
	"encoding/json"
	"strings"
)

// rawDoc is a twin as JSON text. Paths are looked up in the text itself,
// decoding only the value found: a query reads a few members of each of
// thousands of twins, and decoding whole twins would cost most of its
// time.
type rawDoc []byte

// lookup follows a path: undefined where it leads nowhere (or the text is
// not JSON). name is the last member's name as the document spells it.
func (d rawDoc) lookup(segs []any) (v any, name string) {
	b := []byte(d)
	for _, s := range segs {
		var ok bool
		switch seg := s.(type) {
		case string:
			if b, name, ok = memberValue(b, seg); !ok {
				return undefined, ""
			}
		case float64:
			if b, ok = elementValue(b, int(seg)); !ok {
				return undefined, ""
			}
			name = ""
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return undefined, ""
	}
	return v, name
}

// memberValue returns the text of member key of the object b: the exact
// name, else the first that matches ignoring case.
func memberValue(b []byte, key string) (val []byte, name string, ok bool) {
	var folded []byte
	foldedName := ""
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, "", false
	}
	i = skipSpace(b, i+1)
	for i < len(b) && b[i] != '}' {
		end := skipString(b, i)
		if end < 0 {
			return nil, "", false
		}
		k := b[i:end]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, "", false
		}
		start := skipSpace(b, i+1)
		stop := skipValue(b, start)
		if stop < 0 {
			return nil, "", false
		}
		var ks string
		if bytes.IndexByte(k, '\\') < 0 {
			ks = string(k[1 : len(k)-1])
		} else if json.Unmarshal(k, &ks) != nil {
			return nil, "", false
		}
		if ks == key {
			return b[start:stop], ks, true
		}
		if folded == nil && strings.EqualFold(ks, key) {
			folded, foldedName = b[start:stop], ks
		}
		i = skipSpace(b, stop)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return folded, foldedName, folded != nil
}

// elementValue returns the text of element n of the array b.
func elementValue(b []byte, n int) ([]byte, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	for k := 0; i < len(b) && b[i] != ']'; k++ {
		stop := skipValue(b, i)
		if stop < 0 {
			return nil, false
		}
		if k == n {
			return b[i:stop], true
		}
		i = skipSpace(b, stop)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return nil, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the end of the string starting at i, or -1.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the end of the JSON value starting at i, or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end := skipString(b, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	start := i
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	if i == start {
		return -1
	}
	return i
}
