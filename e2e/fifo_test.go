package e2e

import (
	"os"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdMkfifo makes a named pipe: mkfifo NAME. A program that reads it waits
// for a writer, as it would on a terminal nobody types into.
func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkfifo NAME")
	}
	ts.Check(syscall.Mkfifo(ts.MkAbs(args[0]), 0o600))
}

// cmdFifoHold opens a named pipe for writing and keeps it open, writing
// nothing, until the script ends: fifo-hold NAME. Opening blocks until a
// reader has opened the pipe, so when it returns the reader is waiting for
// data that never comes.
func cmdFifoHold(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: fifo-hold NAME")
	}
	opened := make(chan *os.File, 1)
	errc := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY, 0)
		if err != nil {
			errc <- err
			return
		}
		opened <- f
	}()
	select {
	case f := <-opened:
		ts.Defer(func() { f.Close() })
	case err := <-errc:
		ts.Fatalf("fifo-hold %s: %v", args[0], err)
	case <-time.After(30 * time.Second):
		// A hang guard only: no reader opened the pipe.
		ts.Fatalf("fifo-hold %s: no reader opened it within 30s", args[0])
	}
}
