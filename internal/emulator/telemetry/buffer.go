package telemetry

import "sync"

// Buffer defaults.
const (
	DefaultCapacity = 1000
	DefaultMaxBytes = 64 << 20
)

// Buffer holds the latest messages, at most a number of them and a total
// size; the oldest go first and are counted. It is safe for concurrent use.
type Buffer struct {
	capacity int
	maxBytes int

	mu      sync.Mutex
	msgs    []Message
	bytes   int
	seq     uint64
	dropped uint64
}

// NewBuffer returns a buffer of at most capacity messages (DefaultCapacity
// when < 1) and maxBytes of message sizes (DefaultMaxBytes when < 1).
func NewBuffer(capacity, maxBytes int) *Buffer {
	if capacity < 1 {
		capacity = DefaultCapacity
	}
	if maxBytes < 1 {
		maxBytes = DefaultMaxBytes
	}
	return &Buffer{capacity: capacity, maxBytes: maxBytes}
}

// Add keeps m, numbered, dropping the oldest messages that no longer fit,
// and returns it as kept.
func (b *Buffer) Add(m Message) Message {
	size := m.Size()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	m.Seq = b.seq
	b.msgs = append(b.msgs, m)
	b.bytes += size
	for len(b.msgs) > b.capacity || b.bytes > b.maxBytes && len(b.msgs) > 1 {
		b.bytes -= b.msgs[0].Size()
		b.msgs[0] = Message{}
		b.msgs = b.msgs[1:]
		b.dropped++
	}
	return m
}

// Stats describes a buffer's state.
type Stats struct {
	Held     int    `json:"held"`     // messages kept now
	Bytes    int    `json:"bytes"`    // their total size
	Received uint64 `json:"received"` // messages taken since start
	Dropped  uint64 `json:"dropped"`  // messages dropped to make room
	Capacity int    `json:"capacity"`
	MaxBytes int    `json:"maxBytes"`
}

// Stats returns the buffer's counters.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Held: len(b.msgs), Bytes: b.bytes, Received: b.seq, Dropped: b.dropped, Capacity: b.capacity, MaxBytes: b.maxBytes}
}

// Of returns the kept messages of one device (moduleID empty: the device's
// own, not its modules') or module, oldest first, at most the latest
// limit of them (all when limit < 1).
func (b *Buffer) Of(deviceID, moduleID string, limit int) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Message
	for i := len(b.msgs) - 1; i >= 0 && (limit < 1 || len(out) < limit); i-- {
		if m := b.msgs[i]; m.DeviceID == deviceID && m.ModuleID == moduleID {
			out = append(out, m)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
