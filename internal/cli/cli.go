// Package cli is the layer the project's command-line tools share: how a
// command is run (I/O, environment, signals, exit codes), the one place
// errors are printed, the common flags (connection string, CA file, output
// format, verbose logging, version, shell completion) and the translation
// of network failures into sentences a user can act on.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/spf13/cobra"
)

// Exit statuses shared by all the tools.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// ExitStatusHelp documents the exit statuses of a one-shot command; commands
// append it to their long help.
const ExitStatusHelp = `Exit status:
  0    success
  1    the operation failed (the hub refused it or could not be reached)
  2    usage error: bad flags or arguments, missing or malformed connection string
  130  interrupted (Ctrl-C or SIGTERM)`

// Env is what a command may use of the outside world. Tests build one with
// buffers and a map-backed Getenv; Main builds it from the process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	// ClientOptions is the starting point for every hub client a command
	// builds (retry policy, transport). Tests shorten retry delays here.
	ClientOptions policy.ClientOptions
}

// SystemEnv returns an Env backed by the process's standard streams and
// environment.
func SystemEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Main runs the command newCmd builds with the process's arguments and
// environment, cancelling its context on SIGINT or SIGTERM, and returns the
// exit status. A command's main is os.Exit(cli.Main(pkg.Command)).
func Main(newCmd func(*Env) *cobra.Command) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling so that a
		// second Ctrl-C ends a command that is slow to wind down.
		<-ctx.Done()
		stop()
	}()
	env := SystemEnv()
	return Run(ctx, env, newCmd(env), os.Args[1:])
}

// Run executes cmd with args and returns the exit status. It owns cobra's
// error reporting: errors are printed once, as "<name>: <error>", followed
// by any hints on their own lines. Errors raised before the command's RunE
// ran (unknown flags, bad flag values, missing required flags, unexpected
// arguments) and errors marked with Usage exit 2; an error after ctx was
// cancelled exits 130; any other error exits 1.
func Run(ctx context.Context, env *Env, cmd *cobra.Command, args []string) int {
	name := cmd.Name()
	cmd.SetArgs(args)
	cmd.SetIn(env.Stdin)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage(err) })
	if cmd.Version == "" {
		cmd.Version = Version()
	}
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	addCompletionCommand(cmd)

	ran := false
	stopLogging := func() {}
	wrapRunE(cmd, func(c *cobra.Command) {
		ran = true
		if f := c.Flags().Lookup(flagVerbose); f != nil && f.Value.String() == "true" {
			stopLogging = startRequestLog(env.Stderr)
		}
	})
	err := cmd.ExecuteContext(ctx)
	stopLogging()
	if err == nil {
		return ExitOK
	}

	var usage *UsageError
	switch {
	case ctx.Err() != nil && ran:
		fmt.Fprintf(env.Stderr, "%s: interrupted\n", name)
		return ExitInterrupted
	case !ran || errors.As(err, &usage):
		fmt.Fprintf(env.Stderr, "%s: %v\n", name, err)
		printHints(env.Stderr, err)
		fmt.Fprintf(env.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	default:
		fmt.Fprintf(env.Stderr, "%s: %v\n", name, err)
		printHints(env.Stderr, err)
		return ExitFailed
	}
}

// wrapRunE makes every RunE in the tree call before first, so Run can tell
// errors in the command's own work from cobra's argument checking.
func wrapRunE(cmd *cobra.Command, before func(*cobra.Command)) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			before(c)
			return run(c, args)
		}
	}
	for _, sub := range cmd.Commands() {
		wrapRunE(sub, before)
	}
}
