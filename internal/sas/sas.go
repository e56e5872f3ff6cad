// Package sas creates and checks IoT Hub shared access signature tokens:
//
//	SharedAccessSignature sr={urlencode(resource)}&sig={urlencode(signature)}&se={expiry}[&skn={policy}]
//
// where signature = base64(HMAC-SHA256(base64decode(key), urlencode(resource) + "\n" + expiry)).
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// ServiceResource is the scope of a token signed by a shared access policy.
func ServiceResource(host string) string { return host }

// DeviceResource is the scope of a device identity's token.
func DeviceResource(host, deviceID string) string { return host + "/devices/" + deviceID }

// ModuleResource is the scope of a module identity's token.
func ModuleResource(host, deviceID, moduleID string) string {
	return host + "/devices/" + deviceID + "/modules/" + moduleID
}

// Signer mints tokens with one key. KeyName is empty for identity keys and
// names the policy (skn) for shared access policy keys.
type Signer struct {
	KeyName string
	key     []byte
	now     func() time.Time
}

// NewSigner decodes a base64 key once. The error never contains the key.
func NewSigner(keyName, base64Key string) (*Signer, error) {
	key, err := base64.StdEncoding.DecodeString(base64Key)
	if err != nil || len(key) == 0 {
		return nil, errors.New("decode shared access key: not valid base64")
	}
	return &Signer{KeyName: keyName, key: key, now: time.Now}, nil
}

// WithClock returns a copy of s that reads the time from now (for tests).
func (s *Signer) WithClock(now func() time.Time) *Signer {
	c := *s
	c.now = now
	return &c
}

// Token returns a token for resource valid for ttl, and its expiry.
func (s *Signer) Token(resource string, ttl time.Duration) (string, time.Time) {
	exp := time.Unix(s.now().Add(ttl).Unix(), 0) // se has whole seconds
	return s.TokenAt(resource, exp), exp
}

// TokenAt returns a token for resource that expires at exp.
func (s *Signer) TokenAt(resource string, exp time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(exp.Unix(), 10)
	tok := Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(Sign(s.key, sr, se)) + "&se=" + se
	if s.KeyName != "" {
		tok += "&skn=" + url.QueryEscape(s.KeyName)
	}
	return tok
}

// Sign computes the base64 signature of an encoded resource and an expiry.
func Sign(key []byte, encodedResource, expiry string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(encodedResource + "\n" + expiry))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Token is a parsed token. RawResource is sr exactly as sent: the signature
// covers that string, whichever way the sender percent-encoded it.
type Token struct {
	RawResource string
	Resource    string // RawResource, percent-decoded
	Signature   []byte
	RawExpiry   string
	Expiry      time.Time
	KeyName     string
}

// ParseToken parses "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]" in any
// member order. Errors do not echo the signature.
func ParseToken(s string) (Token, error) {
	var t Token
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return t, errors.New("token does not start with \"SharedAccessSignature \"")
	}
	seen := map[string]bool{}
	for i, kv := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			// Not echoed: it may be a signature that lost its "sig=".
			return Token{}, fmt.Errorf("token member %d is not of the form name=value", i+1)
		}
		if seen[k] {
			return Token{}, fmt.Errorf("token member %q appears twice", k)
		}
		seen[k] = true
		switch k {
		case "sr":
			t.RawResource = v
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return Token{}, errors.New("token sr is not valid percent-encoding")
			}
			t.Resource = dec
		case "sig":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return Token{}, errors.New("token sig is not valid percent-encoding")
			}
			sig, err := base64.StdEncoding.DecodeString(dec)
			if err != nil {
				return Token{}, errors.New("token sig is not valid base64")
			}
			t.Signature = sig
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Token{}, errors.New("token se is not a number of seconds")
			}
			t.RawExpiry = v
			t.Expiry = time.Unix(n, 0)
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return Token{}, errors.New("token skn is not valid percent-encoding")
			}
			t.KeyName = dec
		default:
			// Unknown members are ignored, as the hub does.
		}
	}
	switch {
	case t.RawResource == "":
		return Token{}, errors.New("token has no sr")
	case len(t.Signature) == 0:
		return Token{}, errors.New("token has no sig")
	case t.RawExpiry == "":
		return Token{}, errors.New("token has no se")
	}
	return t, nil
}

// Verify reports whether the token was signed with key, in constant time.
func (t Token) Verify(key []byte) bool {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(t.RawResource + "\n" + t.RawExpiry))
	return hmac.Equal(m.Sum(nil), t.Signature)
}

// Expired reports whether the token's expiry has passed at now.
func (t Token) Expired(now time.Time) bool { return !now.Before(t.Expiry) }

// Redact replaces the value of every sig= member in s with "***", so that
// URLs, headers and error texts that carry a token can be logged.
func Redact(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "sig=")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+4])
		b.WriteString("***")
		s = s[i+4:]
		j := strings.IndexAny(s, "&\" ,;")
		if j < 0 {
			return b.String()
		}
		s = s[j:]
	}
}
