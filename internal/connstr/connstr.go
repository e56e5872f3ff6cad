// Package connstr parses and formats IoT Hub connection strings: the service
// form (HostName;SharedAccessKeyName;SharedAccessKey), the device form
// (HostName;DeviceId;SharedAccessKey) and the module form (+ModuleId), with
// the optional GatewayHostName and x509=true members.
//
// A port in HostName ("HostName=localhost:8443") is accepted as a local
// extension for the emulator; real hub names never carry one.
package connstr

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// Kind says which identity a connection string authenticates.
type Kind int

const (
	// Service is a shared access policy of the hub.
	Service Kind = iota + 1
	// Device is a device identity.
	Device
	// Module is a module identity on a device.
	Module
)

func (k Kind) String() string {
	switch k {
	case Service:
		return "service"
	case Device:
		return "device"
	case Module:
		return "module"
	}
	return "unknown"
}

// Field names as they appear in connection strings.
const (
	FieldHostName            = "HostName"
	FieldSharedAccessKeyName = "SharedAccessKeyName"
	FieldSharedAccessKey     = "SharedAccessKey"
	FieldDeviceID            = "DeviceId"
	FieldModuleID            = "ModuleId"
	FieldGatewayHostName     = "GatewayHostName"
	FieldX509                = "x509"
)

var knownFields = []string{
	FieldHostName, FieldSharedAccessKeyName, FieldSharedAccessKey,
	FieldDeviceID, FieldModuleID, FieldGatewayHostName, FieldX509,
}

// ConnectionString is a parsed connection string. Its String and LogValue
// methods redact the key, so it is safe to print or log.
type ConnectionString struct {
	HostName            string
	SharedAccessKeyName string
	SharedAccessKey     string // base64, as written
	DeviceID            string
	ModuleID            string
	GatewayHostName     string
	X509                bool
}

// Error is a parse error. It names the field and never contains the key.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "connection string: " + e.Reason
	}
	return fmt.Sprintf("connection string: %s: %s", e.Field, e.Reason)
}

// Parse parses a connection string. Field names are matched exactly except
// x509, which is case-insensitive as in Microsoft's SDKs. A trailing ';' and
// surrounding white space are tolerated.
func Parse(s string) (ConnectionString, error) {
	var cs ConnectionString
	s = strings.TrimSpace(s)
	if s == "" {
		return cs, &Error{Reason: "empty"}
	}
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ";") {
		if part == "" && i == strings.Count(s, ";") {
			continue // trailing separator
		}
		name, value, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return ConnectionString{}, &Error{Reason: fmt.Sprintf("member %d is not of the form Name=value", i+1)}
		}
		canonical := canonicalField(name)
		if canonical == "" {
			allowed := "unknown field (allowed: " + strings.Join(knownFields, ", ") + ")"
			if !looksLikeFieldName(name) {
				// Probably a key pasted on its own: never echo it.
				return ConnectionString{}, &Error{Reason: fmt.Sprintf("member %d: %s", i+1, allowed)}
			}
			return ConnectionString{}, &Error{Field: name, Reason: allowed}
		}
		if seen[canonical] {
			return ConnectionString{}, &Error{Field: canonical, Reason: "duplicate field"}
		}
		seen[canonical] = true
		if value == "" {
			return ConnectionString{}, &Error{Field: canonical, Reason: "empty value"}
		}
		switch canonical {
		case FieldHostName:
			cs.HostName = value
		case FieldSharedAccessKeyName:
			cs.SharedAccessKeyName = value
		case FieldSharedAccessKey:
			cs.SharedAccessKey = value
		case FieldDeviceID:
			cs.DeviceID = value
		case FieldModuleID:
			cs.ModuleID = value
		case FieldGatewayHostName:
			cs.GatewayHostName = value
		case FieldX509:
			b, err := strconv.ParseBool(value)
			if err != nil {
				return ConnectionString{}, &Error{Field: canonical, Reason: "must be true or false"}
			}
			cs.X509 = b
		}
	}
	if err := cs.Validate(); err != nil {
		return ConnectionString{}, err
	}
	return cs, nil
}

