package clitest

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
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
	return run(newCmd, ClientOptions(), vars, stdin, args)
}

// Run is clitest.Run with the requests recorded in h.
func (h *Hub) Run(t testing.TB, newCmd func(*cli.Env) *cobra.Command, vars map[string]string, stdin string, args ...string) Result {
	t.Helper()
	return run(newCmd, h.ClientOptions(), vars, stdin, args)
}

func run(newCmd func(*cli.Env) *cobra.Command, opts policy.ClientOptions, vars map[string]string, stdin string, args []string) Result {
	var out, errOut bytes.Buffer
	env := &cli.Env{
		Stdin:         strings.NewReader(stdin),
		Stdout:        &out,
		Stderr:        &errOut,
		Getenv:        func(k string) string { return vars[k] },
		ClientOptions: opts,
	}
	code := cli.Run(context.Background(), env, newCmd(env), args)
	return Result{Code: code, Stdout: out.String(), Stderr: errOut.String()}
}
