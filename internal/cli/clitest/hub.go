// Package clitest helps test the service-side commands: Hub is the
// emulator for one test with a recorder of the requests the commands
// send, and Run runs a command with buffered I/O.
package clitest

import (
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/emulatortest"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

// PolicyName is the shared access policy Env's connection string uses.
const PolicyName = hub.PolicyOwner

// Request is one request a command sent to the hub.
type Request struct {
	Method  string
	Path    string // escaped path
	IfMatch string
	Body    string
	Status  int
}

// Hub is an emulator running for one test, and what the commands run
// through Hub.Run sent it.
type Hub struct {
	*emulatortest.Hub
	rec *emulatortest.Recorder
}

// Start starts an emulator until the test ends.
func Start(t testing.TB) *Hub {
	t.Helper()
	return &Hub{Hub: emulatortest.Start(t), rec: &emulatortest.Recorder{}}
}

// ConnectionString returns the iothubowner connection string.
func (h *Hub) ConnectionString() string { return h.ServiceConnectionString() }

// PolicyKey returns the key of the iothubowner policy.
func (h *Hub) PolicyKey() string { return h.Hub.PolicyKey(PolicyName) }

// Env returns the variables that point a service command at the hub.
func (h *Hub) Env() map[string]string {
	return map[string]string{cli.EnvConnectionString: h.ConnectionString(), cli.EnvCAFile: h.CAFile()}
}

// ClientOptions returns options that record requests in h and retry
// quickly.
func (h *Hub) ClientOptions() policy.ClientOptions {
	o := ClientOptions()
	o.PerRetryPolicies = []policy.Policy{h.rec}
	return o
}

// Requests returns the requests sent so far by commands run through h.
func (h *Hub) Requests() []Request {
	var out []Request
	for _, r := range h.rec.Requests() {
		ifMatch := ""
		if len(r.IfMatch) > 0 {
			ifMatch = r.IfMatch[0]
		}
		out = append(out, Request{Method: r.Method, Path: r.Path, IfMatch: ifMatch, Body: string(r.Body), Status: r.Status})
	}
	return out
}

// ClientOptions returns azcore options with retry delays short enough for
// tests (azcore's own are seconds).
func ClientOptions() policy.ClientOptions {
	return policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}}
}
