package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/certs"
)

func leaf(t *testing.T, m *certs.Material) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(m.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verify(t *testing.T, m *certs.Material, name string, now time.Time) error {
	t.Helper()
	_, err := leaf(t, m).Verify(x509.VerifyOptions{DNSName: name, Roots: m.Pool(), CurrentTime: now})
	return err
}

func TestEnsureCreatesThenKeeps(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	m, err := certs.Ensure(dir, certs.Names("localhost"), now)
	if err != nil {
		t.Fatal(err)
	}
	if m.CAFile != filepath.Join(dir, "ca.pem") {
		t.Errorf("CAFile = %s", m.CAFile)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := verify(t, m, name, now); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if err := verify(t, m, "example.com", now); err == nil {
		t.Error("server certificate verifies for example.com")
	}
	for _, f := range []string{"ca-key.pem", "server-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v; want 0600", f, st.Mode().Perm())
		}
	}

	again, err := certs.Ensure(dir, certs.Names("localhost"), now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.CA.Equal(m.CA) || !bytes.Equal(again.Server.Certificate[0], m.Server.Certificate[0]) {
		t.Error("a second Ensure made new certificates")
	}
}

func TestEnsureReissuesServerCertificateOnly(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	m, err := certs.Ensure(dir, certs.Names("localhost"), now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		names []string
		now   time.Time
	}{
		{"new host name", certs.Names("myhub.example"), now},
		{"server certificate about to expire", certs.Names("localhost"), now.Add(380 * 24 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := certs.Ensure(dir, tt.names, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if !n.CA.Equal(m.CA) {
				t.Error("the CA changed")
			}
			if bytes.Equal(n.Server.Certificate[0], m.Server.Certificate[0]) {
				t.Fatal("the server certificate was not reissued")
			}
			for _, name := range tt.names {
				if err := verify(t, n, name, tt.now); err != nil {
					t.Errorf("reissued certificate for %s: %v", name, err)
				}
			}
			m = n
		})
	}
}

func TestServerConfigSpeaksTLS12And13(t *testing.T) {
	m, err := certs.Ensure(t.TempDir(), certs.Names("localhost"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}(c)
		}
	}()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: m.Pool(), ServerName: "localhost", MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Errorf("TLS version %x: %v", v, err)
			continue
		}
		if got := c.ConnectionState().Version; got != v {
			t.Errorf("negotiated %x; want %x", got, v)
		}
		c.Close()
	}
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: m.Pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
}
