package createmodule_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/clitest"
	"github.com/moduletwin/iothub-module-twin/internal/cli/createmodule"
	"github.com/moduletwin/iothub-module-twin/internal/cli/servicecmd"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/faults"
	emuhub "github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

const (
	keyA = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=" // 32 × 'A'
	keyB = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=" // 32 × 'B'
)

func run(t *testing.T, hub *clitest.Hub, vars map[string]string, stdin string, args ...string) clitest.Result {
	t.Helper()
	res := hub.Run(t, createmodule.Command, vars, stdin, args...)
	if strings.Contains(res.Stderr, hub.PolicyKey()) || strings.Contains(res.Stdout, hub.PolicyKey()) {
		t.Errorf("output contains the policy key:\nstdout: %s\nstderr: %s", res.Stdout, res.Stderr)
	}
	return res
}

// wantResult builds the expected report from the hub's own state.
func wantResult(t *testing.T, hub *clitest.Hub, deviceID, moduleID, devResult, modResult string) createmodule.Result {
	t.Helper()
	dev, err := hub.Hub.Hub().GetDevice(deviceID)
	if err != nil {
		t.Fatalf("device %q does not exist on the hub: %v", deviceID, err)
	}
	mod, err := hub.Hub.Hub().GetModule(deviceID, moduleID)
	if err != nil {
		t.Fatalf("module %q does not exist on the hub: %v", moduleID, err)
	}
	managedBy := ""
	if mod.ManagedBy != nil {
		managedBy = *mod.ManagedBy
	}
	modKey := mod.Authentication.SymmetricKey.PrimaryKey
	return createmodule.Result{
		HostName: hub.Host(),
		Device: createmodule.DeviceResult{DeviceID: deviceID, Result: devResult, IoTEdge: dev.Capabilities.IoTEdge,
			PrimaryKey: dev.Authentication.SymmetricKey.PrimaryKey},
		Module: createmodule.ModuleResult{DeviceID: deviceID, ModuleID: moduleID, Result: modResult, ManagedBy: managedBy,
			PrimaryKey: modKey},
		ModuleConnectionString: "HostName=" + hub.Host() + ";DeviceId=" + deviceID + ";ModuleId=" + moduleID + ";SharedAccessKey=" + modKey,
	}
}

func decode(t *testing.T, stdout string) createmodule.Result {
	t.Helper()
	var got createmodule.Result
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	return got
}

