package inspector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

var funcs = template.FuncMap{
	"identity": func(d, m string) string {
		if m == "" {
			return d
		}
		return d + "/" + m
	},
	"when": func(t time.Time) string { return t.Local().Format("15:04:05.000") },
	"body": messageBody,
	"props": func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, m[k])
		}
		return strings.TrimSuffix(b.String(), "\n")
	},
}

func messageBody(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("(%d bytes of binary data)", len(b))
}

func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("inspector page", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// identityRow is one line of the identities table.
type identityRow struct {
	DeviceID, ModuleID string
	Status             string
	Connection         string
	LastActivity       string
	Messages           int
}

func (s *Server) identities(w http.ResponseWriter, r *http.Request, _ string) {
	var rows []identityRow
	for _, d := range s.hub.ListDevices(hub.MaxListDevices) {
		rows = append(rows, identityRow{DeviceID: d.DeviceID, Status: d.Status, Connection: d.ConnectionState, LastActivity: activity(d.LastActivityTime)})
		for _, m := range s.hub.ListModules(d.DeviceID) {
			rows = append(rows, identityRow{DeviceID: d.DeviceID, ModuleID: m.ModuleID, Status: d.Status, Connection: m.ConnectionState, LastActivity: activity(m.LastActivityTime)})
		}
	}
	data := struct {
		Rows  []identityRow
		Stats telemetry.Stats
	}{rows, s.messages.Stats()}
	if r.URL.Query().Get("fragment") != "" {
		s.render(w, http.StatusOK, "identity-rows", data)
		return
	}
	s.render(w, http.StatusOK, "identities.html", data)
}

// activity shows a registry time, or "never" for the zero time.
func activity(t string) string {
	if t == "" || strings.HasPrefix(t, "0001-01-01") {
		return "never"
	}
	if p, err := time.Parse(time.RFC3339Nano, t); err == nil {
		return p.Local().Format("2006-01-02 15:04:05")
	}
	return t
}

// twinDoc is the part of a twin the page shows.
type twinDoc struct {
	ETag       string         `json:"etag"`
	Version    int64          `json:"version"`
	Tags       map[string]any `json:"tags"`
	Properties struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"properties"`
}

type section struct {
	Version any
	JSON    string
}

func split(props map[string]any) section {
	v := props["$version"]
	rest := map[string]any{}
	for k, x := range props {
		if k != "$version" && k != "$metadata" {
			rest[k] = x
		}
	}
	return section{Version: v, JSON: pretty(rest)}
}

func pretty(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

type twinPage struct {
	DeviceID, ModuleID string
	ETag               string
	Version            int64
	Tags               string
	Desired, Reported  section
	CSRF               string
	Error              string
	Saved              bool
	DesiredPatch       string
	TagsPatch          string
}

func ref(r *http.Request) hub.IdentityRef {
	return hub.IdentityRef{DeviceID: r.FormValue("device"), ModuleID: r.FormValue("module")}
}

// loadTwin fills p from the hub; ok false when the identity is gone.
func (s *Server) loadTwin(p *twinPage) (int, error) {
	raw, err := s.hub.Twin(hub.IdentityRef{DeviceID: p.DeviceID, ModuleID: p.ModuleID})
	if err != nil {
		return hub.StatusOf(err), err
	}
	var t twinDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&t); err != nil {
		return http.StatusInternalServerError, fmt.Errorf("decode twin: %w", err)
	}
	p.ETag, p.Version, p.Tags = t.ETag, t.Version, pretty(orEmpty(t.Tags))
	p.Desired, p.Reported = split(t.Properties.Desired), split(t.Properties.Reported)
	return http.StatusOK, nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (s *Server) twin(w http.ResponseWriter, r *http.Request, session string) {
	id := ref(r)
	p := twinPage{DeviceID: id.DeviceID, ModuleID: id.ModuleID, CSRF: s.csrfToken(session), Saved: r.FormValue("saved") != "",
		DesiredPatch: "{}", TagsPatch: "{}"}
	status, err := s.loadTwin(&p)
	if err != nil {
		s.render(w, status, "missing.html", p)
		return
	}
	if r.FormValue("fragment") != "" {
		s.render(w, http.StatusOK, "twin-panes", p)
		return
	}
	s.render(w, http.StatusOK, "twin.html", p)
}

// updateTwin applies the form's patches with the hub's PATCH code, under
// the etag the page showed, exactly as the service API's PATCH would.
func (s *Server) updateTwin(w http.ResponseWriter, r *http.Request, session string) {
	id := ref(r)
	p := twinPage{DeviceID: id.DeviceID, ModuleID: id.ModuleID, CSRF: s.csrfToken(session),
		DesiredPatch: r.PostFormValue("desired"), TagsPatch: r.PostFormValue("tags")}
	body, err := patchBody(p.DesiredPatch, p.TagsPatch)
	status := http.StatusBadRequest
	if err == nil {
		_, err = s.hub.UpdateTwin(id, body, hub.ParseIfMatch(`"`+r.PostFormValue("etag")+`"`))
		status = hub.StatusOf(err)
	}
	if err == nil {
		http.Redirect(w, r, "/twin?"+identityQuery(id)+"&saved=1", http.StatusSeeOther)
		return
	}
	p.Error = err.Error()
	if status == http.StatusPreconditionFailed {
		p.Error = "The twin changed since this page showed it (its etag is no longer " + r.PostFormValue("etag") + "). It now shows the current twin: check it and save again."
	}
	if _, lerr := s.loadTwin(&p); lerr != nil {
		s.render(w, hub.StatusOf(lerr), "missing.html", p)
		return
	}
	s.render(w, status, "twin.html", p)
}

// patchBody builds a twin PATCH body from the form's two JSON objects
// (empty or {} leaves that part alone).
func patchBody(desired, tags string) ([]byte, error) {
	body := map[string]json.RawMessage{}
	for _, part := range []struct{ name, text string }{{"desired properties", desired}, {"tags", tags}} {
		text := strings.TrimSpace(part.text)
		if text == "" || text == "{}" {
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(text), &obj); err != nil {
			return nil, fmt.Errorf("the %s patch is not a JSON object: %v", part.name, err)
		}
		if part.name == "tags" {
			body["tags"] = json.RawMessage(text)
		} else {
			body["properties"] = json.RawMessage(`{"desired":` + text + `}`)
		}
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("nothing to change: both patches are empty")
	}
	return json.Marshal(body)
}

func identityQuery(id hub.IdentityRef) string {
	q := "device=" + urlQuery(id.DeviceID)
	if id.ModuleID != "" {
		q += "&module=" + urlQuery(id.ModuleID)
	}
	return q
}

type telemetryPage struct {
	DeviceID, ModuleID string
	Messages           []telemetry.Message
	Stats              telemetry.Stats
}

func (s *Server) telemetry(w http.ResponseWriter, r *http.Request, _ string) {
	id := ref(r)
	msgs := s.messages.Of(id.DeviceID, id.ModuleID, 200)
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 { // newest first
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	s.render(w, http.StatusOK, "telemetry.html", telemetryPage{DeviceID: id.DeviceID, ModuleID: id.ModuleID, Messages: msgs, Stats: s.messages.Stats()})
}

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request, _ string) {
	kinds, err := parseKinds(r.URL.Query()["kind"])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var all []kindBox
	for _, k := range allKinds() {
		all = append(all, kindBox{Name: string(k), Checked: len(r.URL.Query()["kind"]) == 0 || kinds[k]})
	}
	s.render(w, http.StatusOK, "events.html", struct {
		Kinds          []kindBox
		Device, Module string
	}{all, r.FormValue("device"), r.FormValue("module")})
}

type kindBox struct {
	Name    string
	Checked bool
}
