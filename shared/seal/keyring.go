package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// PrimaryFile is the file of a keyring directory that names the primary key: the key id
// new envelopes are sealed with. It may be left out when the directory holds one key.
const PrimaryFile = "primary"

// keyIDPattern is what a key id (a key file's name) looks like: also a valid key of a
// Kubernetes Secret, and one segment of an object name.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Config is where a function finds the keyring, from the environment.
type Config struct {
	// Dir is the keyring directory: the podguard-bank-keys Secret, mounted.
	Dir string `envconfig:"BANK_KEYS_DIR"`
}

// Validate refuses a configuration without a keyring: what it would write in clear must
// not be written at all.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("BANK_KEYS_DIR is not set: saved pod definitions are sealed with the bank's keys, so this function needs the keyring directory (the podguard-bank-keys Secret, mounted)")
	}
	return nil
}

// Load reads the keyring of Dir.
func (c Config) Load() (*Keyring, error) { return Load(c.Dir) }

// Keyring holds key-encryption keys by id, and which of them is primary.
type Keyring struct {
	keys    map[string][]byte
	primary string
}

// NewKeyring is a keyring of keys (id -> 32 bytes) whose primary key is primary.
func NewKeyring(primary string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("a keyring needs at least one key")
	}
	k := &Keyring{keys: make(map[string][]byte, len(keys)), primary: primary}
	for id, key := range keys {
		if err := checkID(id); err != nil {
			return nil, err
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("key %q: %d bytes, want %d", id, len(key), KeySize)
		}
		k.keys[id] = bytes.Clone(key)
	}
	if _, ok := k.keys[primary]; !ok {
		return nil, fmt.Errorf("primary key %q is not one of the keys (%s)", primary, k.list())
	}
	return k, nil
}

// Load reads a keyring directory: one file per key, named by its key id
// ([A-Za-z0-9][A-Za-z0-9._-]*, up to 63 characters) and holding its 32 random bytes,
// raw (head -c 32 /dev/urandom) or base64-encoded (openssl rand -base64 32); and the file
// primary holding the id of the key new envelopes are sealed with, which may be left out
// when there is one key. Names starting with a dot are skipped (a mounted Secret's
// ..data links). Any other file that is not a valid key is an error: a keyring is never
// used half-read.
func Load(dir string) (*Keyring, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bank keyring: %w", err)
	}
	keys := map[string][]byte{}
	primary := ""
	hasPrimary := false
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		st, err := os.Stat(path) // follows the links of a mounted Secret
		if err != nil {
			return nil, fmt.Errorf("bank keyring: %w", err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("bank keyring %s: %s is a directory, not a key file", dir, name)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("bank keyring: %w", err)
		}
		if name == PrimaryFile {
			primary, hasPrimary = strings.TrimSpace(string(data)), true
			continue
		}
		if err := checkID(name); err != nil {
			return nil, fmt.Errorf("bank keyring %s: %w", dir, err)
		}
		key, err := parseKey(data)
		if err != nil {
			return nil, fmt.Errorf("bank keyring %s: key %s: %w", dir, name, err)
		}
		keys[name] = key
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("bank keyring %s holds no key: add one, e.g. head -c 32 /dev/urandom > %s", dir, filepath.Join(dir, "<key id>"))
	case !hasPrimary && len(keys) > 1:
		return nil, fmt.Errorf("bank keyring %s holds %d keys (%s) and no file %s naming the one new envelopes are sealed with", dir, len(keys), strings.Join(slices.Sorted(maps.Keys(keys)), ", "), PrimaryFile)
	case !hasPrimary:
		for id := range keys {
			primary = id
		}
	}
	k, err := NewKeyring(primary, keys)
	if err != nil {
		return nil, fmt.Errorf("bank keyring %s: %w", dir, err)
	}
	return k, nil
}

// parseKey reads a key file: exactly 32 bytes are the key itself; anything else must be
// the base64 of 32 bytes (surrounding white space, such as a final newline, is ignored).
func parseKey(data []byte) ([]byte, error) {
	if len(data) == KeySize {
		return bytes.Clone(data), nil
	}
	text := strings.TrimSpace(string(data))
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("%d bytes, neither %d raw bytes nor their base64: a key is 32 random bytes (head -c 32 /dev/urandom)", len(data), KeySize)
	}
	return key, nil
}

func checkID(id string) error {
	if !keyIDPattern.MatchString(id) || id == PrimaryFile {
		return fmt.Errorf("key id %q: want letters, digits, '.', '_' or '-', starting with a letter or digit, up to 63 characters, and not %q", id, PrimaryFile)
	}
	return nil
}

// Primary is the id of the key new envelopes are sealed with.
func (k *Keyring) Primary() string { return k.primary }

// IDs lists the key ids of the keyring, sorted.
func (k *Keyring) IDs() []string { return slices.Sorted(maps.Keys(k.keys)) }

func (k *Keyring) list() string { return strings.Join(k.IDs(), ", ") }

// Create makes a keyring directory for local runs: when dir holds no key yet, it writes
// a new random key (raw, readable by its owner only) named local-<random hex>, and names
// it primary; then it loads the keyring of dir.
func Create(dir string) (*Keyring, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bank keyring: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bank keyring: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			return Load(dir)
		}
	}
	var raw [KeySize + 4]byte
	if _, err := io.ReadFull(rand.Reader, raw[:]); err != nil {
		return nil, fmt.Errorf("bank keyring: random bytes: %w", err)
	}
	id := "local-" + hex.EncodeToString(raw[KeySize:])
	if err := writeFile(dir, id, raw[:KeySize]); err != nil {
		return nil, err
	}
	if err := writeFile(dir, PrimaryFile, []byte(id+"\n")); err != nil {
		return nil, err
	}
	return Load(dir)
}

// writeFile writes a file of dir whole, or not at all (a temporary file renamed).
func writeFile(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("bank keyring: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("bank keyring: write %s: %w", name, err)
	}
	return nil
}
