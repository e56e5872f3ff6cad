// Package clitest helps test the service-side commands: FakeHub is a small
// in-memory IoT hub that answers registry and twin requests the way the
// recorded real-hub traffic does, served over real HTTPS, plus helpers to
// run a command with buffered I/O.
package clitest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// PolicyName and PolicyKey are the fake hub's only shared access policy.
const (
	PolicyName = "iothubowner"
	PolicyKey  = "aHViLW93bmVyLWtleS10aGF0LW11c3Qtc3RheS1zZWNyZXQ=" // "hub-owner-key-that-must-stay-secret"
)

// Request is one request the fake hub received.
type Request struct {
	Method  string
	Path    string // escaped path
	IfMatch string
	Body    string
}

// Failure is a canned error response for matching requests.
type Failure struct {
	Method     string // "" matches any
	PathPrefix string // escaped, "" matches any
	Status     int
	Code       string // error code name, e.g. "ArgumentInvalid"
	Message    string
	Times      int // how many requests it answers; 0 = all
}

type moduleState struct {
	module iothub.Module
	twin   iothub.Twin
}

type deviceState struct {
	device  iothub.Device
	modules map[string]*moduleState
}

// FakeHub is an in-memory hub. Create one with Start.
type FakeHub struct {
	URL string // https://127.0.0.1:port
	// HostName is the HostName to put in connection strings.
	HostName string
	// CAFile is a PEM file holding the certificate of the hub's server.
	CAFile string

	srv *httptest.Server

	mu       sync.Mutex
	devices  map[string]*deviceState
	requests []Request
	failures []*Failure
	etagSeq  int64
	// concurrentWrites is how many upcoming twin writes another writer
	// beats to it, changing the twin first.
	concurrentWrites int
	// ack simulates a module acknowledging desired patches.
	ack *ackPlan
}

type ackPlan struct {
	afterPolls int // twin GETs after a write before the ack appears
	code       int
	polls      int
	pending    map[string]json.RawMessage // key -> value to acknowledge
	version    int64
	target     *moduleState
}

// Start serves a fake hub over TLS on 127.0.0.1 until the test ends.
func Start(t testing.TB) *FakeHub {
	t.Helper()
	f := &FakeHub{devices: map[string]*deviceState{}}
	f.srv = httptest.NewUnstartedServer(f)
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected in some tests
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	f.HostName = strings.TrimPrefix(f.srv.URL, "https://")
	f.CAFile = filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(f.CAFile, pemCert(f.srv.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// ConnectionString returns the service connection string of the hub's
// policy.
func (f *FakeHub) ConnectionString() string {
	return connstr.ConnectionString{HostName: f.HostName, SharedAccessKeyName: PolicyName, SharedAccessKey: PolicyKey}.Format()
}

// Fail makes matching requests fail with the given response.
func (f *FakeHub) Fail(fl Failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, &fl)
}

// ChangeBeforeNextWrites makes another writer change the twin just before
// each of the next n twin writes, so that their etag no longer matches.
func (f *FakeHub) ChangeBeforeNextWrites(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.concurrentWrites = n
}

// AckAfterPolls makes the module acknowledge the next desired-property
// write in its reported properties (IoT Plug and Play convention, status
// code ac) once the twin has been read polls more times.
func (f *FakeHub) AckAfterPolls(polls, ac int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ack = &ackPlan{afterPolls: polls, code: ac}
}

// Requests returns the requests received so far.
func (f *FakeHub) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// AddDevice adds a device directly (no request), e.g. one with X.509
// authentication.
func (f *FakeHub) AddDevice(d iothub.Device) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.ETag = f.nextIdentityETag()
	f.devices[d.DeviceID] = &deviceState{device: d, modules: map[string]*moduleState{}}
}

// SetDesired replaces a module twin's desired properties directly (no
// request), bumping its versions as a write would.
func (f *FakeHub) SetDesired(deviceID, moduleID string, desired map[string]json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.devices[deviceID].modules[moduleID]
	ver := iothub.DocVersion(m.twin.Properties.Desired) + 1
	doc := map[string]json.RawMessage{}
	for k, v := range desired {
		doc[k] = v
	}
	setDocVersion(doc, ver)
	m.twin.Properties.Desired = doc
	f.bumpTwin(m)
}

// Device returns a device identity and whether it exists.
func (f *FakeHub) Device(deviceID string) (iothub.Device, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds := f.devices[deviceID]
	if ds == nil {
		return iothub.Device{}, false
	}
	return ds.device, true
}

// Module returns a module identity and whether it exists.
func (f *FakeHub) Module(deviceID, moduleID string) (iothub.Module, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds := f.devices[deviceID]
	if ds == nil || ds.modules[moduleID] == nil {
		return iothub.Module{}, false
	}
	return ds.modules[moduleID].module, true
}

// Twin returns a copy of a module twin.
func (f *FakeHub) Twin(deviceID, moduleID string) iothub.Twin {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(f.devices[deviceID].modules[moduleID].twin)
	var t iothub.Twin
	_ = json.Unmarshal(b, &t)
	return t
}

// ClientOptions returns azcore options with retry delays short enough for
// tests (azcore's own are seconds).
func ClientOptions() policy.ClientOptions {
	return policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}}
}

func (f *FakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, Request{Method: r.Method, Path: r.URL.EscapedPath(), IfMatch: r.Header.Get("If-Match"), Body: string(body)})

	if r.URL.Query().Get("api-version") != iothub.APIVersion {
		writeError(w, iothub.ArgumentInvalid, "api-version is missing or not supported")
		return
	}
	if !authorized(r.Header.Get("Authorization"), f.HostName) {
		writeError(w, iothub.IotHubUnauthorizedAccess, "Unauthorized")
		return
	}
	if fl := f.matchFailure(r); fl != nil {
		w.Header().Set("iothub-errorcode", fl.Code)
		writeErrorStatus(w, fl.Status, fl.Code, fl.Message)
		return
	}
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(segs) == 2 && segs[0] == "devices":
		f.serveDevice(w, r, segs[1], body)
	case len(segs) == 4 && segs[0] == "devices" && segs[2] == "modules":
		f.serveModule(w, r, segs[1], segs[3], body)
	case len(segs) == 4 && segs[0] == "twins" && segs[2] == "modules":
		f.serveTwin(w, r, segs[1], segs[3], body)
	default:
		panic(fmt.Sprintf("fake hub: unhandled %s %s", r.Method, r.URL.Path))
	}
}

func (f *FakeHub) matchFailure(r *http.Request) *Failure {
	for i, fl := range f.failures {
		if (fl.Method == "" || fl.Method == r.Method) && strings.HasPrefix(r.URL.EscapedPath(), fl.PathPrefix) {
			if fl.Times > 0 {
				fl.Times--
				if fl.Times == 0 {
					f.failures = append(f.failures[:i], f.failures[i+1:]...)
				}
			}
			return fl
		}
	}
	return nil
}

func (f *FakeHub) serveDevice(w http.ResponseWriter, r *http.Request, id string, body []byte) {
	ds := f.devices[id]
	switch r.Method {
	case http.MethodGet:
		if ds == nil {
			writeError(w, iothub.DeviceNotFound, id)
			return
		}
		writeJSON(w, ds.device)
	case http.MethodPut:
		if ds != nil && r.Header.Get("If-Match") == "" {
			writeError(w, iothub.DeviceAlreadyExists, fmt.Sprintf("A device with ID '%s' is already registered.", id))
			return
		}
		var d iothub.Device
		if err := json.Unmarshal(body, &d); err != nil {
			writeError(w, iothub.IotHubFormatError, "malformed device")
			return
		}
		d.DeviceID = id
		if d.Status == "" {
			d.Status = iothub.Enabled
		}
		d.Authentication = withKeys(d.Authentication)
		if d.Capabilities == nil {
			d.Capabilities = &iothub.DeviceCapabilities{}
		}
		d.ConnectionState = iothub.Disconnected
		d.ETag = f.nextIdentityETag()
		f.devices[id] = &deviceState{device: d, modules: map[string]*moduleState{}}
		writeJSON(w, d)
	default:
		panic("fake hub: unhandled device method " + r.Method)
	}
}

func (f *FakeHub) serveModule(w http.ResponseWriter, r *http.Request, deviceID, moduleID string, body []byte) {
	ds := f.devices[deviceID]
	if ds == nil {
		writeError(w, iothub.DeviceNotFound, deviceID)
		return
	}
	ms := ds.modules[moduleID]
	switch r.Method {
	case http.MethodGet:
		if ms == nil {
			writeError(w, iothub.ModuleNotFound, fmt.Sprintf("Module %s not found on device %s", moduleID, deviceID))
			return
		}
		writeJSON(w, ms.module)
	case http.MethodPut:
		if ms != nil && r.Header.Get("If-Match") == "" {
			writeError(w, iothub.ModuleAlreadyExistsOnDevice, fmt.Sprintf("A module with ID '%s' is already registered on device '%s'.", moduleID, deviceID))
			return
		}
		var m iothub.Module
		if err := json.Unmarshal(body, &m); err != nil {
			writeError(w, iothub.IotHubFormatError, "malformed module")
			return
		}
		m.DeviceID, m.ModuleID = deviceID, moduleID
		m.Authentication = withKeys(m.Authentication)
		m.ConnectionState = iothub.Disconnected
		m.ETag = f.nextIdentityETag()
		ms = &moduleState{module: m}
		ms.twin = iothub.Twin{
			DeviceID: deviceID, ModuleID: moduleID, Status: iothub.Enabled, AuthenticationType: iothub.AuthSAS,
			ConnectionState: iothub.Disconnected, DeviceETag: m.ETag,
			Properties: &iothub.TwinProperties{Desired: newDoc(), Reported: newDoc()},
		}
		f.bumpTwin(ms)
		ds.modules[moduleID] = ms
		writeJSON(w, m)
	default:
		panic("fake hub: unhandled module method " + r.Method)
	}
}

func (f *FakeHub) serveTwin(w http.ResponseWriter, r *http.Request, deviceID, moduleID string, body []byte) {
	ds := f.devices[deviceID]
	if ds == nil {
		writeError(w, iothub.DeviceNotFound, deviceID)
		return
	}
	ms := ds.modules[moduleID]
	if ms == nil {
		writeError(w, iothub.ModuleNotFound, fmt.Sprintf("Module %s not found on device %s", moduleID, deviceID))
		return
	}
	switch r.Method {
	case http.MethodGet:
		f.maybeAck(ms)
		writeJSON(w, ms.twin)
		return
	case http.MethodPatch, http.MethodPut:
	default:
		panic("fake hub: unhandled twin method " + r.Method)
	}

	if f.concurrentWrites > 0 {
		f.concurrentWrites--
		ms.twin.Tags = mergeDoc(ms.twin.Tags, map[string]json.RawMessage{"otherWriter": json.RawMessage(strconv.Itoa(f.concurrentWrites))})
		f.bumpTwin(ms)
	}
	ifMatch := strings.Trim(strings.TrimPrefix(r.Header.Get("If-Match"), "W/"), `"`)
	if ifMatch != "*" && ifMatch != ms.twin.ETag {
		writeError(w, iothub.PreconditionFailed, fmt.Sprintf("ETag mismatch for device ID '%s'", deviceID))
		return
	}
	var in iothub.Twin
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, iothub.IotHubFormatError, "malformed twin")
		return
	}
	var desired map[string]json.RawMessage
	if in.Properties != nil {
		desired = in.Properties.Desired
	}
	delete(desired, "$metadata")
	delete(desired, "$version")
	for _, doc := range []map[string]json.RawMessage{in.Tags, desired} {
		for k := range doc {
			if reason := iothub.ValidateTwinKey(k); reason != "" {
				writeError(w, iothub.ArgumentInvalid, "invalid key "+k+": "+reason)
				return
			}
		}
	}
	if r.Method == http.MethodPut {
		ms.twin.Tags = mergeDoc(nil, in.Tags)
	} else {
		ms.twin.Tags = mergeDoc(ms.twin.Tags, in.Tags)
	}
	if desired != nil || r.Method == http.MethodPut {
		old := ms.twin.Properties.Desired
		base := old
		if r.Method == http.MethodPut {
			base = nil
		}
		doc := mergeDoc(base, desired)
		ver := iothub.DocVersion(old) + 1
		setDocVersion(doc, ver)
		ms.twin.Properties.Desired = doc
		if f.ack != nil && f.ack.pending == nil {
			f.ack.pending = map[string]json.RawMessage{}
			for k, v := range desired {
				if string(v) != "null" {
					f.ack.pending[k] = v
				}
			}
			f.ack.version, f.ack.target = ver, ms
		}
	}
	f.bumpTwin(ms)
	writeJSON(w, ms.twin)
}

