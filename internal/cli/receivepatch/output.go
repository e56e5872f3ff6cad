package receivepatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// Line is what --output json prints for each event, one per line.
type Line struct {
	Type    twinclient.EventType       `json:"type"`
	Version int64                      `json:"version"`
	Desired map[string]json.RawMessage `json:"desired"`
}

// timeFormat is RFC 3339 with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// printer writes events to stdout, each with a single Write so that lines
// never interleave.
type printer struct {
	out  io.Writer
	json bool
}

func (p *printer) print(ev twinclient.Event) error {
	var b []byte
	if p.json {
		desired := ev.Desired
		if desired == nil {
			desired = map[string]json.RawMessage{}
		}
		var err error
		if b, err = json.Marshal(Line{Type: ev.Type, Version: ev.Version, Desired: desired}); err != nil {
			return err
		}
		b = append(b, '\n')
	} else {
		b = text(ev)
	}
	_, err := p.out.Write(b)
	return err
}

// text renders an event for people:
//
//	2024-05-01T10:00:00.000Z patch $version 3
//	  telemetryInterval = 123
//	  mode removed
func text(ev twinclient.Event) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s $version %d", ev.Time.Format(timeFormat), ev.Type, ev.Version)
	switch ev.Type {
	case twinclient.EventTwin:
		b.WriteString(": current desired properties")
	case twinclient.EventResync:
		b.WriteString(": changes were missed (disconnected, or the twin was recreated); current desired properties")
	}
	b.WriteByte('\n')
	if len(ev.Desired) == 0 {
		b.WriteString("  (none)\n")
		return b.Bytes()
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Desired)) {
		v := cli.CompactJSON(ev.Desired[k])
		if v == "null" && ev.Type == twinclient.EventPatch {
			fmt.Fprintf(&b, "  %s removed\n", k)
			continue
		}
		fmt.Fprintf(&b, "  %s = %s\n", k, v)
	}
	return b.Bytes()
}
