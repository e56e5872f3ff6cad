package restapi

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// perturbed serves an operation that a fault plan's rule matched.
func (a *api) perturbed(w http.ResponseWriter, r *http.Request, op operation, e faults.Effect) error {
	if !e.Wait(r.URL.EscapedPath(), r.Context().Done()) {
		return r.Context().Err()
	}
	if e.ChangeTwin {
		a.changeTwin(twinRef(r))
	}
	if e.After && (e.Fails() || e.Drop) {
		// The operation happens; its answer is lost on the way back.
		_ = op.run(&discardWriter{h: http.Header{}}, r)
	} else if !e.Fails() && !e.Drop {
		return op.run(w, r)
	}
	if e.Drop {
		panic(http.ErrAbortHandler) // closes the connection (resets the stream on HTTP/2)
	}
	return &hub.Error{Code: e.Code, Message: e.ErrorMessage()}
}

var concurrentWrites atomic.Int64

// changeTwin is another writer's update of a twin's tags: it moves the
// twin's etag on.
func (a *api) changeTwin(ref hub.IdentityRef) {
	n := concurrentWrites.Add(1)
	body := []byte(`{"tags":{"concurrentWriter":` + strconv.FormatInt(n, 10) + `}}`)
	if _, err := a.hub.UpdateTwin(ref, body, hub.IfMatch{}); err != nil {
		a.log.Info("fault plan: concurrent twin change failed", "identity", ref.String(), "error", err)
	}
}

// discardWriter takes the answer of an operation whose reply is lost.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
