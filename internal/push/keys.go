package push

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
)

// parseRSAKey reads a PEM RSA private key (PKCS #8, as Google issues them,
// or PKCS #1). Its errors describe the problem without quoting the input.
func parseRSAKey(s string) (*rsa.PrivateKey, error) {
	key, err := parsePrivateKey([]byte(s), "RSA PRIVATE KEY", func(der []byte) (any, error) {
		return x509.ParsePKCS1PrivateKey(der)
	})
	if err != nil {
		return nil, err
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errorString("is not an RSA key")
	}
	return rk, nil
}

// parseECKey reads a PEM ECDSA P-256 private key (PKCS #8, as Apple issues
// them, or SEC 1). A key pasted on one line with literal \n is accepted.
func parseECKey(b []byte) (*ecdsa.PrivateKey, error) {
	if block, _ := pem.Decode(b); block == nil && strings.Contains(string(b), `\n`) {
		b = []byte(strings.ReplaceAll(string(b), `\n`, "\n"))
	}
	key, err := parsePrivateKey(b, "EC PRIVATE KEY", func(der []byte) (any, error) {
		return x509.ParseECPrivateKey(der)
	})
	if err != nil {
		return nil, err
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errorString("is not an ECDSA P-256 key")
	}
	return ek, nil
}

// parsePrivateKey decodes one PEM private key: PKCS #8, or the one legacy
// block type given. Errors never quote the input.
func parsePrivateKey(b []byte, legacyType string, legacy func([]byte) (any, error)) (any, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errorString("is not a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case legacyType:
		key, err = legacy(block.Bytes)
	default:
		return nil, errorString("is not a PEM private key")
	}
	if err != nil {
		return nil, errorString("cannot be parsed")
	}
	return key, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }
