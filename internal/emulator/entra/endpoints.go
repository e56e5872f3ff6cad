package entra

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Paths of the tenant's endpoints, under /{tenant} as on login.microsoftonline.com.
const (
	metadataPath  = "/{tenant}/v2.0/.well-known/openid-configuration"
	keysPath      = "/{tenant}/discovery/v2.0/keys"
	tokenPath     = "/{tenant}/oauth2/v2.0/token"
	authorizePath = "/{tenant}/oauth2/v2.0/authorize"
)

// maxFormBytes caps a token request body.
const maxFormBytes = 64 * 1024

// Register mounts the tenant's OpenID Connect endpoints on mux. Requests
// are logged without their bodies (which hold client secrets) and without
// the tokens issued.
func (is *Issuer) Register(mux *http.ServeMux, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) *oauthError) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Pragma", "no-cache")
			e := fn(w, r)
			level, attrs := slog.LevelDebug, []any{"method", r.Method, "path", r.URL.EscapedPath()}
			if e != nil {
				is.writeError(w, e)
				level = slog.LevelInfo
				attrs = append(attrs, "status", e.status, "error", e.Code, "error_codes", e.Codes)
			}
			log.Log(r.Context(), level, "entra request", attrs...)
		})
	}
	h(metadataPath, is.metadata)
	h(keysPath, is.keys)
	h(tokenPath, is.token)
	h(authorizePath, func(w http.ResponseWriter, r *http.Request) *oauthError {
		if e := is.checkTenant(r); e != nil {
			return e
		}
		return &oauthError{status: http.StatusBadRequest, Code: "unsupported_response_type", Codes: []int{70018},
			Description: "the local tenant signs in applications only (client credentials grant at the token endpoint); interactive sign-in is not available"}
	})
}

// oauthError is an error response of Entra ID's token endpoint.
type oauthError struct {
	status        int
	Code          string `json:"error"`
	Description   string `json:"error_description"`
	Codes         []int  `json:"error_codes"`
	Timestamp     string `json:"timestamp"`
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
}

func (is *Issuer) writeError(w http.ResponseWriter, e *oauthError) {
	ts := is.now().UTC().Format("2006-01-02 15:04:05Z")
	trace, _ := newGUID()
	corr, _ := newGUID()
	code := 0
	if len(e.Codes) > 0 {
		code = e.Codes[0]
	}
	e.Description = fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", code, e.Description, trace, corr, ts)
	e.Timestamp, e.TraceID, e.CorrelationID = ts, trace, corr
	writeJSON(w, e.status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("entra: encode response: " + err.Error()) // only plain data
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// checkTenant accepts the tenant's ID in the path, as Entra ID accepts a
// tenant's GUID (this tenant has no domain names).
func (is *Issuer) checkTenant(r *http.Request) *oauthError {
	if t := r.PathValue("tenant"); !strings.EqualFold(t, is.tenantID) {
		return &oauthError{status: http.StatusBadRequest, Code: "invalid_tenant", Codes: []int{90002},
			Description: fmt.Sprintf("Tenant '%s' not found. This local tenant is %s (AZURE_TENANT_ID).", t, is.tenantID)}
	}
	return nil
}

func methodOnly(r *http.Request, method string) *oauthError {
	if r.Method != method {
		return &oauthError{status: http.StatusMethodNotAllowed, Code: "invalid_request", Codes: []int{900561},
			Description: fmt.Sprintf("The endpoint only accepts %s requests. Received a %s request.", method, r.Method)}
	}
	return nil
}

func (is *Issuer) metadata(w http.ResponseWriter, r *http.Request) *oauthError {
	if e := methodOnly(r, http.MethodGet); e != nil {
		return e
	}
	if e := is.checkTenant(r); e != nil {
		return e
	}
	base := is.authority + "/" + is.tenantID
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                is.IssuerURL(),
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "azp", "ver"},
		"tenant_region_scope":                   "WW",
		"cloud_instance_name":                   "iothub-emulator",
	})
	return nil
}

