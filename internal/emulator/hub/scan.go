package hub

import "slices"

// scanBatch is how many twins a scan renders per hold of the read lock, so
// that a long scan never keeps writers waiting for long.
const scanBatch = 64

// ScanTwins calls fn with device twins (modules false) or module twins in
// (device ID, module ID) order, starting after the identity after (the
// zero IdentityRef: from the start), until fn returns false. Twins are
// rendered as query results show them. Each twin is read as it is when
// its batch is read: a twin that exists for the whole scan is seen
// exactly once, and every write acknowledged before the scan is in it.
func (h *Hub) ScanTwins(modules bool, after IdentityRef, fn func(r IdentityRef, twin []byte) bool) {
	h.mu.RLock()
	ids := make([]string, 0, len(h.devices))
	for id := range h.devices {
		if id > after.DeviceID || modules && id == after.DeviceID {
			ids = append(ids, id)
		}
	}
	h.mu.RUnlock()
	slices.Sort(ids)

	type scanned struct {
		ref  IdentityRef
		twin []byte
	}
	batch := make([]scanned, 0, scanBatch)
	for len(ids) > 0 {
		batch = batch[:0]
		h.mu.RLock()
		for len(ids) > 0 && len(batch) < scanBatch {
			d := h.devices[ids[0]]
			ids = ids[1:]
			if d == nil {
				continue // deleted since the scan began
			}
			if !modules {
				batch = append(batch, scanned{d.ref(), h.renderTwinAs(d.identity, true)})
				continue
			}
			for _, mid := range sortedKeys(d.modules) {
				if d.DeviceID == after.DeviceID && mid <= after.ModuleID {
					continue
				}
				m := d.modules[mid]
				batch = append(batch, scanned{m.ref(), h.renderTwinAs(m, true)})
			}
		}
		h.mu.RUnlock()
		for _, s := range batch {
			if !fn(s.ref, s.twin) {
				return
			}
		}
	}
}
