//go:build interop

// Package interop runs Microsoft's Node.js IoT Hub SDKs, unchanged, against
// iothub-emulator. The Node.js service SDK only speaks HTTPS on port 443 and
// the device SDK MQTT on 8883, so the emulator listens on exactly those
// ports with HostName=localhost; `make test-interop` provides the privilege.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	em, err := emulator.Start(context.Background(), emulator.Config{
		HTTPSAddr: "127.0.0.1:443",
		MQTTAddr:  "127.0.0.1:8883",
		HostName:  "localhost",
		InMemory:  true,
	})
	if err != nil {
		t.Fatalf("start emulator on 127.0.0.1:443 and :8883 (run as root, or through `make test-interop`): %v", err)
	}
	t.Cleanup(func() { em.Close() })
	if got := em.ServiceConnectionString(); !strings.Contains(got, "HostName=localhost;") {
		t.Fatalf("service connection string names host %q, want HostName=localhost on port 443", hostOf(got))
	}
	return em
}

func hostOf(cs string) string {
	c, err := connstr.Parse(cs)
	if err != nil {
		return "(unparsable)"
	}
	return c.HostName
}

func nodeEnv(em *emulator.Emulator) []string {
	return append(os.Environ(),
		"IOTHUB_CONNECTION_STRING="+em.ServiceConnectionString(),
		"NODE_EXTRA_CA_CERTS="+em.CAFile(),
	)
}

func requireNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the interop tests need Node.js 18 or later")
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "azure-iothub")); err != nil {
		t.Fatal("Node.js SDKs are not installed: run `make interop-deps` (npm ci in interop/node)")
	}
}

// TestNodeSDKs runs interop/node/sdk.test.js: registry create, module client
// connect, getTwin, desired patch with $version, reported patch, stale etag.
func TestNodeSDKs(t *testing.T) {
	requireNode(t)
	em := startEmulator(t)
	cmd := exec.Command("node", "--test", "--test-reporter=spec", "sdk.test.js")
	cmd.Dir = "node"
	cmd.Env = nodeEnv(em)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test sdk.test.js:\n%s", out)
	if err != nil {
		t.Fatalf("Node.js SDK tests failed: %v", err)
	}
}

// TestNodeSDKMethods runs interop/node/methods.test.js: direct methods on a
// module and on a device, answered by the device SDK over MQTT.
func TestNodeSDKMethods(t *testing.T) {
	requireNode(t)
	em := startEmulator(t)
	cmd := exec.Command("node", "--test", "--test-reporter=spec", "methods.test.js")
	cmd.Dir = "node"
	cmd.Env = nodeEnv(em)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test methods.test.js:\n%s", out)
	if err != nil {
		t.Fatalf("Node.js SDK method tests failed: %v", err)
	}
}

// TestReceiveTwinPatchWithNodeService checks receive-twin-patch against a
// desired patch sent by Microsoft's Node.js service SDK.
func TestReceiveTwinPatchWithNodeService(t *testing.T) {
	requireNode(t)
	em := startEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	receiver := filepath.Join(t.TempDir(), "receive-twin-patch")
	if out, err := exec.Command("go", "build", "-o", receiver, "../cmd/receive-twin-patch").CombinedOutput(); err != nil {
		t.Fatalf("build receive-twin-patch: %v\n%s", err, out)
	}

	moduleCS := createModule(ctx, t, em, "node-cross-device", "node-cross-module")
	recv := exec.CommandContext(ctx, receiver, "--output", "json", "--count", "1", "--timeout", "30s",
		"--mqtt-addr", em.MQTTAddr(), "--ca-file", em.CAFile())
	recv.Env = append(os.Environ(), "IOTHUB_MODULE_CONNECTION_STRING="+moduleCS)
	var stdout bytes.Buffer
	recv.Stdout = &stdout
	stderr, err := recv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := recv.Start(); err != nil {
		t.Fatalf("start receive-twin-patch: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			t.Logf("receive-twin-patch: %s", sc.Text())
			if !signalled && strings.Contains(sc.Text(), "waiting for desired property patches") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("receive-twin-patch never said it was waiting for patches")
	}

	patch := exec.CommandContext(ctx, "node", "patch-twin.js", "node-cross-device", "node-cross-module", `{"fromNode":42}`)
	patch.Dir = "node"
	patch.Env = nodeEnv(em)
	if out, err := patch.CombinedOutput(); err != nil {
		t.Fatalf("node patch-twin.js: %v\n%s", err, out)
	}
	if err := recv.Wait(); err != nil {
		t.Fatalf("receive-twin-patch exited with %v; stdout:\n%s", err, stdout.String())
	}

	var last struct {
		Type    string         `json:"type"`
		Version int64          `json:"version"`
		Desired map[string]any `json:"desired"`
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last output line is not JSON: %v\n%s", err, stdout.String())
	}
	if last.Type != "patch" || last.Desired["fromNode"] != float64(42) || last.Version < 2 {
		t.Fatalf("last line = %+v, want a patch with fromNode=42 and a $version of at least 2", last)
	}
}

func createModule(ctx context.Context, t *testing.T, em *emulator.Emulator, deviceID, moduleID string) string {
	t.Helper()
	cs, err := connstr.Parse(em.ServiceConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := hubtls.Config(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	opts := &registry.ClientOptions{}
	opts.Transport = hubtls.HTTPClient(tlsConf)
	client, err := registry.NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.EnsureDevice(ctx, iothub.Device{DeviceID: deviceID}); err != nil {
		t.Fatalf("create device: %v", err)
	}
	mod, _, err := client.EnsureModule(ctx, iothub.Module{DeviceID: deviceID, ModuleID: moduleID})
	if err != nil {
		t.Fatalf("create module: %v", err)
	}
	return connstr.ConnectionString{
		HostName: cs.HostName, DeviceID: deviceID, ModuleID: moduleID,
		SharedAccessKey: mod.Authentication.SymmetricKey.PrimaryKey,
	}.Format()
}

// TestNodeQuery runs interop/node/query.test.js: Registry.createQuery with
// nextAsTwin paging over devices and devices.modules, and Registry.list.
func TestNodeQuery(t *testing.T) {
	requireNode(t)
	em := startEmulator(t)
	cmd := exec.Command("node", "--test", "--test-reporter=spec", "query.test.js")
	cmd.Dir = "node"
	cmd.Env = nodeEnv(em)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test query.test.js:\n%s", out)
	if err != nil {
		t.Fatalf("Node.js query tests failed: %v", err)
	}
}
