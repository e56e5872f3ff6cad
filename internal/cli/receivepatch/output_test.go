package receivepatch

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

func TestPrinter(t *testing.T) {
	at := time.Date(2024, 5, 1, 10, 0, 0, 123e6, time.UTC)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name       string
		ev         twinclient.Event
		text, json string
	}{
		{
			name: "empty twin",
			ev:   twinclient.Event{Type: twinclient.EventTwin, Version: 1, Time: at},
			text: "2024-05-01T10:00:00.123Z twin $version 1: current desired properties\n  (none)\n",
			json: `{"type":"twin","version":1,"desired":{}}` + "\n",
		},
		{
			name: "patch with removal and nested value",
			ev: twinclient.Event{Type: twinclient.EventPatch, Version: 7, Time: at,
				Desired: map[string]json.RawMessage{"b": raw(`{ "x": [1, 2] }`), "a": raw(`null`), "c": raw(`"text"`)}},
			text: "2024-05-01T10:00:00.123Z patch $version 7\n  a removed\n  b = {\"x\":[1,2]}\n  c = \"text\"\n",
			json: `{"type":"patch","version":7,"desired":{"a":null,"b":{"x":[1,2]},"c":"text"}}` + "\n",
		},
		{
			name: "resync",
			ev: twinclient.Event{Type: twinclient.EventResync, Version: 9, Time: at,
				Desired: map[string]json.RawMessage{"n": raw(`3`)}},
			text: "2024-05-01T10:00:00.123Z resync $version 9: changes were missed (disconnected, or the twin was recreated); current desired properties\n  n = 3\n",
			json: `{"type":"resync","version":9,"desired":{"n":3}}` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, asJSON := range []bool{false, true} {
				var b bytes.Buffer
				p := &printer{out: &b, json: asJSON}
				if err := p.print(tt.ev); err != nil {
					t.Fatal(err)
				}
				want := tt.text
				if asJSON {
					want = tt.json
				}
				if got := b.String(); got != want {
					t.Errorf("print (json %v) =\n%q\nwant\n%q", asJSON, got, want)
				}
			}
		})
	}
}
