package runner

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/podguard/podguard/shared/seal"
)

// Without a keyring given, a run gets one of its own with a random key, removed with it.
func TestBankKeysForOneRun(t *testing.T) {
	var o Options
	remove, err := bankKeys(&o)
	if err != nil {
		t.Fatal(err)
	}
	k, err := seal.Load(o.BankKeys)
	if err != nil || len(k.IDs()) != 1 {
		t.Fatalf("keyring %s: %v %v", o.BankKeys, k, err)
	}
	var other Options
	removeOther, err := bankKeys(&other)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = removeOther() }()
	if ko, err := seal.Load(other.BankKeys); err != nil || other.BankKeys == o.BankKeys || ko.Primary() == k.Primary() {
		t.Fatalf("two runs share a keyring: %s %s %v", o.BankKeys, other.BankKeys, err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.BankKeys); !os.IsNotExist(err) {
		t.Fatalf("the run's keyring is left: %v", err)
	}
}

// A keyring directory given is created on the first run and kept for the next.
func TestBankKeysKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bank-keys")
	o := Options{BankKeys: dir}
	remove, err := bankKeys(&o)
	if err != nil {
		t.Fatal(err)
	}
	first, err := seal.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := bankKeys(&o); err != nil {
		t.Fatal(err)
	}
	second, err := seal.Load(dir)
	if err != nil || o.BankKeys != dir || second.Primary() != first.Primary() {
		t.Fatalf("second run: %s %v %v", o.BankKeys, second, err)
	}
	// A keyring that does not load stops the run.
	if err := os.WriteFile(filepath.Join(dir, "short"), []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bankKeys(&o); err == nil {
		t.Fatal("a keyring with a bad key file was used")
	}
}

func TestStateBankKeys(t *testing.T) {
	t.Setenv("BANK_KEYS_DIR", "/etc/podguard/bank-keys")
	if got := StateBankKeys(); got != "/etc/podguard/bank-keys" {
		t.Fatalf("with BANK_KEYS_DIR: %s", got)
	}
	t.Setenv("BANK_KEYS_DIR", "")
	t.Setenv("STACK_DIR", "/var/lib/stack")
	if got := StateBankKeys(); got != "/var/lib/stack/bank-keys" {
		t.Fatalf("in the stack's directory: %s", got)
	}
}
