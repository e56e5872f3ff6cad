// Package receivepatch implements receive-twin-patch: connect to IoT Hub as
// a module (or device) over MQTT, print its desired properties, then every
// change to them as it arrives, in order and without missing one; optionally
// acknowledge each change in the reported properties.
package receivepatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/syncio"
	"github.com/moduletwin/iothub-module-twin/internal/twinclient"
)

// EnvMQTTAddr names the variable that, like --mqtt-addr, sets where MQTT
// over TLS is dialled (iothub-emulator prints it).
const EnvMQTTAddr = "IOTHUB_MQTT_ADDR"

// ReadyMessage is the status line printed on stderr once the client is
// subscribed and the current desired properties are printed.
const ReadyMessage = "waiting for desired property patches (Ctrl-C to stop)"

// minSASTTL keeps token lifetimes long enough to connect and renew in.
const minSASTTL = 2 * time.Second

// Options are the command's dependencies and flag values.
type Options struct {
	Env    *cli.Env
	Common cli.Common

	Transport transport
	MQTTAddr  string
	SASTTL    time.Duration
	Ack       bool
	Count     int
	Timeout   time.Duration

	// ClientOptions are added to the twin client's (tests shorten
	// back-off here).
	ClientOptions []twinclient.Option
}

// Command returns the receive-twin-patch command; cli.Main runs it.
func Command(env *cli.Env) *cobra.Command { return NewCmd(env, nil) }

