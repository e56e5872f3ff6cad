package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// UsageError marks an error in how the command was invoked; Run exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usage marks err as a usage error. A nil err stays nil.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &UsageError{Err: err}
}

// Usagef formats a usage error.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// HintError carries advice that Run prints on its own line after the error.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// WithHint attaches a hint to err. A nil err stays nil.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Hint: hint}
}

// printHints prints every hint found along err's chain, outermost first,
// each once.
func printHints(w io.Writer, err error) {
	seen := map[string]bool{}
	for ; err != nil; err = errors.Unwrap(err) {
		h, ok := err.(interface{ HintText() string })
		if !ok {
			continue
		}
		text := h.HintText()
		if text == "" || seen[text] {
			continue
		}
		seen[text] = true
		for _, line := range strings.Split(text, "\n") {
			fmt.Fprintf(w, "hint: %s\n", line)
		}
	}
}

// HintText returns the hint; Run prints it.
func (e *HintError) HintText() string { return e.Hint }

// NetError is a failure to talk to a host, described for a user.
type NetError struct {
	Host   string
	Reason string // what went wrong, in words
	Hint   string
	Err    error
}

func (e *NetError) Error() string    { return fmt.Sprintf("cannot reach %s: %s", e.Host, e.Reason) }
func (e *NetError) Unwrap() error    { return e.Err }
func (e *NetError) HintText() string { return e.Hint }

// TLSError is a TLS handshake or certificate failure, described for a user.
type TLSError struct {
	Host   string
	Reason string
	Hint   string
	Err    error
}

func (e *TLSError) Error() string {
	return fmt.Sprintf("TLS connection to %s failed: %s", e.Host, e.Reason)
}
func (e *TLSError) Unwrap() error    { return e.Err }
func (e *TLSError) HintText() string { return e.Hint }

// caHint tells the user how to trust a private CA such as the emulator's.
const caHint = "if the hub uses a private CA (such as iothub-emulator's), pass its certificate with --ca-file PATH or set IOTHUB_CA_FILE"

// ExplainNetError rewrites DNS, connection and TLS failures while talking to
// host into a *NetError or *TLSError that says what happened and what to
// check. Other errors, including context cancellation, come back unchanged.
func ExplainNetError(err error, host string) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var (
		dnsErr      *net.DNSError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		netErr      net.Error
	)
	switch {
	case errors.As(err, &unknownAuth):
		return &TLSError{Host: host, Reason: "its certificate is signed by an unknown authority", Hint: caHint, Err: err}
	case errors.As(err, &hostErr):
		return &TLSError{Host: host, Reason: "its certificate is not valid for that name (" + hostErr.Error() + ")",
			Hint: "check HostName in the connection string; it must be a name the hub's certificate covers", Err: err}
	case errors.As(err, &invalidCert):
		return &TLSError{Host: host, Reason: "its certificate is not valid (" + invalidCert.Error() + ")", Err: err}
	case errors.As(err, &recordErr), errors.Is(err, http.ErrSchemeMismatch):
		return &TLSError{Host: host, Reason: "the server did not answer with TLS",
			Hint: "check the port in HostName; the hub speaks HTTPS only", Err: err}
	case errors.As(err, &alertErr):
		return &TLSError{Host: host, Reason: "the server refused the handshake (" + alertErr.Error() + ")", Err: err}
	case errors.As(err, &dnsErr):
		reason := "the host name cannot be resolved"
		if !dnsErr.IsNotFound {
			reason = "name resolution failed (" + dnsErr.Err + ")"
		}
		return &NetError{Host: host, Reason: reason, Hint: "check HostName in the connection string", Err: err}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &NetError{Host: host, Reason: "connection refused",
			Hint: "check HostName and its port in the connection string, and that the hub (or iothub-emulator) is running", Err: err}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return &NetError{Host: host, Reason: "the connection was reset", Err: err}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &NetError{Host: host, Reason: "no route to the host", Hint: "check your network connection", Err: err}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &NetError{Host: host, Reason: "timed out", Hint: "check your network connection and HostName in the connection string", Err: err}
	}
	return err
}
