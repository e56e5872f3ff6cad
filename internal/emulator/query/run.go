package query

import (
	"bytes"
	"encoding/json"
)

// Key orders the documents of a scan: device ID, then module ID.
type Key struct {
	DeviceID string `json:"d"`
	ModuleID string `json:"m,omitempty"`
}

// Scanner calls fn with the twins of collection c (Devices or Modules) in
// Key order, starting after the key after (the zero Key: from the start),
// until fn returns false. Each twin is the JSON document the hub's twin
// API returns.
type Scanner func(c Collection, after Key, fn func(k Key, twin []byte) bool)

// Cursor is where the next page of a query starts.
type Cursor struct {
	After   Key    `json:"k"`           // last document examined
	Emitted int    `json:"n,omitempty"` // rows returned so far, for TOP
	Group   string `json:"g,omitempty"` // aggregates: key of the last group returned
}

// Page is one page of results.
type Page struct {
	Items    []json.RawMessage
	ItemType string  // x-ms-item-type: Twin, Raw or DeviceJob
	Next     *Cursor // nil on the last page
}

// Item types as the hub names them in x-ms-item-type.
const (
	ItemTwin      = "Twin"
	ItemRaw       = "Raw"
	ItemDeviceJob = "DeviceJob"
)

// ItemType is what the query's rows are.
func (q *Query) ItemType() string {
	switch {
	case q.From == Jobs:
		return ItemDeviceJob
	case q.Star:
		return ItemTwin
	}
	return ItemRaw
}

// Run computes the page of at most max rows that starts at cur. Plain
// queries read only as far as the page needs; aggregates read the whole
// collection and page through the groups.
func (q *Query) Run(scan Scanner, cur Cursor, max int) (Page, error) {
	page := Page{Items: []json.RawMessage{}, ItemType: q.ItemType()}
	limit := max
	if q.Top > 0 {
		limit = min(limit, q.Top-cur.Emitted)
	}
	if limit <= 0 || q.From == Jobs {
		return page, nil // the emulator runs no jobs: devices.jobs is empty
	}
	if q.Aggregated() {
		return q.runAggregate(scan, cur, limit, page)
	}
	var (
		last Key
		more bool
	)
	scan(q.From, cur.After, func(k Key, twin []byte) bool {
		if len(page.Items) == limit {
			more = true
			return false
		}
		last = k
		if q.Star && q.Where == nil {
			page.Items = append(page.Items, twin)
			return true
		}
		if !q.Matches(twin) {
			return true
		}
		if q.Star {
			page.Items = append(page.Items, twin)
		} else {
			page.Items = append(page.Items, q.project(twin))
		}
		return true
	})
	emitted := cur.Emitted + len(page.Items)
	if more && (q.Top == 0 || emitted < q.Top) {
		page.Next = &Cursor{After: last, Emitted: emitted}
	}
	return page, nil
}

// project builds a row of the SELECT list; undefined values are left out.
func (q *Query) project(twin []byte) json.RawMessage {
	var row rowWriter
	for _, it := range q.Items {
		v, name := rawDoc(twin).lookup(it.Path.Segments)
		if it.Aliased || name == "" {
			name = it.Name
		}
		row.add(name, v)
	}
	return row.close()
}

// rowWriter writes a JSON object with members in the order added.
type rowWriter struct {
	buf  bytes.Buffer
	seen map[string]bool
}

func (w *rowWriter) add(name string, v any) {
	if isUndefined(v) || w.seen[name] {
		return
	}
	if w.seen == nil {
		w.seen = map[string]bool{}
		w.buf.WriteByte('{')
	} else {
		w.buf.WriteByte(',')
	}
	w.seen[name] = true
	k, _ := json.Marshal(name)
	w.buf.Write(k)
	w.buf.WriteByte(':')
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte("null") // only decoded JSON and numbers reach here
	}
	w.buf.Write(b)
}

func (w *rowWriter) close() json.RawMessage {
	if w.seen == nil {
		return json.RawMessage("{}")
	}
	w.buf.WriteByte('}')
	return w.buf.Bytes()
}
