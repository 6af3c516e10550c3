package seal_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/seal/sealtest"
)

const here = "checkpoints/c1/records/pods-0000.json#OS::Kubernetes::Pod#p1"

var secret = []byte(`{"pod":{"spec":{"containers":[{"env":[{"name":"PASSWORD","value":"s3cr3t-round-trip"}]}]}}}`)

func TestRoundTrip(t *testing.T) {
	keys := sealtest.Keyring(t, "k1")
	env, err := keys.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("s3cr3t")) || bytes.Contains(env, []byte(base64.StdEncoding.EncodeToString(secret)[:16])) {
		t.Fatalf("the envelope shows the payload: %s", env)
	}
	var header struct {
		Version    int    `json:"version"`
		KeyID      string `json:"key_id"`
		Algorithm  string `json:"algorithm"`
		WrappedKey []byte `json:"wrapped_key"`
		Nonce      []byte `json:"nonce"`
		Ciphertext []byte `json:"ciphertext"`
	}
	if err := json.Unmarshal(env, &header); err != nil {
		t.Fatal(err)
	}
	if header.Version != 1 || header.KeyID != "k1" || header.Algorithm != "AES-256-GCM" ||
		len(header.WrappedKey) != 12+32+16 || len(header.Nonce) != 12 || len(header.Ciphertext) != len(secret)+16 {
		t.Fatalf("envelope %s", env)
	}
	got, err := keys.Open(env, here)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q %v", got, err)
	}
	if id, err := seal.KeyID(env); err != nil || id != "k1" {
		t.Fatalf("key id %q %v", id, err)
	}
	// Every envelope has a data key of its own: the same payload seals differently.
	again, err := keys.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	var second struct {
		WrappedKey []byte `json:"wrapped_key"`
		Ciphertext []byte `json:"ciphertext"`
	}
	if err := json.Unmarshal(again, &second); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(second.WrappedKey, header.WrappedKey) || bytes.Equal(second.Ciphertext, header.Ciphertext) {
		t.Fatal("two envelopes of one payload share their data key or ciphertext")
	}
	if empty, err := keys.Seal(nil, here); err != nil {
		t.Fatal(err)
	} else if got, err := keys.Open(empty, here); err != nil || len(got) != 0 {
		t.Fatalf("empty payload: %q %v", got, err)
	}
}

func TestUnknownKeyID(t *testing.T) {
	env, err := sealtest.Keyring(t, "2025-01").Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sealtest.Keyring(t, "2025-06", "2025-07").Open(env, here)
	if !errors.Is(err, seal.ErrUnknownKey) || !strings.Contains(err.Error(), `"2025-01"`) || !strings.Contains(err.Error(), "2025-06, 2025-07") {
		t.Fatalf("want the unknown key named, and the keys held: %v", err)
	}
	// The same id with other bytes: the envelope does not authenticate.
	_, err = sealtest.Keyring(t, "2025-01").Open(env, here)
	if !errors.Is(err, seal.ErrNotAuthentic) {
		t.Fatalf("another key under the same id: %v", err)
	}
}

func TestTamperedEnvelopes(t *testing.T) {
	keys := sealtest.Keyring(t, "a", "b")
	env, err := keys.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(field string, i int) func(map[string]any) {
		return func(m map[string]any) {
			b, _ := base64.StdEncoding.DecodeString(m[field].(string))
			b[(i+len(b))%len(b)] ^= 1 // from the end when negative
			m[field] = base64.StdEncoding.EncodeToString(b)
		}
	}
	for name, tc := range map[string]struct {
		change func(map[string]any)
		want   error
	}{
		"ciphertext":         {flip("ciphertext", 3), seal.ErrNotAuthentic},
		"ciphertext tag":     {flip("ciphertext", -1), seal.ErrNotAuthentic},
		"nonce":              {flip("nonce", 0), seal.ErrNotAuthentic},
		"wrapped key":        {flip("wrapped_key", 20), seal.ErrNotAuthentic},
		"wrapping nonce":     {flip("wrapped_key", 0), seal.ErrNotAuthentic},
		"key id of another":  {func(m map[string]any) { m["key_id"] = "b" }, seal.ErrNotAuthentic},
		"key id unknown":     {func(m map[string]any) { m["key_id"] = "c" }, seal.ErrUnknownKey},
		"truncated":          {func(m map[string]any) { m["wrapped_key"] = "AAAA" }, seal.ErrNotAuthentic},
		"version":            {func(m map[string]any) { m["version"] = 2 }, seal.ErrNotSealed},
		"algorithm":          {func(m map[string]any) { m["algorithm"] = "AES-128-GCM" }, seal.ErrNotSealed},
		"ciphertext dropped": {func(m map[string]any) { delete(m, "ciphertext") }, seal.ErrNotAuthentic},
	} {
		t.Run(name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(env, &m); err != nil {
				t.Fatal(err)
			}
			tc.change(m)
			bad, _ := json.Marshal(m)
			got, err := keys.Open(bad, here)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("want %v, got %q %v", tc.want, got, err)
			}
			t.Log(err)
		})
	}
}