// NewCmd builds the command. runF, when not nil, replaces the run function
// and receives validated options.
func NewCmd(env *cli.Env, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{Env: env, Transport: transportTLS}
	cmd := &cobra.Command{
		Use:   "receive-twin-patch",
		Short: "Print a module twin's desired properties and every change to them",
		Long: `Connect to IoT Hub as a module (or a device) over MQTT, print the current
desired properties, then print each desired-properties patch as it arrives,
in $version order, until interrupted.

No change is missed: after every reconnection the twin is read again and, if
its desired properties moved on meanwhile, the whole desired state is printed
as a "resync". Repeated or out-of-date patches are dropped, and a twin whose
version went back (the module was deleted and created again) starts over.
The SAS token is renewed before it expires (after 80% of --sas-ttl) with a
new connection that is up before the old one is closed. The connection is
re-established forever, with growing pauses; only a refused login (wrong key,
unknown module) or an untrusted certificate ends the command.

Output (stdout): by default, readable lines with the time, the kind of event,
the $version and each property changed ("removed" for deleted ones). With
--output json, one JSON object per line:
  {"type":"twin"|"patch"|"resync","version":N,"desired":{...}}
Status lines (connection lost, reconnected, ready) go to stderr.

MQTT runs over TLS on port 8883 of the hub (or of GatewayHostName), or over
WebSockets on port 443 (or the port in HostName) with --transport websocket,
which honours HTTPS_PROXY. A port in HostName is the hub's HTTPS port, not
MQTT's: give iothub-emulator's MQTT listener with --mqtt-addr or $` + EnvMQTTAddr + `.

The module is named by its connection string
(HostName=…;DeviceId=…;ModuleId=…;SharedAccessKey=…, as create-module prints),
taken from $` + cli.EnvModuleConnectionString + ` or --connection-string-file.

Exit status:
  0    interrupted (Ctrl-C or SIGTERM), or --count changes received
  1    the hub refused the connection, or --timeout passed first
  2    usage error: bad flags, missing or malformed connection string`,
		Example: `  receive-twin-patch
  receive-twin-patch --output json | jq .desired
  receive-twin-patch --ack
  receive-twin-patch --count 1 --timeout 30s
  receive-twin-patch --transport websocket --connection-string-file module.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(cmd); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.Var(&opts.Transport, "transport", "`NAME` of the transport: tls (MQTT over TLS, port 8883) or websocket (MQTT over WebSockets, port 443)")
	f.StringVar(&opts.MQTTAddr, "mqtt-addr", "", "dial MQTT over TLS at `HOST:PORT` instead of port 8883 of the hub (default $"+EnvMQTTAddr+")")
	f.DurationVar(&opts.SASTTL, "sas-ttl", twinclient.DefaultSASTTL, "lifetime of each SAS token (`DURATION`); renewed after 80% of it")
	f.BoolVar(&opts.Ack, "ack", false, `acknowledge each change in the reported properties: {"<name>":{"value":…,"ac":200,"av":<$version>}}`)
	f.IntVar(&opts.Count, "count", 0, "exit after `N` changes (patches or resyncs; the initial state does not count)")
	f.DurationVar(&opts.Timeout, "timeout", 0, "exit 1 if --count changes (or, without --count, one) have not arrived within `DURATION`")
	_ = cmd.RegisterFlagCompletionFunc("transport", cobra.FixedCompletions(
		[]cobra.Completion{string(transportTLS), string(transportWebSocket)}, cobra.ShellCompDirectiveNoFileComp))
	cli.AddCommonFlags(cmd, &opts.Common, 0, cli.EnvModuleConnectionString)
	// The common flag describes the connection string generically; this
	// command takes a module's (or a device's).
	f.Lookup("connection-string-file").Usage = "read the module (or device) connection string from `PATH` (- for stdin) instead of $" +
		cli.EnvModuleConnectionString
	f.Lookup("verbose").Usage = "also log token renewals, twin reads and retries on stderr"
	return cmd
}

// transport is the value of --transport.
type transport string

const (
	transportTLS       transport = "tls"
	transportWebSocket transport = "websocket"
)

func (t *transport) String() string { return string(*t) }
func (t *transport) Type() string   { return "transport" }
func (t *transport) Set(s string) error {
	switch transport(s) {
	case transportTLS, transportWebSocket:
		*t = transport(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q", transportTLS, transportWebSocket)
}

func (o *Options) validate(cmd *cobra.Command) error {
	switch {
	case o.Count < 0:
		return cli.Usagef("--count: must not be negative")
	case o.Timeout < 0:
		return cli.Usagef("--timeout: must not be negative")
	case o.SASTTL < minSASTTL:
		return cli.Usagef("--sas-ttl: must be at least %s", minSASTTL)
	case o.Transport == transportWebSocket && cmd.Flags().Changed("mqtt-addr"):
		return cli.Usagef("--mqtt-addr applies to --transport tls only; WebSockets use the port in HostName")
	}
	if o.Transport == transportTLS && o.MQTTAddr == "" {
		o.MQTTAddr = o.Env.Getenv(EnvMQTTAddr)
	}
	if o.MQTTAddr != "" {
		if _, _, err := net.SplitHostPort(o.MQTTAddr); err != nil {
			source := "--mqtt-addr"
			if !cmd.Flags().Changed("mqtt-addr") {
				source = "$" + EnvMQTTAddr
			}
			return cli.Usagef("%s %q: want HOST:PORT", source, o.MQTTAddr)
		}
	}
	return nil
}

// Run connects and prints events until interrupted, --count is reached,
// --timeout passes, or the hub refuses the connection.
func Run(ctx context.Context, o *Options) error {
	cs, err := o.Common.ConnectionString(ctx, o.Env)
	if err != nil {
		return err
	}
	if cs.Kind() == connstr.Service {
		return cli.Usage(cli.WithHint(
			errors.New("the connection string is a service (shared access policy) one; this command connects as a module"),
			"a module connection string looks like HostName=<hub>.azure-devices.net;DeviceId=<device>;ModuleId=<module>;SharedAccessKey=<key> (create-module prints one)"))
	}
	tlsConfig, err := o.Common.TLSConfig(ctx, o.Env)
	if err != nil {
		return err
	}

	stderr := &syncio.Writer{W: o.Env.Stderr} // the client's goroutines write status lines too
	level := slog.LevelInfo
	if o.Common.Verbose {
		level = slog.LevelDebug
	}
	name := "receive-twin-patch"
	clientOpts := []twinclient.Option{
		twinclient.WithTLSConfig(tlsConfig),
		twinclient.WithSASTTL(o.SASTTL),
		twinclient.WithUserAgent(userAgent()),
		twinclient.WithLogger(slog.New(&lineHandler{w: stderr, prefix: name + ": ", level: level})),
	}
	switch {
	case o.Transport == transportWebSocket:
		clientOpts = append(clientOpts, twinclient.WithTransport(twinclient.TransportWebSocket))
	case o.MQTTAddr != "":
		clientOpts = append(clientOpts, twinclient.WithMQTTAddr(o.MQTTAddr))
	case cs.Port() != "" && cs.GatewayHostName == "":
		// Real hub names carry no port; one that does is most likely
		// iothub-emulator's HTTPS port, and MQTT is elsewhere.
		fmt.Fprintf(stderr, "%s: note: HostName names port %s, an HTTPS port; MQTT goes to %s. For iothub-emulator, set $%s or --mqtt-addr to its MQTT address.\n",
			name, cs.Port(), net.JoinHostPort(cs.Host(), twinclient.MQTTPort), EnvMQTTAddr)
	}
	client, err := twinclient.New(cs, append(clientOpts, o.ClientOptions...)...)
	if err != nil {
		return cli.Usage(err)
	}

	keepSmall(o.Env)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Timeout > 0 {
		var cancelTimeout context.CancelFunc
		runCtx, cancelTimeout = context.WithTimeout(runCtx, o.Timeout)
		defer cancelTimeout()
	}

	p := &printer{out: o.Env.Stdout, json: o.Common.JSON()}
	want := o.Count
	if want == 0 && o.Timeout > 0 {
		want = 1
	}
	identity := cs.DeviceID
	if cs.ModuleID != "" {
		identity += "/" + cs.ModuleID
	}
	changes := 0
	var outErr error
	err = client.Run(runCtx, func(ev twinclient.Event) {
		if err := p.print(ev); err != nil {
			outErr = fmt.Errorf("write output: %w", err)
			cancel()
			return
		}
		if ev.Type == twinclient.EventTwin {
			fmt.Fprintf(stderr, "%s: connected to %s as %s; %s\n", name, client.Addr(), identity, ReadyMessage)
			// Start-up garbage (parsed system roots, TLS handshakes) is not
			// needed while watching: hand it back to the OS once.
			debug.FreeOSMemory()
		}
		if o.Ack {
			acknowledge(runCtx, client, ev, stderr, name, o.Common.Verbose)
		}
		if ev.Type != twinclient.EventTwin {
			changes++
			if want > 0 && changes >= want {
				cancel()
			}
		}
	})
	switch {
	case outErr != nil:
		return outErr
	case want > 0 && changes >= want:
		return nil
	case ctx.Err() != nil:
		return nil // Ctrl-C: a normal way to stop watching
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out after %s waiting for %d desired-property %s (received %d)", o.Timeout, want, plural(want, "change", "changes"), changes)
	case err != nil && !errors.Is(err, context.Canceled):
		return explain(err, client.Addr(), identity)
	}
	return nil
}

// keepSmall lowers the garbage collector's target unless GOGC is set: the
// watcher allocates little and idles for hours, so a heap kept near its
// live size costs next to no CPU and keeps the footprint small.
func keepSmall(env *cli.Env) {
	if env.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
}

// acknowledge reports ev back under IoT Plug and Play's writable-property
// convention. A failure is reported and watching goes on.
func acknowledge(ctx context.Context, c *twinclient.Client, ev twinclient.Event, stderr io.Writer, name string, verbose bool) {
	ack := twinclient.WritableAck(ev)
	if ack == nil {
		return
	}
	v, err := c.UpdateReported(ctx, ack)
	switch {
	case err != nil && ctx.Err() == nil:
		fmt.Fprintf(stderr, "%s: warning: could not acknowledge desired $version %d: %v\n", name, ev.Version, err)
	case err == nil && verbose:
		fmt.Fprintf(stderr, "%s: acknowledged desired $version %d (%d %s; reported $version %d)\n",
			name, ev.Version, len(ev.Desired), plural(len(ev.Desired), "property", "properties"), v)
	}
}

// explain turns the client's fatal errors into messages with hints.
func explain(err error, addr, identity string) error {
	var ce *twinclient.ConnectError
	if errors.As(err, &ce) {
		if ce.Unauthorized() {
			// The refusal does not say why; a token for another host
			// name is refused just like a wrong key.
			return cli.WithHint(err, fmt.Sprintf(
				"check SharedAccessKey in the connection string (create-module prints it) and that %s exists on the hub\n"+
					"or check HostName in the connection string: the token is signed for that name, so it must be the hub's own host name, not an IP address or another alias", identity))
		}
		return err
	}
	host, _, splitErr := net.SplitHostPort(addr)
	if splitErr != nil {
		host = addr
	}
	return cli.ExplainNetError(err, host)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func userAgent() string {
	v, _, _ := strings.Cut(cli.Version(), " ")
	return "receive-twin-patch/" + v
}

// lineHandler writes each log record as one plain line: the client's
// messages are complete sentences, so attributes are left out.
type lineHandler struct {
	w      io.Writer
	prefix string
	level  slog.Level
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	prefix := h.prefix
	if r.Level >= slog.LevelWarn {
		prefix += "warning: "
	}
	_, err := io.WriteString(h.w, prefix+r.Message+"\n")
	return err
}

func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }
