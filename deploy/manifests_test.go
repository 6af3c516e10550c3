package deploy

import (
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podguard/podguard/events"
)

// Names the manifests share.
const (
	configMapName   = "podguard-config"
	secretName      = "podguard-openstack"
	bankKeysSecret  = "podguard-bank-keys"
	brokerName      = "podguard"
	sinkLabel       = "podguard.dev/sink"
	visibilityLabel = "networking.knative.dev/visibility"
)

// TestOverlays renders each overlay and checks its structure offline: the functions'
// Services and images, their ServiceAccounts, settings and secrets, the routing objects
// and the Kubernetes permissions.
func TestOverlays(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		rbac   []grant
		target string // namespace of the Roles; "" for the cluster-wide install
	}{
		{clusterOverlay, clusterRBAC, ""},
		{namespacedOverlay, namespacedRBAC, targetNamespace},
	} {
		t.Run(filepath.Base(tc.dir), func(t *testing.T) {
			m := render(t, tc.dir)
			t.Logf("%s: %s", tc.dir, m.counts())
			checkNamespaces(t, m, tc.target)
			bound := checkRBAC(t, m, installNamespace, tc.target, tc.rbac)
			checkServices(t, m, bound, installNamespace)
			checkRouting(t, m)
			checkPolicies(t, m, installNamespace)
		})
	}
}

// checkNamespaces: one Namespace, podguard's; every namespaced object in it, except the
// Roles and RoleBindings of a namespace-scoped install, which are in the target.
func checkNamespaces(t *testing.T, m *manifests, target string) {
	nss := m.all("", "Namespace")
	if len(nss) != 1 || nss[0].Metadata.Name != installNamespace {
		t.Errorf("want exactly the Namespace %s, got %v", installNamespace, nss)
	}
	clusterScoped := []string{"Namespace", "ClusterRole", "ClusterRoleBinding"}
	for _, o := range m.objects {
		want := installNamespace
		switch {
		case slices.Contains(clusterScoped, o.Kind):
			want = ""
		case target != "" && (o.Kind == "Role" || o.Kind == "RoleBinding"):
			want = target
		}
		if o.Metadata.Namespace != want {
			t.Errorf("%s: in namespace %q, want %q", o, o.Metadata.Namespace, want)
		}
		if o.Metadata.Labels["app.kubernetes.io/part-of"] != "podguard" {
			t.Errorf("%s: no label app.kubernetes.io/part-of=podguard", o)
		}
	}
}

