// Package restapi serves IoT Hub's service API (identity registry, twins
// and direct method invocation) over HTTP for the emulator's hub: routes, SAS authorization,
// If-Match, and errors in the shape real hubs send.
package restapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/methods"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/query"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// MaxBodyBytes caps request bodies, as the hub caps messages.
const MaxBodyBytes = 256 * 1024

// HealthPath answers GET without authorization (an emulator extension).
const HealthPath = "/health"

// Options configure the API.
type Options struct {
	Logger *slog.Logger     // nil = discard
	Now    func() time.Time // nil = time.Now
	Faults faults.Hook      // nil = none: answer as a real hub
	Events events.Publisher // gets each request (method, path, status, duration); nil = none
	// Methods serves direct method invocations; nil leaves them
	// unrouted (404).
	Methods *methods.Engine
	// Entra, when set, accepts its bearer tokens (see authorize).
	Entra *entra.Issuer
	// DisableLocalAuth refuses shared access signatures, as a hub with
	// disableLocalAuth does; devices keep theirs over MQTT.
	DisableLocalAuth bool
}

type api struct {
	hub    *hub.Hub
	log    *slog.Logger
	now    func() time.Time
	faults faults.Hook
	events events.Publisher
	tokens *query.Tokens // seals query continuation tokens

	entra            *entra.Issuer
	disableLocalAuth bool
}

// Register mounts the service API on mux. Anything mux does not otherwise
// route gets a 404 error body.
func Register(mux *http.ServeMux, h *hub.Hub, opts Options) {
	a := &api{hub: h, log: opts.Logger, now: opts.Now, faults: opts.Faults, events: opts.Events, tokens: query.NewTokens(), entra: opts.Entra, disableLocalAuth: opts.DisableLocalAuth}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.route(mux, HealthPath, map[string]operation{
		http.MethodGet: {public: true, run: a.health},
	})
	listOps := map[string]operation{
		http.MethodGet: {need: hub.RegistryRead, fault: faults.DeviceList, run: a.listDevices},
	}
	a.route(mux, "/devices", listOps)
	// The Node.js SDK's Registry.list asks for /devices/.
	a.route(mux, "/devices/{$}", listOps)
	// More specific than /devices/{id}, so a device called "query" keeps
	// its GET, PUT and DELETE.
	a.route(mux, "POST /devices/query", map[string]operation{
		http.MethodPost: {need: hub.RegistryRead | hub.ServiceConnect, anyOf: true, fault: faults.Query, run: a.queryTwins},
	})
	a.route(mux, "/devices/{id}", map[string]operation{
		http.MethodGet:    {need: hub.RegistryRead, fault: faults.DeviceGet, run: a.getDevice},
		http.MethodPut:    {need: hub.RegistryWrite, fault: faults.DevicePut, run: a.putDevice},
		http.MethodDelete: {need: hub.RegistryWrite, fault: faults.DeviceDelete, run: a.deleteDevice},
	})
	a.route(mux, "/devices/{id}/modules", map[string]operation{
		http.MethodGet: {need: hub.RegistryRead, fault: faults.ModuleList, run: a.listModules},
	})
	a.route(mux, "/devices/{id}/modules/{mid}", map[string]operation{
		http.MethodGet:    {need: hub.RegistryRead, fault: faults.ModuleGet, run: a.getModule},
		http.MethodPut:    {need: hub.RegistryWrite, fault: faults.ModulePut, run: a.putModule},
		http.MethodDelete: {need: hub.RegistryWrite, fault: faults.ModuleDelete, run: a.deleteModule},
	})
	twinOps := map[string]operation{
		http.MethodGet:   {need: hub.ServiceConnect, fault: faults.TwinGet, run: a.getTwin},
		http.MethodPatch: {need: hub.ServiceConnect, fault: faults.TwinPatch, run: a.patchTwin},
		http.MethodPut:   {need: hub.ServiceConnect, fault: faults.TwinPut, run: a.putTwin},
	}
	a.route(mux, "/twins/{id}", twinOps)
	a.route(mux, "/twins/{id}/modules/{mid}", twinOps)
	if opts.Methods != nil {
		a.registerMethods(mux, opts.Methods)
	}
	mux.Handle("/", a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &hub.Error{Code: iothub.NotFound, Message: fmt.Sprintf("no such resource: %s", r.URL.EscapedPath())}
	}))
}

