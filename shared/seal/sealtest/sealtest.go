// Package sealtest makes keyrings for tests.
//
//	keys := sealtest.Keyring(t, "old", "new") // "old" is primary
//	rotated, err := seal.NewKeyring("new", map[string][]byte{"old": key, "new": sealtest.Key(t)})
package sealtest

import (
	"crypto/rand"
	"testing"

	"github.com/podguard/podguard/shared/seal"
)

// Keyring is a keyring of random keys with the ids given ("test" when none), the first
// of them primary.
func Keyring(t testing.TB, ids ...string) *seal.Keyring {
	t.Helper()
	if len(ids) == 0 {
		ids = []string{"test"}
	}
	keys := make(map[string][]byte, len(ids))
	for _, id := range ids {
		keys[id] = Key(t)
	}
	k, err := seal.NewKeyring(ids[0], keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Key is a new random key (seal.KeySize bytes).
func Key(t testing.TB) []byte {
	t.Helper()
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}