// checkServices checks the functions' Knative Services, installed in namespace ns. bound
// names the functions whose ServiceAccount has Kubernetes permissions.
func checkServices(t *testing.T, m *manifests, bound map[string]bool, ns string) {
	cm, ok := m.get("", "ConfigMap", ns, configMapName)
	if !ok {
		t.Fatalf("no ConfigMap %s", configMapName)
	}
	var config corev1.ConfigMap
	cm.decode(t, &config)
	if got := config.Data["POD_NAMESPACE"]; got != ns {
		t.Errorf("%s: POD_NAMESPACE %q, want the install's namespace %q, where the functions' Triggers are", configMapName, got, ns)
	}
	handlerTimeout := duration(t, config.Data, "HANDLER_TIMEOUT")
	if podWait := duration(t, config.Data, "POD_WAIT"); podWait >= handlerTimeout/2 {
		t.Errorf("POD_WAIT %s is not well below HANDLER_TIMEOUT %s", podWait, handlerTimeout)
	}
	secretDir := filepath.Dir(config.Data["OS_CLIENT_CONFIG_FILE"])
	keysDir := config.Data["BANK_KEYS_DIR"]
	if keysDir == "" {
		t.Errorf("%s: no BANK_KEYS_DIR", configMapName)
	}
	keyHolders := bankKeyHolders()
	// With identity on, every function a Trigger delivers to (all but the front door,
	// which takes callers' tokens) verifies each delivery's token.
	verifies := map[string]bool{}
	if config.Data["AUTHENTICATION_OIDC"] == "enabled" {
		for _, r := range events.Routes() {
			verifies[r.Function] = true
		}
	}

	var names []string
	for _, o := range m.all(servingGroup, "Service") {
		name := o.Metadata.Name
		names = append(names, name)
		var s knativeService
		o.decode(t, &s)
		spec := s.Spec.Template.Spec
		if s.Metadata.Labels[visibilityLabel] != "cluster-local" {
			t.Errorf("service %s: not cluster-local", name)
		}
		if s.Metadata.Labels["app.kubernetes.io/name"] != name {
			t.Errorf("service %s: label app.kubernetes.io/name is %q", name, s.Metadata.Labels["app.kubernetes.io/name"])
		}

		// Image: ko:// of the function's main package.
		if len(spec.Containers) != 1 {
			t.Fatalf("service %s: %d containers, want 1", name, len(spec.Containers))
		}
		c := spec.Containers[0]
		main, known := functionMains[name]
		if !known {
			t.Errorf("service %s: not a podguard function (%v)", name, keys(functionMains))
		} else if c.Image != "ko://"+modulePath+"/"+main {
			t.Errorf("service %s: image %s, want ko://%s/%s", name, c.Image, modulePath, main)
		}
		if _, hasMain := mainSource(t, main); known && !hasMain {
			t.Errorf("service %s: image %s: no main package in %s", name, c.Image, main)
		}
		// Every function sends into the Broker through K_SINK as itself: the events of its
		// own and its replies, which left in the HTTP response would enter the Broker as
		// the Trigger's identity, which no EventPolicy admits.
		if s.Metadata.Labels[sinkLabel] != "broker" {
			t.Errorf("service %s: label %s=%q, want broker: every function sends its events and replies to K_SINK", name, sinkLabel, s.Metadata.Labels[sinkLabel])
		}

		// Identity and permissions.
		if want := "podguard-" + name; spec.ServiceAccountName != want {
			t.Errorf("service %s: serviceAccountName %q, want %q", name, spec.ServiceAccountName, want)
		}
		sa, ok := m.get("", "ServiceAccount", installNamespace, spec.ServiceAccountName)
		if !ok {
			t.Errorf("service %s: ServiceAccount %s does not exist", name, spec.ServiceAccountName)
		} else {
			var acct corev1.ServiceAccount
			sa.decode(t, &acct)
			var needs []string
			if bound[name] {
				needs = append(needs, "calls the Kubernetes API with its permissions")
			}
			if verifies[name] {
				needs = append(needs, "verifies each delivery's token with the keys of the apiserver's OIDC discovery")
			}
			checkAPIToken(t, name, spec.PodSpec, c, acct, needs)
		}

		// Settings and credentials.
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != configMapName {
			t.Errorf("service %s: envFrom %+v, want the ConfigMap %s", name, c.EnvFrom, configMapName)
		}
		for _, e := range c.Env {
			if e.Name != sinkTokenEnv {
				t.Errorf("service %s: env %s set on the Service; settings belong in %s", name, e.Name, configMapName)
			}
		}
		checkBrokerToken(t, name, spec.PodSpec, c, ns)
		checkSecretMount(t, name, spec.PodSpec, c, secretDir)
		checkBankKeys(t, name, spec.PodSpec, c, keysDir, keyHolders[name])

		// Runtime contract.
		if spec.TimeoutSeconds == nil || time.Duration(*spec.TimeoutSeconds)*time.Second <= handlerTimeout {
			t.Errorf("service %s: timeoutSeconds %v must be above HANDLER_TIMEOUT %s", name, spec.TimeoutSeconds, handlerTimeout)
		}
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
			t.Errorf("service %s: readiness probe %+v, want GET /readyz", name, p)
		}
		if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
			t.Errorf("service %s: liveness probe %+v, want GET /healthz", name, p)
		}
		if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("service %s: securityContext %+v, want non-root, no privilege escalation, read-only root", name, sc)
		}
		if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("service %s: no memory request and limit", name)
		}
	}
	slices.Sort(names)
	if want := keys(functionMains); !slices.Equal(names, want) {
		t.Errorf("Knative Services %v, want one per function %v", names, want)
	}
	// Every function the event catalog names is deployed.
	for _, typ := range events.Catalog() {
		for _, fn := range append(slices.Clone(typ.Producers), typ.Consumers...) {
			if fn != events.User && fn != events.PingSource && !slices.Contains(names, fn) {
				t.Errorf("event %s names function %s, which has no Service", typ.Name, fn)
			}
		}
	}

	// K_SINK: the SinkBinding selects exactly the labelled Services, and points at the Broker.
	sbs := m.all(sourcesGroup, "SinkBinding")
	if len(sbs) != 1 {
		t.Fatalf("%d SinkBindings, want 1", len(sbs))
	}
	var sb sinkBinding
	sbs[0].decode(t, &sb)
	subj := sb.Spec.Subject
	if subj.APIVersion != servingGroup+"/v1" || subj.Kind != "Service" || subj.Name != "" || subj.Selector == nil {
		t.Errorf("SinkBinding subject %+v, want Knative Services by selector", subj)
	} else {
		sel, err := metav1.LabelSelectorAsSelector(subj.Selector)
		if err != nil {
			t.Fatalf("SinkBinding selector: %v", err)
		}
		for _, o := range m.all(servingGroup, "Service") {
			if got, want := sel.Matches(labels.Set(o.Metadata.Labels)), o.Metadata.Labels[sinkLabel] == "broker"; got != want {
				t.Errorf("SinkBinding selects service %s: %v, want %v", o.Metadata.Name, got, want)
			}
		}
	}
	if !sb.Spec.Sink.refersTo(eventingGroup+"/v1", "Broker", brokerName) {
		t.Errorf("SinkBinding sink %+v, want the Broker %s", sb.Spec.Sink.Ref, brokerName)
	}
}