// operation is one method of a route: the rights it needs and its body.
type operation struct {
	need   hub.Rights
	anyOf  bool // any one right of need is enough
	public bool
	fault  faults.Op // the kind a fault plan knows it by
	run    func(w http.ResponseWriter, r *http.Request) error
}

// route dispatches on the method itself, so that a wrong method gets an
// IoT Hub error body rather than ServeMux's plain-text 405.
func (a *api) route(mux *http.ServeMux, pattern string, ops map[string]operation) {
	allowed := make([]string, 0, len(ops))
	for m := range ops {
		allowed = append(allowed, m)
	}
	sort.Strings(allowed)
	mux.Handle(pattern, a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		op, ok := ops[r.Method]
		if !ok {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			return &hub.Error{Code: iothub.MethodNotAllowed, Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, pattern, strings.Join(allowed, ", "))}
		}
		if !op.public {
			if err := a.authorize(r, pattern, op); err != nil {
				return err
			}
		}
		if a.faults != nil && op.fault != "" {
			if e, ok := a.faults.Inject(op.fault, r.URL.EscapedPath()); ok {
				return a.perturbed(w, r, op, e)
			}
		}
		return op.run(w, r)
	}))
}

// wrap sets the common headers, turns errors into IoT Hub error bodies and
// logs the request (never its Authorization header).
func (a *api) wrap(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := a.now()
		id := newRequestID()
		// Header names as the hub spells them (HTTP/2 lower-cases them anyway).
		w.Header()["x-ms-request-id"] = []string{id}
		sw := &statusWriter{ResponseWriter: w}
		err := fn(sw, r)
		if err != nil {
			a.writeError(sw, id, err)
		}
		// Successful requests only at debug level: a busy client would
		// otherwise flood the log.
		level := slog.LevelDebug
		switch {
		case sw.status >= 500:
			level = slog.LevelError
		case sw.status >= 400:
			level = slog.LevelInfo
		}
		took := a.now().Sub(start)
		attrs := []any{"method", r.Method, "path", r.URL.EscapedPath(), "status", sw.status,
			"request_id", id, "duration", took}
		if a.events != nil {
			a.events.Publish(events.Event{Kind: events.Request, DeviceID: r.PathValue("id"), ModuleID: r.PathValue("mid"), Request: &events.RequestInfo{
				Method: r.Method, Path: r.URL.EscapedPath(), Status: sw.status, DurationMS: float64(took.Microseconds()) / 1000,
			}})
		}
		var he *hub.Error
		var me *methods.Error
		switch {
		case errors.As(err, &he):
			// What the client was told: it names no key or signature.
			attrs = append(attrs, "error", he.Error())
		case errors.As(err, &me):
			attrs = append(attrs, "error", me.Error())
		}
		a.log.Log(r.Context(), level, "request", attrs...)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

const contentTypeJSON = "application/json; charset=utf-8"

type errorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

func (a *api) writeError(w http.ResponseWriter, requestID string, err error) {
	var me *methods.Error
	if errors.As(err, &me) {
		w.Header()["iothub-errorcode"] = []string{me.Code.Name}
		writeRaw(w, me.Code.Status(), a.methodErrorBody(requestID, me))
		return
	}
	var he *hub.Error
	if !errors.As(err, &he) {
		a.log.Error("request failed", "request_id", requestID, "err", err)
	}
	writeErrorBody(w, requestID, err, a.now())
}

// WriteError answers a request of an emulator extension with err in IoT
// Hub's error shape, as the service API would.
func WriteError(w http.ResponseWriter, err error) {
	id := newRequestID()
	w.Header()["x-ms-request-id"] = []string{id}
	writeErrorBody(w, id, err, time.Now())
}

func writeErrorBody(w http.ResponseWriter, requestID string, err error, now time.Time) {
	var he *hub.Error
	if !errors.As(err, &he) {
		he = &hub.Error{Code: iothub.ServerError, Message: "internal error"}
	}
	body := errorBody{
		Message: "ErrorCode:" + he.Code.Name + ";" + he.Message,
		ExceptionMessage: "Tracking ID:" + strings.ReplaceAll(requestID, "-", "") + "-G:0-TimeStamp:" +
			now.UTC().Format("01/02/2006 15:04:05"),
	}
	w.Header()["iothub-errorcode"] = []string{he.Code.Name}
	writeJSON(w, he.Code.Status(), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("restapi: encode response: " + err.Error()) // only plain data
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// readBody reads a capped request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, &hub.Error{Code: iothub.MessageTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}
	case err != nil:
		return nil, &hub.Error{Code: iothub.IotHubFormatError, Message: "could not read the request body"}
	}
	return b, nil
}

// decodeBody reads a JSON body into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := readBody(w, r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &hub.Error{Code: iothub.IotHubFormatError, Message: fmt.Sprintf("request body is not valid JSON for this operation: %v", err)}
	}
	return nil
}

