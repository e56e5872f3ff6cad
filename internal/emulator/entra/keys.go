package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
)

// signingKey is the tenant's RSA key for RS256 tokens, kept in the data
// directory so that tokens stay valid across restarts.
type signingKey struct {
	priv *rsa.PrivateKey
	kid  string
}

// loadOrCreateKey reads the key file, creating it (exclusively, so that two
// starts cannot write different keys) when there is none.
func loadOrCreateKey(dir string) (*signingKey, error) {
	path := filepath.Join(dir, keyFile)
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			return parseKey(path, b)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read signing key: %w", err)
		}
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("encode signing key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // another process made it first: read theirs
		}
		if err != nil {
			return nil, fmt.Errorf("write signing key: %w", err)
		}
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("write signing key: %w", err)
		}
		return newSigningKey(priv)
	}
	return nil, fmt.Errorf("read signing key %s: created and removed concurrently", path)
}

func parseKey(path string, b []byte) (*signingKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read %s: not an RSA key", path)
	}
	return newSigningKey(priv)
}

// newSigningKey names the key by a hash of its public half, so the key ID
// changes whenever the key does.
func newSigningKey(priv *rsa.PrivateKey) (*signingKey, error) {
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return &signingKey{priv: priv, kid: base64.RawURLEncoding.EncodeToString(sum[:18])}, nil
}

// jwk is a public key as a JSON Web Key (RFC 7517) in a JWKS document.
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func (k *signingKey) jwk() jwk {
	pub := k.priv.PublicKey
	return jwk{
		Kty: "RSA", Use: "sig", Kid: k.kid, Alg: "RS256",
		N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}
