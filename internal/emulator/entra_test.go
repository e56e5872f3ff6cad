package emulator_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"

	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

const iotHubScope = "https://iothubs.azure.net/.default"

// entraHub is an emulator with helpers to get Entra ID tokens from it with
// the real azidentity library and to call its REST API with them.
type entraHub struct {
	em *emulator.Emulator
	tr *http.Transport
}

func startEntraHub(t *testing.T, cfg emulator.Config) *entraHub {
	t.Helper()
	cfg.HTTPSAddr, cfg.InMemory = "127.0.0.1:0", true
	em, err := emulator.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { em.Close() })
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, em.CAFile()), ServerName: "localhost"}}
	t.Cleanup(tr.CloseIdleConnections)
	return &entraHub{em: em, tr: tr}
}

func (h *entraHub) port() string {
	return h.em.HTTPSAddr()[strings.LastIndex(h.em.HTTPSAddr(), ":")+1:]
}

func (h *entraHub) authorityHost() string { return emulator.AuthorityHost("localhost", h.port()) }

func (h *entraHub) clientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: h.authorityHost()},
		Transport: &http.Client{Transport: h.tr},
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
}

// addPrincipal registers a principal and returns its client ID and secret.
func (h *entraHub) addPrincipal(t *testing.T, name string, roles ...string) (clientID, secret string) {
	t.Helper()
	p, secret, _, err := entra.Add(h.em.DataDir(), name, roles)
	if err != nil {
		t.Fatal(err)
	}
	return p.ClientID, secret
}

func (h *entraHub) credential(t *testing.T, clientID, secret string) *azidentity.ClientSecretCredential {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(h.em.Entra().TenantID(), clientID, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: h.clientOptions(), DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func getToken(t *testing.T, cred azcore.TokenCredential) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{iotHubScope}})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	return tok.Token
}

// tokenFor adds a principal with roles and gets it a token through
// azidentity's ClientSecretCredential.
func (h *entraHub) tokenFor(t *testing.T, name string, roles ...string) string {
	t.Helper()
	id, secret := h.addPrincipal(t, name, roles...)
	return getToken(t, h.credential(t, id, secret))
}

// call sends one REST request with the given Authorization header.
func (h *entraHub) call(t *testing.T, method, path, auth, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+h.em.HTTPSAddr()+path+"?api-version=2021-04-12", rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: h.tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *entraHub) ownerSAS(t *testing.T) string {
	t.Helper()
	return (&client{e: h.em}).token(t, "iothubowner")
}

func TestEntraClientSecretCredentialTokenWorksOnTheServiceAPI(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	tok := h.tokenFor(t, "app", "IoT Hub Data Contributor")

	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
		t.Fatalf("the token is not a JWT: %v", err)
	}
	if claims["aud"] != "https://iothubs.azure.net" || claims["tid"] != h.em.Entra().TenantID() ||
		claims["iss"] != h.authorityHost()+h.em.Entra().TenantID()+"/v2.0" || claims["oid"] == "" || claims["exp"] == nil || claims["nbf"] == nil {
		t.Fatalf("claims = %v", claims)
	}
	if status, body := h.call(t, http.MethodPut, "/devices/d1", "Bearer "+tok, `{"deviceId":"d1"}`); status != http.StatusOK {
		t.Fatalf("PUT device with a Data Contributor token: %d %s", status, body)
	}
	if status, body := h.call(t, http.MethodGet, "/twins/d1", "Bearer "+tok, ""); status != http.StatusOK || !strings.Contains(body, `"deviceId":"d1"`) {
		t.Fatalf("GET twin: %d %s", status, body)
	}
}

