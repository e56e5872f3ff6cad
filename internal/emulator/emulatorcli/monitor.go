package emulatorcli

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/eventapi"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// EnvConnectionString holds the service connection string monitor uses.
const EnvConnectionString = "IOTHUB_CONNECTION_STRING"

// maxConnectionStringFile bounds --connection-string-file.
const maxConnectionStringFile = 64 << 10

type monitorOptions struct {
	deviceID   string
	moduleID   string
	properties bool
	kinds      string
	output     string
	timeout    time.Duration
	count      int
	csFile     string
	caFile     string
}

const monitorLong = `monitor streams what a running emulator sees, as it happens: by default the
device-to-cloud messages of every device and module (the counterpart of
"az iot hub monitor-events"), and with --events also connections,
disconnections, twin changes, registry changes, direct method calls and
service API requests.

It authenticates with a service connection string whose policy has
ServiceConnect, from $` + EnvConnectionString + ` or --connection-string-file,
and trusts the CA in --ca-file or $IOTHUB_CA_FILE; with neither string given it
uses the hub kept in --data-dir, as "iothub-emulator env" prints it.

Once it is listening it says so in one line on stderr, so that scripts can
wait for that line before they send. Events go to stdout: one line each, or
with -o json one JSON object per line. A monitor that reads too slowly misses
events rather than slowing the hub; it says on stderr how many it missed.

It stops on Ctrl-C (exit 0), after --count events (exit 0), or at --timeout:
exit 0, or 1 when --count events had not arrived by then.`

