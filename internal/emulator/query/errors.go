package query

import "fmt"

// Error is a query the hub refuses: a syntax error, or a construct the
// IoT Hub query language does not have. Pos is where it was found.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("%s %s", e.Pos, e.Msg) }

func errAt(t token, format string, args ...any) *Error {
	return &Error{Pos: t.pos, Msg: fmt.Sprintf(format, args...)}
}
