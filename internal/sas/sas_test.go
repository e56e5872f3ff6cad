package sas

import (
	"bufio"
	"encoding/base64"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// vector is one row of testdata/vectors.tsv, computed with openssl by
// testdata/gen-vectors.sh.
type vector struct {
	name, key, keyName, resource string
	se                           int64
	sr, sig, token               string
}

// foreign reports whether the row's sr was encoded unlike this package
// encodes it, so only parsing and verification apply.
func (v vector) foreign() bool { return strings.HasPrefix(v.name, "foreign-") }

func loadVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) != 8 {
			t.Fatalf("vectors.tsv: %d columns in %q, want 8", len(c), line)
		}
		se, err := strconv.ParseInt(c[4], 10, 64)
		if err != nil {
			t.Fatalf("vectors.tsv: se %q: %v", c[4], err)
		}
		keyName := c[2]
		if keyName == "-" {
			keyName = ""
		}
		vs = append(vs, vector{c[0], c[1], keyName, c[3], se, c[5], c[6], c[7]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 5 {
		t.Fatalf("vectors.tsv has %d vectors, want at least 5", len(vs))
	}
	return vs
}

func decodeKey(t *testing.T, b64 string) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKnownAnswers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			key := decodeKey(t, v.key)
			se := strconv.FormatInt(v.se, 10)
			if got := Sign(key, v.sr, se); got != v.sig {
				t.Errorf("Sign(key, %q, %s) = %s, want %s", v.sr, se, got, v.sig)
			}
			if !v.foreign() {
				s, err := NewSigner(v.keyName, v.key)
				if err != nil {
					t.Fatalf("NewSigner: %v", err)
				}
				if got := s.TokenAt(v.resource, time.Unix(v.se, 0)); got != v.token {
					t.Errorf("TokenAt(%q, %d) =\n  %s\nwant\n  %s", v.resource, v.se, got, v.token)
				}
			}
			tok, err := ParseToken(v.token)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			want := Token{
				RawResource: v.sr, Resource: v.resource, Signature: decodeKey(t, v.sig),
				RawExpiry: se, Expiry: time.Unix(v.se, 0), KeyName: v.keyName,
			}
			if diff := cmp.Diff(want, tok); diff != "" {
				t.Errorf("ParseToken (-want +got):\n%s", diff)
			}
			if !tok.Verify(key) {
				t.Errorf("Verify with the signing key = false")
			}
			wrong := append([]byte(nil), key...)
			wrong[0] ^= 1
			if tok.Verify(wrong) {
				t.Errorf("Verify with a different key = true")
			}
			tampered := tok
			tampered.RawExpiry = strconv.FormatInt(v.se+1, 10)
			if tampered.Verify(key) {
				t.Errorf("Verify with a changed expiry = true")
			}
		})
	}
}

func TestResources(t *testing.T) {
	tests := []struct{ got, want string }{
		{ServiceResource("myhub.azure-devices.net"), "myhub.azure-devices.net"},
		{ServiceResource("localhost:8443"), "localhost:8443"},
		{DeviceResource("myhub.azure-devices.net", "myFirstDevice"), "myhub.azure-devices.net/devices/myFirstDevice"},
		{ModuleResource("myhub.azure-devices.net", "myFirstDevice", "myFirstModule"), "myhub.azure-devices.net/devices/myFirstDevice/modules/myFirstModule"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("resource = %q, want %q", tt.got, tt.want)
		}
	}
}

func TestTokenUsesClockAndTTL(t *testing.T) {
	vs := loadVectors(t)
	v := vs[0]
	s, err := NewSigner(v.keyName, v.key)
	if err != nil {
		t.Fatal(err)
	}
	// now + ttl lands on the vector's expiry; sub-second parts are dropped.
	now := time.Unix(v.se-3600, 900_000_000)
	tok, exp := s.WithClock(func() time.Time { return now }).Token(v.resource, time.Hour)
	if tok != v.token {
		t.Errorf("Token = %s, want %s", tok, v.token)
	}
	if !exp.Equal(time.Unix(v.se, 0)) {
		t.Errorf("expiry = %v, want %v", exp, time.Unix(v.se, 0))
	}
	// WithClock returns a copy: the original still reads the real clock.
	_, exp = s.Token(v.resource, time.Hour)
	if exp.Before(time.Now().Add(59 * time.Minute)) {
		t.Errorf("original signer's expiry %v is not an hour from the real now", exp)
	}
}

func TestNewSignerRejectsBadKeys(t *testing.T) {
	for _, key := range []string{"", "not base64!", "YWJj===", "c2VjcmV0"[:5]} {
		s, err := NewSigner("p", key)
		if err == nil || s != nil {
			t.Errorf("NewSigner(%q) = %v, %v; want an error", key, s, err)
			continue
		}
		if key != "" && strings.Contains(err.Error(), key) {
			t.Errorf("NewSigner(%q) error %q echoes the key", key, err)
		}
	}
}

