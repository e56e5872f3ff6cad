package restapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// queryPage posts one query page and decodes the rows.
func (e *env) queryPage(q, continuation string, headers ...string) (response, []map[string]any) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"query": q})
	if continuation != "" {
		headers = append(headers, "x-ms-continuation", continuation)
	}
	r := e.mustDo(200, "POST", "/devices/query", string(body), headers...)
	var rows []map[string]any
	if err := json.Unmarshal(r.body, &rows); err != nil {
		e.t.Fatalf("query %q: body %q is not a JSON array: %v", q, r.body, err)
	}
	return r, rows
}

// queryAll pages through a query and returns every row.
func (e *env) queryAll(q string, pageSize int) []map[string]any {
	e.t.Helper()
	var all []map[string]any
	cont := ""
	for range 10000 {
		r, rows := e.queryPage(q, cont, "x-ms-max-item-count", fmt.Sprint(pageSize))
		all = append(all, rows...)
		if cont = r.header.Get("x-ms-continuation"); cont == "" {
			return all
		}
	}
	e.t.Fatal("query never ended")
	return nil
}

// addModules creates devices d000… with perDevice modules each, directly
// on the hub (the queries under test go over the socket).
func addModules(t *testing.T, h *hub.Hub, devices, perDevice int) map[string]bool {
	t.Helper()
	want := map[string]bool{}
	for d := range devices {
		did := fmt.Sprintf("d%03d", d)
		if _, err := h.CreateOrUpdateDevice(did, iothub.Device{}, hub.IfMatch{}); err != nil {
			t.Fatal(err)
		}
		for m := range perDevice {
			mid := fmt.Sprintf("m%02d", m)
			if _, err := h.CreateOrUpdateModule(did, mid, iothub.Module{}, hub.IfMatch{}); err != nil {
				t.Fatal(err)
			}
			want[did+"/"+mid] = true
		}
	}
	return want
}