func newMonitorCommand(stdout, stderr io.Writer, root *options, dirErr error) *cobra.Command {
	var o monitorOptions
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream the messages and other events of a running emulator",
		Long:  monitorLong,
		Example: `  iothub-emulator monitor
  iothub-emulator monitor --device-id sensor-1 --module-id filter --properties
  iothub-emulator monitor --events all -o json | jq .
  iothub-emulator monitor --count 1 --timeout 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return usagef("-o/--output %q is not text or json", o.output)
			}
			if o.count < 0 {
				return usagef("--count %d: must not be negative", o.count)
			}
			if o.timeout < 0 {
				return usagef("--timeout %v: must not be negative", o.timeout)
			}
			kinds, err := eventapi.ParseKinds([]string{o.kinds})
			if err != nil {
				return usagef("--events: %v", err)
			}
			cs, caFile, err := monitorTarget(cmd, root, &o, dirErr)
			if err != nil {
				return err
			}
			return monitor(cmd.Context(), stdout, stderr, o, kinds, cs, caFile)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.deviceID, "device-id", "d", "", "only events of this device (and its modules, unless --module-id)")
	f.StringVarP(&o.moduleID, "module-id", "m", "", "only events of modules with this ID")
	f.BoolVarP(&o.properties, "properties", "p", false, "show each message's system and application properties and the hub's annotations")
	f.StringVar(&o.kinds, "events", "message", "kinds of events, comma-separated: all, "+strings.Join(kindNames(), ", "))
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json (one JSON object per line)")
	f.DurationVar(&o.timeout, "timeout", 0, "stop this long after the stream opens (0: never)")
	f.IntVar(&o.count, "count", 0, "stop after this many events (0: never)")
	f.StringVar(&o.csFile, "connection-string-file", "", "read the service connection string from this file (- for stdin) instead of $"+EnvConnectionString)
	f.StringVar(&o.caFile, "ca-file", "", "trust this CA certificate file (default $"+hubtls.EnvCAFile+")")
	return cmd
}

func kindNames() []string {
	out := make([]string, len(events.Kinds))
	for i, k := range events.Kinds {
		out[i] = string(k)
	}
	return out
}

// monitorTarget finds the service connection string and the CA to trust.
func monitorTarget(cmd *cobra.Command, root *options, o *monitorOptions, dirErr error) (connstr.ConnectionString, string, error) {
	raw := os.Getenv(EnvConnectionString)
	source := "$" + EnvConnectionString
	caFile := hubtls.CAFile(o.caFile, os.Getenv)
	if o.csFile != "" {
		b, err := readSmall(cmd.InOrStdin(), o.csFile)
		if err != nil {
			return connstr.ConnectionString{}, "", usagef("--connection-string-file: %v", err)
		}
		raw, source = strings.TrimSpace(string(b)), "--connection-string-file"
	}
	if raw == "" {
		if root.dataDir == "" {
			if dirErr != nil {
				return connstr.ConnectionString{}, "", usage(dirErr)
			}
			return connstr.ConnectionString{}, "", usagef("no connection string: set $%s or --connection-string-file", EnvConnectionString)
		}
		host, port, _, err := envEndpoint(cmd, root)
		if err != nil {
			return connstr.ConnectionString{}, "", err
		}
		s, ca, err := emulator.ServiceSettings(root.dataDir, host, port)
		if err != nil {
			return connstr.ConnectionString{}, "", err
		}
		raw, source = s, "--data-dir"
		if caFile == "" {
			caFile = ca
		}
	}
	cs, err := connstr.Parse(raw)
	if err != nil {
		return connstr.ConnectionString{}, "", usagef("%s: %v", source, err)
	}
	if cs.Kind() != connstr.Service {
		return connstr.ConnectionString{}, "", usagef("%s: a service connection string (HostName, SharedAccessKeyName, SharedAccessKey) is needed, not a device or module one", source)
	}
	return cs, caFile, nil
}

func readSmall(stdin io.Reader, path string) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxConnectionStringFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConnectionStringFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxConnectionStringFile)
	}
	return b, nil
}

func monitor(ctx context.Context, stdout, stderr io.Writer, o monitorOptions, kinds map[events.Kind]bool, cs connstr.ConnectionString, caFile string) error {
	tlsConf, err := hubtls.Config(caFile)
	if err != nil {
		return usagef("--ca-file: %v", err)
	}
	// --timeout counts from the moment the stream is open, as az iot hub
	// monitor-events counts its timeout, so a slow connect is not a timeout.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		return usagef("connection string: %v", err)
	}
	q := url.Values{}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, string(k))
	}
	sort.Strings(names)
	q.Set(eventapi.ParamKind, strings.Join(names, ","))
	if o.deviceID != "" {
		q.Set(eventapi.ParamDeviceID, o.deviceID)
	}
	if o.moduleID != "" {
		q.Set(eventapi.ParamModuleID, o.moduleID)
	}
	endpoint := "https://" + cs.HostName + eventapi.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("host name %q: %w", cs.HostName, err)
	}
	tok, _ := signer.Token(sas.ServiceResource(cs.HostName), time.Hour)
	req.Header.Set("Authorization", tok)
	resp, err := hubtls.HTTPClient(tlsConf).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return stopped(ctx, o, 0)
		}
		return fmt.Errorf("reach the emulator at %s: %w", endpoint, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the emulator refused the stream: %s", refusal(resp))
	}
	fmt.Fprintf(stderr, "monitoring %s on %s; Ctrl-C to stop\n", strings.Join(names, ", "), cs.HostName)
	if o.timeout > 0 {
		t := time.AfterFunc(o.timeout, func() { cancel(errTimedOut) })
		defer t.Stop()
	}

	p := printer{w: stdout, json: o.output == "json", properties: o.properties}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20) // a message event of 256 KB, base64, with room
	seen := 0
	for sc.Scan() {
		var head struct {
			Kind    string `json:"kind"`
			Dropped uint64 `json:"dropped"`
		}
		if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
			return fmt.Errorf("the emulator sent a line that is not JSON: %w", err)
		}
		if head.Kind == eventapi.DroppedKind {
			fmt.Fprintf(stderr, "%d events missed so far: this monitor read too slowly\n", head.Dropped)
			continue
		}
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("the emulator sent an event that does not decode: %w", err)
		}
		if err := p.print(e); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		seen++
		if o.count > 0 && seen >= o.count {
			return nil
		}
	}
	if ctx.Err() != nil {
		return stopped(ctx, o, seen)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("the stream from the emulator broke: %w", err)
	}
	return errors.New("the emulator closed the stream (it stopped)")
}

// errTimedOut ends a monitor whose --timeout ran out.
var errTimedOut = errors.New("--timeout ran out")

// stopped is the outcome of a monitor whose context ended: Ctrl-C and a
// --timeout without --count are a normal end.
func stopped(ctx context.Context, o monitorOptions, seen int) error {
	if errors.Is(context.Cause(ctx), errTimedOut) && o.count > 0 {
		return fmt.Errorf("%d of %d events arrived within %v", seen, o.count, o.timeout)
	}
	return nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// refusal describes a refused stream request by IoT Hub's error message.
func refusal(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	var body struct {
		Message string `json:"Message"`
	}
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		return resp.Status + ": " + body.Message
	}
	return resp.Status
}

// printer writes events as text or JSON lines.
type printer struct {
	w          io.Writer
	json       bool
	properties bool
}

// jsonLine is an event as monitor -o json prints it: a message's body as
// JSON when it is JSON, else as text, else as base64.
type jsonLine struct {
	Time            string                 `json:"time"`
	Kind            events.Kind            `json:"kind"`
	DeviceID        string                 `json:"deviceId,omitempty"`
	ModuleID        string                 `json:"moduleId,omitempty"`
	Payload         any                    `json:"payload,omitempty"`
	PayloadEncoding string                 `json:"payloadEncoding,omitempty"`
	Properties      *messageProps          `json:"properties,omitempty"`
	Annotations     map[string]string      `json:"annotations,omitempty"`
	Connection      *events.Connection     `json:"connection,omitempty"`
	Twin            *events.TwinChange     `json:"twin,omitempty"`
	Registry        *events.RegistryChange `json:"registry,omitempty"`
	Request         *events.RequestInfo    `json:"request,omitempty"`
	Method          *events.MethodCall     `json:"method,omitempty"`
}

type messageProps struct {
	System      map[string]string `json:"system"`
	Application map[string]string `json:"application"`
}

func payload(body []byte) (any, string) {
	if json.Valid(body) {
		return json.RawMessage(body), ""
	}
	if utf8.Valid(body) {
		return string(body), ""
	}
	return base64.StdEncoding.EncodeToString(body), "base64"
}

func (p printer) print(e events.Event) error {
	if p.json {
		l := jsonLine{Time: e.Time.Format(time.RFC3339Nano), Kind: e.Kind, DeviceID: e.DeviceID, ModuleID: e.ModuleID,
			Connection: e.Connection, Twin: e.Twin, Registry: e.Registry, Request: e.Request, Method: e.Method}
		if m := e.Message; m != nil {
			l.Payload, l.PayloadEncoding = payload(m.Body)
			if p.properties {
				l.Properties = &messageProps{System: orEmpty(m.SystemProperties), Application: orEmpty(m.ApplicationProperties)}
				l.Annotations = m.Annotations
			}
		}
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	}
	var sb strings.Builder
	who := e.DeviceID
	if e.ModuleID != "" {
		who += "/" + e.ModuleID
	}
	if who == "" {
		who = "-"
	}
	fmt.Fprintf(&sb, "%s %s %s", e.Time.Local().Format("15:04:05.000"), who, e.Kind)
	switch {
	case e.Message != nil:
		body, enc := payload(e.Message.Body)
		if raw, ok := body.(json.RawMessage); ok {
			body = string(raw)
		}
		fmt.Fprintf(&sb, " %v", body)
		if enc != "" {
			sb.WriteString(" (" + enc + ")")
		}
		if p.properties {
			writeProps(&sb, "system", e.Message.SystemProperties)
			writeProps(&sb, "application", e.Message.ApplicationProperties)
			writeProps(&sb, "annotations", e.Message.Annotations)
		}
	case e.Connection != nil:
		fmt.Fprintf(&sb, " %s %s", e.Connection.Transport, e.Connection.Remote)
		if e.Connection.Reason != "" {
			fmt.Fprintf(&sb, " (%s)", e.Connection.Reason)
		}
	case e.Twin != nil:
		fmt.Fprintf(&sb, " %s $version %d %s", e.Twin.Section, e.Twin.Version, e.Twin.Patch)
	case e.Registry != nil:
		fmt.Fprintf(&sb, " %s", e.Registry.Operation)
	case e.Request != nil:
		fmt.Fprintf(&sb, " %s %s %d %.1fms", e.Request.Method, e.Request.Path, e.Request.Status, e.Request.DurationMS)
	case e.Method != nil:
		fmt.Fprintf(&sb, " %s status %d %.1fms", e.Method.Name, e.Method.Status, e.Method.DurationMS)
		if e.Method.Error != "" {
			fmt.Fprintf(&sb, " (%s)", e.Method.Error)
		}
	}
	sb.WriteByte('\n')
	_, err := io.WriteString(p.w, sb.String())
	return err
}

func writeProps(sb *strings.Builder, name string, props map[string]string) {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(sb, "\n  %s:", name)
	for _, k := range keys {
		fmt.Fprintf(sb, " %s=%q", k, props[k])
	}
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
