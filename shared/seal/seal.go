// Package seal is podguard's envelope encryption: what must not lie in the bank in clear
// (the saved definitions of pods, with their literal env values) is sealed before it is
// written and opened when it is read.
//
// Each payload gets a fresh random 256-bit data key; AES-256-GCM encrypts the payload
// with it, and AES-256-GCM wraps the data key with a key-encryption key of a Keyring,
// the primary one. The envelope is self-describing JSON:
//
//	{"version":1,"key_id":"2025-06","algorithm":"AES-256-GCM",
//	 "wrapped_key":"<base64: nonce, wrapped data key, tag>","nonce":"<base64>","ciphertext":"<base64: ciphertext, tag>"}
//
// The version, algorithm, key id and a context the caller gives (where the envelope
// belongs, such as a record's object name and a resource key) are the additional data
// of both encryptions: an envelope whose key id was changed, or that was moved to
// another place, does not open. Opening picks the key by the envelope's key id, so
// envelopes sealed with an older key keep opening while the keyring holds it.
//
//	keys, err := seal.Load("/etc/podguard/bank-keys")
//	env, err := keys.Seal(podJSON, "checkpoints/c1/records/pods-0000.json#OS::Kubernetes::Pod#p1")
//	podJSON, err = keys.Open(env, "checkpoints/c1/records/pods-0000.json#OS::Kubernetes::Pod#p1")
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the envelope format this package writes and reads.
const Version = 1

// Algorithm encrypts the payload and wraps the data key.
const Algorithm = "AES-256-GCM"

// KeySize is the size of every key, key-encryption and data keys alike: 256 bits.
const KeySize = 32

const nonceSize = 12

// Errors of Open, to tell apart with errors.Is.
var (
	// ErrNotSealed: the data is not an envelope (such as JSON saved in clear).
	ErrNotSealed = errors.New("not a sealed envelope")
	// ErrUnknownKey: the envelope names a key id the keyring does not hold.
	ErrUnknownKey = errors.New("unknown key id")
	// ErrNotAuthentic: the envelope does not open with its key: it was altered, or
	// belongs to another context.
	ErrNotAuthentic = errors.New("envelope does not authenticate")
)

// envelope is the sealed form, as stored.
type envelope struct {
	Version   int    `json:"version"`
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"`
	// WrappedKey is the GCM nonce of the wrapping followed by the wrapped data key and
	// its tag.
	WrappedKey []byte `json:"wrapped_key"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// additionalData binds an envelope's header and its context to both encryptions.
func additionalData(version int, alg, keyID, context string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "podguard-seal\x00%d\x00%s\x00%s\x00", version, alg, keyID)
	b.WriteString(context)
	return b.Bytes()
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext under a fresh data key wrapped with the primary key, bound to
// context, and returns the envelope as JSON.
func (k *Keyring) Seal(plaintext []byte, context string) ([]byte, error) {
	kek := k.keys[k.primary]
	aad := additionalData(Version, Algorithm, k.primary, context)
	dataKey := make([]byte, KeySize)
	nonce := make([]byte, nonceSize)
	wrapNonce := make([]byte, nonceSize)
	for _, b := range [][]byte{dataKey, nonce, wrapNonce} {
		if _, err := io.ReadFull(rand.Reader, b); err != nil {
			return nil, fmt.Errorf("seal: random bytes: %w", err)
		}
	}
	data, err := newGCM(dataKey)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	wrap, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	e := envelope{
		Version: Version, KeyID: k.primary, Algorithm: Algorithm,
		WrappedKey: wrap.Seal(wrapNonce, wrapNonce, dataKey, aad),
		Nonce:      nonce,
		Ciphertext: data.Seal(nil, nonce, plaintext, aad),
	}
	clear(dataKey)
	out, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("seal: encode the envelope: %w", err)
	}
	return out, nil
}

// Open checks and decrypts an envelope sealed for context with a key of the keyring.
func (k *Keyring) Open(sealed []byte, context string) ([]byte, error) {
	e, err := parse(sealed)
	if err != nil {
		return nil, err
	}
	kek, ok := k.keys[e.KeyID]
	if !ok {
		return nil, fmt.Errorf("sealed with key %q, which the keyring (%s) does not hold: %w", e.KeyID, k.list(), ErrUnknownKey)
	}
	if len(e.WrappedKey) != nonceSize+KeySize+16 || len(e.Nonce) != nonceSize {
		return nil, fmt.Errorf("envelope sealed with key %q: wrapped key or nonce of the wrong size: %w", e.KeyID, ErrNotAuthentic)
	}
	aad := additionalData(e.Version, e.Algorithm, e.KeyID, context)
	wrap, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	dataKey, err := wrap.Open(nil, e.WrappedKey[:nonceSize], e.WrappedKey[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("envelope sealed with key %q does not open here (altered, or sealed for another place): %w", e.KeyID, ErrNotAuthentic)
	}
	defer clear(dataKey)
	data, err := newGCM(dataKey)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	plaintext, err := data.Open(nil, e.Nonce, e.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("envelope sealed with key %q: its nonce or ciphertext was altered: %w", e.KeyID, ErrNotAuthentic)
	}
	return plaintext, nil
}

// KeyID is the id of the key an envelope was sealed with, read from its header without
// any key.
func KeyID(sealed []byte) (string, error) {
	e, err := parse(sealed)
	if err != nil {
		return "", err
	}
	return e.KeyID, nil
}

// parse reads an envelope's JSON and checks its header.
func parse(sealed []byte) (*envelope, error) {
	var e envelope
	if err := json.Unmarshal(sealed, &e); err != nil || e.KeyID == "" || e.Version == 0 {
		return nil, ErrNotSealed
	}
	if e.Version != Version || e.Algorithm != Algorithm {
		return nil, fmt.Errorf("envelope version %d, algorithm %q: only version %d envelopes of %s are opened: %w", e.Version, e.Algorithm, Version, Algorithm, ErrNotSealed)
	}
	return &e, nil
}