// sinkTokenEnv names the file of a function's token for the Broker's ingress: the one
// variable a Service sets itself, since it names the Service's own mount.
const sinkTokenEnv = "K_SINK_TOKEN_FILE"

// brokerTokenSeconds is the lifetime asked for the functions' Broker tokens; the kubelet
// renews a projected token at 80% of it.
const brokerTokenSeconds = 3600

// checkBrokerToken: the function's token for the Broker's ingress is the pod's one
// projected ServiceAccount token, for the Broker's audience in namespace ns, an hour's,
// alone in its volume, mounted read-only where K_SINK_TOKEN_FILE points; not under the
// volume name or path the SinkBinding takes for a token of its own (it removes them as it
// binds).
func checkBrokerToken(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container, ns string) {
	want := events.BrokerAudience(ns)
	var vol *corev1.Volume
	var token *corev1.ServiceAccountTokenProjection
	for i, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			switch sat := src.ServiceAccountToken; {
			case sat == nil:
			case sat.Audience != want || vol != nil:
				t.Errorf("service %s: volume %s projects a token for audience %q: want exactly one, for the Broker's %q", name, v.Name, sat.Audience, want)
			default:
				vol, token = &pod.Volumes[i], sat
			}
		}
	}
	if vol == nil {
		t.Errorf("service %s: no projected ServiceAccount token for the Broker's audience %s", name, want)
		return
	}
	if len(vol.Projected.Sources) != 1 {
		t.Errorf("service %s: volume %s projects %d sources, want the token alone", name, vol.Name, len(vol.Projected.Sources))
	}
	if token.ExpirationSeconds == nil || *token.ExpirationSeconds != brokerTokenSeconds || token.Path == "" || strings.Contains(token.Path, "/") {
		t.Errorf("service %s: token %+v, want expirationSeconds %d and a file name", name, token, brokerTokenSeconds)
	}
	if vol.Name == "oidc-token" {
		t.Errorf("service %s: volume %s is the SinkBinding's name for its own token, which it removes", name, vol.Name)
	}
	var mount *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		if vm.Name == vol.Name {
			mount = &c.VolumeMounts[i]
		}
	}
	switch {
	case mount == nil:
		t.Errorf("service %s: the Broker token's volume %s is not mounted", name, vol.Name)
		return
	case !mount.ReadOnly || mount.SubPath != "" || mount.MountPath == "/oidc":
		t.Errorf("service %s: Broker token mounted %+v, want read-only, whole, elsewhere than the SinkBinding's /oidc", name, mount)
	}
	file := ""
	for _, e := range c.Env {
		if e.Name == sinkTokenEnv {
			file = e.Value
		}
	}
	if tokenFile := path.Join(mount.MountPath, token.Path); file != tokenFile {
		t.Errorf("service %s: %s=%q, want the Broker token's file %s", name, sinkTokenEnv, file, tokenFile)
	}
}

