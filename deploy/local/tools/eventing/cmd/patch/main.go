// Command patch makes Knative Eventing's vendored sources listen on 127.0.0.1 only, and
// lets the ports upstream hard-codes be moved, for the local Knative mode.
//
// Upstream binds every server to ":<port>" (all interfaces) and fixes some ports: the
// health probes of every sharedmain process on 8080 (so two controllers on one host
// collide, and 8080 may be Swift's), the in-memory channel dispatcher on 8080/8443. Each
// patch below is a set of exact substitutions in one vendored file; every anchor must
// occur exactly once, so a change upstream stops the build with the anchor that is gone
// instead of building something that binds elsewhere. Patched copies go to -out, with
// the overlay file `go build -overlay` takes (the vendored tree itself stays as `go mod
// vendor` made it).
//
//	go run ./cmd/patch -vendor vendor -out overlay   # writes overlay/overlay.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// substitution replaces old, which must occur exactly once, by new.
type substitution struct{ old, new string }

// patch is the change to one vendored file.
type patch struct {
	file    string // relative to the vendor directory
	why     string
	subs    []substitution
	imports []string // standard packages the new code needs
	extra   string   // code appended to the file
}

const portFromEnv = `
// portFromEnv is the port in the environment variable env, or def.
func portFromEnv(env string, def int) int {
	if p, err := strconv.Atoi(os.Getenv(env)); err == nil && p > 0 && p < 65536 {
		return p
	}
	return def
}
`

var patches = []patch{
	{
		file: "knative.dev/eventing/pkg/kncloudevents/event_receiver.go",
		why:  "the CloudEvents receivers of the broker ingress and filter and of the channel dispatcher",
		subs: []substitution{{`net.Listen("tcp", fmt.Sprintf(":%d", recv.desiredPort))`, `net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", recv.desiredPort))`}},
	},
	{
		file: "knative.dev/eventing/pkg/reconciler/inmemorychannel/dispatcher/controller.go",
		why:  "the in-memory channel dispatcher's ports are constants upstream: EVENTING_DISPATCHER_HTTP_PORT and EVENTING_DISPATCHER_HTTPS_PORT move them",
		subs: []substitution{
			{"Port:         httpPort,", `Port:         portFromEnv("EVENTING_DISPATCHER_HTTP_PORT", httpPort),`},
			{"Port:         httpsPort,", `Port:         portFromEnv("EVENTING_DISPATCHER_HTTPS_PORT", httpsPort),`},
		},
		imports: []string{"os", "strconv"},
		extra:   portFromEnv,
	},
	{
		file:    "knative.dev/pkg/injection/health_check.go",
		why:     "the health probes every sharedmain process serves on 8080: EVENTING_PROBES_PORT moves them",
		subs:    []substitution{{`Addr: ":" + strconv.Itoa(port)}`, `Addr: "127.0.0.1:" + strconv.Itoa(portFromEnv("EVENTING_PROBES_PORT", port))}`}},
		imports: []string{"os", "strconv"},
		extra:   portFromEnv,
	},
	{
		file: "knative.dev/pkg/observability/runtime/pprof.go",
		why:  "the profiling server (PROFILING_PORT sets its port)",
		subs: []substitution{{`Addr:    ":" + port,`, `Addr:    "127.0.0.1:" + port,`}},
	},
	{
		file: "knative.dev/pkg/webhook/webhook.go",
		why:  "the admission and conversion webhook server (WEBHOOK_PORT sets its port)",
		subs: []substitution{{`Addr:              fmt.Sprint(":", wh.Options.Port),`, `Addr:              fmt.Sprint("127.0.0.1:", wh.Options.Port),`}},
	},
	{
		file: "knative.dev/pkg/observability/metrics/prometheus/server.go",
		why:  "the Prometheus metrics server, when config-observability turns it on",
		subs: []substitution{{`defaultPrometheusHost            = "" // IPv4 and IPv6`, `defaultPrometheusHost            = "127.0.0.1"`}},
	},
}

// apply returns the patched text of src.
func (p patch) apply(src string) (string, error) {
	for _, s := range p.subs {
		if n := strings.Count(src, s.old); n != 1 {
			return "", fmt.Errorf("%s: anchor %q occurs %d times, want 1: the upstream source changed, review the patch (%s)", p.file, s.old, n, p.why)
		}
		src = strings.Replace(src, s.old, s.new, 1)
	}
	for _, imp := range p.imports {
		if strings.Contains(src, `"`+imp+`"`) {
			continue
		}
		if strings.Count(src, "import (") != 1 {
			return "", fmt.Errorf("%s: no single import block to add %q to", p.file, imp)
		}
		src = strings.Replace(src, "import (", "import (\n\t\""+imp+"\"", 1)
	}
	return src + p.extra, nil
}

func main() {
	vendor := flag.String("vendor", "vendor", "the vendor directory `go mod vendor` made")
	out := flag.String("out", "overlay", "where the patched files and overlay.json go")
	flag.Parse()
	if err := run(*vendor, *out); err != nil {
		fmt.Fprintln(os.Stderr, "patch:", err)
		os.Exit(1)
	}
}

func run(vendor, out string) error {
	vendor, err := filepath.Abs(vendor)
	if err != nil {
		return err
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	overlay := struct{ Replace map[string]string }{Replace: map[string]string{}}
	for _, p := range patches {
		src := filepath.Join(vendor, p.file)
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("%s: %w", p.file, err)
		}
		patched, err := p.apply(string(b))
		if err != nil {
			return err
		}
		dst := filepath.Join(out, strings.ReplaceAll(p.file, "/", "_"))
		if err := os.WriteFile(dst, []byte(patched), 0o644); err != nil {
			return err
		}
		overlay.Replace[src] = dst
		fmt.Printf("patched %s: %s\n", p.file, p.why)
	}
	b, err := json.MarshalIndent(overlay, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "overlay.json"), b, 0o644)
}