// Paging through 1,000 module twins returns each exactly once while other
// modules come and go and twins change between and during pages.
func TestQueryPagesEveryModuleOnce(t *testing.T) {
	e := newEnv(t)
	want := addModules(t, e.hub, 20, 50)
	if _, err := e.hub.CreateOrUpdateDevice("churn", iothub.Device{}, hub.IfMatch{}); err != nil {
		t.Fatal(err)
	}

	// A writer patches tags of every module while the query runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ref := hub.IdentityRef{DeviceID: fmt.Sprintf("d%03d", i%20), ModuleID: fmt.Sprintf("m%02d", i%50)}
			if _, err := e.hub.UpdateTwin(ref, []byte(fmt.Sprintf(`{"tags":{"round":%d}}`, i)), hub.IfMatch{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()

	seen := map[string]int{}
	cont, pages := "", 0
	const q = "SELECT * FROM devices.modules"
	for {
		r, rows := e.queryPage(q, cont, "x-ms-max-item-count", "37")
		pages++
		if got := r.header.Get("x-ms-item-type"); got != "Twin" {
			t.Fatalf("x-ms-item-type = %q, want Twin", got)
		}
		if len(rows) > 37 {
			t.Fatalf("page of %d rows, asked for at most 37", len(rows))
		}
		for _, row := range rows {
			seen[fmt.Sprintf("%s/%s", row["deviceId"], row["moduleId"])]++
		}
		// Between pages: modules appear and disappear on another device.
		mid := fmt.Sprintf("c%03d", pages)
		if _, err := e.hub.CreateOrUpdateModule("churn", mid, iothub.Module{}, hub.IfMatch{}); err != nil {
			t.Fatal(err)
		}
		if pages > 3 {
			if err := e.hub.DeleteModule("churn", fmt.Sprintf("c%03d", pages-3), hub.IfMatch{}); err != nil {
				t.Fatal(err)
			}
		}
		if cont = r.header.Get("x-ms-continuation"); cont == "" {
			break
		}
	}
	close(stop)
	wg.Wait()
	for k := range want {
		if seen[k] != 1 {
			t.Errorf("module %s seen %d times, want once", k, seen[k])
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s seen %d times", k, n)
		}
	}
	if pages < 1000/37 {
		t.Errorf("%d pages for 1,000 modules in pages of 37", pages)
	}
}

// Without x-ms-max-item-count a page holds 100 rows; a page never holds
// more than 1,000 whatever is asked.
func TestQueryPageSizes(t *testing.T) {
	e := newEnv(t)
	addModules(t, e.hub, 21, 50) // 1,050 modules
	for _, tc := range []struct {
		header string
		want   int
	}{{"", 100}, {"0", 100}, {"abc", 100}, {"7", 7}, {"1000", 1000}, {"5000", 1000}} {
		var headers []string
		if tc.header != "" {
			headers = []string{"x-ms-max-item-count", tc.header}
		}
		r, rows := e.queryPage("SELECT moduleId FROM devices.modules", "", headers...)
		if len(rows) != tc.want || r.header.Get("x-ms-continuation") == "" {
			t.Errorf("x-ms-max-item-count %q: %d rows (continuation %q), want %d and a continuation", tc.header, len(rows), r.header.Get("x-ms-continuation"), tc.want)
		}
	}
	// TOP caps the whole result across pages.
	if rows := e.queryAll("SELECT TOP 250 deviceId FROM devices.modules", 100); len(rows) != 250 {
		t.Errorf("TOP 250 gave %d rows", len(rows))
	}
}

// Query rows are the documents GET /twins returns; module twins also
// carry their device's capabilities, as a real hub's query results do.
func TestQueryRowsAreTwins(t *testing.T) {
	e := newEnv(t)
	e.createDevice("dev")
	e.createModule("dev", "mod")
	e.mustDo(200, "PATCH", "/twins/dev", `{"tags":{"a":1},"properties":{"desired":{"x":"y"}}}`)
	e.mustDo(200, "PATCH", "/twins/dev/modules/mod", `{"tags":{"a":2}}`)

	r, _ := e.queryPage("SELECT * FROM devices WHERE deviceId = 'dev'", "")
	get := e.mustDo(200, "GET", "/twins/dev", "")
	if string(r.body) != "["+string(get.body)+"]" {
		t.Errorf("device query row:\n%s\nwant GET /twins/dev:\n%s", r.body, get.body)
	}

	r2, rows := e.queryPage("SELECT * FROM devices.modules WHERE moduleId = 'mod'", "")
	getMod := e.mustDo(200, "GET", "/twins/dev/modules/mod", "").json(t)
	if len(rows) != 1 || path(rows[0], "capabilities.iotEdge") != false {
		t.Fatalf("module query rows = %v, want one with capabilities.iotEdge false", rows)
	}
	// Members in the order of a real hub's module query row (the recorded
	// session QueryClient_GetAllModulesTwinsWithTag of the Azure SDK for .NET).
	if got, want := topLevelKeys(t, r2.body), "deviceId moduleId etag deviceEtag status statusUpdateTime connectionState lastActivityTime cloudToDeviceMessageCount authenticationType x509Thumbprint version tags properties capabilities"; got != want {
		t.Errorf("module query row members:\n got %s\nwant %s", got, want)
	}
	delete(rows[0], "capabilities")
	a, _ := json.Marshal(rows[0])
	b, _ := json.Marshal(getMod)
	if string(a) != string(b) {
		t.Errorf("module query row:\n%s\nwant GET /twins/dev/modules/mod:\n%s", a, b)
	}
}

// Projections, filters on tags and reported properties, and aggregates
// with GROUP BY, each seeing every write acknowledged before the query.
func TestQueryProjectionsAndAggregates(t *testing.T) {
	e := newEnv(t)
	statuses := []string{"ok", "ok", "scanning", "ok", "error", "scanning"}
	for i, s := range statuses {
		did := fmt.Sprintf("dev%d", i)
		e.createDevice(did)
		e.createModule(did, "scanner")
		e.mustDo(200, "PATCH", "/twins/"+did+"/modules/scanner", fmt.Sprintf(`{"tags":{"site":%q,"rank":%d}}`, []string{"north", "south"}[i%2], i))
		if _, err := e.hub.UpdateReported(hub.IdentityRef{DeviceID: did, ModuleID: "scanner"}, []byte(fmt.Sprintf(`{"status":%q,"temp":%d}`, s, 20+i))); err != nil {
			t.Fatal(err)
		}
	}
	rowsJSON := func(rows []map[string]any) string {
		b, _ := json.Marshal(rows)
		return string(b)
	}
	for _, tc := range []struct{ q, want string }{
		{"SELECT deviceId, properties.reported.status FROM devices.modules WHERE properties.reported.status = 'scanning'",
			`[{"deviceId":"dev2","status":"scanning"},{"deviceId":"dev5","status":"scanning"}]`},
		{"SELECT deviceId AS d, tags.rank AS r FROM devices.modules WHERE tags.site = 'south' AND tags.rank >= 3",
			`[{"d":"dev3","r":3},{"d":"dev5","r":5}]`},
		{"SELECT deviceId FROM devices.modules WHERE properties.reported.temp IN [20, 25] OR STARTSWITH(properties.reported.status, 'err')",
			`[{"deviceId":"dev0"},{"deviceId":"dev4"},{"deviceId":"dev5"}]`},
		{"SELECT properties.reported.status AS status, COUNT() AS n FROM devices.modules GROUP BY properties.reported.status",
			`[{"n":1,"status":"error"},{"n":3,"status":"ok"},{"n":2,"status":"scanning"}]`},
		{"SELECT tags.site AS site, COUNT() AS n, MAX(properties.reported.temp) AS hottest, AVG(tags.rank) AS rank FROM devices.modules GROUP BY tags.site",
			`[{"hottest":24,"n":3,"rank":2,"site":"north"},{"hottest":25,"n":3,"rank":3,"site":"south"}]`},
		{"SELECT COUNT() AS devices FROM devices", `[{"devices":6}]`},
		{"SELECT COUNT() AS n FROM devices.modules WHERE tags.rank = '1'", `[{"n":0}]`},
	} {
		all := e.queryAll(tc.q, 1)
		if got := rowsJSON(all); got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.q, got, tc.want)
		}
	}
	r, _ := e.queryPage("SELECT COUNT() AS n FROM devices", "")
	if got := r.header.Get("x-ms-item-type"); got != "Raw" {
		t.Errorf("aggregate x-ms-item-type = %q, want Raw", got)
	}
	r, rows := e.queryPage("SELECT * FROM devices.jobs", "")
	if got := r.header.Get("x-ms-item-type"); got != "DeviceJob" || len(rows) != 0 {
		t.Errorf("devices.jobs = %d rows, x-ms-item-type %q; want none, DeviceJob", len(rows), got)
	}
}