// serviceAccountDir is where Kubernetes mounts a pod's ServiceAccount token, the cluster's
// CA (kube-root-ca.crt) and the namespace, and where rest.InClusterConfig reads them.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// checkAPIToken: a function holds a token for the Kubernetes API exactly when it needs
// one, the token Kubernetes mounts by default (automountServiceAccountToken not false),
// and no token of its own in that place; needs says why, empty when the function never
// calls the API (then automountServiceAccountToken: false on the Service and its
// ServiceAccount). Besides the functions with Kubernetes permissions, each that
// verifies its deliveries needs it: it reads the issuer's keys from the apiserver's OIDC
// discovery and JWKS, which only authenticated service accounts may read
// (system:service-account-issuer-discovery, bound to system:serviceaccounts by
// default), and without the token and CA rest.InClusterConfig fails, so the function
// would not start. Those without permissions of their own get nothing more from it:
// checkRBAC proves no binding of podguard's names them (clusterRBAC, namespacedRBAC),
// and the Broker token beside it (checkBrokerToken) is for the Broker's audience alone.
func checkAPIToken(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container, acct corev1.ServiceAccount, needs []string) {
	mounted := true // Kubernetes' default; the pod's setting wins over its ServiceAccount's
	switch {
	case pod.AutomountServiceAccountToken != nil:
		mounted = *pod.AutomountServiceAccountToken
	case acct.AutomountServiceAccountToken != nil:
		mounted = *acct.AutomountServiceAccountToken
	}
	off := func(b *bool) bool { return b != nil && !*b }
	switch {
	case len(needs) == 0 && (!off(pod.AutomountServiceAccountToken) || !off(acct.AutomountServiceAccountToken)):
		t.Errorf("service %s: calls no Kubernetes API, so no token should be mounted (automountServiceAccountToken: false on the Service and the ServiceAccount)", name)
	case len(needs) > 0 && !mounted:
		t.Errorf("service %s: %s, but mounts no token for the Kubernetes API (automountServiceAccountToken: false): it would not start", name, strings.Join(needs, " and "))
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath == serviceAccountDir || strings.HasPrefix(m.MountPath, serviceAccountDir+"/") {
			t.Errorf("service %s: volume %s mounted at %s, in place of the ServiceAccount token Kubernetes mounts there", name, m.Name, m.MountPath)
		}
	}
}

// checkSecretMount: the clouds.yaml Secret is mounted read-only where OS_CLIENT_CONFIG_FILE
// points.
func checkSecretMount(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container, dir string) {
	var vol string
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			vol = v.Name
		}
	}
	if vol == "" {
		t.Errorf("service %s: no volume of the Secret %s", name, secretName)
		return
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name == vol {
			if vm.MountPath != dir || !vm.ReadOnly || vm.SubPath != "" {
				t.Errorf("service %s: %s mounted at %s (read-only %v), want read-only at %s", name, secretName, vm.MountPath, vm.ReadOnly, dir)
			}
			return
		}
	}
	t.Errorf("service %s: the Secret %s is not mounted", name, secretName)
}

// bankKeyHolders are the functions whose configuration reads the bank's keyring
// (BANK_KEYS_DIR): snapshot-metadata and recreate-pod, and none other.
func bankKeyHolders() map[string]bool {
	holders := map[string]bool{}
	for name, cfg := range configs() {
		for _, v := range envVars(reflect.TypeOf(cfg).Elem()) {
			if v.name == "BANK_KEYS_DIR" {
				holders[name] = true
			}
		}
	}
	return holders
}

// checkBankKeys: the functions that read the keyring mount the podguard-bank-keys Secret
// read-only where BANK_KEYS_DIR points; no other function mounts it.
func checkBankKeys(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container, dir string, holder bool) {
	var vol string
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == bankKeysSecret {
			vol = v.Name
		}
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		if vol != "" && vm.Name == vol {
			mounted = true
			if vm.MountPath != dir || !vm.ReadOnly || vm.SubPath != "" {
				t.Errorf("service %s: %s mounted at %s (read-only %v), want read-only at %s (BANK_KEYS_DIR)", name, bankKeysSecret, vm.MountPath, vm.ReadOnly, dir)
			}
		}
	}
	switch {
	case holder && !mounted:
		t.Errorf("service %s seals or opens saved definitions but does not mount the Secret %s", name, bankKeysSecret)
	case !holder && vol != "":
		t.Errorf("service %s holds no key of the bank, but has a volume of the Secret %s", name, bankKeysSecret)
	}
}

