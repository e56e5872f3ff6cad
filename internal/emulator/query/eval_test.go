package query

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const sampleTwin = `{
  "deviceId": "dev-1", "moduleId": "mod-1", "etag": "AAAAAAAAAAI=", "status": "enabled",
  "connectionState": "Disconnected", "version": 4,
  "tags": {"location": {"region": "US", "plant": "Redmond43"}, "floor": 3, "flag": true, "none": null,
           "list": [1, 2, 3], "name-with-dash": "x", "Mixed": "case"},
  "properties": {
    "desired": {"telemetryConfig": {"sendFrequencyInSecs": 300}, "$version": 4},
    "reported": {"connectivity": {"type": "cellular"}, "temp": 21.5, "status": "ok", "$version": 7}
  }
}`

// Conditions over one twin, following the guide's typing rules.
func TestWhere(t *testing.T) {
	doc := []byte(sampleTwin)
	for _, tc := range []struct {
		where string
		want  bool
	}{
		// comparisons of each primitive type
		{"deviceId = 'dev-1'", true},
		{"deviceId = \"dev-1\"", true},
		{"deviceId != 'dev-2'", true},
		{"deviceId <> 'dev-1'", false},
		{"moduleId = 'mod-1'", true},
		{"tags.floor = 3", true},
		{"tags.floor = 3.0", true},
		{"tags.floor > 2 AND tags.floor < 4 AND tags.floor >= 3 AND tags.floor <= 3", true},
		{"tags.flag = true", true},
		{"tags.none = null", true},
		{"properties.reported.temp > 21", true},
		{"properties.desired.$version = 4", true},
		{"properties.reported.$version = 7", true},
		{"version = 4", true},
		{"status = 'enabled'", true},
		{"connectionState = 'Disconnected'", true},
		{"'b' > 'a'", true},
		{"false < true", true},
		// only between the same primitive type
		{"tags.floor = '3'", false},
		{"tags.floor != '3'", false},
		{"tags.flag = 1", false},
		{"tags.none != 1", false},
		{"tags.location = tags.location", false},
		{"tags.list = tags.list", false},
		// undefined matches nothing
		{"tags.missing = 1", false},
		{"tags.missing != 1", false},
		{"NOT (tags.missing = 1)", false},
		{"tags.missing = undefined", false},
		{"tags.missing.deeper = 1", false},
		{"deviceId.sub = 1", false},
		// logic with undefined
		{"tags.missing = 1 OR deviceId = 'dev-1'", true},
		{"tags.missing = 1 AND deviceId = 'dev-1'", false},
		{"NOT (tags.missing = 1 AND deviceId = 'dev-2')", true},
		{"NOT deviceId = 'dev-2'", true},
		{"tags.flag", true},
		{"tags.floor", false},
		// IN and NIN
		{"tags.location.region IN ['EU', 'US']", true},
		{"tags.location.region IN ['EU']", false},
		{"tags.location.region NIN ['EU']", true},
		{"tags.location.region NIN ['US']", false},
		{"tags.missing NIN ['US']", false},
		{"tags.floor IN ['3']", false},
		{"tags.floor IN [1, 3]", true},
		{"deviceId IN []", false},
		// arithmetic and parentheses
		{"tags.floor + 1 = 4", true},
		{"tags.floor * 2 - 1 = 5", true},
		{"(tags.floor + 1) * 2 = 8", true},
		{"tags.floor + 1 * 2 = 5", true},
		{"tags.floor / 2 = 1.5", true},
		{"tags.floor % 2 = 1", true},
		{"-tags.floor = -3", true},
		{"tags.floor / 0 = 1", false},
		{"deviceId + 1 = 1", false},
		{"0x10 = 16", true},
		// functions
		{"IS_DEFINED(tags.location)", true},
		{"IS_DEFINED(tags.none)", true},
		{"IS_DEFINED(tags.missing)", false},
		{"NOT IS_DEFINED(tags.missing)", true},
		{"IS_NULL(tags.none)", true},
		{"IS_NULL(tags.missing)", false},
		{"IS_BOOL(tags.flag) AND IS_NUMBER(tags.floor) AND IS_STRING(deviceId)", true},
		{"IS_OBJECT(tags.location) AND IS_ARRAY(tags.list) AND IS_PRIMITIVE(tags.floor)", true},
		{"IS_PRIMITIVE(tags.location)", false},
		{"STARTSWITH(deviceId, 'dev')", true},
		{"STARTS_WITH(deviceId, 'mod')", false},
		{"ENDSWITH(deviceId, '-1') AND ENDS_WITH(moduleId, '-1')", true},
		{"CONTAINS(tags.location.plant, 'mond')", true},
		{"STARTSWITH(tags.floor, '3')", false},
		{"LENGTH(deviceId) = 5", true},
		{"LOWER(tags.location.region) = 'us' AND UPPER('us') = 'US'", true},
		{"CONCAT(deviceId, '/', moduleId) = 'dev-1/mod-1'", true},
		{"SUBSTRING(deviceId, 1, 2) = 'ev' AND SUBSTRING(deviceId, 4) = '1'", true},
		{"INDEX_OF(deviceId, '-') = 3 AND INDEX_OF(deviceId, 'z') = -1", true},
		{"AS_NUMBER('12') = 12 AND IS_DEFINED(AS_NUMBER('x')) = false", true},
		{"ABS(-2) = 2 AND FLOOR(1.5) = 1 AND CEILING(1.5) = 2 AND SIGN(-3) = -1 AND SQUARE(3) = 9 AND SQRT(9) = 3 AND POWER(2, 3) = 8 AND EXP(0) = 1", true},
		// paths
		{"properties.reported.connectivity.type = 'cellular'", true},
		{"tags['name-with-dash'] = 'x'", true},
		{"tags.list[1] = 2", true},
		{"tags.list[5] = 2", false},
		{"Tags.Location.Region = 'US'", true},
		{"tags.mixed = 'case'", true},
	} {
		q, err := Parse("SELECT * FROM devices WHERE " + tc.where)
		if err != nil {
			t.Errorf("WHERE %s: %v", tc.where, err)
			continue
		}
		if got := q.Matches(doc); got != tc.want {
			t.Errorf("WHERE %s = %v, want %v", tc.where, got, tc.want)
		}
	}
}

// memScanner is a collection held in key order.
type memScanner struct {
	keys []Key
	docs map[Key]string
}

func (m *memScanner) scan(c Collection, after Key, fn func(Key, []byte) bool) {
	for _, k := range m.keys {
		if (k.DeviceID > after.DeviceID || k.DeviceID == after.DeviceID && k.ModuleID > after.ModuleID) && !fn(k, []byte(m.docs[k])) {
			return
		}
	}
}

// decodeDoc parses a twin, keeping numbers exact.
func decodeDoc(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	return doc, dec.Decode(&doc)
}

func newMem(docs ...string) *memScanner {
	m := &memScanner{docs: map[Key]string{}}
	for _, d := range docs {
		doc, err := decodeDoc([]byte(d))
		if err != nil {
			panic(err)
		}
		k := Key{DeviceID: doc["deviceId"].(string)}
		m.keys = append(m.keys, k)
		m.docs[k] = d
	}
	return m
}

// runAll pages through a query max rows at a time and returns the rows.
func runAll(t *testing.T, m *memScanner, src string, max int) ([]string, string) {
	t.Helper()
	q, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	cur := Cursor{}
	for range 100 {
		p, err := q.Run(m.scan, cur, max)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			rows = append(rows, string(it))
		}
		if p.Next == nil {
			return rows, p.ItemType
		}
		cur = *p.Next
	}
	t.Fatal("query never ended")
	return nil, ""
}

func TestRun(t *testing.T) {
	m := newMem(
		`{"deviceId":"a","status":"enabled","tags":{"t":"x"},"properties":{"reported":{"s":"ok","n":1}}}`,
		`{"deviceId":"b","status":"enabled","tags":{"t":"y"},"properties":{"reported":{"s":"ok","n":2.5}}}`,
		`{"deviceId":"c","status":"disabled","tags":{"t":"x"},"properties":{"reported":{"s":"bad","n":3}}}`,
		`{"deviceId":"d","status":"enabled","properties":{"reported":{"n":"text"}}}`,
	)
	for _, tc := range []struct {
		src  string
		max  int
		want string
		typ  string
	}{
		{"SELECT deviceId FROM devices", 1, `{"deviceId":"a"} {"deviceId":"b"} {"deviceId":"c"} {"deviceId":"d"}`, ItemRaw},
		{"SELECT DeviceId AS id, tags.t FROM devices WHERE status = 'enabled'", 2, `{"id":"a","t":"x"} {"id":"b","t":"y"} {"id":"d"}`, ItemRaw},
		{"SELECT DEVICEID FROM devices WHERE deviceId = 'a'", 5, `{"deviceId":"a"}`, ItemRaw},
		{"SELECT TOP 3 deviceId FROM devices", 2, `{"deviceId":"a"} {"deviceId":"b"} {"deviceId":"c"}`, ItemRaw},
		{"SELECT TOP 1 deviceId FROM devices WHERE tags.t = 'x'", 5, `{"deviceId":"a"}`, ItemRaw},
		{"SELECT COUNT() AS n FROM devices", 5, `{"n":4}`, ItemRaw},
		{"SELECT COUNT() FROM devices WHERE status = 'none'", 5, `{"$1":0}`, ItemRaw},
		{"SELECT tags.t AS t, COUNT() AS n FROM devices GROUP BY tags.t", 1, `{"t":"x","n":2} {"t":"y","n":1} {"n":1}`, ItemRaw},
		{"SELECT properties.reported.s AS s, COUNT() AS n FROM devices WHERE IS_DEFINED(properties.reported.s) GROUP BY properties.reported.s", 5, `{"s":"bad","n":1} {"s":"ok","n":2}`, ItemRaw},
		{"SELECT SUM(properties.reported.n) AS s, AVG(properties.reported.n) AS a, MIN(properties.reported.n) AS lo, MAX(properties.reported.n) AS hi FROM devices", 5,
			`{"s":6.5,"a":2.1666666666666665,"lo":1,"hi":"text"}`, ItemRaw},
		{"SELECT status, MAX(properties.reported.n) AS hi FROM devices WHERE IS_NUMBER(properties.reported.n) GROUP BY status", 5, `{"status":"disabled","hi":3} {"status":"enabled","hi":2.5}`, ItemRaw},
		{"SELECT TOP 1 tags.t, COUNT() AS n FROM devices GROUP BY tags.t", 5, `{"t":"x","n":2}`, ItemRaw},
		{"SELECT * FROM devices.jobs", 5, ``, ItemDeviceJob},
	} {
		rows, typ := runAll(t, m, tc.src, tc.max)
		if got := strings.Join(rows, " "); got != tc.want || typ != tc.typ {
			t.Errorf("%s (pages of %d):\n got %s (%s)\nwant %s (%s)", tc.src, tc.max, got, typ, tc.want, tc.typ)
		}
	}
	rows, typ := runAll(t, m, "SELECT * FROM devices WHERE tags.t = 'x'", 1)
	if len(rows) != 2 || rows[0] != m.docs[Key{DeviceID: "a"}] || rows[1] != m.docs[Key{DeviceID: "c"}] || typ != ItemTwin {
		t.Errorf("SELECT * pages = %v (%s), want twins a and c verbatim", rows, typ)
	}
}

func TestTokens(t *testing.T) {
	tok := NewTokens()
	c := Cursor{After: Key{DeviceID: "d", ModuleID: "m"}, Emitted: 3}
	s := tok.Encode("SELECT * FROM devices", c)
	if got, err := tok.Decode("SELECT * FROM devices", s); err != nil || got != c {
		t.Fatalf("Decode(Encode(c)) = %+v, %v", got, err)
	}
	forged := strings.Replace(s, s[:4], "AAAA", 1)
	for name, bad := range map[string]string{
		"other query":   s,
		"forged":        forged,
		"garbage":       "not-a-token",
		"other process": NewTokens().Encode("SELECT * FROM devices", c),
	} {
		q := "SELECT * FROM devices"
		if name == "other query" {
			q = "SELECT * FROM devices.modules"
		}
		if _, err := tok.Decode(q, bad); err != ErrBadToken {
			t.Errorf("%s: Decode = %v, want ErrBadToken", name, err)
		}
	}
}
