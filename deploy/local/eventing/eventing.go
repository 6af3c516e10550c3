// Package eventing is the local Knative mode seen from Go: podguard's functions behind
// Knative Eventing's own broker, whose processes deploy/local/eventing.sh runs against the
// local kube-apiserver. It reads that script's env file (where the broker ingress is and
// where each function must listen), installs the Broker and the Triggers of an overlay
// (deploy/overlays/local-eventing) into a namespace, adds and removes Triggers, and waits
// until the broker routes: Trigger readiness can precede routing by about a second, so
// WaitRouted ends with a canary event delivered through the broker.
//
//	env, err := eventing.LoadEnv(eventing.EnvFile())
//	objs, err := eventing.Render(ctx, kubectl, "deploy/overlays/local-eventing")
//	c, err := eventing.NewClient(restConfig, "podguard", logger)
//	err = c.Apply(ctx, objs)
//	err = c.WaitRouted(ctx, "podguard", env.BrokerURL("podguard", "podguard"))
package eventing

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Env is what deploy/local/eventing.sh writes into its env file while Knative Eventing
// runs.
type Env struct {
	// Ingress is the broker ingress; a Broker takes events at Ingress/<namespace>/<name>.
	Ingress string
	// Functions maps each function to the address it listens on: where the Triggers of
	// the local overlay deliver.
	Functions map[string]string
	// Version is the Knative Eventing version running.
	Version string
}

// EnvFile is where eventing.sh writes its environment: $PODGUARD_EVENTING_ENV, or
// eventing.env in the stack's state directory.
func EnvFile() string {
	if f := os.Getenv("PODGUARD_EVENTING_ENV"); f != "" {
		return f
	}
	dir := cmp.Or(os.Getenv("STACK_DIR"), os.Getenv("PODGUARD_STACK_DIR")) // as deploy/local/stack.env
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state", "podguard", "stack")
	}
	return filepath.Join(dir, "eventing.env")
}

// LoadEnv reads an env file of eventing.sh (one `export NAME='value'` per line).
func LoadEnv(path string) (*Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("Knative Eventing env (is it running? make eventing-up): %w", err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vars[k] = strings.Trim(v, "'")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	e := &Env{Ingress: vars["PODGUARD_EVENTING_INGRESS"], Version: vars["PODGUARD_EVENTING_VERSION"], Functions: map[string]string{}}
	if e.Ingress == "" {
		return nil, fmt.Errorf("%s: no PODGUARD_EVENTING_INGRESS", path)
	}
	if e.Functions, err = ParseAddrs(vars["PODGUARD_FUNCTION_ADDRS"]); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// ParseAddrs parses "name=host:port,name=host:port" (PODGUARD_FUNCTION_ADDRS).
func ParseAddrs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("function address %q: want name=host:port", kv)
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no function addresses")
	}
	return out, nil
}

// FormatAddrs is the inverse of ParseAddrs.
func FormatAddrs(addrs map[string]string) string {
	var out []string
	for k, v := range addrs {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// BrokerURL is the address of the Broker name in namespace ns.
func (e *Env) BrokerURL(ns, name string) string {
	return strings.TrimSuffix(e.Ingress, "/") + "/" + ns + "/" + name
}
