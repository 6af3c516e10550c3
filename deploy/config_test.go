package deploy

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/deadletters"
	"github.com/podguard/podguard/functions/deletebackup"
	"github.com/podguard/podguard/functions/frontdoor"
	"github.com/podguard/podguard/functions/listpods"
	"github.com/podguard/podguard/functions/recreatepod"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/functions/snapshotmetadata"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/seal/sealtest"
)

// configs are the typed configurations the functions read from their environment.
func configs() map[string]any {
	return map[string]any{
		"runtime":           &function.Base{},
		"telemetry":         &observe.Config{},
		"list-pods":         &listpods.Config{},
		"snapshot-metadata": &snapshotmetadata.Config{},
		"back-up-volume":    &backupvolume.Config{},
		"choreographer":     &choreographer.Config{},
		"checkpoints":       &frontdoor.Config{},
		"restore-volume":    &restorevolume.Config{},
		"recreate-pod":      &recreatepod.Config{},
		"delete-backup":     &deletebackup.Config{},
		"dead-letters":      &deadletters.Config{},
	}
}

// notDefaults are the ConfigMap's values that differ from the code's defaults, and why.
var notDefaults = map[string]string{
	"HANDLER_TIMEOUT":     "below the Services' timeoutSeconds, so a stuck handler answers before Knative cuts it",
	"OS_CLOUD":            "the clouds.yaml entry of the Secret template",
	"BANK_KEYS_DIR":       "where snapshot-metadata and recreate-pod mount the podguard-bank-keys Secret; without it set they refuse to start",
	"AUTHENTICATION_OIDC": "sender identity inside the broker is on in an install: the Broker's EventPolicies, and every function checks who delivers",
	"POD_NAMESPACE":       "the namespace of podguard's Triggers, set by the install rather than read from the mounted token's namespace file; the overlays rewrite it to their namespace",
}

// readByLibraries are settings read by the libraries the functions use, not by envconfig.
var readByLibraries = map[string]string{
	"OS_CLIENT_CONFIG_FILE": "/etc/openstack/clouds.yaml", // gophercloud's clouds.yaml lookup; the Secret's mount
}

// TestConfigMap checks podguard-config against the functions' configuration: every key
// is a variable some function reads, every value loads into every function, every
// variable a function reads is documented in config.yaml (set, or explained in a
// comment), and the values are the defaults unless said otherwise.
func TestConfigMap(t *testing.T) {
	file := filepath.Join("base", "config.yaml")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(src, &cm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if cm.Name != configMapName {
		t.Fatalf("%s: ConfigMap %q, want %q", file, cm.Name, configMapName)
	}

	vars := map[string]string{} // variable -> default
	for _, cfg := range configs() {
		for _, v := range envVars(reflect.TypeOf(cfg).Elem()) {
			vars[v.name] = v.def
		}
	}
	for k, v := range cm.Data {
		def, known := vars[k]
		if lib, ok := readByLibraries[k]; ok {
			def, known = lib, true
		}
		switch {
		case !known:
			t.Errorf("%s: %s is read by no function", file, k)
		case v == "":
			t.Errorf("%s: %s is empty: an empty variable overrides the default; leave it out", file, k)
		case v != def && notDefaults[k] == "":
			t.Errorf("%s: %s=%q, but the default is %q: say why in notDefaults, or use the default", file, k, v, def)
		}
	}
	for k := range vars {
		if !regexp.MustCompile(`\b` + k + `\b`).Match(src) {
			t.Errorf("%s: %s, read by a function, is not documented", file, k)
		}
	}

	// Every function starts with these settings (nothing is missing or malformed).
	for k, v := range cm.Data {
		t.Setenv(k, v)
	}
	for name, cfg := range configs() {
		if err := function.LoadConfig(cfg); err != nil {
			t.Errorf("%s with %s: %v", name, configMapName, err)
		}
	}
	t.Logf("%s: %d settings of %d variables the functions read", configMapName, len(cm.Data), len(vars))
}

type envVar struct{ name, def string }

// envVars lists the variables envconfig reads into a struct type: tagged fields, and
// those of nested structs.
func envVars(typ reflect.Type) []envVar {
	var out []envVar
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name, ok := f.Tag.Lookup("envconfig"); ok {
			out = append(out, envVar{name, f.Tag.Get("default")})
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.IsExported() {
			out = append(out, envVars(f.Type)...)
		}
	}
	slices.SortFunc(out, func(a, b envVar) int { return strings.Compare(a.name, b.name) })
	return out
}

// secretTemplate reads a Secret template of deploy/: its text and the Secret, which must
// be called name and name no namespace (it is applied with -n).
func secretTemplate(t *testing.T, file, name string) ([]byte, corev1.Secret) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var secret corev1.Secret
	if err := yaml.UnmarshalStrict(src, &secret); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if secret.Name != name || secret.Namespace != "" {
		t.Errorf("%s: Secret %s/%s, want %s without a namespace (applied with -n)", file, secret.Namespace, secret.Name, name)
	}
	return src, secret
}

