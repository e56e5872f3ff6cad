package entra

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/atomicfile"
)

// Files of the local tenant in a data directory.
const (
	directoryFile = "entra-principals.json"
	lockFile      = "entra-principals.lock"
	keyFile       = "entra-signing-key.pem"
)

// Principal is an app registration of the local tenant with its service
// principal and role assignments. Only a hash of its client secret is kept.
type Principal struct {
	Name         string    `json:"name"`
	ClientID     string    `json:"clientId"`
	ObjectID     string    `json:"objectId"`
	SecretSHA256 string    `json:"secretSha256"`
	Roles        []string  `json:"roles"`
	Created      time.Time `json:"created"`
}

// checkSecret reports whether secret is the principal's client secret.
func (p Principal) checkSecret(secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	want, err := hex.DecodeString(p.SecretSHA256)
	return err == nil && subtle.ConstantTimeCompare(sum[:], want) == 1
}

type directoryDoc struct {
	TenantID   string      `json:"tenantId"`
	Principals []Principal `json:"principals"`
}

func (d *directoryDoc) find(name string) int {
	for i, p := range d.Principals {
		if p.Name == name {
			return i
		}
	}
	return -1
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("principal name %q is not allowed (1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)", name)
	}
	return nil
}

// Tenant reads the data directory's tenant ID, creating the tenant when
// there is none yet.
func Tenant(dir string) (string, error) {
	var id string
	err := update(dir, func(d *directoryDoc) (bool, error) {
		id = d.TenantID
		return false, nil
	})
	return id, err
}

// Add registers a principal with the given roles and returns it with its
// client secret, which is not kept and cannot be read back.
func Add(dir, name string, roles []string) (p Principal, secret, tenantID string, err error) {
	if err := checkName(name); err != nil {
		return Principal{}, "", "", err
	}
	if roles, err = CanonicalRoles(roles); err != nil {
		return Principal{}, "", "", err
	}
	err = update(dir, func(d *directoryDoc) (bool, error) {
		if d.find(name) >= 0 {
			return false, fmt.Errorf("principal %q already exists (remove it first, or change its roles with set-roles)", name)
		}
		var err error
		p = Principal{Name: name, Roles: roles, Created: time.Now().UTC().Truncate(time.Second)}
		if p.ClientID, err = newGUID(); err != nil {
			return false, err
		}
		if p.ObjectID, err = newGUID(); err != nil {
			return false, err
		}
		if secret, err = newSecret(); err != nil {
			return false, err
		}
		sum := sha256.Sum256([]byte(secret))
		p.SecretSHA256 = hex.EncodeToString(sum[:])
		d.Principals = append(d.Principals, p)
		tenantID = d.TenantID
		return true, nil
	})
	if err != nil {
		return Principal{}, "", "", err
	}
	return p, secret, tenantID, nil
}

// List returns the tenant ID and its principals in the order they were added.
func List(dir string) (tenantID string, ps []Principal, err error) {
	err = update(dir, func(d *directoryDoc) (bool, error) {
		tenantID, ps = d.TenantID, d.Principals
		return false, nil
	})
	return tenantID, ps, err
}

// Remove deletes a principal: new tokens are refused at once, and tokens
// it already holds lose every permission.
func Remove(dir, name string) error {
	return update(dir, func(d *directoryDoc) (bool, error) {
		i := d.find(name)
		if i < 0 {
			return false, fmt.Errorf("no principal %q", name)
		}
		d.Principals = append(d.Principals[:i], d.Principals[i+1:]...)
		return true, nil
	})
}

// SetRoles replaces a principal's role assignments.
func SetRoles(dir, name string, roles []string) (Principal, error) {
	roles, err := CanonicalRoles(roles)
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	err = update(dir, func(d *directoryDoc) (bool, error) {
		i := d.find(name)
		if i < 0 {
			return false, fmt.Errorf("no principal %q", name)
		}
		d.Principals[i].Roles = roles
		p = d.Principals[i]
		return true, nil
	})
	return p, err
}

// update runs fn on the directory under an exclusive lock, creating the
// tenant on first use, and writes the result when fn says it changed.
func update(dir string, fn func(*directoryDoc) (bool, error)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock principals: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock principals: %w", err)
	}
	d, ok, err := readDirectory(dir)
	if err != nil {
		return err
	}
	changed := false
	if !ok {
		if d.TenantID, err = newGUID(); err != nil {
			return err
		}
		changed = true
	}
	c, err := fn(&d)
	if err != nil {
		return err
	}
	if !changed && !c {
		return nil
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("encode principals: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, directoryFile), append(b, '\n'), 0o600)
}

func readDirectory(dir string) (directoryDoc, bool, error) {
	path := filepath.Join(dir, directoryFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return directoryDoc{Principals: []Principal{}}, false, nil
	}
	if err != nil {
		return directoryDoc{}, false, fmt.Errorf("read principals: %w", err)
	}
	var d directoryDoc
	if err := json.Unmarshal(b, &d); err != nil || d.TenantID == "" {
		return directoryDoc{}, false, fmt.Errorf("read %s: not a principals file", path)
	}
	if d.Principals == nil {
		d.Principals = []Principal{}
	}
	return d, true, nil
}

// newGUID returns a random (version 4) GUID, the form of Entra ID's IDs.
func newGUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// newSecret returns a client secret: 32 random bytes, base64url.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate client secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