func TestEntraEnvironmentCredential(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	id, secret := h.addPrincipal(t, "env-app", "IoT Hub Twin Contributor")
	t.Setenv("AZURE_TENANT_ID", h.em.Entra().TenantID())
	t.Setenv("AZURE_CLIENT_ID", id)
	t.Setenv("AZURE_CLIENT_SECRET", secret)
	t.Setenv("AZURE_AUTHORITY_HOST", h.authorityHost())
	opts := h.clientOptions()
	opts.Cloud = cloud.Configuration{} // from AZURE_AUTHORITY_HOST
	cred, err := azidentity.NewEnvironmentCredential(&azidentity.EnvironmentCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	tok := getToken(t, cred)
	h.call(t, http.MethodPut, "/devices/d1", h.ownerSAS(t), `{"deviceId":"d1"}`)
	if status, body := h.call(t, http.MethodPatch, "/twins/d1", "Bearer "+tok, `{"properties":{"desired":{"a":1}}}`); status != http.StatusOK {
		t.Fatalf("PATCH twin with the environment credential's token: %d %s", status, body)
	}
}

// operation is one service API call and the data action Microsoft documents
// for it.
type rbacOperation struct {
	method, path, body string
	category           string // devices/read, devices/write, devices/delete, twins/read, twins/write
}

var rbacOperations = []rbacOperation{
	{http.MethodGet, "/devices", "", "devices/read"},
	{http.MethodGet, "/devices/d1", "", "devices/read"},
	{http.MethodPut, "/devices/d2", `{"deviceId":"d2"}`, "devices/write"},
	{http.MethodGet, "/devices/d1/modules", "", "devices/read"},
	{http.MethodGet, "/devices/d1/modules/m1", "", "devices/read"},
	{http.MethodPut, "/devices/d1/modules/m2", `{"deviceId":"d1","moduleId":"m2"}`, "devices/write"},
	{http.MethodGet, "/twins/d1", "", "twins/read"},
	{http.MethodPost, "/devices/query", `{"query":"SELECT * FROM devices"}`, "twins/read"},
	{http.MethodPatch, "/twins/d1", `{"properties":{"desired":{"x":1}}}`, "twins/write"},
	{http.MethodPut, "/twins/d1", `{"properties":{"desired":{"x":2}}}`, "twins/write"},
	{http.MethodGet, "/twins/d1/modules/m1", "", "twins/read"},
	{http.MethodPatch, "/twins/d1/modules/m1", `{"properties":{"desired":{"x":1}}}`, "twins/write"},
	{http.MethodPut, "/twins/d1/modules/m1", `{"properties":{"desired":{"x":2}}}`, "twins/write"},
	{http.MethodDelete, "/devices/d1/modules/m1", "", "devices/delete"},
	{http.MethodDelete, "/devices/d1", "", "devices/delete"},
}

// What each built-in role's published definition grants, written out by
// hand from Microsoft's role definitions rather than computed.
var rbacGrants = map[string][]string{
	"IoT Hub Data Contributor":     {"devices/read", "devices/write", "devices/delete", "twins/read", "twins/write"},
	"IoT Hub Data Reader":          {"devices/read", "twins/read"},
	"IoT Hub Registry Contributor": {"devices/read", "devices/write", "devices/delete"},
	"IoT Hub Twin Contributor":     {"twins/read", "twins/write"},
}

func TestEntraBuiltInRolesPerOperation(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	owner := h.ownerSAS(t)
	for role, grants := range rbacGrants {
		t.Run(role, func(t *testing.T) {
			tok := h.tokenFor(t, strings.ReplaceAll(role, " ", "-"), role)
			caller, err := h.em.Entra().Authenticate(tok)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range rbacOperations {
				// Fresh identities before each call, so that a refused
				// call is refused for its role and nothing else.
				h.call(t, http.MethodDelete, "/devices/d1", owner, "")
				h.call(t, http.MethodDelete, "/devices/d2", owner, "")
				h.call(t, http.MethodPut, "/devices/d1", owner, `{"deviceId":"d1"}`)
				h.call(t, http.MethodPut, "/devices/d1/modules/m1", owner, `{"deviceId":"d1","moduleId":"m1"}`)

				allowed := false
				for _, g := range grants {
					allowed = allowed || g == op.category
				}
				status, body := h.call(t, op.method, op.path, "Bearer "+tok, op.body)
				if allowed {
					if status/100 != 2 {
						t.Errorf("%s %s: %d %s, want success", op.method, op.path, status, body)
					}
					continue
				}
				want := fmt.Sprintf(`"Message":"ErrorCode:IotHubUnauthorized;Principal %s is not authorized for %s on %s due to no assigned permissions"`, caller.ObjectID, op.method, op.path)
				if status != http.StatusUnauthorized || !strings.Contains(body, want) {
					t.Errorf("%s %s: %d %s, want 401 with %s", op.method, op.path, status, body, want)
				}
			}
		})
	}
}

// signingKey reads the tenant's private key from the data directory, to
// forge tokens the hub must refuse.
func signingKey(t *testing.T, em *emulator.Emulator) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(em.DataDir(), "entra-signing-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

func TestEntraRefusesBadTokens(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	good := h.tokenFor(t, "app", "IoT Hub Data Contributor")
	var header map[string]any
	parts := strings.Split(good, ".")
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(hb, &header); err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(good, claims); err != nil {
		t.Fatal(err)
	}
	key := signingKey(t, h.em)
	sign := func(change func(jwt.MapClaims), k *rsa.PrivateKey) string {
		c := jwt.MapClaims{}
		for n, v := range claims {
			c[n] = v
		}
		change(c)
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		tok.Header["kid"] = header["kid"]
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	payload := []byte(parts[1])
	tampered := append([]byte(nil), payload...)
	tampered[len(tampered)/2] ^= 1
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	cases := map[string]struct {
		token string
		want  string
	}{
		"expired":        {sign(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Minute).Unix() }, key), "token is expired"},
		"not yet valid":  {sign(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() }, key), "token is not valid yet"},
		"no expiry":      {sign(func(c jwt.MapClaims) { delete(c, "exp") }, key), "exp claim is required"},
		"wrong audience": {sign(func(c jwt.MapClaims) { c["aud"] = "https://management.azure.com" }, key), "token has invalid audience"},
		"wrong issuer": {sign(func(c jwt.MapClaims) {
			c["iss"] = "https://login.microsoftonline.com/" + h.em.Entra().TenantID() + "/v2.0"
		}, key), "token has invalid issuer"},
		"wrong tenant": {sign(func(c jwt.MapClaims) { c["tid"] = "00000000-0000-0000-0000-000000000000" }, key), "not " + h.em.Entra().TenantID()},
		"other key":    {sign(func(jwt.MapClaims) {}, otherKey), "signature is invalid"},
		"tampered":     {parts[0] + "." + string(tampered) + "." + parts[2], "invalid bearer token"},
		"alg none":     {unsigned, "signing method none is invalid"},
		"not a JWT":    {"abc", "token is malformed"},
	}
	for name, c := range cases {
		status, body := h.call(t, http.MethodGet, "/devices", "Bearer "+c.token, "")
		if status != http.StatusUnauthorized || !strings.Contains(body, "ErrorCode:IotHubUnauthorizedAccess;invalid bearer token") || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 401 IotHubUnauthorizedAccess naming %q", name, status, body, c.want)
		}
		if strings.Contains(body, c.token) && len(c.token) > 3 {
			t.Errorf("%s: the error body echoes the token", name)
		}
	}
	if status, body := h.call(t, http.MethodGet, "/devices", "Bearer "+good, ""); status != http.StatusOK {
		t.Fatalf("the untouched token: %d %s", status, body)
	}
}

