package query

import (
	"strings"
	"testing"
)

// FuzzParse: any input either parses (and then runs over a twin without
// panicking) or is refused with a positioned *Error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM devices",
		"SELECT * FROM devices.modules WHERE properties.reported.status = 'ok'",
		"SELECT TOP 3 deviceId, tags.a AS a FROM devices WHERE tags.a IN ['x', 1, null] AND NOT IS_DEFINED(tags.b)",
		"SELECT tags.t AS t, COUNT() AS n, AVG(version) AS v FROM devices GROUP BY tags.t",
		"SELECT * FROM devices WHERE (a + 1) * -2 % 3 >= 0x1F OR STARTSWITH(deviceId, \"d\\u0041\")",
		"SELECT * FROM devices WHERE tags['x-y'][0] <> 1.5e3",
		"SELECT * FROM devices ORDER BY deviceId",
	} {
		f.Add(s)
	}
	doc := []byte(sampleTwin)
	f.Fuzz(func(t *testing.T, src string) {
		q, err := Parse(src)
		if err != nil {
			e, ok := err.(*Error)
			if !ok || e.Pos.Line < 1 || e.Pos.Col < 1 || !strings.HasPrefix(e.Error(), "Line ") {
				t.Fatalf("Parse(%q) = %v: want a positioned *Error", src, err)
			}
			return
		}
		q.Matches(doc)
		m := &memScanner{keys: []Key{{DeviceID: "dev-1"}}, docs: map[Key]string{{DeviceID: "dev-1"}: sampleTwin}}
		if _, err := q.Run(m.scan, Cursor{}, 10); err != nil {
			t.Fatalf("Run(%q): %v", src, err)
		}
	})
}
