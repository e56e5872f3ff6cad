package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moduletwin/iothub-module-twin/bench/loadgen"
)

// readyText is what both receivers print on stderr once subscribed.
const readyText = "waiting for desired property patches"

// receiver is a running receive-twin-patch (ours or the Node.js peer)
// whose stdout lines are timestamped as they are read.
type receiver struct {
	side   string // "go" or "node"
	module loadgen.Module
	cmd    *exec.Cmd
	lines  chan outputLine
	ready  chan struct{}
	exited chan struct{}

	mu     sync.Mutex
	stderr []string // the last lines, for error messages
}

type outputLine struct {
	at   time.Time
	text []byte
}

// event is one line of `--output json`.
type event struct {
	Type    string         `json:"type"`
	Version int64          `json:"version"`
	Desired map[string]any `json:"desired"`
}

func startReceiver(side string, argv []string, dir string, env []string, m loadgen.Module) (*receiver, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	r := &receiver{side: side, module: m, cmd: cmd, lines: make(chan outputLine, 4096),
		ready: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer outR.Close()
		defer close(r.lines)
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			at := time.Now()
			r.lines <- outputLine{at: at, text: append([]byte(nil), sc.Bytes()...)}
		}
	}()
	go func() {
		defer errR.Close()
		sc := bufio.NewScanner(errR)
		signalled := false
		for sc.Scan() {
			r.mu.Lock()
			r.stderr = append(r.stderr, sc.Text())
			if len(r.stderr) > 20 {
				r.stderr = r.stderr[1:]
			}
			r.mu.Unlock()
			if !signalled && strings.Contains(sc.Text(), readyText) {
				close(r.ready)
				signalled = true
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(r.exited)
	}()
	return r, nil
}

func (r *receiver) pid() int { return r.cmd.Process.Pid }

func (r *receiver) lastStderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.stderr, "\n")
}

func (r *receiver) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.ready:
		return nil
	case <-r.exited:
		return fmt.Errorf("%s receiver exited before it was ready: %s", r.side, r.lastStderr())
	case <-t.C:
		return fmt.Errorf("%s receiver not ready within %s: %s", r.side, timeout, r.lastStderr())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitPatch waits for the patch line carrying seq and returns when it was
// read. Lines of other patches (late ones) are skipped.
func (r *receiver) waitPatch(seq int, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				return time.Time{}, fmt.Errorf("%s receiver closed its output: %s", r.side, r.lastStderr())
			}
			var ev event
			if err := json.Unmarshal(l.text, &ev); err != nil {
				return time.Time{}, fmt.Errorf("%s receiver printed a line that is not JSON: %q", r.side, l.text)
			}
			if ev.Type == "patch" && ev.Desired["seq"] == float64(seq) {
				return l.at, nil
			}
		case <-t.C:
			return time.Time{}, fmt.Errorf("%s receiver: patch %d not printed within %s", r.side, seq, timeout)
		}
	}
}

// stop interrupts the receiver and returns its peak RSS from wait4.
func (r *receiver) stop() (int64, error) {
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
		return 0, errors.New(r.side + " receiver did not stop on SIGINT")
	}
	return maxRSS(r.cmd.ProcessState), nil
}