func TestParseTokenOrderAndExtras(t *testing.T) {
	v := loadVectors(t)[0]
	sig := strings.TrimSuffix(strings.SplitN(v.token, "&sig=", 2)[1], "&se=1700000000&skn=iothubowner")
	tests := []string{
		Prefix + "sig=" + sig + "&se=1700000000&skn=iothubowner&sr=" + v.sr,
		Prefix + "skn=iothubowner&se=1700000000&sr=" + v.sr + "&sig=" + sig,
		v.token + "&extra=1",
	}
	key := decodeKey(t, v.key)
	for _, s := range tests {
		tok, err := ParseToken(s)
		if err != nil {
			t.Errorf("ParseToken(%q): %v", Redact(s), err)
			continue
		}
		if tok.KeyName != "iothubowner" || tok.RawResource != v.sr || !tok.Verify(key) {
			t.Errorf("ParseToken(%q) = skn %q sr %q verify %v", Redact(s), tok.KeyName, tok.RawResource, tok.Verify(key))
		}
	}
}

func TestParseTokenErrors(t *testing.T) {
	const sig = "hq6VfSlaeBku7m4NYgBeJ3g5RbX0dwIc18meUpqPzVw%3D"
	tests := []struct {
		in, want string
	}{
		{"", `token does not start with "SharedAccessSignature "`},
		{"sr=h&sig=" + sig + "&se=1", `token does not start with "SharedAccessSignature "`},
		{"sharedaccesssignature sr=h&sig=" + sig + "&se=1", `token does not start with "SharedAccessSignature "`},
		{Prefix + "sig=" + sig + "&se=1", "token has no sr"},
		{Prefix + "sr=&sig=" + sig + "&se=1", "token has no sr"},
		{Prefix + "sr=h&se=1", "token has no sig"},
		{Prefix + "sr=h&sig=&se=1", "token has no sig"},
		{Prefix + "sr=h&sig=" + sig, "token has no se"},
		{Prefix + "sr=h&sig=" + sig + "&se=soon", "token se is not a number of seconds"},
		{Prefix + "sr=h&sig=" + sig + "&se=1&se=2", `token member "se" appears twice`},
		{Prefix + "sr=h&sig=" + sig + "&se=1&skn", "token member 4 is not of the form name=value"},
		{Prefix + "sr=h&" + sig + "&se=1", "token member 2 is not of the form name=value"},
		{Prefix + "sr=h%zz&sig=" + sig + "&se=1", "token sr is not valid percent-encoding"},
		{Prefix + "sr=h&sig=%zz&se=1", "token sig is not valid percent-encoding"},
		{Prefix + "sr=h&sig=***&se=1", "token sig is not valid base64"},
		{Prefix + "sr=h&sig=" + sig + "&se=1&skn=%z", "token skn is not valid percent-encoding"},
	}
	for _, tt := range tests {
		_, err := ParseToken(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseToken(%q) error = %v, want %q", tt.in, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hq6VfSla") {
			t.Errorf("ParseToken(%q) error echoes the signature", tt.in)
		}
	}
}

func TestExpired(t *testing.T) {
	exp := time.Unix(1700000000, 0)
	tok := Token{Expiry: exp}
	tests := []struct {
		now  time.Time
		want bool
	}{
		{exp.Add(-time.Second), false},
		{exp.Add(-time.Nanosecond), false},
		{exp, true},
		{exp.Add(time.Hour), true},
	}
	for _, tt := range tests {
		if got := tok.Expired(tt.now); got != tt.want {
			t.Errorf("Expired(%v) with expiry %v = %v, want %v", tt.now, exp, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"no token here", "no token here"},
		{"SharedAccessSignature sr=h&sig=abc%2B%3D&se=1&skn=p", "SharedAccessSignature sr=h&sig=***&se=1&skn=p"},
		{"SharedAccessSignature sr=h&se=1&sig=abc", "SharedAccessSignature sr=h&se=1&sig=***"},
		{`Authorization: "SharedAccessSignature sig=abc" next`, `Authorization: "SharedAccessSignature sig=***" next`},
		{"a sig=1 b sig=2,c;sig=3", "a sig=*** b sig=***,c;sig=***"},
		{"sig=", "sig=***"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("SharedAccessSignature sr=myhub.azure-devices.net&sig=hq6VfSlaeBku7m4NYgBeJ3g5RbX0dwIc18meUpqPzVw%3D&se=1700000000&skn=iothubowner")
	f.Add("SharedAccessSignature sig=&se=&sr=")
	f.Add("SharedAccessSignature ")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if strings.Contains(err.Error(), "sig=") {
				t.Errorf("error %q quotes a signature member", err)
			}
			return
		}
		if tok.RawResource == "" || len(tok.Signature) == 0 || tok.RawExpiry == "" {
			t.Errorf("ParseToken(%q) accepted a token without sr, sig or se: %+v", s, tok)
		}
	})
}
