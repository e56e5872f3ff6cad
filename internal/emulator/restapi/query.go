package restapi

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/query"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Page sizes of POST /devices/query (x-ms-max-item-count): the default
// when the header is absent or not a positive number, and the most a page
// holds whatever is asked.
const (
	DefaultQueryPageSize = 100
	MaxQueryPageSize     = 1000
)

// queryTwins serves POST /devices/query: one page of a query over device
// or module twins.
func (a *api) queryTwins(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Query *string `json:"query"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Query == nil || strings.TrimSpace(*req.Query) == "" {
		return &hub.Error{Code: iothub.ArgumentNull, Message: `the request body has no query (want {"query": "SELECT * FROM devices"})`}
	}
	q, err := query.Parse(*req.Query)
	if err != nil {
		return &hub.Error{Code: iothub.ArgumentInvalid, Message: "SQL query parse failed due to following errors: " + err.Error()}
	}
	var cur query.Cursor
	if tok := r.Header.Get("x-ms-continuation"); tok != "" {
		if cur, err = a.tokens.Decode(*req.Query, tok); err != nil {
			return &hub.Error{Code: iothub.ArgumentInvalid, Message: "x-ms-continuation: " + err.Error()}
		}
	}
	page, err := q.Run(a.scan, cur, pageSize(r.Header.Get("x-ms-max-item-count")))
	if err != nil {
		return err
	}
	w.Header()["x-ms-item-type"] = []string{page.ItemType}
	if page.Next != nil {
		w.Header()["x-ms-continuation"] = []string{a.tokens.Encode(*req.Query, *page.Next)}
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, it := range page.Items {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(it)
	}
	body.WriteByte(']')
	writeRaw(w, http.StatusOK, body.Bytes())
	return nil
}

func pageSize(header string) int {
	n, err := strconv.Atoi(strings.TrimSpace(header))
	switch {
	case err != nil || n < 1:
		return DefaultQueryPageSize
	case n > MaxQueryPageSize:
		return MaxQueryPageSize
	}
	return n
}

// scan runs a query over the hub's twins in key order.
func (a *api) scan(c query.Collection, after query.Key, fn func(query.Key, []byte) bool) {
	a.hub.ScanTwins(c == query.Modules, hub.IdentityRef{DeviceID: after.DeviceID, ModuleID: after.ModuleID},
		func(r hub.IdentityRef, twin []byte) bool {
			return fn(query.Key{DeviceID: r.DeviceID, ModuleID: r.ModuleID}, twin)
		})
}
