package servicecmd_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/clitest"
	"github.com/moduletwin/iothub-module-twin/internal/cli/servicecmd"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

func newEnv(vars map[string]string) *cli.Env {
	return &cli.Env{
		Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{},
		Getenv:        func(k string) string { return vars[k] },
		ClientOptions: clitest.ClientOptions(),
	}
}

func newDummyCmd() *cobra.Command { return &cobra.Command{Use: "tool"} }

// common returns shared flags as AddCommonFlags leaves them.
func common() *cli.Common {
	var c cli.Common
	cli.AddCommonFlags(newDummyCmd(), &c, connstr.Service, cli.EnvConnectionString)
	return &c
}

// TestExplainHubResponses drives real requests against the emulator and
// checks the sentences each failure becomes.
func TestExplainHubResponses(t *testing.T) {
	tests := []struct {
		name       string
		failure    *iothub.ErrorCode
		message    string
		device     string
		module     string
		permission string
		suggest    bool
		wantStatus int
		wantReason string
		wantHint   string
	}{
		{name: "device not found", device: "nodev", module: "m", suggest: true, wantStatus: 404,
			wantReason: `device "nodev" does not exist on HOST`, wantHint: "create it with: create-module --device-id nodev --module-id m"},
		{name: "module not found", device: "d", module: "no#mod", wantStatus: 404,
			wantReason: `module "no#mod" does not exist on device "d"`},
		{name: "not found without code", device: "d", module: "m", wantStatus: 404, suggest: true,
			failure: &iothub.ErrorCode{Number: 404000}, message: "gone",
			wantReason: `device "d" or its module "m" does not exist on HOST (Not Found: gone)`, wantHint: "create-module --device-id d --module-id m"},
		{name: "unauthorized", device: "d", module: "m", permission: servicecmd.ServiceConnect, wantStatus: 401,
			failure: &iothub.ErrorCode{Name: "IotHubUnauthorizedAccess", Number: 401002}, message: "Unauthorized",
			wantReason: "the hub refused the connection string's credentials (401 IotHubUnauthorizedAccess)",
			wantHint:   "the shared access policy needs the ServiceConnect permission (for example the built-in iothubowner or service policy)"},
		{name: "forbidden", device: "d", module: "m", permission: servicecmd.RegistryWrite, wantStatus: 403,
			failure: &iothub.ErrorCode{Name: "IotHubQuotaExceeded", Number: 403002}, message: "no",
			wantHint: "RegistryWrite permission (for example the built-in iothubowner or registryReadWrite policy)"},
		{name: "conflict", device: "d", module: "m", wantStatus: 409,
			failure: &iothub.ErrorCode{Name: "ModuleAlreadyExistsOnDevice", Number: 409301}, message: "exists",
			wantReason: "the hub reported a conflict (409 ModuleAlreadyExistsOnDevice): exists"},
		{name: "precondition", device: "d", module: "m", wantStatus: 412,
			failure: &iothub.ErrorCode{Name: "PreconditionFailed", Number: 412001}, message: "ETag mismatch",
			wantReason: "the hub refused the change because the etag no longer matches (412 PreconditionFailed): ETag mismatch"},
		{name: "bad request", device: "d", module: "m", wantStatus: 400,
			failure: &iothub.ErrorCode{Name: "ArgumentInvalid", Number: 400004}, message: "bad key",
			wantReason: "the hub rejected the request (400 ArgumentInvalid): bad key"},
		{name: "throttled", device: "d", module: "m", wantStatus: 429,
			failure: &iothub.ErrorCode{Name: "ThrottlingException", Number: 429001}, message: "slow down",
			wantReason: "the hub is throttling requests and still was after several retries (429 ThrottlingException): slow down", wantHint: "wait a minute"},
		{name: "server error", device: "d", module: "m", wantStatus: 500,
			failure: &iothub.ErrorCode{Name: "ServerError", Number: 500001}, message: "oops",
			wantReason: "the hub failed to handle the request (500 ServerError): oops", wantHint: "tracking ID "},
		{name: "other status", device: "d", module: "m", wantStatus: 413,
			failure: &iothub.ErrorCode{Name: "TooManyModulesOnDevice", Number: 413003}, message: "50",
			wantReason: "unexpected answer from the hub (413 TooManyModulesOnDevice): 50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := clitest.Start(t)
			hub.CreateDevice("d")
			if tt.failure != nil {
				hub.Faults.Add(faults.Rule{Code: *tt.failure, Message: tt.message})
			}
			client, cs, err := servicecmd.NewClient(context.Background(), newEnv(hub.Env()), common())
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.GetModuleTwin(context.Background(), tt.device, tt.module)
			if err == nil {
				t.Fatal("GetModuleTwin succeeded, want an error")
			}
			target := servicecmd.Target{Host: cs.HostName, Permission: tt.permission, DeviceID: tt.device, ModuleID: tt.module, SuggestCreate: tt.suggest}
			got := target.Explain(err)
			var he *servicecmd.HubError
			if !errors.As(got, &he) {
				t.Fatalf("Explain() = %T %v, want *HubError", got, got)
			}
			if registry.StatusCode(got) != tt.wantStatus {
				t.Errorf("status through the explained error = %d, want %d", registry.StatusCode(got), tt.wantStatus)
			}
			wantReason := strings.ReplaceAll(tt.wantReason, "HOST", hub.Host())
			if !strings.Contains(got.Error(), wantReason) {
				t.Errorf("Explain() = %q, want it to contain %q", got, wantReason)
			}
			if tt.wantHint == "" && he.Hint != "" {
				t.Errorf("hint = %q, want none", he.Hint)
			}
			if !strings.Contains(he.HintText(), tt.wantHint) {
				t.Errorf("hint = %q, want it to contain %q", he.HintText(), tt.wantHint)
			}
		})
	}
}

func TestExplainPassesOtherErrorsThrough(t *testing.T) {
	other := errors.New("other")
	if got := (servicecmd.Target{}).Explain(other); got != other {
		t.Errorf("Explain(other) = %v, want it unchanged", got)
	}
	if got := (servicecmd.Target{}).Explain(nil); got != nil {
		t.Errorf("Explain(nil) = %v, want nil", got)
	}
}

func TestNewClientConfigErrorsAreUsage(t *testing.T) {
	hub := clitest.Start(t)
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"no connection string", map[string]string{}, "no connection string"},
		{"bad CA file", map[string]string{cli.EnvConnectionString: hub.ConnectionString(), cli.EnvCAFile: "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := servicecmd.NewClient(context.Background(), newEnv(tt.vars), common())
			var ue *cli.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("NewClient() error = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewClient() error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	// The configured client reaches the hub through the CA file.
	client, _, err := servicecmd.NewClient(context.Background(), newEnv(hub.Env()), common())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.GetDevice(context.Background(), "nodev"); registry.StatusCode(err) != http.StatusNotFound {
		t.Errorf("GetDevice(nodev) error = %v, want a 404 from the hub", err)
	}
}
