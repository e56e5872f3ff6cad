// Package emulatorcli is the iothub-emulator command line: it starts the
// emulator, prints shell-ready connection settings and serves until
// interrupted.
package emulatorcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/buildinfo"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/inspector"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/telemetry"
)

// Fixed defaults, so that printed settings stay the same between runs.
const (
	DefaultHTTPSAddr = "127.0.0.1:8443"
	DefaultMQTTAddr  = "127.0.0.1:8883"
)

type options struct {
	httpsAddr string
	mqttAddr  string
	hostName  string
	dataDir   string
	inMemory  bool
	logLevel  string
	telemetry int
	inspector string
	noLocal   bool
}

const long = `iothub-emulator runs a local IoT Hub: the identity registry and twins over
HTTPS (IoT Hub's REST API), and device and module connections over MQTT, with
shared access signature authentication, so that IoT Hub clients, including
Microsoft's SDKs, work against it unchanged. It is for development and tests,
not for production.

On start it prints three shell-ready lines on stdout:

  export IOTHUB_CONNECTION_STRING='HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=…'
  export IOTHUB_CA_FILE=/path/to/ca.pem
  export IOTHUB_MQTT_ADDR=127.0.0.1:8883

and a fourth, a shell comment with the one-time link to the web inspector
(--inspector-addr, default 127.0.0.1:8480: plain HTTP on loopback, where
browsers need no certificate), then logs to stderr until interrupted (Ctrl-C or SIGTERM), when it shuts
down cleanly and exits 0. Load the lines into a shell with

  eval "$(iothub-emulator env)"

Identities, twins, keys and the TLS certificates (a local CA and a server
certificate for localhost, 127.0.0.1, ::1 and --hostname) are kept in
--data-dir and survive restarts; a write the hub acknowledged survives a
crash. With --in-memory nothing is kept.

Microsoft's SDKs reach the service API only on port 443 and devices only
on port 8883: to serve them, run (as root) with
--https-addr 127.0.0.1:443; the printed host name then has no port.`

// Main runs iothub-emulator with the process's arguments and returns its
// exit status: 0 after a clean shutdown on SIGINT or SIGTERM, 2 for usage
// errors, 1 when the hub cannot start or stop.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, NewCommand(os.Stdout, os.Stderr), os.Args[1:], os.Stderr)
}

// Run executes cmd with args, printing an error once to stderr.
func Run(ctx context.Context, cmd *cobra.Command, args []string, stderr io.Writer) int {
	cmd.SetArgs(args)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	cmd.Version = buildinfo.Version()
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.Name(), err)
	var u *usageError
	if errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.Name())
		return 2
	}
	return 1
}

// usageError marks a mistake in how the command was invoked (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(err error) error              { return &usageError{err} }
func usagef(f string, args ...any) error { return &usageError{fmt.Errorf(f, args...)} }