func TestCreateThenExisting(t *testing.T) {
	hub := clitest.Start(t)

	first := run(t, hub, hub.Env(), "")
	if first.Code != cli.ExitOK {
		t.Fatalf("first run: exit %d, stderr:\n%s", first.Code, first.Stderr)
	}
	want := wantResult(t, hub, servicecmd.DefaultDeviceID, servicecmd.DefaultModuleID, "created", "created")
	wantText := "Device myFirstDevice: created\n" +
		"  primary key: " + want.Device.PrimaryKey + "\n" +
		"Module myFirstModule on device myFirstDevice: created\n" +
		"  primary key: " + want.Module.PrimaryKey + "\n" +
		"Module connection string:\n" +
		"  " + want.ModuleConnectionString + "\n"
	if diff := cmp.Diff(wantText, first.Stdout); diff != "" {
		t.Errorf("first run stdout (-want +got):\n%s", diff)
	}
	if first.Stderr != "" {
		t.Errorf("first run stderr = %q, want nothing", first.Stderr)
	}
	cs, err := connstr.Parse(want.ModuleConnectionString)
	if err != nil || cs.Kind() != connstr.Module {
		t.Errorf("module connection string does not parse as a module's: %v", err)
	}

	second := run(t, hub, hub.Env(), "")
	if second.Code != cli.ExitOK {
		t.Fatalf("second run: exit %d, stderr:\n%s", second.Code, second.Stderr)
	}
	wantSecond := strings.ReplaceAll(wantText, ": created", ": existing")
	if diff := cmp.Diff(wantSecond, second.Stdout); diff != "" {
		t.Errorf("second run stdout (-want +got):\n%s", diff)
	}

	var got []string
	for _, r := range hub.Requests() {
		got = append(got, r.Method+" "+r.Path+" If-Match="+r.IfMatch)
	}
	wantReqs := []string{
		"PUT /devices/myFirstDevice If-Match=",
		"PUT /devices/myFirstDevice/modules/myFirstModule If-Match=",
		"PUT /devices/myFirstDevice If-Match=", // 409
		"GET /devices/myFirstDevice If-Match=",
		"PUT /devices/myFirstDevice/modules/myFirstModule If-Match=", // 409
		"GET /devices/myFirstDevice/modules/myFirstModule If-Match=",
	}
	if diff := cmp.Diff(wantReqs, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestJSONOutput(t *testing.T) {
	hub := clitest.Start(t)
	res := run(t, hub, hub.Env(), "", "--device-id", "edge-1", "--module-id", "filter", "--edge", "--managed-by", "ops", "--output", "json")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	want := wantResult(t, hub, "edge-1", "filter", "created", "created")
	if !want.Device.IoTEdge || want.Module.ManagedBy != "ops" {
		t.Errorf("hub state: iotEdge %v, managedBy %q; want true and \"ops\"", want.Device.IoTEdge, want.Module.ManagedBy)
	}
	if diff := cmp.Diff(want, decode(t, res.Stdout)); diff != "" {
		t.Errorf("JSON report (-want +got):\n%s", diff)
	}

	again := run(t, hub, hub.Env(), "", "-d", "edge-1", "-m", "filter", "-o", "json")
	if again.Code != cli.ExitOK {
		t.Fatalf("second run: exit %d, stderr:\n%s", again.Code, again.Stderr)
	}
	want = wantResult(t, hub, "edge-1", "filter", "existing", "existing")
	if diff := cmp.Diff(want, decode(t, again.Stdout)); diff != "" {
		t.Errorf("second JSON report (-want +got):\n%s", diff)
	}
	// The second run asked for a non-Edge device but found an Edge one.
	if !strings.Contains(again.Stderr, `note: device "edge-1" already exists and is an IoT Edge device; --edge was not applied`) {
		t.Errorf("stderr = %q, want a note about --edge", again.Stderr)
	}
}

// withKeys adds the module's keys to vars, as the environment gives them.
func withKeys(vars map[string]string, primary, secondary string) map[string]string {
	out := map[string]string{createmodule.EnvPrimaryKey: primary, createmodule.EnvSecondaryKey: secondary}
	for k, v := range vars {
		out[k] = v
	}
	return out
}

func TestGivenKeys(t *testing.T) {
	hub := clitest.Start(t)
	res := run(t, hub, withKeys(hub.Env(), keyA, keyB), "", "-o", "json")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	mod, _ := hub.Hub.Hub().GetModule(servicecmd.DefaultDeviceID, servicecmd.DefaultModuleID)
	if got := *mod.Authentication.SymmetricKey; got != (iothub.SymmetricKey{PrimaryKey: keyA, SecondaryKey: keyB}) {
		t.Errorf("module keys on the hub = %+v, want the given ones", got)
	}
	if got := decode(t, res.Stdout).Module.PrimaryKey; got != keyA {
		t.Errorf("reported module key = %q, want %q", got, keyA)
	}

	// Same keys again: fine. Other keys: the module cannot get them.
	if res := run(t, hub, withKeys(hub.Env(), keyA, keyB), ""); res.Code != cli.ExitOK {
		t.Errorf("same keys again: exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	res = run(t, hub, withKeys(hub.Env(), keyB, keyA), "")
	if res.Code != cli.ExitFailed || !strings.Contains(res.Stderr, "already exists on device \"myFirstDevice\" with other keys") {
		t.Errorf("other keys: exit %d, stderr %q; want 1 and a message about other keys", res.Code, res.Stderr)
	}
	if strings.Contains(res.Stderr, keyA) || strings.Contains(res.Stderr, keyB) {
		t.Errorf("stderr contains a key: %q", res.Stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	hub := clitest.Start(t)
	dir := t.TempDir()
	moduleCS := "HostName=" + hub.Host() + ";DeviceId=d;ModuleId=m;SharedAccessKey=" + hub.PolicyKey()
	csFile := filepath.Join(dir, "module-cs")
	if err := os.WriteFile(csFile, []byte(moduleCS), 0o600); err != nil {
		t.Fatal(err)
	}
	secretish := "c2VjcmV0"
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want []string
	}{
		{"device id with slash", hub.Env(), []string{"--device-id", "a/b"}, []string{`--device-id: device ID "a/b" has character '/' at position 2`}},
		{"empty module id", hub.Env(), []string{"--module-id", ""}, []string{"--module-id: module ID is empty"}},
		{"long device id", hub.Env(), []string{"--device-id", strings.Repeat("x", 129)}, []string{"129 characters long (at most 128)"}},
		{"key not base64", withKeys(hub.Env(), "not*base64!"+secretish, keyB), nil, []string{"primary key from IOTHUB_MODULE_PRIMARY_KEY: not valid base64"}},
		{"key too short", withKeys(hub.Env(), keyA, secretish), nil, []string{"secondary key from IOTHUB_MODULE_SECONDARY_KEY: decodes to 6 bytes (IoT Hub accepts 16 to 64)"}},
		{"one key only", withKeys(hub.Env(), keyA, ""), nil, []string{"primary key is given (IOTHUB_MODULE_PRIMARY_KEY) but not its secondary key"}},
		{"same keys", withKeys(hub.Env(), keyA, keyA), nil, []string{"must differ"}},
		{"key as a flag value", hub.Env(), []string{"--primary-key", keyA}, []string{"--primary-key is no longer accepted", "hint: put the key in a file and pass --primary-key-file PATH"}},
		{"no connection string", map[string]string{}, nil, []string{"no connection string", "hint: set IOTHUB_CONNECTION_STRING"}},
		{"malformed connection string", map[string]string{cli.EnvConnectionString: "HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + secretish + "%"},
			nil, []string{"SharedAccessKey: not valid base64 (read from IOTHUB_CONNECTION_STRING)"}},
		{"missing host", map[string]string{cli.EnvConnectionString: "SharedAccessKeyName=p;SharedAccessKey=" + secretish},
			nil, []string{"HostName: missing"}},
		{"module connection string", map[string]string{}, []string{"--connection-string-file", csFile},
			[]string{"from " + csFile + " is a module connection string; this command needs a service connection string"}},
		{"missing CA file", map[string]string{cli.EnvConnectionString: hub.ConnectionString(), cli.EnvCAFile: filepath.Join(dir, "nope.pem")},
			nil, []string{"nope.pem"}},
		{"argument", hub.Env(), []string{"extra"}, []string{`unknown command "extra"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(hub.Requests())
			res := run(t, hub, tt.vars, "", tt.args...)
			if res.Code != cli.ExitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.Code, cli.ExitUsage, res.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", res.Stderr, w)
				}
			}
			if !strings.HasPrefix(res.Stderr, "create-module: ") {
				t.Errorf("stderr = %q, want it to start with \"create-module: \"", res.Stderr)
			}
			if strings.Contains(res.Stderr, secretish) || strings.Contains(res.Stderr, keyA) || strings.Contains(res.Stderr, keyB) {
				t.Errorf("stderr contains a key: %q", res.Stderr)
			}
			if n := len(hub.Requests()) - before; n != 0 {
				t.Errorf("%d requests reached the hub, want none", n)
			}
		})
	}
}

func TestHubErrors(t *testing.T) {
	wrongKeyCS := func(hub *clitest.Hub) map[string]string {
		return map[string]string{
			cli.EnvConnectionString: "HostName=" + hub.Host() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + keyA,
			cli.EnvCAFile:           hub.CAFile(),
		}
	}
	tests := []struct {
		name      string
		setup     func(*clitest.Hub) map[string]string
		want      []string
		wantTries int // requests expected, 0 = don't check
	}{
		{
			name:  "wrong key",
			setup: wrongKeyCS,
			want: []string{
				`create-module: create device "myFirstDevice": the hub refused the connection string's credentials (401 IotHubUnauthorizedAccess)`,
				"hint: check SharedAccessKeyName and SharedAccessKey in the connection string; the shared access policy needs the RegistryWrite permission",
			},
			wantTries: 1,
		},
		{
			name: "bad request with message",
			setup: func(hub *clitest.Hub) map[string]string {
				hub.Faults.Add(faults.Rule{Op: faults.ModulePut, Target: "/devices/myFirstDevice/modules/", Code: iothub.ArgumentInvalid, Message: "ModuleId is reserved"})
				return hub.Env()
			},
			want: []string{`create-module: create module "myFirstModule" on device "myFirstDevice": the hub rejected the request (400 ArgumentInvalid): ModuleId is reserved`},
		},
		{
			name: "throttled after retries",
			setup: func(hub *clitest.Hub) map[string]string {
				hub.Faults.Add(faults.Rule{Code: iothub.ThrottlingException, Message: "The request has been throttled."})
				return hub.Env()
			},
			want:      []string{"the hub is throttling requests and still was after several retries (429 ThrottlingException)", "hint: wait a minute"},
			wantTries: 3, // clitest's retry options: 2 retries
		},
		{
			name: "x509 device",
			setup: func(hub *clitest.Hub) map[string]string {
				thumb := strings.Repeat("AB", 20)
				dev := iothub.Device{DeviceID: servicecmd.DefaultDeviceID, Authentication: &iothub.AuthenticationMechanism{
					Type: iothub.AuthSelfSigned, X509Thumbprint: &iothub.X509Thumbprint{PrimaryThumbprint: &thumb, SecondaryThumbprint: &thumb}}}
				if _, err := hub.Hub.Hub().CreateOrUpdateDevice(dev.DeviceID, dev, emuhub.IfMatch{}); err != nil {
					t.Fatal(err)
				}
				return hub.Env()
			},
			want: []string{`device "myFirstDevice" exists but uses selfSigned authentication, not shared access keys`, "hint: choose another --device-id"},
		},
		{
			name: "unknown CA",
			setup: func(hub *clitest.Hub) map[string]string {
				return map[string]string{cli.EnvConnectionString: hub.ConnectionString()}
			},
			want: []string{"TLS connection to " + "localhost", "unknown authority", "hint: if the hub uses a private CA", "--ca-file PATH or set IOTHUB_CA_FILE"},
		},
		{
			name: "nothing listening",
			setup: func(hub *clitest.Hub) map[string]string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return map[string]string{cli.EnvConnectionString: strings.Replace(hub.ConnectionString(), hub.Host(), addr, 1), cli.EnvCAFile: hub.CAFile()}
			},
			want: []string{"create-module: create device \"myFirstDevice\": cannot reach 127.0.0.1:", ": connection refused\n", "hint: check HostName"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := clitest.Start(t)
			res := run(t, hub, tt.setup(hub), "")
			if res.Code != cli.ExitFailed {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.Code, cli.ExitFailed, res.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", res.Stderr, w)
				}
			}
			if res.Stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.Stdout)
			}
			if n := len(hub.Requests()); tt.wantTries != 0 && n != tt.wantTries {
				t.Errorf("hub saw %d requests, want %d", n, tt.wantTries)
			}
		})
	}
}

func TestConnectionStringSources(t *testing.T) {
	hub := clitest.Start(t)
	file := filepath.Join(t.TempDir(), "cs")
	if err := os.WriteFile(file, []byte(hub.ConnectionString()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := map[string]string{cli.EnvCAFile: hub.CAFile()}
	for _, tt := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"file", "", []string{"--connection-string-file", file}},
		{"stdin", hub.ConnectionString(), []string{"--connection-string-file", "-"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if res := run(t, hub, ca, tt.stdin, tt.args...); res.Code != cli.ExitOK {
				t.Errorf("exit %d, stderr:\n%s", res.Code, res.Stderr)
			}
		})
	}
	// --ca-file works as well as IOTHUB_CA_FILE.
	env := map[string]string{cli.EnvConnectionString: hub.ConnectionString()}
	if res := run(t, hub, env, "", "--ca-file", hub.CAFile()); res.Code != cli.ExitOK {
		t.Errorf("--ca-file: exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
}

func TestVerbose(t *testing.T) {
	hub := clitest.Start(t)
	res := run(t, hub, hub.Env(), "", "--verbose")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	for _, want := range []string{
		"verbose: PUT " + hub.URL() + "/devices/myFirstDevice?api-version=2021-04-12 -> 200 OK (try 1)\n",
		"verbose: PUT " + hub.URL() + "/devices/myFirstDevice/modules/myFirstModule?api-version=2021-04-12 -> 200 OK (try 1)\n",
	} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	if strings.Contains(res.Stderr, "sig=") && !strings.Contains(res.Stderr, "sig=***") {
		t.Errorf("stderr shows a signature:\n%s", res.Stderr)
	}
	if !strings.Contains(res.Stdout, "Module connection string:") {
		t.Errorf("stdout lacks the report:\n%s", res.Stdout)
	}
}

func TestHelpHidesSecrets(t *testing.T) {
	hub := clitest.Start(t)
	res := run(t, hub, hub.Env(), "", "--help")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d", res.Code)
	}
	for _, leak := range []string{hub.PolicyKey(), hub.Host(), hub.CAFile()} {
		if strings.Contains(res.Stdout, leak) {
			t.Errorf("--help shows %q:\n%s", leak, res.Stdout)
		}
	}
	for _, want := range []string{"--device-id ID", `(default "myFirstDevice")`, "--module-id ID", "RegistryWrite", "130"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestNewCmdFlags checks flag parsing into Options without a hub.
func TestNewCmdFlags(t *testing.T) {
	var got *createmodule.Options
	newCmd := func(env *cli.Env) *cobra.Command {
		return createmodule.NewCmd(env, func(_ context.Context, o *createmodule.Options) error { got = o; return nil })
	}
	res := clitest.Run(t, newCmd, nil, "", "-d", "dev", "-m", "mod", "--managed-by", "me", "--edge", "-o", "json", "--ca-file", "ca.pem")
	if res.Code != cli.ExitOK {
		t.Fatalf("exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	if got.DeviceID != "dev" || got.ModuleID != "mod" || got.ManagedBy != "me" || !got.Edge || !got.Common.JSON() || got.Common.CAFile != "ca.pem" {
		t.Errorf("options = %+v", got)
	}
}