// Queries need RegistryRead or ServiceConnect.
func TestQueryPermissions(t *testing.T) {
	e := newEnv(t)
	e.createDevice("d")
	for _, tc := range []struct {
		policy string
		ok     bool
	}{
		{hub.PolicyOwner, true},
		{hub.PolicyService, true},
		{hub.PolicyRegistryRead, true},
		{hub.PolicyRegistryReadWrite, true},
		{hub.PolicyDevice, false},
	} {
		r := e.do("POST", "/devices/query", `{"query":"SELECT * FROM devices"}`, "Authorization", e.token(tc.policy))
		if tc.ok {
			if r.status != 200 {
				t.Errorf("%s: %d %s, want 200", tc.policy, r.status, r.body)
			}
			continue
		}
		checkError(t, r, 401, "IotHubUnauthorizedAccess")
		if msg := errorMessage(t, r); !strings.Contains(msg, "RegistryRead, ServiceConnect") {
			t.Errorf("%s: message %q does not name the rights that allow a query", tc.policy, msg)
		}
	}
	checkError(t, e.do("POST", "/devices/query", `{"query":"SELECT * FROM devices"}`, "Authorization", ""), 401, "IotHubUnauthorizedAccess")
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t)
	addModules(t, e.hub, 1, 5)
	for _, tc := range []struct {
		name, body, code string
		msg              []string
	}{
		{"syntax", `{"query":"SELECT * FROM devices WHERE"}`, "ArgumentInvalid", []string{"SQL query parse failed", "Line 1:28", "end of query"}},
		{"order by", `{"query":"SELECT * FROM devices ORDER BY deviceId"}`, "ArgumentInvalid", []string{"Line 1:23", "ORDER BY is not supported"}},
		{"join", `{"query":"SELECT * FROM devices JOIN devices.modules"}`, "ArgumentInvalid", []string{"Line 1:23", "joins are not supported"}},
		{"bad token", `{"query":"SELECT * FROM devices WHERE a = = 1"}`, "ArgumentInvalid", []string{"Line 1:33", "'='"}},
		{"no query", `{}`, "ArgumentNull", []string{"no query"}},
		{"empty query", `{"query":"  "}`, "ArgumentNull", []string{"no query"}},
		{"not JSON", `SELECT * FROM devices`, "IotHubFormatError", []string{"not valid JSON"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/devices/query", tc.body)
			checkError(t, r, 400, tc.code)
			for _, m := range tc.msg {
				if msg := errorMessage(t, r); !strings.Contains(msg, m) {
					t.Errorf("message %q lacks %q", msg, m)
				}
			}
		})
	}

	const q = "SELECT * FROM devices.modules"
	r, _ := e.queryPage(q, "", "x-ms-max-item-count", "2")
	tok := r.header.Get("x-ms-continuation")
	if tok == "" {
		t.Fatal("no continuation after 2 of 5 modules")
	}
	for name, bad := range map[string]string{
		"forged":      "eyJrIjp7ImQiOiJ6In19.AAAAAAAAAAAAAAAAAAAAAA",
		"garbage":     "%%%",
		"tampered":    "x" + tok[1:],
		"other query": tok,
	} {
		query := q
		if name == "other query" {
			query = "SELECT deviceId FROM devices.modules"
		}
		body, _ := json.Marshal(map[string]string{"query": query})
		r := e.do("POST", "/devices/query", string(body), "x-ms-continuation", bad)
		checkError(t, r, 400, "ArgumentInvalid")
		if msg := errorMessage(t, r); !strings.Contains(msg, "x-ms-continuation") {
			t.Errorf("%s: message %q does not name the header", name, msg)
		}
	}
	// The genuine token still works, and can be used again.
	for range 2 {
		if _, rows := e.queryPage(q, tok, "x-ms-max-item-count", "2"); len(rows) != 2 || rows[0]["moduleId"] != "m02" {
			t.Fatalf("page after the token = %v, want m02 and m03", rows)
		}
	}
}

