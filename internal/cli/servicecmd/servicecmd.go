// Package servicecmd is what the service-side tools (create-module,
// update-module-twin) share on top of package cli: the module they work on,
// building a registry client from the common flags, and turning the hub's
// error responses into sentences that say what to do.
package servicecmd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

// Defaults from Microsoft's tutorial.
const (
	DefaultDeviceID = "myFirstDevice"
	DefaultModuleID = "myFirstModule"
)

// ModuleFlags are --device-id and --module-id: the module a command works
// on.
type ModuleFlags struct {
	DeviceID string
	ModuleID string
}

// AddModuleFlags registers --device-id and --module-id on cmd, with the
// tutorial's IDs as defaults.
func AddModuleFlags(cmd *cobra.Command, m *ModuleFlags) {
	f := cmd.Flags()
	f.StringVarP(&m.DeviceID, "device-id", "d", DefaultDeviceID, "device `ID`")
	f.StringVarP(&m.ModuleID, "module-id", "m", DefaultModuleID, "module `ID`")
}

// Validate checks both IDs against IoT Hub's rules; errors are usage
// errors.
func (m ModuleFlags) Validate() error {
	if err := iothub.ValidateID("device ID", m.DeviceID); err != nil {
		return cli.Usagef("--device-id: %w", err)
	}
	if err := iothub.ValidateID("module ID", m.ModuleID); err != nil {
		return cli.Usagef("--module-id: %w", err)
	}
	return nil
}

// Permissions a shared access policy grants, as the hub names them.
const (
	RegistryWrite  = "RegistryWrite"
	ServiceConnect = "ServiceConnect"
)

// NewClient reads the service connection string and CA file from the common
// flags (or their environment fallbacks) and returns a registry client for
// the hub. Configuration errors are usage errors.
func NewClient(ctx context.Context, env *cli.Env, common *cli.Common) (*registry.Client, connstr.ConnectionString, error) {
	cs, err := common.ConnectionString(ctx, env)
	if err != nil {
		return nil, connstr.ConnectionString{}, err
	}
	opts := registry.ClientOptions{ClientOptions: env.ClientOptions}
	if opts.Transport == nil {
		tlsConfig, err := common.TLSConfig(ctx, env)
		if err != nil {
			return nil, connstr.ConnectionString{}, err
		}
		opts.Transport = hubtls.HTTPClient(tlsConfig)
	}
	client, err := registry.NewClient(cs, &opts)
	if err != nil {
		return nil, connstr.ConnectionString{}, cli.Usage(err)
	}
	return client, cs, nil
}

// Target describes what a command was working on, so that Explain can say
// which identity is missing and which permission is lacking.
type Target struct {
	Host       string // the hub's HostName
	Permission string // what the operation needs: RegistryWrite or ServiceConnect
	DeviceID   string
	ModuleID   string // "" for device operations
	// SuggestCreate adds "create it with create-module" to not-found errors.
	SuggestCreate bool
}

// HubError is a hub response explained for a user. It wraps the
// *registry.ResponseError, so registry.StatusCode still works on it.
type HubError struct {
	Reason string
	Hint   string
	Err    *registry.ResponseError
}

func (e *HubError) Error() string    { return e.Reason }
func (e *HubError) Unwrap() error    { return e.Err }
func (e *HubError) HintText() string { return e.Hint }