// NewCommand builds the iothub-emulator command.
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	var o options
	defaultDir, dirErr := emulator.DefaultDataDir()
	cmd := &cobra.Command{
		Use:   "iothub-emulator",
		Short: "Run a local IoT Hub (registry and twins over HTTPS, devices over MQTT)",
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dataDir == "" && !o.inMemory && dirErr != nil {
				return usage(dirErr)
			}
			if cmd.Flags().Changed("data-dir") && o.inMemory {
				return usagef("--data-dir and --in-memory cannot be used together")
			}
			if o.telemetry < 1 {
				return usagef("--telemetry-buffer %d: must be at least 1", o.telemetry)
			}
			level, err := parseLevel(o.logLevel)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			return serve(cmd, stdout, o, logger)
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.httpsAddr, "https-addr", DefaultHTTPSAddr, "address for the service API over HTTPS (and MQTT over WebSockets)")
	f.StringVar(&o.hostName, "hostname", emulator.DefaultHostName, "host name of the hub, as clients write it in connection strings")
	f.StringVar(&o.dataDir, "data-dir", defaultDir, "directory that keeps identities, twins, keys and certificates")
	f.StringVar(&o.mqttAddr, "mqtt-addr", DefaultMQTTAddr, "address for MQTT over TLS")
	cmd.Flags().BoolVar(&o.inMemory, "in-memory", false, "keep nothing: fresh keys and certificates, removed on exit")
	cmd.Flags().StringVar(&o.inspector, "inspector-addr", inspector.DefaultAddr, "loopback address of the web inspector (plain HTTP); empty: none")
	cmd.Flags().IntVar(&o.telemetry, "telemetry-buffer", telemetry.DefaultCapacity, "how many device-to-cloud messages to keep in memory (the oldest go first)")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "log level on stderr: debug (also logs every request), info, warn or error")
	// --version without the -v shorthand cobra would add: -v means --verbose
	// in the other tools.
	cmd.Flags().Bool("version", false, "print the version and exit")
	cmd.Flags().BoolVar(&o.noLocal, "disable-local-auth", false, "refuse shared access signatures on the service API (Microsoft Entra ID tokens only); devices keep theirs")
	cmd.AddCommand(newEnvCommand(stdout, &o, dirErr), newMonitorCommand(stdout, stderr, &o, dirErr), newPrincipalCommand(stdout, &o, dirErr))
	return cmd
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usagef("--log-level %q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

func serve(cmd *cobra.Command, stdout io.Writer, o options, logger *slog.Logger) error {
	ctx := cmd.Context()
	e, err := emulator.Start(ctx, emulator.Config{
		HTTPSAddr: o.httpsAddr,
		MQTTAddr:  o.mqttAddr,
		HostName:  o.hostName,
		DataDir:   o.dataDir,
		InMemory:  o.inMemory,
		Logger:    logger,

		TelemetryBuffer:  o.telemetry,
		InspectorAddr:    o.inspector,
		DisableLocalAuth: o.noLocal,
	})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	lines := emulator.ShellLines(e.ServiceConnectionString(), e.CAFile(), e.MQTTAddr())
	if u := e.InspectorURL(); u != "" {
		// A shell comment, so that eval of these lines still works.
		lines += "# web inspector (the link works once): " + u + "\n"
	}
	if _, err := io.WriteString(stdout, lines); err != nil {
		e.Close()
		return fmt.Errorf("print settings: %w", err)
	}
	<-ctx.Done()
	logger.Info("shutting down")
	if err := e.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

func newEnvCommand(stdout io.Writer, o *options, dirErr error) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print the connection settings of the hub in --data-dir without serving",
		Long: `env prints the same shell-ready lines iothub-emulator prints on start
(IOTHUB_CONNECTION_STRING, IOTHUB_CA_FILE, IOTHUB_MQTT_ADDR) for the hub kept in --data-dir,
creating its keys and certificates if it has none yet. The host name and
port are those of the last start on that directory unless --hostname or
--https-addr is given. Use it in scripts: eval "$(iothub-emulator env)".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dataDir == "" {
				if dirErr != nil {
					return usage(dirErr)
				}
				return usagef("--data-dir is empty")
			}
			host, port, mqttAddr, err := envEndpoint(cmd, o)
			if err != nil {
				return err
			}
			lines, err := emulator.EnvLines(o.dataDir, host, port, mqttAddr)
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, lines)
			return err
		},
	}
}

// envEndpoint picks the host name, port and MQTT address env prints.
func envEndpoint(cmd *cobra.Command, o *options) (host, port, mqttAddr string, err error) {
	flags := cmd.Flags()
	if !flags.Changed("hostname") && !flags.Changed("https-addr") && !flags.Changed("mqtt-addr") {
		h, p, m, ok, err := emulator.LastEndpoint(o.dataDir)
		if err != nil {
			return "", "", "", err
		}
		if ok {
			return h, p, m, nil
		}
	}
	_, port, err = net.SplitHostPort(o.httpsAddr)
	if err != nil {
		return "", "", "", usagef("--https-addr %q is not host:port", o.httpsAddr)
	}
	if port == "0" || strings.TrimSpace(port) == "" {
		return "", "", "", usagef("--https-addr %q has no fixed port to print", o.httpsAddr)
	}
	if _, mqttPort, err := net.SplitHostPort(o.mqttAddr); err != nil || mqttPort == "0" {
		return o.hostName, port, "", nil
	}
	return o.hostName, port, o.mqttAddr, nil
}
