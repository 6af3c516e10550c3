package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"sigs.k8s.io/yaml"
)

// Trigger routes the events its filter matches to a subscriber, as a Knative Trigger.
type Trigger struct {
	// Name is the Trigger's metadata.name.
	Name string
	// File is the manifest the Trigger was loaded from, if any.
	File string
	// Filter maps attribute names (context attributes such as type and source, or
	// extensions such as podguardflow) to the exact value an event must carry. An empty
	// value matches any value; an empty filter matches every event.
	Filter map[string]string
	// Subscriber receives the matching events.
	Subscriber Destination
	// Delivery says how failed deliveries are retried and where they end.
	Delivery Delivery
}

// Matches reports whether the Trigger's filter selects e, as the broker routes.
func (t Trigger) Matches(e event.Event) bool { return matches(t.Filter, e) }

// Destination is a Knative destination: a Service referenced by name, a URI, or both
// (the URI is then resolved against the Service's URL).
type Destination struct {
	Ref string
	URI string
	// Audience is the OIDC audience of the destination (Knative's duckv1.Destination
	// audience): with sender identity on (Options.Identity), deliveries to it carry a
	// token for this audience; without one they carry no token, as in Knative.
	Audience string
}

func (d Destination) String() string {
	switch {
	case d.Ref != "" && d.URI != "":
		return d.Ref + " " + d.URI
	case d.Ref != "":
		return d.Ref
	default:
		return d.URI
	}
}

// BackoffPolicy is how the wait between retries grows.
type BackoffPolicy string

// Backoff policies of a delivery spec.
const (
	BackoffLinear      BackoffPolicy = "linear"
	BackoffExponential BackoffPolicy = "exponential"
)

// Delivery is a Knative delivery spec.
type Delivery struct {
	// Retry is how many times a failed delivery is retried (after the first attempt).
	Retry int
	// BackoffPolicy and BackoffDelay set the wait before each retry; without both, retries
	// are immediate.
	BackoffPolicy BackoffPolicy
	BackoffDelay  time.Duration
	// Timeout bounds one attempt; zero leaves it to the HTTP client.
	Timeout time.Duration
	// DeadLetterSink receives the events whose delivery failed for good; nil drops them
	// (the broker's recorder still keeps them).
	DeadLetterSink *Destination
}

// Backoff is the wait after failed attempt n, counted from 0 for the first delivery:
// BackoffDelay*n for linear, BackoffDelay*2^n for exponential (so with exponential,
// PT0.5S and 5 retries wait 0.5s, 1s, 2s, 4s, 8s; with linear the first retry is
// immediate).
func (d Delivery) Backoff(n int) time.Duration {
	if d.BackoffDelay <= 0 {
		return 0
	}
	n = max(n, 0)
	var factor float64
	switch d.BackoffPolicy {
	case BackoffLinear:
		factor = float64(n)
	case BackoffExponential:
		factor = math.Exp2(float64(n))
	default:
		return 0
	}
	if w := float64(d.BackoffDelay) * factor; w < math.MaxInt64 {
		return time.Duration(w)
	}
	return time.Duration(math.MaxInt64)
}

