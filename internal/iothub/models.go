// Package iothub holds IoT Hub's wire-level data: the JSON models of the
// service API (api-version 2021-04-12), error codes, and the rules the hub
// applies to identity IDs and twin documents. Clients and the emulator both
// use it; it knows nothing of either.
package iothub

import "encoding/json"

// APIVersion is the service API version every REST request carries.
const APIVersion = "2021-04-12"

// Authentication types.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthNone                 = "none"
)

// Connection states and device statuses.
const (
	Connected    = "Connected"
	Disconnected = "Disconnected"
	Enabled      = "enabled"
	Disabled     = "disabled"
)

// SymmetricKey holds base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint holds certificate thumbprints.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// AuthenticationMechanism is how an identity authenticates.
type AuthenticationMechanism struct {
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
	Type           string          `json:"type,omitempty"`
}

// DeviceCapabilities are a device's capabilities.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// Device is a device identity.
type Device struct {
	DeviceID                   string                   `json:"deviceId"`
	GenerationID               string                   `json:"generationId,omitempty"`
	ETag                       string                   `json:"etag,omitempty"`
	ConnectionState            string                   `json:"connectionState,omitempty"`
	Status                     string                   `json:"status,omitempty"`
	StatusReason               *string                  `json:"statusReason"`
	ConnectionStateUpdatedTime string                   `json:"connectionStateUpdatedTime,omitempty"`
	StatusUpdatedTime          string                   `json:"statusUpdatedTime,omitempty"`
	LastActivityTime           string                   `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int32                    `json:"cloudToDeviceMessageCount"`
	Authentication             *AuthenticationMechanism `json:"authentication,omitempty"`
	Capabilities               *DeviceCapabilities      `json:"capabilities,omitempty"`
	DeviceScope                string                   `json:"deviceScope,omitempty"`
	ParentScopes               []string                 `json:"parentScopes,omitempty"`
}

// Module is a module identity.
type Module struct {
	ModuleID                   string                   `json:"moduleId"`
	ManagedBy                  *string                  `json:"managedBy"`
	DeviceID                   string                   `json:"deviceId"`
	GenerationID               string                   `json:"generationId,omitempty"`
	ETag                       string                   `json:"etag,omitempty"`
	ConnectionState            string                   `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime string                   `json:"connectionStateUpdatedTime,omitempty"`
	LastActivityTime           string                   `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int32                    `json:"cloudToDeviceMessageCount"`
	Authentication             *AuthenticationMechanism `json:"authentication,omitempty"`
}

// TwinProperties holds a twin's desired and reported documents. Each
// document is a JSON object that includes the hub's "$version" and
// "$metadata" members.
type TwinProperties struct {
	Desired  map[string]json.RawMessage `json:"desired,omitempty"`
	Reported map[string]json.RawMessage `json:"reported,omitempty"`
}

// Twin is a device or module twin.
type Twin struct {
	DeviceID                  string                     `json:"deviceId,omitempty"`
	ModuleID                  string                     `json:"moduleId,omitempty"`
	ETag                      string                     `json:"etag,omitempty"`
	DeviceETag                string                     `json:"deviceEtag,omitempty"`
	Status                    string                     `json:"status,omitempty"`
	StatusReason              *string                    `json:"statusReason,omitempty"`
	StatusUpdateTime          string                     `json:"statusUpdateTime,omitempty"`
	ConnectionState           string                     `json:"connectionState,omitempty"`
	LastActivityTime          string                     `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount int32                      `json:"cloudToDeviceMessageCount,omitempty"`
	AuthenticationType        string                     `json:"authenticationType,omitempty"`
	X509Thumbprint            *X509Thumbprint            `json:"x509Thumbprint,omitempty"`
	Capabilities              *DeviceCapabilities        `json:"capabilities,omitempty"`
	Version                   int64                      `json:"version,omitempty"`
	Tags                      map[string]json.RawMessage `json:"tags,omitempty"`
	Properties                *TwinProperties            `json:"properties,omitempty"`
	DeviceScope               string                     `json:"deviceScope,omitempty"`
	ParentScopes              []string                   `json:"parentScopes,omitempty"`
}

// DocVersion returns the "$version" member of a desired or reported
// document, or 0 when it has none.
func DocVersion(doc map[string]json.RawMessage) int64 {
	var v int64
	if raw, ok := doc["$version"]; ok {
		_ = json.Unmarshal(raw, &v)
	}
	return v
}
