package inspector

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
)

func urlQuery(s string) string { return url.QueryEscape(s) }

func allKinds() []events.Kind { return events.Kinds }

// parseKinds reads kind=… values (repeatable or comma-separated); none
// means every kind.
func parseKinds(values []string) (map[events.Kind]bool, error) {
	kinds := map[events.Kind]bool{}
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue
			}
			known := false
			for _, k := range events.Kinds {
				known = known || string(k) == name
			}
			if !known {
				return nil, fmt.Errorf("event kind %q is unknown", name)
			}
			kinds[events.Kind(name)] = true
		}
	}
	return kinds, nil
}

// streamBuffer is how many events wait for a slow page before drops.
const streamBuffer = 1024

// stream sends events to a page as server-sent events. With a module
// parameter (even empty) only that exact identity's events are sent.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	kinds, err := parseKinds(q["kind"])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, exact := q["module"]
	module := q.Get("module")
	sub := s.bus.Subscribe(events.Filter{Kinds: kinds, DeviceID: q.Get("device"), ModuleID: module}, streamBuffer)
	defer sub.Close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := fmt.Fprint(w, ": listening\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	var reported uint64
	for {
		var e events.Event
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case e = <-sub.C():
		}
		if n := sub.Dropped(); n > reported {
			reported = n
			if _, err := fmt.Fprintf(w, "event: dropped\ndata: %d\n\n", n); err != nil {
				return
			}
		}
		if exact && e.ModuleID != module {
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			continue
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil || rc.Flush() != nil {
			return
		}
	}
}
