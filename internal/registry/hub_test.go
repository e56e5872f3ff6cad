package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// testPolicy is the shared access policy the test hub accepts.
const (
	testPolicy = "iothubowner"
	testKey    = "dGhpcyBpcyB0aGUgdGVzdCBodWIncyBwb2xpY3kga2V5IQ=="
)

// seen is one request as the test hub received it.
type seen struct {
	Method      string
	EscapedPath string
	Query       url.Values
	IfMatch     []string // nil when the header was absent
	ContentType string
	Auth        string
	Body        []byte
}

// fault is a canned answer served instead of (or after) the real one.
type fault struct {
	status int
	header string // iothub-errorcode
	body   string
	apply  bool // run the operation, then answer with the fault anyway
}

// testHub is an in-memory IoT hub answering like the recordings in the
// reference: create → 200 with generated keys, existing → 409, stale etag
// → 412, errors as {"Message":"ErrorCode:…;…","ExceptionMessage":…} plus
// the iothub-errorcode header.
type testHub struct {
	t      *testing.T
	srv    *httptest.Server
	key    []byte
	now    func() time.Time
	mux    *http.ServeMux
	mu     sync.Mutex
	reqs   []seen
	faults []fault
	etag   int64
	devs   map[string]iothub.Device
	mods   map[string]map[string]iothub.Module
	twins  map[string]*iothub.Twin // key: device + "\x00" + module
	conns  atomic.Int32            // TCP connections accepted
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(testKey)
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{
		t: t, key: key, now: time.Now, etag: 154046540,
		devs:  map[string]iothub.Device{},
		mods:  map[string]map[string]iothub.Module{},
		twins: map[string]*iothub.Twin{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /devices/{d}", h.putDevice)
	mux.HandleFunc("GET /devices/{d}", h.getDevice)
	mux.HandleFunc("DELETE /devices/{d}", h.deleteDevice)
	mux.HandleFunc("GET /devices", h.listDevices)
	mux.HandleFunc("PUT /devices/{d}/modules/{m}", h.putModule)
	mux.HandleFunc("GET /devices/{d}/modules/{m}", h.getModule)
	mux.HandleFunc("DELETE /devices/{d}/modules/{m}", h.deleteModule)
	mux.HandleFunc("GET /devices/{d}/modules", h.listModules)
	for _, p := range []string{"/twins/{d}", "/twins/{d}/modules/{m}"} {
		mux.HandleFunc("GET "+p, h.twinOp)
		mux.HandleFunc("PATCH "+p, h.twinOp)
		mux.HandleFunc("PUT "+p, h.twinOp)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("test hub: unhandled request %s %s", r.Method, r.URL.EscapedPath())
		hubError(w, http.StatusNotFound, iothub.NotFound, "no such route")
	})
	h.mux = mux
	h.srv = httptest.NewUnstartedServer(h)
	h.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			h.conns.Add(1)
		}
	}
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the tests
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	return h
}

// host is the hub's HostName: 127.0.0.1:port.
func (h *testHub) host() string { return strings.TrimPrefix(h.srv.URL, "https://") }

// client returns a registry client trusting only the hub's certificate
// through hubtls, with quick retries.
func (h *testHub) client(t *testing.T) *Client {
	t.Helper()
	cs := connstr.ConnectionString{HostName: h.host(), SharedAccessKeyName: testPolicy, SharedAccessKey: testKey}
	c, err := NewClient(cs, h.options(t))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func (h *testHub) options(t *testing.T) *ClientOptions {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "hub-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := hubtls.Config(caFile)
	if err != nil {
		t.Fatalf("hubtls.Config: %v", err)
	}
	hc := hubtls.HTTPClient(cfg)
	t.Cleanup(hc.CloseIdleConnections)
	return &ClientOptions{azcore.ClientOptions{
		Transport: hc,
		Retry: policy.RetryOptions{
			MaxRetries:    3,
			RetryDelay:    time.Millisecond,
			MaxRetryDelay: 2 * time.Millisecond,
		},
	}}
}

// failNext queues faults answered to the next requests, in order.
func (h *testHub) failNext(fs ...fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, fs...)
}

// requests returns the requests received so far.
func (h *testHub) requests() []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seen(nil), h.reqs...)
}

func (h *testHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		h.t.Errorf("test hub: read body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s := seen{
		Method: r.Method, EscapedPath: r.URL.EscapedPath(), Query: r.URL.Query(),
		IfMatch: r.Header.Values("If-Match"), ContentType: r.Header.Get("Content-Type"),
		Auth: r.Header.Get("Authorization"), Body: body,
	}
	h.mu.Lock()
	h.reqs = append(h.reqs, s)
	var f *fault
	if len(h.faults) > 0 {
		f = &h.faults[0]
		h.faults = h.faults[1:]
	}
	h.mu.Unlock()

	if msg := h.checkAuth(s.Auth); msg != "" {
		hubError(w, http.StatusUnauthorized, iothub.IotHubUnauthorizedAccess, msg)
		return
	}
	if v := s.Query.Get("api-version"); v != iothub.APIVersion {
		hubError(w, http.StatusBadRequest, iothub.ArgumentInvalid, "api-version "+v+" is not supported")
		return
	}
	if len(body) > 0 && s.ContentType != "application/json" {
		hubError(w, http.StatusBadRequest, iothub.IotHubFormatError, "Content-Type must be application/json")
		return
	}
	if f != nil {
		if f.apply {
			h.mux.ServeHTTP(httptest.NewRecorder(), r)
		}
		if f.header != "" {
			w.Header().Set("iothub-errorcode", f.header)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(f.status)
		io.WriteString(w, f.body)
		return
	}
	w.Header().Set("x-ms-request-id", "e067eb13-9336-4bbb-aad5-ed650a527d2c")
	h.mux.ServeHTTP(w, r)
}

// checkAuth verifies a service token the way the hub does; it returns why
// the token is refused, or "".
func (h *testHub) checkAuth(auth string) string {
	tok, err := sas.ParseToken(auth)
	switch {
	case err != nil:
		return err.Error()
	case tok.KeyName != testPolicy:
		return "unknown policy " + tok.KeyName
	case tok.Resource != h.host():
		return "token scope " + tok.Resource + " is not the hub"
	case !tok.Verify(h.key):
		return "signature does not verify"
	case tok.Expired(h.now()):
		return "token expired"
	}
	return ""
}

// hubError writes the hub's usual error: shape 1 body plus header.
func hubError(w http.ResponseWriter, status int, code iothub.ErrorCode, text string) {
	w.Header().Set("iothub-errorcode", code.Name)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{
		"Message":          "ErrorCode:" + code.Name + ";" + text,
		"ExceptionMessage": "Tracking ID:65ee3cd809ff4565b023205f3c766f52-G:10-TimeStamp:07/07/2021 20:47:33",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (h *testHub) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		hubError(w, http.StatusBadRequest, iothub.IotHubFormatError, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

// nextETag returns an identity etag: base64 of a decimal counter.
func (h *testHub) nextETag() string {
	h.etag++
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(h.etag, 10)))
}

func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// fillKeys generates the keys a create left empty.
func fillKeys(a *iothub.AuthenticationMechanism) *iothub.AuthenticationMechanism {
	if a == nil {
		a = &iothub.AuthenticationMechanism{Type: iothub.AuthSAS}
	}
	if a.Type == iothub.AuthSAS {
		if a.SymmetricKey == nil {
			a.SymmetricKey = &iothub.SymmetricKey{}
		}
		if a.SymmetricKey.PrimaryKey == "" {
			a.SymmetricKey.PrimaryKey = newKey()
		}
		if a.SymmetricKey.SecondaryKey == "" {
			a.SymmetricKey.SecondaryKey = newKey()
		}
	}
	return a
}

// etagMatches applies If-Match to the current etag of an existing
// resource: "*" matches anything, otherwise compare without quotes or W/.
func etagMatches(ifMatch []string, current string) bool {
	if len(ifMatch) == 0 {
		return true
	}
	v := strings.TrimPrefix(ifMatch[0], "W/")
	v = strings.Trim(v, `"`)
	return v == "*" || v == current
}

func (h *testHub) putDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("d")
	var d iothub.Device
	if !h.decode(w, r, &d) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, exists := h.devs[id]
	im := r.Header.Values("If-Match")
	switch {
	case len(im) == 0 && exists:
		hubError(w, http.StatusConflict, iothub.DeviceAlreadyExists, fmt.Sprintf("A device with ID '%s' is already registered.", id))
		return
	case len(im) > 0 && !exists:
		hubError(w, http.StatusNotFound, iothub.DeviceNotFound, id)
		return
	case exists && !etagMatches(im, old.ETag):
		hubError(w, http.StatusPreconditionFailed, iothub.PreconditionFailed, "Precondition failed: Device version did not match")
		return
	}
	d.DeviceID = id
	d.Authentication = fillKeys(d.Authentication)
	d.ETag = h.nextETag()
	d.GenerationID = "637746781043237968"
	d.ConnectionState = iothub.Disconnected
	if d.Status == "" {
		d.Status = iothub.Enabled
	}
	h.devs[id] = d
	if !exists {
		h.twins[id+"\x00"] = newTwin(id, "", d.ETag)
	}
	w.Header().Set("ETag", `"`+d.ETag+`"`)
	writeJSON(w, http.StatusOK, d)
}

func (h *testHub) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("d")
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.devs[id]
	if !ok {
		hubError(w, http.StatusNotFound, iothub.DeviceNotFound, id)
		return
	}
	w.Header().Set("ETag", `"`+d.ETag+`"`)
	writeJSON(w, http.StatusOK, d)
}

func (h *testHub) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("d")
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.devs[id]
	switch {
	case !ok:
		hubError(w, http.StatusNotFound, iothub.DeviceNotFound, id)
		return
	case !etagMatches(r.Header.Values("If-Match"), d.ETag):
		hubError(w, http.StatusPreconditionFailed, iothub.PreconditionFailed, "Precondition failed: Device version did not match")
		return
	}
	delete(h.devs, id)
	for m := range h.mods[id] {
		delete(h.twins, id+"\x00"+m)
	}
	delete(h.mods, id)
	delete(h.twins, id+"\x00")
	w.WriteHeader(http.StatusNoContent)
}

func (h *testHub) listDevices(w http.ResponseWriter, r *http.Request) {
	top := 1000
	if s := r.URL.Query().Get("top"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 && n < top {
			top = n
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []iothub.Device{}
	for _, d := range h.devs {
		if len(out) < top {
			out = append(out, d)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *testHub) putModule(w http.ResponseWriter, r *http.Request) {
	did, mid := r.PathValue("d"), r.PathValue("m")
	var m iothub.Module
	if !h.decode(w, r, &m) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.devs[did]; !ok {
		hubError(w, http.StatusNotFound, iothub.DeviceNotFound, did)
		return
	}
	old, exists := h.mods[did][mid]
	im := r.Header.Values("If-Match")
	switch {
	case len(im) == 0 && exists:
		hubError(w, http.StatusConflict, iothub.ModuleAlreadyExistsOnDevice, fmt.Sprintf("A module with ID '%s' is already registered on device '%s'.", mid, did))
		return
	case len(im) > 0 && !exists:
		hubError(w, http.StatusNotFound, iothub.ModuleNotFound, mid)
		return
	case exists && !etagMatches(im, old.ETag):
		hubError(w, http.StatusPreconditionFailed, iothub.PreconditionFailed, "Precondition failed: Module version did not match")
		return
	}
	m.DeviceID, m.ModuleID = did, mid
	m.Authentication = fillKeys(m.Authentication)
	m.ETag = h.nextETag()
	m.ConnectionState = iothub.Disconnected
	if m.ManagedBy != nil && *m.ManagedBy == "" {
		m.ManagedBy = nil
	}
	if h.mods[did] == nil {
		h.mods[did] = map[string]iothub.Module{}
	}
	h.mods[did][mid] = m
	if !exists {
		h.twins[did+"\x00"+mid] = newTwin(did, mid, m.ETag)
	}
	writeJSON(w, http.StatusOK, m)
}

func (h *testHub) getModule(w http.ResponseWriter, r *http.Request) {
	did, mid := r.PathValue("d"), r.PathValue("m")
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.mods[did][mid]
	if !ok {
		hubError(w, http.StatusNotFound, iothub.ModuleNotFound, mid)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (h *testHub) deleteModule(w http.ResponseWriter, r *http.Request) {
	did, mid := r.PathValue("d"), r.PathValue("m")
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.mods[did][mid]
	switch {
	case !ok:
		hubError(w, http.StatusNotFound, iothub.ModuleNotFound, mid)
		return
	case !etagMatches(r.Header.Values("If-Match"), m.ETag):
		hubError(w, http.StatusPreconditionFailed, iothub.PreconditionFailed, "Precondition failed: Module version did not match")
		return
	}
	delete(h.mods[did], mid)
	delete(h.twins, did+"\x00"+mid)
	w.WriteHeader(http.StatusNoContent)
}

func (h *testHub) listModules(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("d")
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.devs[did]; !ok {
		hubError(w, http.StatusNotFound, iothub.DeviceNotFound, did)
		return
	}
	out := []iothub.Module{}
	for _, m := range h.mods[did] {
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, out)
}

// twinETag is the twin etag: base64 of the 8-byte big-endian version.
func twinETag(v int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return base64.StdEncoding.EncodeToString(b[:])
}

func newTwin(did, mid, deviceETag string) *iothub.Twin {
	empty := map[string]json.RawMessage{
		"$metadata": json.RawMessage(`{"$lastUpdated":"0001-01-01T00:00:00Z"}`),
		"$version":  json.RawMessage(`1`),
	}
	reported := map[string]json.RawMessage{}
	for k, v := range empty {
		reported[k] = v
	}
	return &iothub.Twin{
		DeviceID: did, ModuleID: mid, ETag: twinETag(1), DeviceETag: deviceETag,
		Status: iothub.Enabled, ConnectionState: iothub.Disconnected, AuthenticationType: iothub.AuthSAS,
		Version:    2,
		Properties: &iothub.TwinProperties{Desired: empty, Reported: reported},
	}
}

// twinOp serves GET, PATCH (merge of tags and desired; null removes) and
// PUT (replace) on device and module twins.
func (h *testHub) twinOp(w http.ResponseWriter, r *http.Request) {
	did, mid := r.PathValue("d"), r.PathValue("m")
	h.mu.Lock()
	defer h.mu.Unlock()
	tw, ok := h.twins[did+"\x00"+mid]
	if !ok {
		if mid != "" {
			hubError(w, http.StatusNotFound, iothub.ModuleNotFound, mid)
		} else {
			hubError(w, http.StatusNotFound, iothub.DeviceNotFound, did)
		}
		return
	}
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, tw)
		return
	}
	var in iothub.Twin
	if !h.decode(w, r, &in) {
		return
	}
	if !etagMatches(r.Header.Values("If-Match"), tw.ETag) {
		hubError(w, http.StatusPreconditionFailed, iothub.PreconditionFailed, fmt.Sprintf("ETag mismatch for device ID '%s'", did))
		return
	}
	var inDesired map[string]json.RawMessage
	if in.Properties != nil {
		inDesired = in.Properties.Desired
	}
	if r.Method == http.MethodPut {
		tw.Tags = map[string]json.RawMessage{}
		keep := map[string]json.RawMessage{"$metadata": tw.Properties.Desired["$metadata"]}
		tw.Properties.Desired = keep
	}
	if tw.Tags == nil {
		tw.Tags = map[string]json.RawMessage{}
	}
	merge(tw.Tags, in.Tags)
	merge(tw.Properties.Desired, inDesired)
	if len(tw.Tags) == 0 {
		tw.Tags = nil
	}
	tw.Version++
	tw.ETag = twinETag(tw.Version - 1)
	dv := iothub.DocVersion(tw.Properties.Desired)
	if dv == 0 {
		dv = 1
	}
	tw.Properties.Desired["$version"] = json.RawMessage(strconv.FormatInt(dv+1, 10))
	writeJSON(w, http.StatusOK, tw)
}

// merge applies a top-level patch: null removes, "$"-members are ignored.
func merge(doc, patch map[string]json.RawMessage) {
	for k, v := range patch {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if string(bytes.TrimSpace(v)) == "null" {
			delete(doc, k)
			continue
		}
		doc[k] = v
	}
}
