package access

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	_ "crypto/sha256" // SHA-256 for crypto.SHA256
	_ "crypto/sha512" // SHA-384 and SHA-512 for crypto.SHA384 and crypto.SHA512
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// The signature algorithms a Verifier accepts, by their JWS names.
var algorithms = map[string]struct {
	kty  string // the type of key that verifies it
	hash crypto.Hash
}{
	"RS256": {"RSA", crypto.SHA256},
	"RS384": {"RSA", crypto.SHA384},
	"RS512": {"RSA", crypto.SHA512},
	"ES256": {"EC", crypto.SHA256},
}

// publicKey is one usable key of a JSON Web Key Set.
type publicKey struct {
	id  string // its "kid", maybe empty
	alg string // its "alg", empty when it does not restrict the algorithm
	kty string // "RSA" or "EC"
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
}

// keySet is the usable keys of one fetch of the JSON Web Key Set.
type keySet struct {
	keys []publicKey
}

// parseKeySet reads a JSON Web Key Set; keys of another type, curve or use than a
// Verifier handles are left out, and a set left with none is an error.
func parseKeySet(raw []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("read the key set: %w", err)
	}
	ks := &keySet{}
	var skipped []error
	for i, k := range doc.Keys {
		pk, err := parseKey(k)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		ks.keys = append(ks.keys, pk)
	}
	if len(ks.keys) == 0 {
		return nil, fmt.Errorf("the key set has no usable key (of %d): %w", len(doc.Keys), errors.Join(skipped...))
	}
	return ks, nil
}

// parseKey reads one JSON Web Key: an RSA key (n, e) or an EC key on P-256 (x, y).
func parseKey(raw json.RawMessage) (publicKey, error) {
	var k struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		N   string `json:"n"`
		E   string `json:"e"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return publicKey{}, err
	}
	if k.Use != "" && k.Use != "sig" {
		return publicKey{}, fmt.Errorf("%q is for use %q, not sig", k.Kid, k.Use)
	}
	if a, ok := algorithms[k.Alg]; k.Alg != "" && (!ok || a.kty != k.Kty) {
		return publicKey{}, fmt.Errorf("%q is for algorithm %q", k.Kid, k.Alg)
	}
	pk := publicKey{id: k.Kid, alg: k.Alg, kty: k.Kty}
	switch k.Kty {
	case "RSA":
		n, err := base64.RawURLEncoding.DecodeString(k.N)
		if err != nil || len(n) == 0 {
			return publicKey{}, fmt.Errorf("RSA key %q: bad modulus n", k.Kid)
		}
		e, err := base64.RawURLEncoding.DecodeString(k.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return publicKey{}, fmt.Errorf("RSA key %q: bad exponent e", k.Kid)
		}
		exp := new(big.Int).SetBytes(e)
		if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64() > 1<<31-1 || exp.Bit(0) == 0 {
			return publicKey{}, fmt.Errorf("RSA key %q: bad exponent %s", k.Kid, exp)
		}
		pk.rsa = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
	case "EC":
		if k.Crv != "P-256" {
			return publicKey{}, fmt.Errorf("EC key %q is on curve %q, not P-256", k.Kid, k.Crv)
		}
		x, errX := base64.RawURLEncoding.DecodeString(k.X)
		y, errY := base64.RawURLEncoding.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return publicKey{}, fmt.Errorf("EC key %q: bad coordinates", k.Kid)
		}
		ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return publicKey{}, fmt.Errorf("EC key %q: %w", k.Kid, err)
		}
		pk.ec = ec
	default:
		return publicKey{}, fmt.Errorf("%q has the unsupported type %q", k.Kid, k.Kty)
	}
	return pk, nil
}

// candidates are the keys that may have signed with alg a token naming kid ("" for
// any key).
func (ks *keySet) candidates(kid, alg string) []publicKey {
	var out []publicKey
	for _, k := range ks.keys {
		if (kid == "" || k.id == kid) && k.kty == algorithms[alg].kty && (k.alg == "" || k.alg == alg) {
			out = append(out, k)
		}
	}
	return out
}

// hasID reports whether a key of the set is named kid.
func (ks *keySet) hasID(kid string) bool {
	for _, k := range ks.keys {
		if k.id == kid {
			return true
		}
	}
	return false
}

// verify checks sig, a JWS signature with alg over signed, under k.
func (k publicKey) verify(alg string, signed, sig []byte) bool {
	a := algorithms[alg]
	h := a.hash.New()
	h.Write(signed)
	digest := h.Sum(nil)
	switch k.kty {
	case "RSA":
		return rsa.VerifyPKCS1v15(k.rsa, a.hash, digest, sig) == nil
	case "EC":
		if len(sig) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, digest, r, s)
	}
	return false
}