// TestSecretTemplate: the Secret template is the Secret the Services mount, and its
// clouds.yaml has the cloud podguard-config names.
func TestSecretTemplate(t *testing.T) {
	file := "openstack-secret.example.yaml"
	_, secret := secretTemplate(t, file, secretName)
	var clouds struct {
		Clouds map[string]struct {
			Auth map[string]string `json:"auth"`
		} `json:"clouds"`
	}
	if err := yaml.Unmarshal([]byte(secret.StringData["clouds.yaml"]), &clouds); err != nil {
		t.Fatalf("%s: clouds.yaml: %v", file, err)
	}
	var cm corev1.ConfigMap
	b, err := os.ReadFile(filepath.Join("base", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	cloud, ok := clouds.Clouds[cm.Data["OS_CLOUD"]]
	if !ok || cloud.Auth["auth_url"] == "" {
		t.Errorf("%s: clouds.yaml has no cloud %q (OS_CLOUD) with an auth_url", file, cm.Data["OS_CLOUD"])
	}
	if filepath.Base(cm.Data["OS_CLIENT_CONFIG_FILE"]) != "clouds.yaml" {
		t.Errorf("OS_CLIENT_CONFIG_FILE %q does not name the Secret's clouds.yaml", cm.Data["OS_CLIENT_CONFIG_FILE"])
	}
}

// TestBankKeysTemplate: the keyring template is the Secret the two Services mount, says
// how to create one from random bytes, and cannot be used as it is: its placeholder is
// refused where a key is read, and the same entries with a real key load, the primary
// naming it.
func TestBankKeysTemplate(t *testing.T) {
	file := "bank-keys-secret.example.yaml"
	src, secret := secretTemplate(t, file, bankKeysSecret)
	for _, want := range []string{"head -c 32 /dev/urandom", "kubectl -n podguard create secret generic " + bankKeysSecret + " --from-file="} {
		if !strings.Contains(string(src), want) {
			t.Errorf("%s does not say %q", file, want)
		}
	}
	write := func(entries map[string]string) string {
		dir := t.TempDir()
		for k, v := range entries {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	if k, err := seal.Load(write(secret.StringData)); err == nil {
		t.Fatalf("%s loads as it is (primary %s): its placeholder must be refused", file, k.Primary())
	} else {
		t.Logf("as it is: %v", err)
	}
	filled := map[string]string{}
	for k, v := range secret.StringData {
		if k != seal.PrimaryFile {
			v = base64.StdEncoding.EncodeToString(sealtest.Key(t))
		}
		filled[k] = v
	}
	k, err := seal.Load(write(filled))
	if err != nil {
		t.Fatalf("%s with real keys: %v", file, err)
	}
	if k.Primary() != secret.StringData[seal.PrimaryFile] {
		t.Errorf("%s: primary %q, loaded %q", file, secret.StringData[seal.PrimaryFile], k.Primary())
	}
}