// An envelope copied to another resource, batch or checkpoint does not open there.
func TestMovedEnvelope(t *testing.T) {
	keys := sealtest.Keyring(t)
	env, err := keys.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	for _, elsewhere := range []string{
		"checkpoints/c1/records/pods-0000.json#OS::Kubernetes::Pod#p2",
		"checkpoints/c1/records/pods-0001.json#OS::Kubernetes::Pod#p1",
		"checkpoints/c2/records/pods-0000.json#OS::Kubernetes::Pod#p1",
		"",
	} {
		if _, err := keys.Open(env, elsewhere); !errors.Is(err, seal.ErrNotAuthentic) {
			t.Errorf("opened at %q: %v", elsewhere, err)
		}
	}
}

func TestNotSealed(t *testing.T) {
	keys := sealtest.Keyring(t)
	for _, data := range []string{string(secret), `{"pod": 42}`, `"text"`, `not json`, ``, `{"version":1}`} {
		if _, err := keys.Open([]byte(data), here); !errors.Is(err, seal.ErrNotSealed) {
			t.Errorf("%q: %v", data, err)
		}
		if _, err := seal.KeyID([]byte(data)); !errors.Is(err, seal.ErrNotSealed) {
			t.Errorf("key id of %q: %v", data, err)
		}
	}
}

func writeKey(t *testing.T, dir, id string, content []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, id), content, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func load(t *testing.T, dir string) *seal.Keyring {
	t.Helper()
	k, err := seal.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Rotation as the README describes it: add a key, make it primary; old envelopes still
// open with their key; new ones use the new key; once the old key is removed, what it
// sealed no longer opens, with the reason.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "2025-01", randomKey(t))
	before := load(t, dir)
	if before.Primary() != "2025-01" {
		t.Fatalf("one key and no primary file: primary %q", before.Primary())
	}
	old, err := before.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}

	writeKey(t, dir, "2025-06", []byte(base64.StdEncoding.EncodeToString(randomKey(t))+"\n"))
	writeKey(t, dir, seal.PrimaryFile, []byte("2025-06\n"))
	after := load(t, dir)
	if after.Primary() != "2025-06" || strings.Join(after.IDs(), ",") != "2025-01,2025-06" {
		t.Fatalf("after rotation: primary %q, keys %v", after.Primary(), after.IDs())
	}
	fresh, err := after.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := seal.KeyID(fresh); id != "2025-06" {
		t.Fatalf("a new envelope is sealed with %q", id)
	}
	for name, env := range map[string][]byte{"old": old, "new": fresh} {
		if got, err := after.Open(env, here); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%s envelope after rotation: %v", name, err)
		}
	}
	if _, err := before.Open(fresh, here); !errors.Is(err, seal.ErrUnknownKey) {
		t.Fatalf("the keyring before rotation opened a new envelope: %v", err)
	}

	if err := os.Remove(filepath.Join(dir, "2025-01")); err != nil {
		t.Fatal(err)
	}
	retired := load(t, dir)
	if _, err := retired.Open(old, here); !errors.Is(err, seal.ErrUnknownKey) {
		t.Fatalf("an envelope of a retired key: %v", err)
	}
	if _, err := retired.Open(fresh, here); err != nil {
		t.Fatal(err)
	}
}

