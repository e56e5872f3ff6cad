package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Bounds on what the tools read from a file or stdin. Anything larger is
// refused with an error that names the source and the bound, so that a
// wrong path (/dev/zero, a disk image) cannot exhaust memory.
//
// MaxSecretInput bounds a connection string or key: they are a few hundred
// bytes long.
const MaxSecretInput = 16 << 10

// Input names something a tool reads: a path, or "-" for stdin.
type Input struct {
	Path  string // a file path, or "-" for env.Stdin
	What  string // what it holds, for errors: "connection string", "--desired"
	Limit int    // at most this many bytes
}

// Source describes where the input comes from, for messages.
func (in Input) Source() string {
	if in.Path == "-" {
		return "stdin"
	}
	return in.Path
}

// ErrTooLarge is wrapped by the error of an input over its limit.
var ErrTooLarge = errors.New("input too large")

// ReadInput reads in whole. It gives up as soon as ctx is done (Ctrl-C,
// SIGTERM), even while the open or a read blocks (a FIFO with no writer, a
// terminal), and refuses input longer than in.Limit. Errors name the source
// and never its content.
func ReadInput(ctx context.Context, env *Env, in Input) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r io.Reader = env.Stdin
		if in.Path != "-" {
			f, err := os.Open(in.Path)
			if err != nil {
				// The *PathError names the file and the cause.
				done <- result{err: fmt.Errorf("read %s: %w", in.What, err)}
				return
			}
			defer f.Close()
			r = f
		}
		data, err := io.ReadAll(io.LimitReader(r, int64(in.Limit)+1))
		switch {
		case err != nil:
			err = fmt.Errorf("read %s from %s: %w", in.What, in.Source(), err)
		case len(data) > in.Limit:
			data, err = nil, fmt.Errorf("%s from %s is larger than %s, the most this tool reads: %w",
				in.What, in.Source(), FormatBytes(in.Limit), ErrTooLarge)
		}
		done <- result{data, err}
	}()
	select {
	case <-ctx.Done():
		// The reading goroutine may stay blocked; the process is ending.
		return nil, fmt.Errorf("read %s from %s: %w", in.What, in.Source(), ctx.Err())
	case r := <-done:
		return r.data, r.err
	}
}

// FormatBytes renders a limit the way the README states it: 16 KiB, 4 MiB.
func FormatBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
