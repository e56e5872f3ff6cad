package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The ports Microsoft's Node.js SDKs insist on.
const (
	httpsAddr = "127.0.0.1:443"
	mqttAddr  = "127.0.0.1:8883"
	hostName  = "localhost"
)

// emulatorProc is the iothub-emulator process every phase runs against.
type emulatorProc struct {
	cmd              *exec.Cmd
	connectionString string
	caFile           string
	dataDir          string
	exited           chan struct{}
}

// startEmulator runs iothub-emulator with durable storage in dataDir and
// waits for its two settings lines.
func startEmulator(ctx context.Context, binDir, dataDir, logFile string) (*emulatorProc, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(binDir, "iothub-emulator"),
		"--https-addr", httpsAddr, "--mqtt-addr", mqttAddr, "--hostname", hostName,
		"--data-dir", dataDir, "--log-level", "warn", "--inspector-addr", "")
	cmd.Stderr = log
	// An own pipe, so that reading it does not race with Wait.
	stdout, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		stdout.Close()
		return nil, err
	}
	e := &emulatorProc{cmd: cmd, dataDir: dataDir, exited: make(chan struct{})}
	settings := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for e.connectionString == "" || e.caFile == "" {
			if !sc.Scan() {
				stdout.Close()
				settings <- errors.New("iothub-emulator printed no connection settings")
				return
			}
			k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
			switch k {
			case "IOTHUB_CONNECTION_STRING":
				e.connectionString = strings.Trim(v, "'")
			case "IOTHUB_CA_FILE":
				e.caFile = strings.Trim(v, "'")
			}
		}
		settings <- nil
		for sc.Scan() { // nothing more is expected; keep the pipe drained
		}
		stdout.Close()
	}()
	go func() {
		cmd.Wait()
		close(e.exited)
	}()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case err = <-settings:
	case <-e.exited:
		err = errors.New("iothub-emulator exited during start-up")
	case <-timer.C:
		err = errors.New("iothub-emulator did not start within 15 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		e.stop()
		b, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("%w; its log:\n%s", err, b)
	}
	return e, nil
}

func (e *emulatorProc) pid() int { return e.cmd.Process.Pid }

// stop interrupts the emulator and waits for it, killing it after 20 s.
func (e *emulatorProc) stop() {
	_ = e.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}
