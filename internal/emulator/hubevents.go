package emulator

import (
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// hubEvents feeds the hub's committed twin and registry changes to bus.
func hubEvents(bus *events.Bus) hub.Events {
	return hub.Events{
		Twin: func(c hub.TwinChange) {
			bus.Publish(events.Event{Kind: events.Twin, DeviceID: c.Identity.DeviceID, ModuleID: c.Identity.ModuleID,
				Twin: &events.TwinChange{Section: c.Section, Version: c.Version, Patch: c.Patch}})
		},
		Registry: func(c hub.RegistryChange) {
			bus.Publish(events.Event{Kind: events.Registry, DeviceID: c.Identity.DeviceID, ModuleID: c.Identity.ModuleID,
				Registry: &events.RegistryChange{Operation: c.Operation}})
		},
	}
}