// looksLikeFieldName reports whether an unknown name is safe to echo: short
// and alphanumeric. Any base64 key of 16 bytes or more is longer, so a key
// written without its "SharedAccessKey=" is not repeated in errors.
func looksLikeFieldName(name string) bool {
	if len(name) > 20 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func canonicalField(name string) string {
	for _, f := range knownFields {
		if name == f || (f == FieldX509 && strings.EqualFold(name, f)) {
			return f
		}
	}
	return ""
}

// Validate checks that the members form one of the known shapes.
func (c ConnectionString) Validate() error {
	if c.HostName == "" {
		return &Error{Field: FieldHostName, Reason: "missing"}
	}
	if err := checkHost(c.HostName); err != nil {
		return &Error{Field: FieldHostName, Reason: err.Error()}
	}
	if c.GatewayHostName != "" {
		if err := checkHost(c.GatewayHostName); err != nil {
			return &Error{Field: FieldGatewayHostName, Reason: err.Error()}
		}
	}
	if c.ModuleID != "" && c.DeviceID == "" {
		return &Error{Field: FieldDeviceID, Reason: "missing (required with ModuleId)"}
	}
	if c.SharedAccessKeyName != "" && c.DeviceID != "" {
		return &Error{Field: FieldSharedAccessKeyName, Reason: "not allowed with DeviceId (a connection string is either a policy's or an identity's)"}
	}
	if c.DeviceID == "" && c.SharedAccessKeyName == "" {
		return &Error{Reason: "missing SharedAccessKeyName (service) or DeviceId (device or module)"}
	}
	if c.X509 {
		if c.DeviceID == "" {
			return &Error{Field: FieldX509, Reason: "only allowed with DeviceId"}
		}
		if c.SharedAccessKey != "" {
			return &Error{Field: FieldSharedAccessKey, Reason: "not allowed with x509=true"}
		}
		return nil
	}
	if c.SharedAccessKey == "" {
		return &Error{Field: FieldSharedAccessKey, Reason: "missing"}
	}
	if _, err := base64.StdEncoding.DecodeString(c.SharedAccessKey); err != nil {
		return &Error{Field: FieldSharedAccessKey, Reason: "not valid base64"}
	}
	return nil
}

// checkHost accepts a DNS name or IP literal with an optional port. Its
// errors never quote the value: a missing ';' can pull the next member,
// key included, into it.
func checkHost(h string) error {
	host := h
	if strings.Contains(h, ":") {
		hp, port, err := net.SplitHostPort(h)
		if err != nil {
			if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
				return nil
			}
			return fmt.Errorf("not of the form host or host:port")
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port is not a number from 1 to 65535")
		}
		host = hp
	}
	if host == "" {
		return fmt.Errorf("empty host name")
	}
	for i, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':') {
			return fmt.Errorf("character %q at position %d is not allowed (allowed: letters, digits, '-', '.')", r, i+1)
		}
	}
	return nil
}

// Kind reports which identity the connection string is for.
func (c ConnectionString) Kind() Kind {
	switch {
	case c.ModuleID != "":
		return Module
	case c.DeviceID != "":
		return Device
	default:
		return Service
	}
}

// Key returns the decoded shared access key.
func (c ConnectionString) Key() ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(c.SharedAccessKey)
	if err != nil {
		return nil, &Error{Field: FieldSharedAccessKey, Reason: "not valid base64"}
	}
	return k, nil
}

// Host returns HostName without a port: the name a token's scope and an MQTT
// username carry.
func (c ConnectionString) Host() string { return stripPort(c.HostName) }

// Port returns the port written in HostName, or "" when there is none.
func (c ConnectionString) Port() string {
	if _, p, err := net.SplitHostPort(c.HostName); err == nil {
		return p
	}
	return ""
}

func stripPort(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// Format returns the connection string with its key, in the member order the
// Azure portal uses. Only call it to show a connection string to its owner.
func (c ConnectionString) Format() string { return c.format(c.SharedAccessKey) }

// String returns the connection string with the key redacted.
func (c ConnectionString) String() string {
	k := ""
	if c.SharedAccessKey != "" {
		k = "***"
	}
	return c.format(k)
}

// LogValue redacts the key in structured logs.
func (c ConnectionString) LogValue() slog.Value { return slog.StringValue(c.String()) }

func (c ConnectionString) format(key string) string {
	var b strings.Builder
	add := func(name, value string) {
		if value == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
	}
	add(FieldHostName, c.HostName)
	add(FieldDeviceID, c.DeviceID)
	add(FieldModuleID, c.ModuleID)
	add(FieldSharedAccessKeyName, c.SharedAccessKeyName)
	add(FieldSharedAccessKey, key)
	add(FieldGatewayHostName, c.GatewayHostName)
	if c.X509 {
		add(FieldX509, "true")
	}
	return b.String()
}
