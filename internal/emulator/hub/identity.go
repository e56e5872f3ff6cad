// Package hub is the emulator's IoT Hub core: identities, keys, twins and
// their versions, shared access policies and token checks, on a durable
// store. The REST API and the MQTT gateway are front ends to it.
package hub

// IdentityRef names a device (ModuleID empty) or a module.
type IdentityRef struct {
	DeviceID string
	ModuleID string
}

// IsModule reports whether the reference names a module.
func (r IdentityRef) IsModule() bool { return r.ModuleID != "" }

func (r IdentityRef) String() string {
	if r.ModuleID == "" {
		return r.DeviceID
	}
	return r.DeviceID + "/" + r.ModuleID
}

// DesiredPatch is a committed change of an identity's desired properties.
// Body is the JSON pushed to the identity over MQTT: the patch with
// "$version": Version inside it (null for removed members).
type DesiredPatch struct {
	Identity IdentityRef
	Version  int64
	Body     []byte
}

// Revocation is a committed change after which an identity may no longer
// connect: it was deleted (a device's deletion revokes its modules too),
// or its device was disabled (which revokes the device and its modules).
type Revocation struct {
	Identity IdentityRef
	Deleted  bool // false: its device was disabled
}

// TwinChange is a committed change of one section of a twin: "desired"
// and "reported" with that section's new $version, "tags" with the twin's.
// Patch is the JSON of what changed: the patch with its "$version" (null
// for removed members) for properties, the whole new document for tags.
type TwinChange struct {
	Identity IdentityRef
	Section  string
	Version  int64
	Patch    []byte
}

// RegistryChange is a committed change of the registry: an identity was
// "created", "updated" or "deleted" (a device's deletion lists its modules
// too).
type RegistryChange struct {
	Identity  IdentityRef
	Operation string
}

// Events are the callbacks of a subscription to committed changes; any
// may be nil. They run on the store's writer goroutine once the change is
// durable, in commit order, and must not block.
type Events struct {
	Desired  func(DesiredPatch)
	Revoked  func(Revocation)
	Twin     func(TwinChange)
	Registry func(RegistryChange)
}
