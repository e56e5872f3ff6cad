package query

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// Tokens seals cursors into opaque continuation tokens, bound to the
// query text and to this process: a token that was altered, made up,
// issued for another query or by an earlier run is refused.
type Tokens struct {
	key []byte
}

// NewTokens returns a sealer with a fresh random key.
func NewTokens() *Tokens {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand crashes the program instead)
	return &Tokens{key: key}
}

// ErrBadToken is returned for a continuation token this hub did not issue
// for the query.
var ErrBadToken = errors.New("the continuation token was not issued by this hub for this query")

var b64 = base64.RawURLEncoding

// Encode seals c for query.
func (t *Tokens) Encode(query string, c Cursor) string {
	payload, err := json.Marshal(c)
	if err != nil {
		panic("query: encode cursor: " + err.Error()) // plain data
	}
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(t.mac(query, payload))
}

// Decode opens a token sealed for query.
func (t *Tokens) Decode(query, token string) (Cursor, error) {
	var c Cursor
	p, m, ok := strings.Cut(token, ".")
	if !ok {
		return c, ErrBadToken
	}
	payload, err1 := b64.DecodeString(p)
	mac, err2 := b64.DecodeString(m)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, t.mac(query, payload)) {
		return c, ErrBadToken
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, ErrBadToken
	}
	return c, nil
}

func (t *Tokens) mac(query string, payload []byte) []byte {
	h := hmac.New(sha256.New, t.key)
	h.Write([]byte(query))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)[:16]
}
