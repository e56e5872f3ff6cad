// Package hubtls builds the TLS configuration and HTTP client the CLIs use
// to reach an IoT hub: the system's trusted roots plus, optionally, one
// extra CA file (the local emulator's). Certificate verification is always
// on.
package hubtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// EnvCAFile names the environment variable that points at an extra CA file
// when no --ca-file flag is given.
const EnvCAFile = "IOTHUB_CA_FILE"

// CAFile returns the CA file to trust: flagValue when set, else the value of
// EnvCAFile read through getenv ("" when neither is set).
func CAFile(flagValue string, getenv func(string) string) string {
	if flagValue != "" || getenv == nil {
		return flagValue
	}
	return getenv(EnvCAFile)
}

// MaxCAFileBytes bounds a CA file: system bundles of every public root are
// a few hundred kilobytes.
const MaxCAFileBytes = 4 << 20

// Config trusts the system roots plus, when caFile != "", the PEM
// certificates in caFile. It requires TLS 1.2 or later.
func Config(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return ConfigPEM("", nil)
	}
	data, err := readCAFile(caFile)
	if err != nil {
		return nil, err
	}
	return ConfigPEM(caFile, data)
}

// ConfigPEM is Config for a CA file already read: data holds the PEM
// certificates of the file named caFile ("" for none).
func ConfigPEM(caFile string, data []byte) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil // nil RootCAs means the system roots
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// Without system roots, the extra CA alone is still a valid
		// (narrower) trust store.
		pool = x509.NewCertPool()
	}
	certs, err := parseCerts(caFile, data)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// readCAFile reads a CA file of at most MaxCAFileBytes.
func readCAFile(caFile string) ([]byte, error) {
	f, err := os.Open(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file %q: %w", caFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxCAFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read CA file %q: %w", caFile, err)
	}
	if len(data) > MaxCAFileBytes {
		return nil, fmt.Errorf("CA file %q is larger than %d MiB, the most a CA file may be", caFile, MaxCAFileBytes>>20)
	}
	return data, nil
}

// parseCerts parses every CERTIFICATE block in a PEM file. Other block
// types are skipped; a certificate block that does not parse is an error.
func parseCerts(caFile string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %q: PEM block %d: %w", caFile, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("CA file %q holds no PEM certificate", caFile)
	}
	return certs, nil
}

// HTTPClient returns an HTTP client that uses cfg (nil: Go's defaults),
// the proxy from the environment and bounded dial and handshake times. It
// sets no overall timeout: callers bound requests with a context.
func HTTPClient(cfg *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
	}}
}
