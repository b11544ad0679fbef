package push

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// signJWT returns header.claims.signature (JWS compact serialization) with
// sign applied to the SHA-256 of the signing input.
func signJWT(header, claims any, sign func(digest []byte) ([]byte, error)) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, enc.EncodedLen(len(h))+enc.EncodedLen(len(c))+1+2+enc.EncodedLen(256))
	buf = enc.AppendEncode(buf, h)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, c)
	digest := sha256.Sum256(buf)
	sig, err := sign(digest[:])
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// signRS256 signs with RSASSA-PKCS1-v1_5 and SHA-256.
func signRS256(key *rsa.PrivateKey) func([]byte) ([]byte, error) {
	return func(digest []byte) ([]byte, error) {
		return rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest)
	}
}

// signES256 signs with ECDSA P-256 and SHA-256. JWS wants the raw r||s
// form, each half left-padded to 32 bytes, not ASN.1.
func signES256(key *ecdsa.PrivateKey) func([]byte) ([]byte, error) {
	return func(digest []byte) ([]byte, error) {
		r, s, err := ecdsa.Sign(rand.Reader, key, digest)
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
}