func ifMatch(r *http.Request) hub.IfMatch { return hub.ParseIfMatch(r.Header.Get("If-Match")) }

func (a *api) health(w http.ResponseWriter, r *http.Request) error {
	writeRaw(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

func (a *api) listDevices(w http.ResponseWriter, r *http.Request) error {
	top, err := strconv.Atoi(r.URL.Query().Get("top"))
	if err != nil {
		top = hub.MaxListDevices
	}
	writeJSON(w, http.StatusOK, a.hub.ListDevices(top))
	return nil
}

func writeDevice(w http.ResponseWriter, d iothub.Device) {
	w.Header()["ETag"] = []string{`"` + d.ETag + `"`}
	writeJSON(w, http.StatusOK, d)
}

func (a *api) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := a.hub.GetDevice(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeDevice(w, d)
	return nil
}

func (a *api) putDevice(w http.ResponseWriter, r *http.Request) error {
	var req iothub.Device
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	d, err := a.hub.CreateOrUpdateDevice(r.PathValue("id"), req, ifMatch(r))
	if err != nil {
		return err
	}
	writeDevice(w, d)
	return nil
}

func (a *api) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	if err := a.hub.DeleteDevice(r.PathValue("id"), ifMatch(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) listModules(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, a.hub.ListModules(r.PathValue("id")))
	return nil
}

func (a *api) getModule(w http.ResponseWriter, r *http.Request) error {
	m, err := a.hub.GetModule(r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (a *api) putModule(w http.ResponseWriter, r *http.Request) error {
	var req iothub.Module
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	m, err := a.hub.CreateOrUpdateModule(r.PathValue("id"), r.PathValue("mid"), req, ifMatch(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (a *api) deleteModule(w http.ResponseWriter, r *http.Request) error {
	if err := a.hub.DeleteModule(r.PathValue("id"), r.PathValue("mid"), ifMatch(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func twinRef(r *http.Request) hub.IdentityRef {
	return hub.IdentityRef{DeviceID: r.PathValue("id"), ModuleID: r.PathValue("mid")}
}

func (a *api) getTwin(w http.ResponseWriter, r *http.Request) error {
	b, err := a.hub.Twin(twinRef(r))
	if err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, b)
	return nil
}

func (a *api) patchTwin(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	b, err := a.hub.UpdateTwin(twinRef(r), body, ifMatch(r))
	if err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, b)
	return nil
}

func (a *api) putTwin(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	b, err := a.hub.ReplaceTwin(twinRef(r), body, ifMatch(r))
	if err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, b)
	return nil
}