// checkRouting: the Broker, each Trigger's subscriber and dead-letter sink, and the
// PingSource name objects of the install; each Trigger is named events.TriggerName of
// the function it delivers to and its type, and every destination names the audience
// of the function behind it (events.FunctionAudience), which the broker's tokens are for.
func checkRouting(t *testing.T, m *manifests) {
	brokers := m.all(eventingGroup, "Broker")
	if len(brokers) != 1 || brokers[0].Metadata.Name != brokerName {
		t.Fatalf("want exactly the Broker %s, got %v", brokerName, brokers)
	}
	var b brokerObject
	brokers[0].decode(t, &b)
	if b.Spec.Delivery == nil || !b.Spec.Delivery.DeadLetterSink.refersTo(servingGroup+"/v1", "Service", deadLetters) {
		t.Errorf("Broker %s: the deadLetterSink is not the Service %s", brokerName, deadLetters)
	} else if got, want := b.Spec.Delivery.DeadLetterSink.Audience, events.FunctionAudience(deadLetters); got != want {
		t.Errorf("Broker %s: deadLetterSink audience %q, want %q", brokerName, got, want)
	}
	services := map[string]bool{}
	for _, o := range m.all(servingGroup, "Service") {
		services[o.Metadata.Name] = true
	}
	subscribed := map[string]bool{deadLetters: true}
	for _, o := range m.all(eventingGroup, "Trigger") {
		var tr trigger
		o.decode(t, &tr)
		name := tr.Metadata.Name
		if tr.Spec.Broker != brokerName {
			t.Errorf("trigger %s: broker %q, want %s", name, tr.Spec.Broker, brokerName)
		}
		sub := tr.Spec.Subscriber
		if sub.Ref == nil || !sub.refersTo(servingGroup+"/v1", "Service", sub.Ref.Name) || !services[sub.Ref.Name] {
			t.Errorf("trigger %s: subscriber %+v is not one of the Services", name, sub.Ref)
		} else {
			subscribed[sub.Ref.Name] = true
			checkTriggerIdentity(t, tr, sub.Ref.Name)
		}
		// A Trigger without a delivery spec takes the Broker's; the dead-letters
		// function's own Triggers need not dead-letter to it.
		d := b.Spec.Delivery
		if tr.Spec.Delivery != nil {
			d = tr.Spec.Delivery
		}
		toSelf := sub.Ref != nil && sub.Ref.Name == deadLetters
		if (d == nil || d.DeadLetterSink == nil) && !toSelf {
			t.Errorf("trigger %s: no deadLetterSink", name)
		} else if d != nil && d.DeadLetterSink != nil && !d.DeadLetterSink.refersTo(servingGroup+"/v1", "Service", deadLetters) {
			t.Errorf("trigger %s: deadLetterSink %+v, want the Service %s", name, d.DeadLetterSink.Ref, deadLetters)
		} else if d != nil && d.DeadLetterSink != nil && d.DeadLetterSink.Audience != events.FunctionAudience(deadLetters) {
			t.Errorf("trigger %s: deadLetterSink audience %q, want %q", name, d.DeadLetterSink.Audience, events.FunctionAudience(deadLetters))
		}
	}
	for s := range services {
		if !subscribed[s] && s != events.FnFrontDoor { // people send to the front door directly
			t.Errorf("service %s: no Trigger delivers to it", s)
		}
	}
	pings := m.all(sourcesGroup, "PingSource")
	if len(pings) != 1 {
		t.Fatalf("%d PingSources, want the tick", len(pings))
	}
	var p pingSource
	pings[0].decode(t, &p)
	if !p.Spec.Sink.refersTo(eventingGroup+"/v1", "Broker", brokerName) {
		t.Errorf("PingSource %s: sink %+v, want the Broker %s", pings[0].Metadata.Name, p.Spec.Sink.Ref, brokerName)
	}
}

