package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// Service calls the hub's service API over HTTPS with keep-alive
// connections, signed by a shared access policy.
type Service struct {
	base  string // https://host[:port]
	host  string // host name without port
	token string
	http  *http.Client
}

// NewService reads a service connection string. conns bounds the idle
// connections kept for reuse; give it the number of concurrent callers.
func NewService(connectionString string, tlsConf *tls.Config, conns int) (*Service, error) {
	cs, err := connstr.Parse(connectionString)
	if err != nil {
		return nil, err
	}
	signer, err := sas.NewSigner(cs.SharedAccessKeyName, cs.SharedAccessKey)
	if err != nil {
		return nil, err
	}
	token, _ := signer.Token(sas.ServiceResource(cs.HostName), 2*time.Hour)
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		ForceAttemptHTTP2:   false, // the hub speaks HTTP/1.1 to its SDKs
	}
	return &Service{
		base:  "https://" + cs.HostName,
		host:  cs.Host(),
		token: token,
		http:  &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}, nil
}

// HostName is the hub's host name without port.
func (s *Service) HostName() string { return s.host }

// Close drops the idle connections.
func (s *Service) Close() { s.http.CloseIdleConnections() }

func (s *Service) do(ctx context.Context, method, path string, body any, out any) error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	req, err := s.request(ctx, method, path, raw)
	if err != nil {
		return err
	}
	return s.send(req, out)
}

func (s *Service) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path+"?api-version="+iothub.APIVersion, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (s *Service) send(req *http.Request, out any) error {
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body) // to the end, so that the connection is reused
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Method: req.Method, Path: req.URL.Path, StatusCode: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// CreateDevice creates a device identity with generated keys.
func (s *Service) CreateDevice(ctx context.Context, deviceID string) error {
	return s.do(ctx, http.MethodPut, "/devices/"+url.PathEscape(deviceID), map[string]string{"deviceId": deviceID}, nil)
}

// CreateModule creates a module identity with generated keys and returns
// it with its primary key.
func (s *Service) CreateModule(ctx context.Context, deviceID, moduleID string) (Module, error) {
	var out struct {
		Authentication struct {
			SymmetricKey struct {
				PrimaryKey string `json:"primaryKey"`
			} `json:"symmetricKey"`
		} `json:"authentication"`
	}
	err := s.do(ctx, http.MethodPut, "/devices/"+url.PathEscape(deviceID)+"/modules/"+url.PathEscape(moduleID),
		map[string]string{"deviceId": deviceID, "moduleId": moduleID}, &out)
	return Module{DeviceID: deviceID, ModuleID: moduleID, Key: out.Authentication.SymmetricKey.PrimaryKey}, err
}

// DesiredPatchBody is a twin PATCH body that sets desired properties.
func DesiredPatchBody(desired map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"properties": map[string]any{"desired": desired}})
	if err != nil {
		panic(err) // maps of JSON values always encode
	}
	return b
}

// PatchTwin sends a module twin PATCH body built by DesiredPatchBody
// (If-Match: "*") and returns the new desired $version.
func (s *Service) PatchTwin(ctx context.Context, m Module, body []byte) (int64, error) {
	var out struct {
		Properties struct {
			Desired struct {
				Version int64 `json:"$version"`
			} `json:"desired"`
		} `json:"properties"`
	}
	req, err := s.request(ctx, http.MethodPatch, "/twins/"+url.PathEscape(m.DeviceID)+"/modules/"+url.PathEscape(m.ModuleID), body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("If-Match", `"*"`)
	if err := s.send(req, &out); err != nil {
		return 0, err
	}
	return out.Properties.Desired.Version, nil
}

// MethodResult is a direct method's answer: the device's status and payload.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// InvokeMethod calls direct method name on module m with a JSON payload
// and waits for its answer.
func (s *Service) InvokeMethod(ctx context.Context, m Module, name string, payload any) (MethodResult, error) {
	var out MethodResult
	err := s.do(ctx, http.MethodPost, "/twins/"+url.PathEscape(m.DeviceID)+"/modules/"+url.PathEscape(m.ModuleID)+"/methods",
		map[string]any{"methodName": name, "payload": payload, "responseTimeoutInSeconds": 30}, &out)
	return out, err
}

// StatusError is a service API answer other than 2xx.
type StatusError struct {
	Method, Path string
	StatusCode   int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %.200s", e.Method, e.Path, e.StatusCode, e.Body)
}
