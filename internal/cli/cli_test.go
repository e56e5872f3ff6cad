package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
)

const (
	testKey      = "c2VjcmV0LWtleS1ub2JvZHktc2hvdWxkLXNlZQ==" // "secret-key-nobody-should-see"
	serviceCS    = "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey
	moduleCS     = "HostName=hub.example.net;DeviceId=d1;ModuleId=m1;SharedAccessKey=" + testKey
	badBase64CS  = "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=not*base64"
	unknownField = "HostName=hub.example.net;SharedAccessKeyName=p;SharedAccessKey=" + testKey + ";Colour=blue"
)

// testEnv returns an Env over buffers and a map of environment variables.
func testEnv(vars map[string]string, stdin string) (*Env, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string { return vars[k] },
	}, &out, &errOut
}

// newTestCmd is a command that loads the connection string and then returns
// runErr, printing the hub host on success.
func newTestCmd(env *Env, runErr error) *cobra.Command {
	var c Common
	cmd := &cobra.Command{
		Use:  "tool",
		Long: "A tool.\n\n" + ExitStatusHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := c.ConnectionString(cmd.Context(), env)
			if err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			fmt.Fprintln(env.Stdout, cs.HostName, c.Output, c.CAFilePath(env))
			return nil
		},
	}
	cmd.Flags().String("device-id", "", "device")
	_ = cmd.MarkFlagRequired("device-id")
	AddCommonFlags(cmd, &c, connstr.Service, EnvConnectionString)
	return cmd
}

func TestRunExitStatus(t *testing.T) {
	dir := t.TempDir()
	csFile := filepath.Join(dir, "cs")
	if err := os.WriteFile(csFile, []byte(serviceCS+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	withCS := map[string]string{EnvConnectionString: serviceCS}
	tests := []struct {
		name       string
		vars       map[string]string
		stdin      string
		args       []string
		runErr     error
		want       int
		wantOut    string
		wantErr    []string // substrings of stderr
		notWantErr string
	}{
		{name: "ok from env", vars: withCS, args: []string{"--device-id", "d"}, want: ExitOK, wantOut: "hub.example.net text \n"},
		{name: "ok from file with json and ca env", vars: map[string]string{EnvCAFile: "/ca.pem"},
			args: []string{"--device-id", "d", "--connection-string-file", csFile, "-o", "json"}, want: ExitOK, wantOut: "hub.example.net json /ca.pem\n"},
		{name: "ca flag beats env", vars: map[string]string{EnvConnectionString: serviceCS, EnvCAFile: "/env.pem"},
			args: []string{"--device-id", "d", "--ca-file", "/flag.pem"}, want: ExitOK, wantOut: "hub.example.net text /flag.pem\n"},
		{name: "ok from stdin", stdin: serviceCS, args: []string{"--device-id", "d", "--connection-string-file", "-"}, want: ExitOK, wantOut: "hub.example.net text \n"},
		{name: "unknown flag", vars: withCS, args: []string{"--device-id", "d", "--nope"}, want: ExitUsage,
			wantErr: []string{"tool: unknown flag: --nope\n", "Run 'tool --help' for usage."}},
		{name: "bad output value", vars: withCS, args: []string{"--device-id", "d", "--output", "yaml"}, want: ExitUsage,
			wantErr: []string{`must be "text" or "json"`}},
		{name: "missing required flag", vars: withCS, want: ExitUsage, wantErr: []string{`required flag(s) "device-id" not set`}},
		{name: "unexpected argument", vars: withCS, args: []string{"--device-id", "d", "extra"}, want: ExitUsage, wantErr: []string{`unknown command "extra"`}},
		{name: "no connection string", args: []string{"--device-id", "d"}, want: ExitUsage,
			wantErr: []string{"tool: no connection string\n", "hint: set IOTHUB_CONNECTION_STRING or pass --connection-string-file"}},
		{name: "empty stdin", args: []string{"--device-id", "d", "--connection-string-file", "-"}, want: ExitUsage, wantErr: []string{"no connection string on stdin"}},
		{name: "missing file", args: []string{"--device-id", "d", "--connection-string-file", filepath.Join(dir, "nope")}, want: ExitUsage,
			wantErr: []string{"read connection string: open " + filepath.Join(dir, "nope")}},
		{name: "empty file", args: []string{"--device-id", "d", "--connection-string-file", emptyFile}, want: ExitUsage, wantErr: []string{"is empty"}},
		{name: "bad key base64", vars: map[string]string{EnvConnectionString: badBase64CS}, args: []string{"--device-id", "d"}, want: ExitUsage,
			wantErr: []string{"SharedAccessKey: not valid base64 (read from IOTHUB_CONNECTION_STRING)"}, notWantErr: "not*base64"},
		{name: "unknown field", vars: map[string]string{EnvConnectionString: unknownField}, args: []string{"--device-id", "d"}, want: ExitUsage,
			wantErr: []string{"Colour: unknown field"}},
		{name: "wrong kind", vars: map[string]string{EnvConnectionString: moduleCS}, args: []string{"--device-id", "d"}, want: ExitUsage,
			wantErr: []string{"is a module connection string; this command needs a service connection string", "hint: a service connection string looks like"}},
		{name: "operation failure", vars: withCS, args: []string{"--device-id", "d"}, runErr: WithHint(errors.New("boom"), "try again"), want: ExitFailed,
			wantErr: []string{"tool: boom\nhint: try again\n"}, notWantErr: "--help"},
		{name: "usage error from run", vars: withCS, args: []string{"--device-id", "d"}, runErr: Usagef("--a and --b conflict"), want: ExitUsage,
			wantErr: []string{"tool: --a and --b conflict\n", "Run 'tool --help'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, out, errOut := testEnv(tt.vars, tt.stdin)
			got := Run(context.Background(), env, newTestCmd(env, tt.runErr), tt.args)
			if got != tt.want {
				t.Errorf("exit status = %d, want %d; stderr:\n%s", got, tt.want, errOut)
			}
			if tt.wantOut != "" && out.String() != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr = %q, want it to contain %q", errOut, w)
				}
			}
			if tt.notWantErr != "" && strings.Contains(errOut.String(), tt.notWantErr) {
				t.Errorf("stderr = %q, must not contain %q", errOut, tt.notWantErr)
			}
			if strings.Contains(errOut.String()+out.String(), testKey) {
				t.Errorf("output contains the key")
			}
		})
	}
}