// Explain rewrites err into a *HubError for hub responses, or through
// cli.ExplainNetError for network and TLS failures. Other errors come back
// unchanged.
func (t Target) Explain(err error) error {
	var re *registry.ResponseError
	if !errors.As(err, &re) {
		return cli.ExplainNetError(err, t.Host)
	}
	e := &HubError{Err: re}
	status := fmt.Sprintf("%d %s", re.StatusCode, codeOrText(re))
	switch {
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		e.Reason = fmt.Sprintf("the hub refused the connection string's credentials (%s)", status)
		if re.Message != "" && !strings.EqualFold(re.Message, "Unauthorized") {
			e.Reason += ": the hub says " + re.Message
		}
		e.Hint = t.credentialsHint(re)
	case re.StatusCode == http.StatusNotFound:
		e.Reason = t.notFound(re)
		if t.SuggestCreate && t.ModuleID != "" {
			e.Hint = fmt.Sprintf("create it with: create-module --device-id %s --module-id %s", shellQuote(t.DeviceID), shellQuote(t.ModuleID))
		}
	case re.StatusCode == http.StatusConflict:
		e.Reason = withMessage("the hub reported a conflict ("+status+")", re)
	case re.StatusCode == http.StatusPreconditionFailed:
		e.Reason = withMessage("the hub refused the change because the etag no longer matches ("+status+")", re)
	case re.StatusCode == http.StatusTooManyRequests:
		e.Reason = withMessage("the hub is throttling requests and still was after several retries ("+status+")", re)
		e.Hint = "wait a minute and try again; IoT Hub limits operations per second by tier and unit count"
	case re.StatusCode == http.StatusBadRequest:
		e.Reason = withMessage("the hub rejected the request ("+status+")", re)
	case re.StatusCode >= 500:
		e.Reason = withMessage("the hub failed to handle the request ("+status+")", re)
		e.Hint = "try again later"
		if re.TrackingID != "" {
			e.Hint += "; quote tracking ID " + re.TrackingID + " if you report it"
		}
	default:
		e.Reason = withMessage("unexpected answer from the hub ("+status+")", re)
	}
	return e
}

// credentialsHint says what to check after a 401 or 403. The token signs
// HostName as its audience, so a wrong host name (an IP address or alias
// of the hub) is refused exactly like a wrong key. The hub rarely says
// which, so both are named, the host name first when the hub's message
// points at the token's scope or audience.
func (t Target) credentialsHint(re *registry.ResponseError) string {
	key := fmt.Sprintf("check SharedAccessKeyName and SharedAccessKey in the connection string; the shared access policy needs the %s permission (%s)",
		t.Permission, examplePolicies(t.Permission))
	msg := strings.ToLower(re.Message)
	if strings.Contains(msg, "scope") || strings.Contains(msg, "audience") {
		return fmt.Sprintf("check HostName in the connection string: the token is signed for %s, which the hub does not take as its name; "+
			"use the hub's own host name (for example MyHub.azure-devices.net), not an IP address or another alias", t.Host) +
			"\nif it is right, " + key
	}
	return key + fmt.Sprintf("\nor check HostName in the connection string: the token is signed for %s, and a name that is not the hub's own "+
		"(an IP address or another alias) is refused just like a wrong key", t.Host)
}

func (t Target) notFound(re *registry.ResponseError) string {
	device := fmt.Sprintf("device %q", t.DeviceID)
	switch {
	case re.Code == "DeviceNotFound" || t.ModuleID == "":
		return fmt.Sprintf("%s does not exist on %s", device, t.Host)
	case re.Code == "ModuleNotFound":
		return fmt.Sprintf("module %q does not exist on %s", t.ModuleID, device)
	}
	return fmt.Sprintf("%s or its module %q does not exist on %s (%s)", device, t.ModuleID, t.Host, withMessage(codeOrText(re), re))
}

func codeOrText(re *registry.ResponseError) string {
	if re.Code != "" {
		return re.Code
	}
	return http.StatusText(re.StatusCode)
}

func withMessage(s string, re *registry.ResponseError) string {
	if re.Message == "" {
		return s
	}
	return s + ": " + re.Message
}

func examplePolicies(permission string) string {
	switch permission {
	case RegistryWrite:
		return "for example the built-in iothubowner or registryReadWrite policy"
	case ServiceConnect:
		return "for example the built-in iothubowner or service policy"
	}
	return "for example the built-in iothubowner policy"
}

// shellQuote quotes an ID for a command line when it holds characters a
// shell would interpret (IDs may contain # * ? ! ( ) ; $ ').
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':' || r == '+' || r == '=' || r == '@' || r == ',' || r == '%') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