func TestEntraRoleChangesApplyWhileRunning(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	tok := h.tokenFor(t, "app", "IoT Hub Registry Contributor")
	if status, body := h.call(t, http.MethodGet, "/devices", "Bearer "+tok, ""); status != http.StatusOK {
		t.Fatalf("before: %d %s", status, body)
	}
	if _, err := entra.SetRoles(h.em.DataDir(), "app", []string{"IoT Hub Twin Contributor"}); err != nil {
		t.Fatal(err)
	}
	if status, body := h.call(t, http.MethodGet, "/devices", "Bearer "+tok, ""); status != http.StatusUnauthorized || !strings.Contains(body, "IotHubUnauthorized;") {
		t.Fatalf("after set-roles: %d %s, want 401 IotHubUnauthorized", status, body)
	}
	if err := entra.Remove(h.em.DataDir(), "app"); err != nil {
		t.Fatal(err)
	}
	if status, body := h.call(t, http.MethodGet, "/twins/x", "Bearer "+tok, ""); status != http.StatusUnauthorized || !strings.Contains(body, "due to no assigned permissions") {
		t.Fatalf("after remove: %d %s, want 401 no assigned permissions", status, body)
	}
}

func TestEntraTokenEndpointRefusals(t *testing.T) {
	h := startEntraHub(t, emulator.Config{})
	id, _ := h.addPrincipal(t, "app", "IoT Hub Data Reader")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func(cred azcore.TokenCredential, scope string) error {
		_, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		return err
	}
	if err := get(h.credential(t, id, "wrong-secret"), iotHubScope); err == nil || !strings.Contains(err.Error(), "AADSTS7000215") || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("wrong secret: %v, want AADSTS7000215 without the secret", err)
	}
	if err := get(h.credential(t, "11111111-2222-4333-8444-555555555555", "x"), iotHubScope); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("unknown client: %v, want AADSTS700016", err)
	}
	id2, secret2 := h.addPrincipal(t, "app2", "IoT Hub Data Reader")
	if err := get(h.credential(t, id2, secret2), "https://management.azure.com/.default"); err == nil || !strings.Contains(err.Error(), "AADSTS500011") {
		t.Errorf("other resource: %v, want AADSTS500011", err)
	}
	if err := entra.Remove(h.em.DataDir(), "app2"); err != nil {
		t.Fatal(err)
	}
	if err := get(h.credential(t, id2, secret2), iotHubScope); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("removed principal: %v, want AADSTS700016", err)
	}
}