// checkTriggerIdentity: Trigger tr delivers to function fn under the name
// events.TriggerName(fn, its type), which starts with fn (how the local-eventing overlay
// finds the Triggers of a function), and names fn's audience for its subscriber: the
// audience of the token it delivers with, the one fn accepts.
func checkTriggerIdentity(t *testing.T, tr trigger, fn string) {
	t.Helper()
	name := tr.Metadata.Name
	typ := ""
	if tr.Spec.Filter != nil {
		typ = tr.Spec.Filter.Attributes["type"]
	}
	if want := events.TriggerName(fn, typ); name != want {
		t.Errorf("trigger %s: delivers %s to %s, so its name must be %s (events.TriggerName): the functions accept it from that Trigger's identity only", name, typ, fn, want)
	}
	if prefixed := functionOf(name); prefixed != fn {
		t.Errorf("trigger %s: its name starts with function %q, but it delivers to %s", name, prefixed, fn)
	}
	if got, want := tr.Spec.Subscriber.Audience, events.FunctionAudience(fn); got != want {
		t.Errorf("trigger %s: subscriber audience %q, want %q", name, got, want)
	}
}

// functionOf is the function a Trigger's name starts with (the longest that does), or "".
func functionOf(trigger string) string {
	best := ""
	for fn := range functionMains {
		if strings.HasPrefix(trigger, fn+"-") && len(fn) > len(best) {
			best = fn
		}
	}
	return best
}