func TestRunInterrupted(t *testing.T) {
	env, _, errOut := testEnv(map[string]string{EnvConnectionString: serviceCS}, "")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := &cobra.Command{Use: "tool", RunE: func(cmd *cobra.Command, _ []string) error {
		cancel() // what SIGINT does through signal.NotifyContext
		<-cmd.Context().Done()
		return fmt.Errorf("get twin: %w", cmd.Context().Err())
	}}
	if got := Run(ctx, env, cmd, nil); got != ExitInterrupted {
		t.Errorf("exit status = %d, want %d", got, ExitInterrupted)
	}
	if got, want := errOut.String(), "tool: interrupted\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

func TestHelpNeverShowsConnectionString(t *testing.T) {
	env, out, _ := testEnv(map[string]string{EnvConnectionString: serviceCS, EnvCAFile: "/secret/ca.pem"}, "")
	if got := Run(context.Background(), env, newTestCmd(env, nil), []string{"--help"}); got != ExitOK {
		t.Fatalf("exit status = %d, want 0", got)
	}
	help := out.String()
	for _, leak := range []string{testKey, "hub.example.net", "/secret/ca.pem"} {
		if strings.Contains(help, leak) {
			t.Errorf("--help contains %q:\n%s", leak, help)
		}
	}
	for _, want := range []string{"--connection-string-file PATH", "IOTHUB_CONNECTION_STRING", "--ca-file PATH", "--output format", "--verbose", "--version", "130"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, help)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	env, out, _ := testEnv(nil, "")
	if got := Run(context.Background(), env, newTestCmd(env, nil), []string{"--version"}); got != ExitOK {
		t.Fatalf("exit status = %d, want 0", got)
	}
	if !strings.HasPrefix(out.String(), "tool ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("--version printed %q, want \"tool <version> (... go1.x ...)\"", out)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run(shell, func(t *testing.T) {
			env, out, errOut := testEnv(nil, "")
			if got := Run(context.Background(), env, newTestCmd(env, nil), []string{"completion", shell}); got != ExitOK {
				t.Fatalf("exit status = %d, want 0; stderr: %s", got, errOut)
			}
			if !strings.Contains(out.String(), "tool") || out.Len() < 500 {
				t.Errorf("completion %s printed %d bytes, want a script naming the tool", shell, out.Len())
			}
		})
	}
	env, _, errOut := testEnv(nil, "")
	if got := Run(context.Background(), env, newTestCmd(env, nil), []string{"completion", "tcsh"}); got != ExitUsage {
		t.Errorf("completion tcsh: exit status = %d, want %d; stderr: %s", got, ExitUsage, errOut)
	}
}

// TestOutputCompletion checks that --output completes to its two values.
func TestOutputCompletion(t *testing.T) {
	env, out, _ := testEnv(nil, "")
	if got := Run(context.Background(), env, newTestCmd(env, nil), []string{"__complete", "--output", ""}); got != ExitOK {
		t.Fatalf("exit status = %d, want 0", got)
	}
	if !strings.HasPrefix(out.String(), "text\njson\n") {
		t.Errorf("completion of --output = %q, want text and json", out)
	}
}

