// Package eventapi streams the emulator's events over its HTTPS listener,
// for `iothub-emulator monitor` and any other client holding a service
// connection string: GET Path with a SAS token that has ServiceConnect
// answers with one JSON event per line for as long as the client reads.
package eventapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/restapi"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Path is where the stream is served (an emulator extension, outside IoT
// Hub's own API).
const Path = "/emulator/events"

// Query parameters of a stream request.
const (
	ParamKind     = "kind" // repeatable, or a comma-separated list; none: messages only
	ParamDeviceID = "deviceId"
	ParamModuleID = "moduleId"
)

// DroppedKind is the kind of the line that tells a reader how many events
// it missed because it read too slowly; the count is in "dropped".
const DroppedKind = "dropped"

// Dropped is the line written when events were dropped.
type Dropped struct {
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	Dropped uint64    `json:"dropped"` // missed since the stream began
}

// stallTimeout closes the stream of a client that has read nothing for
// this long; until then its events are dropped and counted.
const stallTimeout = time.Minute

// DefaultBuffer is how many events wait for a slow reader before drops.
const DefaultBuffer = 4096

// Handler serves the stream; closing Done ends every stream.
type Handler struct {
	Hub    *hub.Hub
	Bus    *events.Bus
	Done   <-chan struct{}
	Buffer int // events held for each reader; 0 = DefaultBuffer
}

// ParseKinds reads kind names ("all" for every kind).
func ParseKinds(values []string) (map[events.Kind]bool, error) {
	kinds := map[events.Kind]bool{}
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if name == "all" {
				for _, k := range events.Kinds {
					kinds[k] = true
				}
				continue
			}
			if !known(events.Kind(name)) {
				return nil, fmt.Errorf("event kind %q is not one of all, %s", name, kindList())
			}
			kinds[events.Kind(name)] = true
		}
	}
	if len(kinds) == 0 {
		kinds[events.Message] = true
	}
	return kinds, nil
}

func known(k events.Kind) bool {
	for _, x := range events.Kinds {
		if x == k {
			return true
		}
	}
	return false
}

func kindList() string {
	names := make([]string, len(events.Kinds))
	for i, k := range events.Kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		restapi.WriteError(w, &hub.Error{Code: iothub.MethodNotAllowed, Message: fmt.Sprintf("method %s is not allowed on %s (allowed: GET)", r.Method, Path)})
		return
	}
	if err := h.Hub.AuthorizeService(r.Header.Get("Authorization"), hub.ServiceConnect, time.Now()); err != nil {
		restapi.WriteError(w, err)
		return
	}
	q := r.URL.Query()
	kinds, err := ParseKinds(q[ParamKind])
	if err != nil {
		restapi.WriteError(w, &hub.Error{Code: iothub.ArgumentInvalid, Message: err.Error()})
		return
	}
	sub := h.Bus.Subscribe(events.Filter{Kinds: kinds, DeviceID: q.Get(ParamDeviceID), ModuleID: q.Get(ParamModuleID)}, cmp.Or(h.Buffer, DefaultBuffer))
	defer sub.Close()

	// The subscription is in place before the client sees the answer, so
	// a client that has the headers misses nothing after them.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	var reported uint64
	enc := json.NewEncoder(w)
	for {
		var e events.Event
		select {
		case <-r.Context().Done():
			return
		case <-h.Done:
			return
		case e = <-sub.C():
		}
		_ = rc.SetWriteDeadline(time.Now().Add(stallTimeout))
		if n := sub.Dropped(); n > reported {
			reported = n
			if enc.Encode(Dropped{Kind: DroppedKind, Time: time.Now().UTC(), Dropped: n}) != nil {
				return
			}
		}
		if err := enc.Encode(e); err != nil {
			return
		}
		// Write what else is waiting before flushing.
		for more := true; more; {
			select {
			case e = <-sub.C():
				if enc.Encode(e) != nil {
					return
				}
			default:
				more = false
			}
		}
		if err := rc.Flush(); err != nil {
			if !errors.Is(err, http.ErrNotSupported) {
				return
			}
		}
	}
}
