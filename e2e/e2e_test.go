// Package e2e runs the real binaries as separate processes against a fresh
// iothub-emulator per script (testscript files in testdata/).
//
// Custom script commands:
//
//	start NAME PROG [ARGS...]      run PROG in the background, output in NAME.stdout / NAME.stderr
//	await NAME stdout|stderr RE    wait (up to 30 s) until the output matches the regular expression
//	signal NAME [INT|TERM|KILL]    send a signal (default INT)
//	waitexit NAME [CODE]           wait for NAME to exit and check its exit code (default 0)
//	mqtt-link up|down              connect or cut MQTT between the clients and the emulator
//	[!] json FILE PATH WANT        FILE (or "stdout") holds JSON values; the value at PATH
//	                               (a.b.0.c) of the last one equals WANT
//	json-same FILE1 FILE2 PATH     PATH has the same value in the last lines of both files
//	setenv-json VAR FILE PATH      set VAR to the string at PATH in FILE's last line
//	write-env VAR FILE             write the value of VAR to FILE
//	swap-key VAR KEY               set VAR to $IOTHUB_CONNECTION_STRING with its key replaced by KEY
//	delete-module DEVICE MODULE    delete a module over the emulator's REST API
//	mkfifo NAME                    make a named pipe
//	fifo-hold NAME                 open a named pipe for writing (once a reader has it) and write nothing
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
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
			"start":         cmdStart,
			"await":         cmdAwait,
			"signal":        cmdSignal,
			"waitexit":      cmdWaitExit,
			"mqtt-link":     cmdMQTTLink,
			"json":          cmdJSON,
			"json-same":     cmdJSONSame,
			"setenv-json":   cmdSetenvJSON,
			"write-env":     cmdWriteEnv,
			"swap-key":      cmdSwapKey,
			"delete-module": cmdDeleteModule,
			"mkfifo":        cmdMkfifo,
			"fifo-hold":     cmdFifoHold,
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
	prog := lookPath(ts, args[1])
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

// lookPath finds prog in the script's PATH.
func lookPath(ts *testscript.TestScript, prog string) string {
	if strings.Contains(prog, string(os.PathSeparator)) {
		return prog
	}
	for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
		p := filepath.Join(dir, prog)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	ts.Fatalf("%s not found in $PATH", prog)
	return ""
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

func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: signal NAME [INT|TERM|KILL]")
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

// lastJSONValue returns the value at path (dot-separated keys and indexes,
// "." for the whole value) in the last line of src, rendered as a string
// (strings as is, everything else as JSON).
func lastJSONValue(ts *testscript.TestScript, src, path string) string {
	var last any
	dec := json.NewDecoder(bytes.NewReader(readJSONSource(ts, src)))
	n := 0
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			ts.Fatalf("%s: JSON value %d does not parse: %v", src, n+1, err)
		}
		last, n = v, n+1
	}
	if n == 0 {
		ts.Fatalf("%s holds no JSON value", src)
	}
	v := last
	if path != "." {
		for _, part := range strings.Split(path, ".") {
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
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "null"
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: [!] json FILE PATH WANT")
	}
	got := lastJSONValue(ts, args[0], args[1])
	if (got == args[2]) == neg {
		not := ""
		if neg {
			not = "not "
		}
		ts.Fatalf("%s %s = %s, want %s%s", args[0], args[1], got, not, args[2])
	}
}

func cmdJSONSame(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: json-same FILE1 FILE2 PATH")
	}
	a, b := lastJSONValue(ts, args[0], args[2]), lastJSONValue(ts, args[1], args[2])
	if a != b || a == "null" {
		ts.Fatalf("%s differs: %s has %s, %s has %s", args[2], args[0], a, args[1], b)
	}
}

func cmdSetenvJSON(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: setenv-json VAR FILE PATH")
	}
	v := lastJSONValue(ts, args[1], args[2])
	if v == "null" || v == "" {
		ts.Fatalf("%s has no value at %s", args[1], args[2])
	}
	ts.Setenv(args[0], v)
}

func cmdWriteEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: write-env VAR FILE")
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(ts.Getenv(args[0])+"\n"), 0o600))
}

func cmdSwapKey(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: swap-key VAR KEY")
	}
	cs, err := connstr.Parse(ts.Getenv("IOTHUB_CONNECTION_STRING"))
	ts.Check(err)
	cs.SharedAccessKey = args[1]
	ts.Setenv(args[0], cs.Format())
}

func cmdDeleteModule(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: delete-module DEVICE MODULE")
	}
	st := state(ts)
	cs, err := connstr.Parse(st.em.ServiceConnectionString())
	ts.Check(err)
	tlsConf, err := hubtls.Config(st.em.CAFile())
	ts.Check(err)
	opts := &registry.ClientOptions{}
	opts.Transport = hubtls.HTTPClient(tlsConf)
	client, err := registry.NewClient(cs, opts)
	ts.Check(err)
	ts.Check(client.DeleteModule(context.Background(), args[0], args[1], ""))
}
