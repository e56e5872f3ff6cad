package clitest

import (
	"bytes"
	"context"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
)

// Result is what one run of a command produced.
type Result struct {
	Code   int
	Stdout string
	Stderr string
}

// Run runs the command newCmd builds, as cli.Main would, with the given
// environment variables, stdin and arguments, and hub client options short
// on retry delays.
func Run(t testing.TB, newCmd func(*cli.Env) *cobra.Command, vars map[string]string, stdin string, args ...string) Result {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &cli.Env{
		Stdin:         strings.NewReader(stdin),
		Stdout:        &out,
		Stderr:        &errOut,
		Getenv:        func(k string) string { return vars[k] },
		ClientOptions: ClientOptions(),
	}
	code := cli.Run(context.Background(), env, newCmd(env), args)
	return Result{Code: code, Stdout: out.String(), Stderr: errOut.String()}
}

// Env returns the variables that point a service command at the hub.
func (f *FakeHub) Env() map[string]string {
	return map[string]string{cli.EnvConnectionString: f.ConnectionString(), cli.EnvCAFile: f.CAFile}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