// maybeAck writes the planned acknowledgement once enough polls happened.
func (f *FakeHub) maybeAck(ms *moduleState) {
	a := f.ack
	if a == nil || a.pending == nil || a.target != ms {
		return
	}
	a.polls++
	if a.polls <= a.afterPolls {
		return
	}
	patch := map[string]json.RawMessage{}
	for k, v := range a.pending {
		ack, _ := json.Marshal(map[string]any{"value": v, "ac": a.code, "av": a.version, "ad": "done"})
		patch[k] = ack
	}
	rep := mergeDoc(ms.twin.Properties.Reported, patch)
	setDocVersion(rep, iothub.DocVersion(ms.twin.Properties.Reported)+1)
	ms.twin.Properties.Reported = rep
	f.ack = nil
}

// bumpTwin advances a twin's version and etag (base64 of the 8-byte
// big-endian version, as the hub does).
func (f *FakeHub) bumpTwin(ms *moduleState) {
	ms.twin.Version++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(ms.twin.Version))
	ms.twin.ETag = base64.StdEncoding.EncodeToString(b[:])
}

// nextIdentityETag returns base64 of a decimal counter, as the hub does.
func (f *FakeHub) nextIdentityETag() string {
	f.etagSeq++
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(154046540+f.etagSeq, 10)))
}

func newDoc() map[string]json.RawMessage {
	return map[string]json.RawMessage{
		"$metadata": json.RawMessage(`{"$lastUpdated":"0001-01-01T00:00:00Z"}`),
		"$version":  json.RawMessage("1"),
	}
}

func setDocVersion(doc map[string]json.RawMessage, v int64) {
	doc["$version"] = json.RawMessage(strconv.FormatInt(v, 10))
	doc["$metadata"] = json.RawMessage(fmt.Sprintf(`{"$lastUpdated":"2026-01-01T00:00:00.0000000Z","$lastUpdatedVersion":%d}`, v))
}

// mergeDoc applies a JSON merge patch (null removes) to a copy of base.
func mergeDoc(base, patch map[string]json.RawMessage) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range patch {
		if string(v) == "null" {
			delete(out, k)
			continue
		}
		var sub, old map[string]json.RawMessage
		if json.Unmarshal(v, &sub) == nil && sub != nil && json.Unmarshal(out[k], &old) == nil && old != nil {
			merged, _ := json.Marshal(mergeDoc(old, sub))
			out[k] = merged
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func withKeys(a *iothub.AuthenticationMechanism) *iothub.AuthenticationMechanism {
	if a == nil {
		a = &iothub.AuthenticationMechanism{}
	}
	if a.Type == "" {
		a.Type = iothub.AuthSAS
	}
	if a.Type != iothub.AuthSAS {
		return a
	}
	if a.SymmetricKey == nil {
		a.SymmetricKey = &iothub.SymmetricKey{}
	}
	if a.SymmetricKey.PrimaryKey == "" {
		a.SymmetricKey.PrimaryKey = newKey()
	}
	if a.SymmetricKey.SecondaryKey == "" {
		a.SymmetricKey.SecondaryKey = newKey()
	}
	return a
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func authorized(header, host string) bool {
	tok, err := sas.ParseToken(header)
	if err != nil || tok.KeyName != PolicyName || !strings.EqualFold(tok.Resource, host) || tok.Expired(time.Now()) {
		return false
	}
	key, _ := base64.StdEncoding.DecodeString(PolicyKey)
	return tok.Verify(key)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code iothub.ErrorCode, text string) {
	w.Header().Set("iothub-errorcode", code.Name)
	writeErrorStatus(w, code.Status(), code.Name, text)
}

// writeErrorStatus writes IoT Hub's usual error body.
func writeErrorStatus(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"Message":          "ErrorCode:" + code + ";" + text,
		"ExceptionMessage": "Tracking ID:0123456789abcdef0123456789abcdef-G:0-TimeStamp:01/01/2026 00:00:00",
	})
}
