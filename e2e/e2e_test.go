// Package e2e runs the real binaries as separate processes against a fresh
// iothub-emulator per script (testscript files in testdata/).
//
// Custom script commands:
//
//	start NAME PROG [ARGS...]      run PROG in the background, output in NAME.stdout / NAME.stderr
//	await NAME stdout|stderr RE    wait (up to 30 s) until the output matches the regular expression
//	stop NAME [INT|TERM|KILL]      send a signal (default INT)
//	waitexit NAME [CODE]           wait for NAME to exit and check its exit code (default 0)
//	mqtt-link up|down              connect or cut MQTT between the clients and the emulator
//	json FILE PATH [WANT]          FILE (or "stdout") is one JSON value per line; print PATH of the
//	                               last line (a.b.0.c), and compare it with WANT when given
//	keys-of FILE                   print the keys of the JSON object in FILE, sorted
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moduletwin/iothub-module-twin/internal/emulator"
)

var update = flag.Bool("update", false, "rewrite the scripts' expected output")

var binDir string

// TestMain builds the binaries once, as a user would with `make build`.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "iothub-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"../cmd/create-module", "../cmd/update-module-twin", "../cmd/receive-twin-patch", "../cmd/iothub-emulator")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup:               setup,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"start":     cmdStart,
			"await":     cmdAwait,
			"stop":      cmdStop,
			"waitexit":  cmdWaitExit,
			"mqtt-link": cmdMQTTLink,
			"json":      cmdJSON,
			"keys-of":   cmdKeysOf,
		},
	})
}

type scriptState struct {
	em    *emulator.Emulator
	link  *linkProxy
	mu    sync.Mutex
	procs map[string]*bgProc
}

type bgProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

const stateKey = "e2e-state"

func setup(env *testscript.Env) error {
	em, err := emulator.Start(context.Background(), emulator.Config{
		HTTPSAddr: "127.0.0.1:0",
		MQTTAddr:  "127.0.0.1:0",
		HostName:  "localhost",
		InMemory:  true,
	})
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	link, err := newLinkProxy(em.MQTTAddr())
	if err != nil {
		em.Close()
		return err
	}
	st := &scriptState{em: em, link: link, procs: map[string]*bgProc{}}
	env.Values[stateKey] = st
	env.Defer(func() {
		st.mu.Lock()
		for _, p := range st.procs {
			p.cmd.Process.Kill()
			<-p.done
		}
		st.mu.Unlock()
		link.Close()
		em.Close()
	})
	env.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	env.Setenv("IOTHUB_CONNECTION_STRING", em.ServiceConnectionString())
	env.Setenv("IOTHUB_CA_FILE", em.CAFile())
	env.Setenv("IOTHUB_MQTT_ADDR", link.Addr())
	env.Setenv("HUB_HOST", em.HostName())
	env.Setenv("NO_COLOR", "1")
	return nil
}

func state(ts *testscript.TestScript) *scriptState {
	return ts.Value(stateKey).(*scriptState)
}

func cmdStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: start NAME PROG [ARGS...]")
	}
	st := state(ts)
	name := args[0]
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.procs[name]; ok {
		ts.Fatalf("a process named %s was already started", name)
	}
	stdout, err := os.Create(ts.MkAbs(name + ".stdout"))
	ts.Check(err)
	stderr, err := os.Create(ts.MkAbs(name + ".stderr"))
	ts.Check(err)
	prog, err := exec.LookPath(args[1])
	if err != nil {
		prog = args[1]
	}
	cmd := exec.Command(prog, args[2:]...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.Env = scriptEnv(ts)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	ts.Check(cmd.Start())
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(p.done)
	}()
	st.procs[name] = p
}