func TestDisableLocalAuthRefusesSASOnTheServiceAPIOnly(t *testing.T) {
	h := startEntraHub(t, emulator.Config{DisableLocalAuth: true})
	owner := h.ownerSAS(t)
	status, body := h.call(t, http.MethodGet, "/devices", owner, "")
	if status != http.StatusUnauthorized || !strings.Contains(body, "ErrorCode:IotHubUnauthorizedAccess;local authentication is disabled") {
		t.Fatalf("SAS with local auth disabled: %d %s", status, body)
	}
	tok := h.tokenFor(t, "app", "IoT Hub Data Contributor")
	status, body = h.call(t, http.MethodPut, "/devices/dev1", "Bearer "+tok, `{"deviceId":"dev1"}`)
	if status != http.StatusOK {
		t.Fatalf("PUT device with a token: %d %s", status, body)
	}
	var dev struct {
		Authentication struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"authentication"`
	}
	if err := json.Unmarshal([]byte(body), &dev); err != nil {
		t.Fatal(err)
	}

	// The device still connects over MQTT with a SAS token of its own key.
	signer, err := sas.NewSigner("", dev.Authentication.SymmetricKey.PrimaryKey)
	if err != nil {
		t.Fatal(err)
	}
	host := "localhost:" + h.port()
	devTok, _ := signer.Token(host+"/devices/dev1", time.Hour)
	opts := paho.NewClientOptions().
		AddBroker("tls://" + h.em.MQTTAddr()).
		SetClientID("dev1").
		SetUsername(host + "/dev1/?api-version=2021-04-12").
		SetPassword(devTok).
		SetTLSConfig(&tls.Config{RootCAs: caPool(t, h.em.CAFile()), ServerName: "localhost"}).
		SetAutoReconnect(false).
		SetConnectRetry(false)
	c := paho.NewClient(opts)
	ct := c.Connect()
	if !ct.WaitTimeout(30*time.Second) || ct.Error() != nil {
		t.Fatalf("device MQTT connect with SAS while local auth is disabled: %v", ct.Error())
	}
	c.Disconnect(100)
}
