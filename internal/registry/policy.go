package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

// renewBefore is how long before expiry a cached token is replaced, so that
// a token never expires in flight or under modest clock skew.
const renewBefore = 5 * time.Minute

// sasPolicy sets the Authorization header of every try. It runs after the
// retry policy, so a retry that happens after renewal gets a fresh token.
type sasPolicy struct {
	signer   *sas.Signer
	resource string
	now      func() time.Time

	mu     sync.Mutex
	token  string
	expiry time.Time
}

func newSASPolicy(s *sas.Signer, resource string) *sasPolicy {
	return &sasPolicy{signer: s, resource: resource, now: time.Now}
}

// Do implements policy.Policy.
func (p *sasPolicy) Do(req *policy.Request) (*http.Response, error) {
	if req.Raw().URL.Scheme != "https" {
		return nil, nonRetriable{errNotHTTPS}
	}
	req.Raw().Header.Set("Authorization", p.current())
	resp, err := req.Next()
	if err != nil && isCertificateError(err) {
		// An untrusted or mismatched certificate stays so: retrying only
		// delays the message that says which CA file to pass.
		return nil, nonRetriable{err}
	}
	return resp, err
}

// isCertificateError reports whether err is a failed verification of the
// server's certificate.
func isCertificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

// current returns the cached token, minting a new one when it is close to
// expiry.
func (p *sasPolicy) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.token == "" || !now.Add(renewBefore).Before(p.expiry) {
		p.token, p.expiry = p.signer.WithClock(p.now).Token(p.resource, TokenTTL)
	}
	return p.token
}

// nonRetriable marks an error that azcore's retry policy must not retry.
type nonRetriable struct{ error }

func (e nonRetriable) NonRetriable() {}
func (e nonRetriable) Unwrap() error { return e.error }
