package emulator

import (
	"errors"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
)

// methodEvents feeds every finished direct method call to bus: name,
// outcome and duration, never a payload.
func methodEvents(bus *events.Bus) func(methods.Call) {
	return func(c methods.Call) {
		info := &events.MethodCall{Name: c.Method, Status: c.Status,
			DurationMS: float64(c.Duration.Microseconds()) / 1000}
		var me *methods.Error
		switch {
		case errors.As(c.Err, &me):
			info.Status, info.Error = me.Code.Status(), me.Code.Name
		case c.Err != nil:
			info.Error = "the caller went away"
		}
		bus.Publish(events.Event{Time: c.Start.Add(c.Duration), Kind: events.Method,
			DeviceID: c.Target.DeviceID, ModuleID: c.Target.ModuleID, Method: info})
	}
}