// header is what every manifest has.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// manifest is the part of a Broker or Trigger manifest the broker reads.
type manifest struct {
	header
	Spec struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"filter"`
		Subscriber *destinationSpec `json:"subscriber"`
		Delivery   *deliverySpec    `json:"delivery"`
	} `json:"spec"`
}

type destinationSpec struct {
	Ref *struct {
		Name string `json:"name"`
	} `json:"ref"`
	URI      string `json:"uri"`
	Audience string `json:"audience"`
}

type deliverySpec struct {
	Retry          *int             `json:"retry"`
	BackoffPolicy  string           `json:"backoffPolicy"`
	BackoffDelay   string           `json:"backoffDelay"`
	Timeout        string           `json:"timeout"`
	DeadLetterSink *destinationSpec `json:"deadLetterSink"`
}

const eventingGroup = "eventing.knative.dev/"

// LoadTriggers reads the Triggers of the manifests (*.yaml, *.yml, multi-document) in
// dir. When dir is a kustomization (kustomization.yaml), exactly the files and
// directories its resources list are read, as kustomize installs them; otherwise every
// manifest file of dir. Other kinds are skipped, except the Broker: there may be one,
// every Trigger must name it, and a Trigger without a delivery spec takes the Broker's,
// as in Knative. The Triggers come back sorted by name.
func LoadTriggers(dir string) ([]Trigger, error) {
	type loaded struct {
		Trigger
		broker   string
		delivery bool
	}
	var (
		triggers   []loaded
		brokerName string
		brokerFile string
		defaults   Delivery
	)
	err := eventingDocuments(dir, func(file string, h header, doc []byte) error {
		if h.Kind != "Broker" && h.Kind != "Trigger" {
			return nil
		}
		var m manifest
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return fmt.Errorf("%s: %s %q: %w", file, strings.ToLower(h.Kind), h.Metadata.Name, err)
		}
		switch m.Kind {
		case "Broker":
			if brokerName != "" {
				return fmt.Errorf("%s: broker %q: a second Broker (%q is in %s): the local broker stands for one", file, m.Metadata.Name, brokerName, brokerFile)
			}
			brokerName, brokerFile = m.Metadata.Name, file
			if m.Spec.Delivery != nil {
				var err error
				if defaults, err = delivery(m.Spec.Delivery); err != nil {
					return fmt.Errorf("%s: broker %q: %w", file, brokerName, err)
				}
			}
		case "Trigger":
			t, err := trigger(m)
			if err != nil {
				return fmt.Errorf("%s: trigger %q: %w", file, m.Metadata.Name, err)
			}
			t.File = file
			triggers = append(triggers, loaded{Trigger: t, broker: m.Spec.Broker, delivery: m.Spec.Delivery != nil})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Trigger, 0, len(triggers))
	seen := map[string]string{}
	for _, t := range triggers {
		if prev, ok := seen[t.Name]; ok {
			return nil, fmt.Errorf("%s: trigger %q: name already used in %s", t.File, t.Name, prev)
		}
		seen[t.Name] = t.File
		if brokerName != "" {
			if t.broker != brokerName {
				return nil, fmt.Errorf("%s: trigger %q: spec.broker is %q, but the Broker is %q", t.File, t.Name, t.broker, brokerName)
			}
			if !t.delivery {
				t.Delivery = defaults
			}
		}
		out = append(out, t.Trigger)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// eventingDocuments calls visit for each document of Knative Eventing's API group
// (eventing.knative.dev) in the manifests of dir (see manifestFiles), in order, with the
// file it is in, its header and its text; it stops at the first error.
func eventingDocuments(dir string, visit func(file string, h header, doc []byte) error) error {
	files, err := manifestFiles(dir)
	if err != nil {
		return err
	}
	for _, file := range files {
		docs, err := readDocuments(file)
		if err != nil {
			return err
		}
		for i, doc := range docs {
			var h header
			if err := yaml.Unmarshal(doc, &h); err != nil {
				return fmt.Errorf("%s: document %d: %w", file, i+1, err)
			}
			if !strings.HasPrefix(h.APIVersion, eventingGroup) {
				continue
			}
			if err := visit(file, h, doc); err != nil {
				return err
			}
		}
	}
	return nil
}

// kustomizationFiles are the names kustomize looks for in a directory.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// manifestFiles lists the manifests of dir: those its kustomization's resources name
// (recursively for directories), or every *.yaml and *.yml file.
func manifestFiles(dir string) ([]string, error) {
	for _, name := range kustomizationFiles {
		k := filepath.Join(dir, name)
		if _, err := os.Stat(k); err == nil {
			return kustomizationResources(dir, k)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var files []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(files)
	return files, nil
}

// kustomizationResources lists the manifest files the resources of kustomization file k
// (in dir) name: files as they are, directories through their own kustomization.
func kustomizationResources(dir, k string) ([]string, error) {
	b, err := os.ReadFile(k)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &kust); err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	var files []string
	for _, r := range kust.Resources {
		if strings.Contains(r, "://") || filepath.IsAbs(r) {
			return nil, fmt.Errorf("%s: resource %q: only relative paths are read", k, r)
		}
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %q: %w", k, r, err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		sub, err := manifestFiles(p)
		if err != nil {
			return nil, err
		}
		files = append(files, sub...)
	}
	return files, nil
}

// readDocuments splits a YAML stream on its "---" lines; documents with nothing but
// comments are left out.
func readDocuments(file string) ([][]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var (
		docs    [][]byte
		current bytes.Buffer
		content bool
	)
	flush := func() {
		if content {
			docs = append(docs, slices.Clone(current.Bytes()))
		}
		current.Reset()
		content = false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), len(b)+1)
	for sc.Scan() {
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") {
			flush()
			continue
		}
		if line == "..." {
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	flush()
	return docs, nil
}

// isDNSLabel reports whether s is a DNS-1123 label, as Kubernetes object names are.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// isAttributeName reports whether s is a valid CloudEvents attribute name.
func isAttributeName(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
}

func trigger(m manifest) (Trigger, error) {
	t := Trigger{Name: m.Metadata.Name, Filter: map[string]string{}}
	if !isDNSLabel(t.Name) {
		return t, fmt.Errorf("metadata.name is not a DNS-1123 label")
	}
	if m.Spec.Filter != nil {
		for k, v := range m.Spec.Filter.Attributes {
			if !isAttributeName(k) {
				return t, fmt.Errorf("filter attribute %q: CloudEvents attribute names are lower-case letters and digits", k)
			}
			t.Filter[k] = v
		}
	}
	if m.Spec.Subscriber == nil {
		return t, fmt.Errorf("no subscriber")
	}
	sub, err := destination(m.Spec.Subscriber)
	if err != nil {
		return t, fmt.Errorf("subscriber: %w", err)
	}
	t.Subscriber = sub
	if m.Spec.Delivery != nil {
		if t.Delivery, err = delivery(m.Spec.Delivery); err != nil {
			return t, err
		}
	}
	return t, nil
}

func destination(s *destinationSpec) (Destination, error) {
	d := Destination{URI: s.URI, Audience: s.Audience}
	if s.Ref != nil {
		if s.Ref.Name == "" {
			return d, fmt.Errorf("ref without a name")
		}
		d.Ref = s.Ref.Name
	}
	if d.Ref == "" && d.URI == "" {
		return d, fmt.Errorf("neither ref nor uri")
	}
	return d, nil
}

func delivery(s *deliverySpec) (Delivery, error) {
	var d Delivery
	if s.Retry != nil {
		if *s.Retry < 0 {
			return d, fmt.Errorf("delivery.retry %d is negative", *s.Retry)
		}
		d.Retry = *s.Retry
	}
	switch p := BackoffPolicy(s.BackoffPolicy); p {
	case "", BackoffLinear, BackoffExponential:
		d.BackoffPolicy = p
	default:
		return d, fmt.Errorf("delivery.backoffPolicy %q: want linear or exponential", s.BackoffPolicy)
	}
	var err error
	if s.BackoffDelay != "" {
		if d.BackoffDelay, err = ParseDuration(s.BackoffDelay); err != nil {
			return d, fmt.Errorf("delivery.backoffDelay: %w", err)
		}
	}
	if s.Timeout != "" {
		if d.Timeout, err = ParseDuration(s.Timeout); err != nil {
			return d, fmt.Errorf("delivery.timeout: %w", err)
		}
	}
	if s.DeadLetterSink != nil {
		dls, err := destination(s.DeadLetterSink)
		if err != nil {
			return d, fmt.Errorf("delivery.deadLetterSink: %w", err)
		}
		d.DeadLetterSink = &dls
	}
	return d, nil
}
