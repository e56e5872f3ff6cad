package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
)

// Environment variables the tools read.
const (
	EnvConnectionString       = "IOTHUB_CONNECTION_STRING"        // service CLIs
	EnvModuleConnectionString = "IOTHUB_MODULE_CONNECTION_STRING" // receive-twin-patch
	EnvCAFile                 = "IOTHUB_CA_FILE"
)

const (
	flagConnectionStringFile = "connection-string-file"
	flagCAFile               = "ca-file"
	flagOutput               = "output"
	flagVerbose              = "verbose"
)

// Output is the value of --output.
type Output string

// Output formats.
const (
	OutputText Output = "text"
	OutputJSON Output = "json"
)

func (o *Output) String() string { return string(*o) }
func (o *Output) Type() string   { return "format" }
func (o *Output) Set(s string) error {
	switch Output(s) {
	case OutputText, OutputJSON:
		*o = Output(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q", OutputText, OutputJSON)
}

// Common holds the flags every tool shares. Register them with
// AddCommonFlags; read the connection string with ConnectionString.
type Common struct {
	ConnectionStringFile string
	CAFile               string
	Output               Output
	Verbose              bool

	envVar string
	want   connstr.Kind
}

// AddCommonFlags registers --connection-string-file, --ca-file, --output and
// --verbose on cmd. want is the kind of connection string the command needs
// and envVar the environment variable it falls back to. No flag default is
// ever taken from the environment, so --help cannot show a key.
func AddCommonFlags(cmd *cobra.Command, c *Common, want connstr.Kind, envVar string) {
	c.envVar = envVar
	c.want = want
	c.Output = OutputText
	f := cmd.Flags()
	f.StringVar(&c.ConnectionStringFile, flagConnectionStringFile, "",
		fmt.Sprintf("read the %s connection string from `PATH` (- for stdin) instead of %s", kindPhrase(want), envVar))
	f.StringVar(&c.CAFile, flagCAFile, "",
		"trust the CA certificates in PEM file `PATH` in addition to the system roots (default $"+EnvCAFile+")")
	f.VarP(&c.Output, flagOutput, "o", "output `format`: text or json")
	f.BoolVarP(&c.Verbose, flagVerbose, "v", false, "log each request to the hub and its status on stderr (signatures redacted)")
	_ = cmd.MarkFlagFilename(flagConnectionStringFile)
	_ = cmd.MarkFlagFilename(flagCAFile, "pem", "crt", "cer")
	_ = cmd.RegisterFlagCompletionFunc(flagOutput, cobra.FixedCompletions(
		[]cobra.Completion{string(OutputText), string(OutputJSON)}, cobra.ShellCompDirectiveNoFileComp))
}

// JSON reports whether --output json was given.
func (c *Common) JSON() bool { return c.Output == OutputJSON }

// CompactJSON renders a JSON value on one line, or as it came (trimmed)
// when it does not parse.
func CompactJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return strings.TrimSpace(string(raw))
	}
	return b.String()
}

// WriteJSON writes v to w as indented JSON, the form --output json prints
// a command's single result in.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// CAFilePath returns --ca-file, else $IOTHUB_CA_FILE, else "".
func (c *Common) CAFilePath(env *Env) string {
	if c.CAFile != "" {
		return c.CAFile
	}
	return env.Getenv(EnvCAFile)
}

// ConnectionString reads the connection string from --connection-string-file
// (or stdin for "-"), else from the environment variable, parses it and
// checks it is of the kind the command needs. Every error is a usage error
// (exit 2; Run reports an interrupted read as such); none contains the key.
func (c *Common) ConnectionString(ctx context.Context, env *Env) (connstr.ConnectionString, error) {
	raw, source, err := c.readConnectionString(ctx, env)
	if err != nil {
		return connstr.ConnectionString{}, Usage(err)
	}
	cs, err := connstr.Parse(raw)
	if err != nil {
		return connstr.ConnectionString{}, Usage(fmt.Errorf("%w (read from %s)", err, source))
	}
	if c.want != 0 && cs.Kind() != c.want {
		return connstr.ConnectionString{}, Usage(WithHint(
			fmt.Errorf("the connection string from %s is a %s connection string; this command needs a %s connection string",
				source, kindPhrase(cs.Kind()), kindPhrase(c.want)),
			kindHint(c.want)))
	}
	return cs, nil
}

func (c *Common) readConnectionString(ctx context.Context, env *Env) (raw, source string, err error) {
	if c.ConnectionStringFile == "" {
		raw = env.Getenv(c.envVar)
		if strings.TrimSpace(raw) == "" {
			return "", "", WithHint(errors.New("no connection string"),
				fmt.Sprintf("set %s or pass --%s PATH (- reads stdin); %s", c.envVar, flagConnectionStringFile, kindHint(c.want)))
		}
		if len(raw) > MaxSecretInput {
			return "", "", fmt.Errorf("connection string from %s is larger than %s, the most this tool reads", c.envVar, FormatBytes(MaxSecretInput))
		}
		return raw, c.envVar, nil
	}
	in := Input{Path: c.ConnectionStringFile, What: "connection string", Limit: MaxSecretInput}
	b, err := ReadInput(ctx, env, in)
	if err != nil {
		return "", "", err
	}
	if strings.TrimSpace(string(b)) == "" {
		if in.Path == "-" {
			return "", "", errors.New("no connection string on stdin")
		}
		return "", "", fmt.Errorf("connection string file %s is empty", in.Path)
	}
	return string(b), in.Source(), nil
}

// TLSConfig returns the TLS configuration for the hub: the system roots
// plus the CA file of --ca-file or $IOTHUB_CA_FILE, read with the same
// bounds and signal handling as every other input.
func (c *Common) TLSConfig(ctx context.Context, env *Env) (*tls.Config, error) {
	path := c.CAFilePath(env)
	if path == "" {
		return hubtls.ConfigPEM("", nil)
	}
	data, err := ReadInput(ctx, env, Input{Path: path, What: "CA file", Limit: hubtls.MaxCAFileBytes})
	if err != nil {
		return nil, Usage(err)
	}
	cfg, err := hubtls.ConfigPEM(path, data)
	return cfg, Usage(err)
}

func kindPhrase(k connstr.Kind) string {
	switch k {
	case connstr.Service:
		return "service"
	case connstr.Device:
		return "device"
	case connstr.Module:
		return "module"
	}
	return "IoT Hub"
}

func kindHint(k connstr.Kind) string {
	switch k {
	case connstr.Service:
		return "a service connection string looks like HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>"
	case connstr.Module:
		return "a module connection string looks like HostName=<hub>.azure-devices.net;DeviceId=<device>;ModuleId=<module>;SharedAccessKey=<key> (create-module prints one)"
	case connstr.Device:
		return "a device connection string looks like HostName=<hub>.azure-devices.net;DeviceId=<device>;SharedAccessKey=<key>"
	}
	return ""
}
