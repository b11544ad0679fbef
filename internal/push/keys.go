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
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errorString("is not a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, errorString("is not a PEM private key")
	}
	if err != nil {
		return nil, errorString("cannot be parsed")
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errorString("is not an RSA key")
	}
	return rk, nil
}

// parseECKey reads a PEM ECDSA P-256 private key (PKCS #8, as Apple issues
// them, or SEC 1).
func parseECKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil && strings.Contains(string(b), `\n`) {
		block, _ = pem.Decode([]byte(strings.ReplaceAll(string(b), `\n`, "\n")))
	}
	if block == nil {
		return nil, errorString("is not a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, errorString("is not a PEM private key")
	}
	if err != nil {
		return nil, errorString("cannot be parsed")
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errorString("is not an ECDSA P-256 key")
	}
	return ek, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }
