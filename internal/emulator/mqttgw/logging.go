package mqttgw

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// brokerLogHandler passes the embedded broker's log records to the
// emulator's handler. The broker's informational chatter becomes debug,
// and packets it attaches to records are reduced to their type: a
// CONNECT carries the client's password (its SAS token).
type brokerLogHandler struct{ next slog.Handler }

func (h brokerLogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, demote(level))
}

func (h brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, demote(r.Level), r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(scrub(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h brokerLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = scrub(a)
	}
	return brokerLogHandler{h.next.WithAttrs(clean)}
}

func (h brokerLogHandler) WithGroup(name string) slog.Handler {
	return brokerLogHandler{h.next.WithGroup(name)}
}

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

// scrub replaces a packet value by its type name.
func scrub(a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch p := a.Value.Any().(type) {
	case packets.Packet:
		return slog.String(a.Key, packetName(p.FixedHeader.Type))
	case *packets.Packet:
		if p == nil {
			return a
		}
		return slog.String(a.Key, packetName(p.FixedHeader.Type))
	}
	return a
}

func packetName(t byte) string {
	if name, ok := packets.PacketNames[t]; ok {
		return name
	}
	return "unknown packet"
}
