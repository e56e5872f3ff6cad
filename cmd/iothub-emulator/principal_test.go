package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// principalCmd runs `iothub-emulator principal ARGS… --data-dir dir`.
func principalCmd(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary(t), append(append([]string{"principal"}, args...), "--data-dir", dir)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

var exportLine = regexp.MustCompile(`^export ([A-Z_]+)=('?)([^']*)('?)$`)

func parseExports(t *testing.T, out string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m := exportLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %q is not an export line", line)
		}
		vars[m[1]] = m[3]
	}
	return vars
}

// entraRequest gets a token with azidentity's ClientSecretCredential from
// the settings principal add printed and calls the hub with it.
func entraRequest(t *testing.T, vars map[string]string, method, path string) (int, string) {
	t.Helper()
	pem, err := os.ReadFile(vars["IOTHUB_CA_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	t.Setenv("AZURE_AUTHORITY_HOST", vars["AZURE_AUTHORITY_HOST"]) // read when the credential is made
	cred, err := azidentity.NewClientSecretCredential(vars["AZURE_TENANT_ID"], vars["AZURE_CLIENT_ID"], vars["AZURE_CLIENT_SECRET"],
		&azidentity.ClientSecretCredentialOptions{
			ClientOptions:            azcore.ClientOptions{Transport: hc, Retry: policy.RetryOptions{MaxRetries: -1}},
			DisableInstanceDiscovery: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://iothubs.azure.net/.default"}})
	if err != nil {
		return 0, err.Error()
	}
	return bearerRequest(t, hc, vars["IOTHUB_HOSTNAME"], tok.Token, method, path)
}

func bearerRequest(t *testing.T, hc *http.Client, host, token, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+host+path+"?api-version=2021-04-12", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func TestPrincipalCommandsAgainstARunningEmulator(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "--data-dir", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-level", "debug")

	out, stderr, code := principalCmd(t, dir, "add", "ci", "--role", "IoT Hub Registry Contributor")
	if code != 0 {
		t.Fatalf("principal add: exit %d: %s", code, stderr)
	}
	vars := parseExports(t, out)
	for _, name := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST", "IOTHUB_HOSTNAME", "IOTHUB_CA_FILE"} {
		if vars[name] == "" {
			t.Fatalf("principal add printed no %s:\n%s", name, out)
		}
	}
	if want := "https://" + p.cs.HostName + "/"; vars["AZURE_AUTHORITY_HOST"] != want {
		t.Fatalf("AZURE_AUTHORITY_HOST = %q, want %q (the running emulator's listener)", vars["AZURE_AUTHORITY_HOST"], want)
	}
	if status, body := entraRequest(t, vars, http.MethodGet, "/devices"); status != http.StatusOK {
		t.Fatalf("GET /devices with the new principal: %d %s", status, body)
	}

	list, _, code := principalCmd(t, dir, "list")
	if code != 0 || !strings.Contains(list, "ci") || !strings.Contains(list, "IoT Hub Registry Contributor") || !strings.Contains(list, vars["AZURE_CLIENT_ID"]) {
		t.Fatalf("principal list: exit %d:\n%s", code, list)
	}
	if strings.Contains(list, vars["AZURE_CLIENT_SECRET"]) {
		t.Fatal("principal list shows the client secret")
	}

	if _, stderr, code := principalCmd(t, dir, "set-roles", "ci", "--role", "IoT Hub Twin Contributor"); code != 0 {
		t.Fatalf("set-roles: exit %d: %s", code, stderr)
	}
	if status, body := entraRequest(t, vars, http.MethodGet, "/devices"); status != http.StatusUnauthorized || !strings.Contains(body, "IotHubUnauthorized;") {
		t.Fatalf("GET /devices after set-roles to Twin Contributor: %d %s, want 401", status, body)
	}
	if _, stderr, code := principalCmd(t, dir, "remove", "ci"); code != 0 {
		t.Fatalf("remove: exit %d: %s", code, stderr)
	}
	if _, body := entraRequest(t, vars, http.MethodGet, "/devices"); !strings.Contains(body, "AADSTS700016") {
		t.Fatalf("token for a removed principal: %s, want AADSTS700016", body)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t)
	if logs := p.stderr.String(); strings.Contains(logs, vars["AZURE_CLIENT_SECRET"]) || strings.Contains(logs, "eyJ") {
		t.Fatalf("the emulator's debug log holds the client secret or a token:\n%s", logs)
	}
}

func TestPrincipalsAndSigningKeySurviveARestart(t *testing.T) {
	dir := t.TempDir()
	out, stderr, code := principalCmd(t, dir, "add", "app", "--role", "IoT Hub Data Reader", "--https-addr", "127.0.0.1:18443")
	if code != 0 {
		t.Fatalf("principal add without a running emulator: exit %d: %s", code, stderr)
	}
	vars := parseExports(t, out)
	for round := range 2 {
		p := start(t, "--data-dir", dir, "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
		vars["IOTHUB_HOSTNAME"] = p.cs.HostName
		vars["AZURE_AUTHORITY_HOST"] = "https://" + p.cs.HostName + "/"
		if status, body := entraRequest(t, vars, http.MethodGet, "/devices"); status != http.StatusOK {
			t.Fatalf("round %d: GET /devices: %d %s", round, status, body)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t)
	}
}

func TestDisableLocalAuthFlag(t *testing.T) {
	p := start(t, "--in-memory", "--https-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--disable-local-auth")
	status, body, err := newClient(t, p).do(http.MethodGet, "/devices", "")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusUnauthorized || !strings.Contains(string(body), "local authentication is disabled") {
		t.Fatalf("SAS request with --disable-local-auth: %d %s", status, body)
	}
}

func TestPrincipalUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"add"},
		{"add", "a", "b"},
		{"add", "x", "--role", "Owner"},
		{"add", "bad name", "--role", "IoT Hub Data Reader"},
		{"set-roles", "x", "--role", "Contributor"},
	} {
		_, stderr, code := principalCmd(t, dir, args...)
		if code == 0 || !strings.HasPrefix(stderr, "iothub-emulator: ") || strings.Contains(stderr, "goroutine") {
			t.Errorf("principal %q: exit %d, stderr %q; want a one-line error", args, code, stderr)
		}
	}
	if _, stderr, code := principalCmd(t, dir, "remove", "nobody"); code != 1 || !strings.Contains(stderr, `no principal "nobody"`) {
		t.Errorf("remove nobody: exit %d %q", code, stderr)
	}
}
