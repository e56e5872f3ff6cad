package hub

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Rights are the permissions of a shared access policy.
type Rights uint8

// Permissions as IoT Hub names them.
const (
	RegistryRead Rights = 1 << iota
	RegistryWrite
	ServiceConnect
	DeviceConnect
)

var rightNames = []struct {
	r    Rights
	name string
}{
	{RegistryRead, "RegistryRead"},
	{RegistryWrite, "RegistryWrite"},
	{ServiceConnect, "ServiceConnect"},
	{DeviceConnect, "DeviceConnect"},
}

// String lists the rights the way the Azure portal does
// ("RegistryRead, ServiceConnect").
func (r Rights) String() string {
	var names []string
	for _, n := range rightNames {
		if r&n.r != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// ParseRights reads the form String writes.
func ParseRights(s string) (Rights, error) {
	var r Rights
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		found := false
		for _, n := range rightNames {
			if strings.EqualFold(part, n.name) {
				r |= n.r
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown right %q (allowed: RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect)", part)
		}
	}
	return r, nil
}

// MarshalText implements encoding.TextMarshaler.
func (r Rights) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rights) UnmarshalText(b []byte) error {
	v, err := ParseRights(string(b))
	*r = v
	return err
}

// Policy is a shared access policy of the hub.
type Policy struct {
	KeyName      string `json:"keyName"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Rights       Rights `json:"rights"`
}

// The policies of a new hub.
const (
	PolicyOwner             = "iothubowner"
	PolicyService           = "service"
	PolicyDevice            = "device"
	PolicyRegistryRead      = "registryRead"
	PolicyRegistryReadWrite = "registryReadWrite"
)

// DefaultPolicies returns the policies of a new hub with fresh random keys.
func DefaultPolicies() ([]Policy, error) {
	defs := []struct {
		name   string
		rights Rights
	}{
		{PolicyOwner, RegistryRead | RegistryWrite | ServiceConnect | DeviceConnect},
		{PolicyService, ServiceConnect},
		{PolicyDevice, DeviceConnect},
		{PolicyRegistryRead, RegistryRead},
		{PolicyRegistryReadWrite, RegistryRead | RegistryWrite},
	}
	out := make([]Policy, 0, len(defs))
	for _, d := range defs {
		p := Policy{KeyName: d.name, Rights: d.rights}
		var err error
		if p.PrimaryKey, err = NewKey(); err != nil {
			return nil, err
		}
		if p.SecondaryKey, err = NewKey(); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// NewKey returns a fresh symmetric key: 32 random bytes, base64.
func NewKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Key sizes the hub accepts for identities, in decoded bytes.
const (
	minKeyBytes = 16
	maxKeyBytes = 64
)

func checkKey(field, k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return fmt.Errorf("%s is not valid base64", field)
	}
	if len(b) < minKeyBytes || len(b) > maxKeyBytes {
		return fmt.Errorf("%s is %d bytes long once decoded (allowed: %d to %d)", field, len(b), minKeyBytes, maxKeyBytes)
	}
	return nil
}