// A raw key and its base64 are the same key.
func TestKeyFileFormats(t *testing.T) {
	key := randomKey(t)
	raw, encoded := t.TempDir(), t.TempDir()
	writeKey(t, raw, "k", key)
	writeKey(t, encoded, "k", []byte(" "+base64.StdEncoding.EncodeToString(key)+"\n"))
	env, err := load(t, raw).Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, encoded).Open(env, here); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefuses(t *testing.T) {
	key := randomKey(t)
	for name, tc := range map[string]struct {
		files map[string][]byte
		want  string
	}{
		"empty":              {nil, "holds no key"},
		"short raw key":      {map[string][]byte{"k": key[:16]}, "key k: 16 bytes"},
		"long raw key":       {map[string][]byte{"k": append(key, 0)}, "key k: 33 bytes"},
		"short base64 key":   {map[string][]byte{"k": []byte(base64.StdEncoding.EncodeToString(key[:16]))}, "key k: 24 bytes"},
		"not base64":         {map[string][]byte{"k": []byte("REPLACE-ME-with-32-random-bytes-base64")}, "neither 32 raw bytes nor their base64"},
		"bad key id":         {map[string][]byte{"my key": key}, `key id "my key"`},
		"primary not a key":  {map[string][]byte{"k": key, seal.PrimaryFile: []byte("other\n")}, `primary key "other" is not one of the keys (k)`},
		"empty primary":      {map[string][]byte{"k": key, seal.PrimaryFile: nil}, `primary key "" is not one of the keys`},
		"two keys, no pick":  {map[string][]byte{"a": key, "b": key}, "holds 2 keys (a, b) and no file primary"},
		"a stray file":       {map[string][]byte{"a": key, "README.md": []byte("notes")}, "key README.md: 5 bytes"},
		"a directory inside": {map[string][]byte{"sub/k": key}, "sub is a directory"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, content := range tc.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o700); err != nil {
					t.Fatal(err)
				}
				writeKey(t, dir, f, content)
			}
			k, err := seal.Load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v %v", tc.want, k, err)
			}
			t.Log(err)
		})
	}
	if _, err := seal.Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing directory loaded")
	}
	if _, err := seal.NewKeyring("k", map[string][]byte{"k": key[:31]}); err == nil {
		t.Fatal("a 31-byte key was accepted")
	}
}

// A Secret mounted by the kubelet: every file a link into ..data, itself a link to a
// timestamped directory.
func TestLoadMountedSecret(t *testing.T) {
	dir := t.TempDir()
	stamp := filepath.Join(dir, "..2025_06_01_00_00_00.000000001")
	if err := os.Mkdir(stamp, 0o755); err != nil {
		t.Fatal(err)
	}
	writeKey(t, stamp, "k1", randomKey(t))
	writeKey(t, stamp, "k2", []byte(base64.StdEncoding.EncodeToString(randomKey(t))))
	writeKey(t, stamp, seal.PrimaryFile, []byte("k2"))
	if err := os.Symlink(filepath.Base(stamp), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"k1", "k2", seal.PrimaryFile} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	k := load(t, dir)
	if k.Primary() != "k2" || strings.Join(k.IDs(), ",") != "k1,k2" {
		t.Fatalf("primary %q, keys %v", k.Primary(), k.IDs())
	}
}

func TestCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bank-keys")
	k, err := seal.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ids := k.IDs(); len(ids) != 1 || ids[0] != k.Primary() || !strings.HasPrefix(k.Primary(), "local-") {
		t.Fatalf("keys %v, primary %q", ids, k.Primary())
	}
	st, err := os.Stat(filepath.Join(dir, k.Primary()))
	if err != nil || st.Size() != seal.KeySize || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	env, err := k.Seal(secret, here)
	if err != nil {
		t.Fatal(err)
	}
	// A second run finds the keyring and keeps it.
	again, err := seal.Create(dir)
	if err != nil || again.Primary() != k.Primary() {
		t.Fatalf("second run: %v %v", again, err)
	}
	if _, err := again.Open(env, here); err != nil {
		t.Fatal(err)
	}
	other, err := seal.Create(t.TempDir())
	if err != nil || other.Primary() == k.Primary() {
		t.Fatalf("another directory: %v %v", other, err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (seal.Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "BANK_KEYS_DIR") {
		t.Fatalf("no keyring: %v", err)
	}
	if err := (seal.Config{Dir: "/etc/podguard/bank-keys"}).Validate(); err != nil {
		t.Fatal(err)
	}
}
