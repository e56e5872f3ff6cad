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

// Config trusts the system roots plus, when caFile != "", the PEM
// certificates in caFile. It requires TLS 1.2 or later.
func Config(caFile string) (*tls.Config, error) {
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
	certs, err := readCerts(caFile)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// readCerts parses every CERTIFICATE block in a PEM file. Other block
// types are skipped; a certificate block that does not parse is an error.
func readCerts(caFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file %q: %w", caFile, err)
	}
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
