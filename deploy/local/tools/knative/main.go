// Command knative-validate reads Kubernetes manifests (a YAML stream, as `kubectl
// kustomize` prints it) on stdin and validates each Knative object the way the Serving
// and Eventing admission webhooks do: defaults, then the validation of a create. A
// server-side dry run against the CRDs alone checks the schemas, not what the webhooks
// refuse (fields behind feature flags, timeouts above the maximum, bad delivery specs).
//
//	kubectl kustomize deploy/overlays/cluster | go run ./deploy/local/tools/knative
//
// It prints one line per object and exits 1 when any is invalid.
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// object is a Knative resource as the webhooks see it.
type object interface {
	apis.Defaultable
	apis.Validatable
}

// kinds are the Knative resources validated; others are skipped.
var kinds = map[string]func() object{
	"serving.knative.dev/v1 Service":     func() object { return &servingv1.Service{} },
	"eventing.knative.dev/v1 Broker":     func() object { return &eventingv1.Broker{} },
	"eventing.knative.dev/v1 Trigger":    func() object { return &eventingv1.Trigger{} },
	"sources.knative.dev/v1 PingSource":  func() object { return &sourcesv1.PingSource{} },
	"sources.knative.dev/v1 SinkBinding": func() object { return &sourcesv1.SinkBinding{} },
}

func main() {
	in, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "knative-validate:", err)
		os.Exit(2)
	}
	invalid, err := validate(in, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "knative-validate:", err)
		os.Exit(2)
	}
	if invalid > 0 {
		os.Exit(1)
	}
}

// validate checks every Knative object of the stream and reports each on out.
func validate(stream []byte, out io.Writer) (invalid int, err error) {
	for i, doc := range bytes.Split(stream, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return invalid, fmt.Errorf("document %d: %w", i+1, err)
		}
		newObject, ok := kinds[meta.APIVersion+" "+meta.Kind]
		if !ok {
			continue
		}
		o := newObject()
		name := meta.Kind + " " + meta.Metadata.Name
		if err := yaml.UnmarshalStrict(doc, o); err != nil {
			fmt.Fprintf(out, "invalid %s: %v\n", name, err)
			invalid++
			continue
		}
		ctx := apis.WithinCreate(context.Background())
		o.SetDefaults(ctx)
		if err := o.Validate(ctx); err != nil {
			fmt.Fprintf(out, "invalid %s: %v\n", name, err)
			invalid++
			continue
		}
		fmt.Fprintf(out, "valid %s\n", name)
	}
	return invalid, nil
}