// mainSource returns the Go source of a main package directory, if it has one.
func mainSource(t *testing.T, dir string) (string, bool) {
	files, err := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	isMain := false
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^package main\s*$`).Match(b) {
			isMain = true
		}
		src.Write(b)
	}
	return src.String(), isMain
}

func duration(t *testing.T, data map[string]string, key string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(data[key])
	if err != nil {
		t.Fatalf("%s %s=%q: %v", configMapName, key, data[key], err)
	}
	return d
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// --- RBAC ------------------------------------------------------------------------------

// grant is what one function may do: verbs on a core resource, cluster-wide or in the
// target namespace (for namespaces: on the target namespace object itself).
type grant struct {
	fn       string
	resource string
	scope    string // "cluster" or "target"
	verbs    string // sorted, comma-separated
}

// clusterRBAC is the cluster-wide install's matrix: exactly what each function's client
// calls (shared/kube for list-pods and snapshot-metadata, functions/recreatepod). The
// functions it does not name have no binding: their API token, mounted to verify
// deliveries (checkAPIToken), reads only what Kubernetes lets every service account
// read, the issuer's discovery and keys among it.
var clusterRBAC = []grant{
	{events.FnFrontDoor, "subjectaccessreviews", "cluster", "create"},
	{events.FnFrontDoor, "tokenreviews", "cluster", "create"},
	{events.FnListPods, "configmaps", "cluster", "get,list"},
	{events.FnListPods, "persistentvolumeclaims", "cluster", "get,list"},
	{events.FnListPods, "persistentvolumes", "cluster", "get,list"},
	{events.FnListPods, "pods", "cluster", "get,list"},
	{events.FnListPods, "secrets", "cluster", "get,list"},
	{events.FnListPods, "serviceaccounts", "cluster", "get,list"},
	{events.FnRecreatePod, "configmaps", "cluster", "create,get"},
	{events.FnRecreatePod, "namespaces", "cluster", "create,get"},
	{events.FnRecreatePod, "persistentvolumeclaims", "cluster", "create,get,watch"},
	{events.FnRecreatePod, "persistentvolumes", "cluster", "create,get,watch"},
	{events.FnRecreatePod, "pods", "cluster", "create,get,list,watch"},
	{events.FnRecreatePod, "secrets", "cluster", "create,get"},
	{events.FnRecreatePod, "serviceaccounts", "cluster", "create,get"},
	{events.FnSnapshotMetadata, "configmaps", "cluster", "get"},
	{events.FnSnapshotMetadata, "persistentvolumeclaims", "cluster", "get"},
	{events.FnSnapshotMetadata, "persistentvolumes", "cluster", "get"},
	{events.FnSnapshotMetadata, "pods", "cluster", "get"},
	{events.FnSnapshotMetadata, "secrets", "cluster", "get"},
	{events.FnSnapshotMetadata, "serviceaccounts", "cluster", "get"},
}

// namespacedRBAC is the namespace-scoped install's: the same, in the target namespace,
// except persistentvolumes (cluster-scoped by nature); recreate-pod may read the target
// namespace object and create no namespace.
var namespacedRBAC = []grant{
	{events.FnFrontDoor, "subjectaccessreviews", "cluster", "create"},
	{events.FnFrontDoor, "tokenreviews", "cluster", "create"},
	{events.FnListPods, "configmaps", "target", "get,list"},
	{events.FnListPods, "persistentvolumeclaims", "target", "get,list"},
	{events.FnListPods, "persistentvolumes", "cluster", "get,list"},
	{events.FnListPods, "pods", "target", "get,list"},
	{events.FnListPods, "secrets", "target", "get,list"},
	{events.FnListPods, "serviceaccounts", "target", "get,list"},
	{events.FnRecreatePod, "configmaps", "target", "create,get"},
	{events.FnRecreatePod, "namespaces", "target", "get"},
	{events.FnRecreatePod, "persistentvolumeclaims", "target", "create,get,watch"},
	{events.FnRecreatePod, "persistentvolumes", "cluster", "create,get,watch"},
	{events.FnRecreatePod, "pods", "target", "create,get,list,watch"},
	{events.FnRecreatePod, "secrets", "target", "create,get"},
	{events.FnRecreatePod, "serviceaccounts", "target", "create,get"},
	{events.FnSnapshotMetadata, "configmaps", "target", "get"},
	{events.FnSnapshotMetadata, "persistentvolumeclaims", "target", "get"},
	{events.FnSnapshotMetadata, "persistentvolumes", "cluster", "get"},
	{events.FnSnapshotMetadata, "pods", "target", "get"},
	{events.FnSnapshotMetadata, "secrets", "target", "get"},
	{events.FnSnapshotMetadata, "serviceaccounts", "target", "get"},
}

// checkRBAC computes what each ServiceAccount may do from the roles and bindings, and
// compares it with want. It returns the functions that have any permission.
func checkRBAC(t *testing.T, m *manifests, ns, target string, want []grant) map[string]bool {
	roles := map[string][]rbacv1.PolicyRule{} // "Kind namespace/name"
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, o := range m.all(rbacGroup, kind) {
			var r rbacv1.Role // a ClusterRole's rules decode the same
			o.decode(t, &r)
			if peoplesRole(r.Rules) {
				for _, rule := range r.Rules {
					checkPeoplesRule(t, o.String(), rule)
				}
				continue // granted to people, never to podguard's ServiceAccounts
			}
			roles[kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name] = r.Rules
			for _, rule := range r.Rules {
				checkRule(t, o.String(), rule)
			}
		}
	}
	// Kubernetes' own role for delegating authentication and authorization, as the
	// apiserver defines it; only the front door is bound to it.
	roles["ClusterRole /"+authDelegator] = []rbacv1.PolicyRule{
		{Verbs: []string{"create"}, APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}},
		{Verbs: []string{"create"}, APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}},
	}
	verbs := map[[3]string]map[string]bool{} // fn, resource, scope -> verbs
	bound := map[string]bool{}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range m.all(rbacGroup, kind) {
			var b rbacv1.RoleBinding
			o.decode(t, &b)
			roleNS := ""
			if b.RoleRef.Kind == "Role" {
				roleNS = o.Metadata.Namespace
			}
			rules, ok := roles[b.RoleRef.Kind+" "+roleNS+"/"+b.RoleRef.Name]
			if !ok {
				t.Errorf("%s: roleRef %s %s does not exist", o, b.RoleRef.Kind, b.RoleRef.Name)
				continue
			}
			scope := "cluster"
			if kind == "RoleBinding" {
				scope = "target"
				if o.Metadata.Namespace != target {
					t.Errorf("%s: binds in namespace %q, want the target %q", o, o.Metadata.Namespace, target)
				}
			}
			for _, s := range b.Subjects {
				fn, ok := strings.CutPrefix(s.Name, "podguard-")
				if s.Kind != "ServiceAccount" || s.Namespace != ns || !ok {
					t.Errorf("%s: subject %+v is not a podguard ServiceAccount in %s", o, s, ns)
					continue
				}
				if _, ok := m.get("", "ServiceAccount", ns, s.Name); !ok {
					t.Errorf("%s: ServiceAccount %s/%s does not exist", o, ns, s.Name)
				}
				bound[fn] = true
				for _, rule := range rules {
					for _, res := range rule.Resources {
						k := [3]string{fn, res, scope}
						if verbs[k] == nil {
							verbs[k] = map[string]bool{}
						}
						for _, v := range rule.Verbs {
							verbs[k][v] = true
						}
					}
				}
			}
		}
	}
	var got []grant
	for k, vs := range verbs {
		got = append(got, grant{k[0], k[1], k[2], strings.Join(keys(vs), ",")})
	}
	cmp := func(a, b grant) int { return strings.Compare(a.fn+a.resource+a.scope, b.fn+b.resource+b.scope) }
	slices.SortFunc(got, cmp)
	want = slices.Clone(want)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Errorf("RBAC matrix:\n got %v\nwant %v", got, want)
	}
	for _, g := range got {
		if g.fn == events.FnFrontDoor && (g.resource == "tokenreviews" || g.resource == "subjectaccessreviews") {
			continue // a review creates nothing
		}
		if strings.Contains(","+g.verbs+",", ",create,") && g.fn != events.FnRecreatePod {
			t.Errorf("%s may create %s: only recreate-pod creates objects", g.fn, g.resource)
		}
	}
	for _, g := range got {
		t.Logf("rbac %-18s %-22s %-7s %s", g.fn, g.resource, g.scope, g.verbs)
	}
	return bound
}

const authDelegator = "system:auth-delegator"

// peoplesRole reports whether rules are of a role people are granted podguard with:
// rules on podguard.dev (deploy/roles).
func peoplesRole(rules []rbacv1.PolicyRule) bool {
	return len(rules) > 0 && slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.APIGroups, "podguard.dev") })
}

// checkPeoplesRule: podguard.dev only, its resources and verbs, no wildcards.
func checkPeoplesRule(t *testing.T, role string, r rbacv1.PolicyRule) {
	if !slices.Equal(r.APIGroups, []string{"podguard.dev"}) || len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
		t.Errorf("%s: rule %+v: a role of people's grants podguard.dev only", role, r)
	}
	for _, res := range r.Resources {
		if !slices.Contains([]string{"checkpoints", "restores", "schedules", "protectables", "providers", "deadletters", "deadletters/replay"}, res) {
			t.Errorf("%s: resource %q is not one of podguard's", role, res)
		}
	}
	for _, v := range r.Verbs {
		if !slices.Contains([]string{"get", "list", "create", "update", "delete"}, v) {
			t.Errorf("%s: verb %q is not one the front door checks", role, v)
		}
	}
}

// checkRule: no wildcards, core resources only, nothing beyond reading and creating.
// Secrets are among them: a checkpoint holds the Secrets its pods reference, and a
// restore creates them before the pods; the matrix (clusterRBAC, namespacedRBAC) says
// which functions.
func checkRule(t *testing.T, role string, r rbacv1.PolicyRule) {
	all := append(append(append(slices.Clone(r.Verbs), r.Resources...), r.APIGroups...), r.NonResourceURLs...)
	for _, s := range all {
		if strings.Contains(s, "*") {
			t.Errorf("%s: wildcard %q in %+v", role, s, r)
		}
	}
	if !slices.Equal(r.APIGroups, []string{""}) || len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
		t.Errorf("%s: rule %+v: want core resources, without resourceNames or URLs", role, r)
	}
	for _, res := range r.Resources {
		if !slices.Contains([]string{"pods", "persistentvolumeclaims", "persistentvolumes", "namespaces", "configmaps", "secrets", "serviceaccounts"}, res) {
			t.Errorf("%s: resource %q: podguard reads pods, claims, volumes, namespaces and the ConfigMaps, Secrets and ServiceAccounts pods reference only", role, res)
		}
	}
	for _, v := range r.Verbs {
		if !slices.Contains([]string{"get", "list", "watch", "create"}, v) {
			t.Errorf("%s: verb %q: podguard never changes or deletes objects", role, v)
		}
	}
}