// scriptEnv returns the script's environment for a child process.
func scriptEnv(ts *testscript.TestScript) []string {
	keys := map[string]bool{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "WORK", "IOTHUB_CONNECTION_STRING", "IOTHUB_CA_FILE",
		"IOTHUB_MQTT_ADDR", "IOTHUB_MODULE_CONNECTION_STRING", "HUB_HOST", "NO_COLOR"} {
		keys[k] = true
	}
	var env []string
	for k := range keys {
		if v := ts.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func proc(ts *testscript.TestScript, name string) *bgProc {
	st := state(ts)
	st.mu.Lock()
	defer st.mu.Unlock()
	p, ok := st.procs[name]
	if !ok {
		ts.Fatalf("no process named %s", name)
	}
	return p
}

func cmdAwait(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 || (args[1] != "stdout" && args[1] != "stderr") {
		ts.Fatalf("usage: await NAME stdout|stderr REGEXP")
	}
	p := proc(ts, args[0])
	re, err := regexp.Compile(args[2])
	ts.Check(err)
	file := ts.MkAbs(args[0] + "." + args[1])
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(file)
		if re.Match(data) {
			return
		}
		select {
		case <-p.done:
			data, _ = os.ReadFile(file)
			if re.Match(data) {
				return
			}
			errOut, _ := os.ReadFile(ts.MkAbs(args[0] + ".stderr"))
			ts.Fatalf("%s exited (%v) before its %s matched %q; stderr:\n%s", args[0], p.err, args[1], args[2], errOut)
		default:
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: %s did not match %q within 30s; it holds:\n%s", args[0], args[1], args[2], data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdStop(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: stop NAME [INT|TERM|KILL]")
	}
	sig := syscall.SIGINT
	if len(args) == 2 {
		switch args[1] {
		case "INT":
		case "TERM":
			sig = syscall.SIGTERM
		case "KILL":
			sig = syscall.SIGKILL
		default:
			ts.Fatalf("unknown signal %s", args[1])
		}
	}
	p := proc(ts, args[0])
	ts.Check(p.cmd.Process.Signal(sig))
}

func cmdWaitExit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: waitexit NAME [CODE]")
	}
	want := 0
	if len(args) == 2 {
		n, err := strconv.Atoi(args[1])
		ts.Check(err)
		want = n
	}
	p := proc(ts, args[0])
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		ts.Fatalf("%s did not exit within 60s", args[0])
	}
	got := p.cmd.ProcessState.ExitCode()
	ts.Logf("%s exited with %d", args[0], got)
	if got != want {
		errOut, _ := os.ReadFile(ts.MkAbs(args[0] + ".stderr"))
		ts.Fatalf("%s exit code = %d, want %d; stderr:\n%s", args[0], got, want, errOut)
	}
}

func cmdMQTTLink(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 || (args[0] != "up" && args[0] != "down") {
		ts.Fatalf("usage: mqtt-link up|down")
	}
	state(ts).link.SetUp(args[0] == "up")
}

func readJSONSource(ts *testscript.TestScript, src string) []byte {
	if src == "stdout" {
		return []byte(ts.ReadFile("stdout"))
	}
	return []byte(ts.ReadFile(src))
}

func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: json FILE PATH [WANT]")
	}
	var last any
	lines := bytes.Split(bytes.TrimSpace(readJSONSource(ts, args[0])), []byte("\n"))
	for i, line := range lines {
		if err := json.Unmarshal(line, &last); err != nil {
			ts.Fatalf("%s line %d is not JSON: %v\n%s", args[0], i+1, err, line)
		}
	}
	v := last
	if args[1] != "." {
		for _, part := range strings.Split(args[1], ".") {
			switch c := v.(type) {
			case map[string]any:
				v = c[part]
			case []any:
				n, err := strconv.Atoi(part)
				if err != nil || n < 0 || n >= len(c) {
					v = nil
				} else {
					v = c[n]
				}
			default:
				v = nil
			}
		}
	}
	got := ""
	switch x := v.(type) {
	case string:
		got = x
	case nil:
		got = "null"
	default:
		b, _ := json.Marshal(x)
		got = string(b)
	}
	ts.Logf("%s %s = %s", args[0], args[1], got)
	if len(args) == 3 {
		if (got == args[2]) == neg {
			ts.Fatalf("%s %s = %s, want %s%s", args[0], args[1], got, map[bool]string{true: "not ", false: ""}[neg], args[2])
		}
	}
}

func cmdKeysOf(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: keys-of FILE")
	}
	var m map[string]any
	ts.Check(json.Unmarshal(readJSONSource(ts, args[0]), &m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(ts.Stdout(), strings.Join(keys, " "))
}