// POST /devices/query does not take the name "query" from devices: a
// device of that name is created, read and deleted as any other.
func TestDeviceNamedQuery(t *testing.T) {
	e := newEnv(t)
	checkError(t, e.do("GET", "/devices/query", ""), 404, "DeviceNotFound")
	e.createDevice("query")
	if d := e.mustDo(200, "GET", "/devices/query", "").json(t); d["deviceId"] != "query" {
		t.Fatalf("GET /devices/query = %v", d)
	}
	if _, rows := e.queryPage("SELECT deviceId FROM devices", ""); len(rows) != 1 || rows[0]["deviceId"] != "query" {
		t.Fatalf("query rows = %v, want the device called query", rows)
	}
	e.mustDo(204, "DELETE", "/devices/query", "", "If-Match", "*")
	checkError(t, e.do("GET", "/devices/query", ""), 404, "DeviceNotFound")
	checkError(t, e.do("PATCH", "/devices/query", ""), 405, "MethodNotAllowed")
}

// topLevelKeys lists the member names of the one object in a JSON array.
func topLevelKeys(t *testing.T, body []byte) string {
	t.Helper()
	var rows []json.RawMessage
	if err := json.Unmarshal(body, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("body %s: want one row (%v)", body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(rows[0]))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Join(keys, " ")
}
