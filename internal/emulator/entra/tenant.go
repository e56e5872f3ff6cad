// Package entra is the emulator's local Microsoft Entra ID tenant: app
// registrations with client secrets and IoT Hub role assignments kept in the
// data directory, an OpenID Connect issuer with the endpoints MSAL and
// azidentity use (metadata, keys, client-credentials token endpoint), and the
// check of the RS256 access tokens it issues.
package entra

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audience is IoT Hub's resource: tokens for it are requested with scope
// Audience + "/.default".
const Audience = "https://iothubs.azure.net"

// TokenLifetime is how long issued tokens last (Entra ID's default is
// between 60 and 90 minutes).
const TokenLifetime = time.Hour

// clockSkew is the leeway for exp and nbf, the default of Microsoft's
// token validation.
const clockSkew = 5 * time.Minute

// Issuer serves the local tenant of one data directory. Principals and
// roles are re-read whenever the file changes, so `iothub-emulator principal`
// takes effect at once, while the emulator runs.
type Issuer struct {
	dir       string
	authority string // https://host[:port], no trailing slash
	tenantID  string
	key       *signingKey
	now       func() time.Time

	mu     sync.Mutex
	stamp  fileStamp
	loaded directoryDoc
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// Open prepares the tenant of dir (tenant ID and signing key made on first
// use) for an authority at https://hostPort. now nil means time.Now.
func Open(dir, hostPort string, now func() time.Time) (*Issuer, error) {
	if now == nil {
		now = time.Now
	}
	tenantID, err := Tenant(dir)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(dir)
	if err != nil {
		return nil, err
	}
	is := &Issuer{dir: dir, authority: "https://" + hostPort, tenantID: tenantID, key: key, now: now}
	if _, err := is.directory(); err != nil {
		return nil, err
	}
	return is, nil
}

// TenantID returns the tenant's ID (AZURE_TENANT_ID).
func (is *Issuer) TenantID() string { return is.tenantID }

// AuthorityHost returns AZURE_AUTHORITY_HOST for this tenant.
func (is *Issuer) AuthorityHost() string { return is.authority + "/" }

// IssuerURL is the iss of the tenant's tokens and of its OpenID metadata.
func (is *Issuer) IssuerURL() string { return is.authority + "/" + is.tenantID + "/v2.0" }

// directory returns the principals file as it is now, re-reading it only
// when it changed.
func (is *Issuer) directory() (directoryDoc, error) {
	path := filepath.Join(is.dir, directoryFile)
	fi, err := os.Stat(path)
	if err != nil {
		return directoryDoc{}, fmt.Errorf("read principals: %w", err)
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
	is.mu.Lock()
	defer is.mu.Unlock()
	if st == is.stamp {
		return is.loaded, nil
	}
	d, ok, err := readDirectory(is.dir)
	if err != nil {
		return directoryDoc{}, err
	}
	if !ok || !strings.EqualFold(d.TenantID, is.tenantID) {
		return directoryDoc{}, fmt.Errorf("read principals: %s no longer holds tenant %s", path, is.tenantID)
	}
	is.stamp, is.loaded = st, d
	return d, nil
}

func (is *Issuer) principalByClientID(id string) (Principal, bool, error) {
	d, err := is.directory()
	if err != nil {
		return Principal{}, false, err
	}
	for _, p := range d.Principals {
		if strings.EqualFold(p.ClientID, id) {
			return p, true, nil
		}
	}
	return Principal{}, false, nil
}

// Caller is who a valid access token speaks for. Known is false when the
// principal was removed after the token was issued: the token is genuine
// but no role is assigned to it any more.
type Caller struct {
	ObjectID string
	Known    bool
	Roles    []string
}

// claims are the claims of the tenant's access tokens.
type claims struct {
	jwt.RegisteredClaims
	TenantID string `json:"tid"`
	ObjectID string `json:"oid"`
	AppID    string `json:"azp"`
	IDType   string `json:"idtyp,omitempty"`
	Version  string `json:"ver"`
}

// mintClaims writes aud as one string, as Entra ID does (claims would
// write an array).
type mintClaims struct {
	claims
	Aud string `json:"aud"`
}

// mint signs an access token for p.
func (is *Issuer) mint(p Principal) (string, time.Time, error) {
	now := is.now().Truncate(time.Second)
	exp := now.Add(TokenLifetime)
	jti, err := newGUID()
	if err != nil {
		return "", time.Time{}, err
	}
	c := mintClaims{Aud: Audience, claims: claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    is.IssuerURL(),
			Subject:   p.ObjectID,
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        jti,
		},
		TenantID: is.tenantID,
		ObjectID: p.ObjectID,
		AppID:    p.ClientID,
		IDType:   "app",
		Version:  "2.0",
	}}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = is.key.kid
	s, err := tok.SignedString(is.key.priv)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return s, exp, nil
}

// ErrInvalidToken wraps every reason a bearer token is refused. The text
// says what was wrong and never contains the token.
var ErrInvalidToken = errors.New("invalid bearer token")

// Authenticate checks a bearer token (without the "Bearer " prefix): RS256
// signature by the tenant's key, issuer, audience, expiry and not-before
// (with five minutes of leeway) and tenant, and returns whom it speaks for.
func (is *Issuer) Authenticate(token string) (Caller, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != is.key.kid {
			return nil, fmt.Errorf("signed with unknown key %q", kid)
		}
		return &is.key.priv.PublicKey, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(is.IssuerURL()),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(clockSkew),
		jwt.WithTimeFunc(is.now),
	)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !strings.EqualFold(c.TenantID, is.tenantID) {
		return Caller{}, fmt.Errorf("%w: token is for tenant %q, not %s", ErrInvalidToken, c.TenantID, is.tenantID)
	}
	if c.ObjectID == "" {
		return Caller{}, fmt.Errorf("%w: token has no oid claim", ErrInvalidToken)
	}
	d, err := is.directory()
	if err != nil {
		return Caller{}, err
	}
	caller := Caller{ObjectID: c.ObjectID}
	for _, p := range d.Principals {
		if strings.EqualFold(p.ObjectID, c.ObjectID) {
			caller.Known, caller.Roles = true, p.Roles
		}
	}
	return caller, nil
}

// Allows reports whether the caller's roles grant a data action.
func (c Caller) Allows(action string) bool { return c.Known && Grants(c.Roles, action) }
