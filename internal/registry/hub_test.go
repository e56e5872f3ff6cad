package registry

import (
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/hubtls"
)

// testPolicy names the policy the tests' clients use; testKey is a
// well-formed key for tests that reach no hub.
const (
	testPolicy = hub.PolicyOwner
	testKey    = "dGhpcyBpcyB0aGUgdGVzdCBodWIncyBwb2xpY3kga2V5IQ=="
)

// seen is one try the client sent, as it went on the wire.
type seen = emulatortest.Request

// testHub is the emulator for one test and what the clients it made sent.
type testHub struct {
	*emulatortest.Hub
	rec *emulatortest.Recorder
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	return &testHub{Hub: emulatortest.Start(t), rec: &emulatortest.Recorder{}}
}

// key is the primary key of the tests' policy.
func (h *testHub) key() string { return h.PolicyKey(testPolicy) }

// client returns a registry client with the tests' policy, trusting only
// the emulator's CA through hubtls, with quick retries.
func (h *testHub) client(t *testing.T) *Client {
	t.Helper()
	cs := connstr.ConnectionString{HostName: h.Host(), SharedAccessKeyName: testPolicy, SharedAccessKey: h.key()}
	c, err := NewClient(cs, h.options(t))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func (h *testHub) options(t *testing.T) *ClientOptions {
	t.Helper()
	cfg, err := hubtls.Config(h.CAFile())
	if err != nil {
		t.Fatalf("hubtls.Config: %v", err)
	}
	hc := hubtls.HTTPClient(cfg)
	t.Cleanup(hc.CloseIdleConnections)
	return &ClientOptions{azcore.ClientOptions{
		Transport:        hc,
		PerRetryPolicies: []policy.Policy{h.rec},
		Retry: policy.RetryOptions{
			MaxRetries:    3,
			RetryDelay:    time.Millisecond,
			MaxRetryDelay: 2 * time.Millisecond,
		},
	}}
}

// requests returns the tries sent so far.
func (h *testHub) requests() []seen { return h.rec.Requests() }