func TestVerboseLogsRequestsWithoutSecrets(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/throttled" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	pl := azruntime.NewPipeline("test", "v0.0.1", azruntime.PipelineOptions{}, &policy.ClientOptions{
		Transport: srv.Client(),
		Retry:     policy.RetryOptions{MaxRetries: 1, RetryDelay: 1, MaxRetryDelay: 1},
	})
	env, _, errOut := testEnv(map[string]string{EnvConnectionString: serviceCS}, "")
	cmd := &cobra.Command{Use: "tool", RunE: func(cmd *cobra.Command, _ []string) error {
		for _, path := range []string{"/devices/d1", "/throttled"} {
			req, err := azruntime.NewRequest(cmd.Context(), http.MethodGet, srv.URL+path+"?api-version=2021-04-12&sig=SECRETSIG")
			if err != nil {
				return err
			}
			req.Raw().Header.Set("Authorization", "SharedAccessSignature sr=hub&sig=SECRETSIG&se=1&skn=owner")
			resp, err := pl.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
		}
		return nil
	}}
	cmd.Flags().BoolP(flagVerbose, "v", false, "")
	if got := Run(context.Background(), env, cmd, []string{"--verbose"}); got != ExitOK {
		t.Fatalf("exit status = %d, want 0; stderr: %s", got, errOut)
	}
	logged := errOut.String()
	for _, want := range []string{
		"verbose: GET " + srv.URL + "/devices/d1?",
		"-> 200 OK (try 1)\n",
		"verbose: retrying in ",
		"/throttled?",
		"-> 429 Too Many Requests (try 2)\n",
	} {
		if !strings.Contains(logged, want) {
			t.Errorf("verbose log lacks %q:\n%s", want, logged)
		}
	}
	if strings.Contains(logged, "SECRETSIG") {
		t.Errorf("verbose log contains the signature:\n%s", logged)
	}

	// Without --verbose nothing is logged.
	env, _, errOut = testEnv(nil, "")
	if got := Run(context.Background(), env, cmd, nil); got != ExitOK || errOut.Len() != 0 {
		t.Errorf("without --verbose: exit %d, stderr %q; want 0 and nothing", got, errOut)
	}
}

func TestSummarizeTransportError(t *testing.T) {
	msg := "==> REQUEST/RESPONSE (Try=3/1ms, OpTime=5ms) -- REQUEST ERROR\n" +
		"   PUT https://hub/devices/d?api-version=2021-04-12\n" +
		"   Authorization: REDACTED\n" +
		"   --------------------------------------------------------------------------------\n" +
		"   ERROR:\n" +
		"dial tcp 127.0.0.1:1: connect: connection refused\n"
	got := summarizeExchange(msg)
	want := "PUT https://hub/devices/d?api-version=2021-04-12 -> error: dial tcp 127.0.0.1:1: connect: connection refused (try 3)"
	if got != want {
		t.Errorf("summarizeExchange() = %q, want %q", got, want)
	}
}

func TestExplainNetError(t *testing.T) {
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failures below are expected
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plainSrv.Close()

	// A port that was just free: nothing listens there any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	trusting := tlsSrv.Client() // trusts the test server's certificate
	_, port, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())

	get := func(c *http.Client, url string) error {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	tests := []struct {
		name     string
		err      error
		wantText string
		wantHint string
		wantType any
	}{
		{"connection refused", get(http.DefaultClient, "https://"+closedAddr+"/"), "cannot reach h: connection refused", "is running", &NetError{}},
		{"unknown authority", get(&http.Client{}, tlsSrv.URL), "TLS connection to h failed: its certificate is signed by an unknown authority", "--ca-file PATH or set IOTHUB_CA_FILE", &TLSError{}},
		{"wrong host name", get(trusting, "https://localhost:"+port+"/"), "its certificate is not valid for that name", "HostName", &TLSError{}},
		{"plain http", get(http.DefaultClient, strings.Replace(plainSrv.URL, "http:", "https:", 1)), "the server did not answer with TLS", "port", &TLSError{}},
		{"dns", fmt.Errorf("put: %w", &net.DNSError{Err: "no such host", Name: "nohub.example", IsNotFound: true}), "cannot reach h: the host name cannot be resolved", "HostName", &NetError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("the request unexpectedly succeeded")
			}
			got := ExplainNetError(tt.err, "h")
			if !strings.Contains(got.Error(), tt.wantText) {
				t.Errorf("ExplainNetError() = %q, want it to contain %q", got, tt.wantText)
			}
			var hint interface{ HintText() string }
			if !errors.As(got, &hint) || !strings.Contains(hint.HintText(), tt.wantHint) {
				t.Errorf("hint of %q lacks %q", got, tt.wantHint)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("ExplainNetError() does not wrap the cause")
			}
			switch tt.wantType.(type) {
			case *NetError:
				var ne *NetError
				if !errors.As(got, &ne) {
					t.Errorf("ExplainNetError() = %T, want *NetError", got)
				}
			case *TLSError:
				var te *TLSError
				if !errors.As(got, &te) {
					t.Errorf("ExplainNetError() = %T, want *TLSError", got)
				}
			}
		})
	}

	other := errors.New("something else")
	if got := ExplainNetError(other, "h"); got != other {
		t.Errorf("ExplainNetError(other) = %v, want it unchanged", got)
	}
	if got := ExplainNetError(context.Canceled, "h"); got != context.Canceled {
		t.Errorf("ExplainNetError(context.Canceled) = %v, want it unchanged", got)
	}
	if ExplainNetError(nil, "h") != nil {
		t.Error("ExplainNetError(nil) != nil")
	}
}