func (is *Issuer) keys(w http.ResponseWriter, r *http.Request) *oauthError {
	if e := methodOnly(r, http.MethodGet); e != nil {
		return e
	}
	if e := is.checkTenant(r); e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": []jwk{is.key.jwk()}})
	return nil
}

// tokenResponse is a successful token endpoint answer.
type tokenResponse struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	ExtExpiresIn int    `json:"ext_expires_in"`
	AccessToken  string `json:"access_token"`
}

// token serves the client credentials grant with a client secret. Other
// parameters MSAL sends (claims, client_info, and the x-client-* headers)
// are accepted and ignored, as Entra ID does for this grant.
func (is *Issuer) token(w http.ResponseWriter, r *http.Request) *oauthError {
	if e := methodOnly(r, http.MethodPost); e != nil {
		return e
	}
	if e := is.checkTenant(r); e != nil {
		return e
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return &oauthError{status: http.StatusBadRequest, Code: "invalid_request", Codes: []int{900144},
			Description: "The request body must be application/x-www-form-urlencoded."}
	}
	form := r.PostForm
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			return missingParam("grant_type")
		}
		return &oauthError{status: http.StatusBadRequest, Code: "unsupported_grant_type", Codes: []int{70003},
			Description: fmt.Sprintf("The app requested an unsupported grant type '%s'. The local tenant supports client_credentials.", gt)}
	}
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	if clientID == "" {
		return missingParam("client_id")
	}
	p, found, err := is.principalByClientID(clientID)
	if err != nil {
		return &oauthError{status: http.StatusInternalServerError, Code: "temporarily_unavailable", Codes: []int{90033},
			Description: "The local tenant's principals could not be read."}
	}
	if !found {
		return &oauthError{status: http.StatusBadRequest, Code: "unauthorized_client", Codes: []int{700016},
			Description: fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, is.tenantID)}
	}
	switch {
	case form.Get("client_assertion") != "":
		return &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Codes: []int{700027},
			Description: fmt.Sprintf("Client assertion is not accepted for app '%s': the local tenant's apps have client secrets only.", clientID)}
	case secret == "":
		return &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Codes: []int{7000218},
			Description: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}
	case !p.checkSecret(secret):
		return &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Codes: []int{7000215},
			Description: fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value of app '%s'.", clientID)}
	}
	if e := checkScope(form.Get("scope"), is.tenantID); e != nil {
		return e
	}
	tok, exp, err := is.mint(p)
	if err != nil {
		return &oauthError{status: http.StatusInternalServerError, Code: "temporarily_unavailable", Codes: []int{90033},
			Description: "The token could not be signed."}
	}
	ttl := int(exp.Sub(is.now()) / time.Second)
	writeJSON(w, http.StatusOK, tokenResponse{TokenType: "Bearer", ExpiresIn: ttl, ExtExpiresIn: ttl, AccessToken: tok})
	return nil
}

func missingParam(name string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, Code: "invalid_request", Codes: []int{900144},
		Description: fmt.Sprintf("The request body must contain the following parameter: '%s'.", name)}
}

// checkScope wants IoT Hub's resource with /.default, the only resource of
// the local tenant. OpenID scopes MSAL may add are ignored, as for this grant
// in Entra ID.
func checkScope(scope, tenantID string) *oauthError {
	fields := strings.Fields(scope)
	if len(fields) == 0 {
		return missingParam("scope")
	}
	found := false
	for _, s := range fields {
		switch strings.ToLower(s) {
		case "openid", "profile", "offline_access", "email":
			continue
		case Audience + "/.default", Audience + "//.default":
			found = true
			continue
		}
		resource, ok := strings.CutSuffix(s, "/.default")
		if !ok {
			return &oauthError{status: http.StatusBadRequest, Code: "invalid_scope", Codes: []int{1002012},
				Description: fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", s)}
		}
		return &oauthError{status: http.StatusBadRequest, Code: "invalid_resource", Codes: []int{500011},
			Description: fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. The local tenant issues tokens for %s only.", resource, tenantID, Audience)}
	}
	if !found {
		return missingParam("scope")
	}
	return nil
}
