package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// Names of what the fidelity pod references in its namespace.
const (
	fidelityConfig  = "fidelity-config"  // a volume, a projected source, env configMapKeyRef
	fidelityEnv     = "fidelity-env"     // envFrom
	fidelitySecret  = "fidelity-secret"  // a volume, a projected source, env secretKeyRef, envFrom
	fidelityPull    = "fidelity-pull"    // imagePullSecrets
	fidelityAccount = "fidelity-sa"      // serviceAccountName
	fidelityPodName = "app"              // the pod; its claims are app-data (CSI) and app-data1 (in-tree)
	tokenVolume     = "kube-api-access-" // the API server's service-account volume, with a random suffix
)

// TestRestoreFidelity (issue 16, "Fidelity"): a pod using every field the issue lists,
// on one CSI and one in-tree Cinder claim, is protected and restored into a new
// namespace. The restored pod's spec, as the API server returns it, equals the
// original's field by field, except the differences of fidelityAllowed; its labels and
// annotations are the original's plus podguard's marks; its claims are bound to restored
// volumes of the original's kind.
func TestRestoreFidelity(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "fidelity")
	ctx := context.Background()
	start := time.Now()
	class := e.priorityClass("podguard-fidelity-" + ns)
	e.fidelityObjects(ns)
	vs := []*volumes.Volume{e.cinderVolume(ns+"-csi", nil), e.cinderVolume(ns+"-intree", nil)}
	e.podWith(ns, fidelityPodName, vs, []bool{true, false}, func(p *corev1.Pod) { fidelityPod(p, class) })
	orig, err := e.kube.CoreV1().Pods(ns).Get(ctx, fidelityPodName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The comparison means something only if the API server kept every field set.
	if missing := missingFields(orig.Spec); len(missing) > 0 {
		t.Fatalf("the original pod, as the API server returns it, lacks %v", missing)
	}

	cp, _ := e.protect(ns)
	target := ns + "-restored" // created by the restore
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 5*time.Minute); res.Status != events.RestoreSuccess || len(res.Failed) != 0 {
		t.Fatalf("restore finished %+v", res)
	}
	pods := e.restoredPods(target, rid)
	if len(pods) != 1 {
		t.Fatalf("restored pods %v", slices.Collect(maps.Keys(pods)))
	}
	var got *corev1.Pod
	for name := range pods {
		if got, err = e.kube.CoreV1().Pods(target).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got.Status.Phase != corev1.PodRunning {
		t.Errorf("restored pod %s/%s is %s", target, got.Name, got.Status.Phase)
	}
	t.Logf("pod %s/%s restored as %s/%s, %s since the test began", ns, orig.Name, target, got.Name, time.Since(start).Round(100*time.Millisecond))

	e.compareClaims(ns, target, rid, orig, got)
	compareMeta(t, orig, got, rid)
	o, r := orig.Spec.DeepCopy(), got.Spec.DeepCopy()
	for _, a := range fidelityAllowed {
		seen, err := a.apply(o, r)
		if err != nil {
			t.Errorf("allowed difference %s: %v", a.field, err)
		}
		t.Logf("allowed difference %s: %s", a.field, seen)
	}
	diffs := specDiff(t, *o, *r)
	for _, d := range diffs {
		t.Errorf("restored spec differs: %s", d)
	}
	if len(diffs) == 0 {
		t.Logf("restored spec equals the original's in every field, the allowed differences above aside")
	}
	// The comparison sees a change deep in the spec, and only it.
	r.Containers[1].Env[1].ValueFrom.SecretKeyRef.Key = "other"
	if d := specDiff(t, *o, *r); len(d) != len(diffs)+1 || !slices.ContainsFunc(d, func(s string) bool {
		return strings.HasPrefix(s, "spec.containers[1].env[1].valueFrom.secretKeyRef.key: ")
	}) {
		t.Errorf("a changed secretKeyRef is seen as %v", d)
	}
}

// fidelityAllowed are the differences between the original pod's spec and the restored
// pod's that issue 16 allows: "the names you chose, claim references, and server-set
// fields". Each apply checks that the restored side is what it should be, then makes the
// two alike in that one respect, and says what the two had; everything else is
// compared. (The pod's name and namespace are the names the restore chose; metadata is
// compared by compareMeta.)
var fidelityAllowed = []struct {
	field string
	apply func(orig, restored *corev1.PodSpec) (seen string, err error)
}{
	{
		// Server-set: the scheduler binds each pod to a node. The restore leaves the saved
		// node out (kube.SavedPod) so that the restored pod is scheduled; the stack has one
		// node, so both are on it.
		field: "spec.nodeName",
		apply: func(orig, restored *corev1.PodSpec) (string, error) {
			seen := fmt.Sprintf("original on %q, restored on %q", orig.NodeName, restored.NodeName)
			if restored.NodeName != stacktest.KwokNode {
				return seen, fmt.Errorf("restored pod bound to %q, want %s", restored.NodeName, stacktest.KwokNode)
			}
			orig.NodeName, restored.NodeName = "", ""
			return seen, nil
		},
	},
	{
		// Claim references: the restore names the claims it creates (kube.RestoredPod: the
		// original's name in another namespace, suffixed with the restore's id in the
		// original one). That they are the restored claims, bound to restored volumes of
		// the original's kind, is checked by compareClaims.
		field: "spec.volumes[].persistentVolumeClaim.claimName",
		apply: func(orig, restored *corev1.PodSpec) (string, error) {
			var seen []string
			for _, v := range orig.Volumes {
				if v.PersistentVolumeClaim == nil {
					continue
				}
				rv := volumeNamed(restored, v.Name)
				if rv == nil || rv.PersistentVolumeClaim == nil {
					return strings.Join(seen, ", "), fmt.Errorf("restored pod has no claim volume %s", v.Name)
				}
				seen = append(seen, fmt.Sprintf("volume %s: claim %s, restored %s", v.Name, v.PersistentVolumeClaim.ClaimName, rv.PersistentVolumeClaim.ClaimName))
				rv.PersistentVolumeClaim.ClaimName = v.PersistentVolumeClaim.ClaimName
			}
			return strings.Join(seen, ", "), nil
		},
	},
	{
		// Server-set: the API server's ServiceAccount admission injects into every pod a
		// projected volume kube-api-access-<random> (token, root CA, namespace) and its
		// mounts. The restore leaves the saved one out (kube.SavedPod) and the API server
		// injects a new one into the restored pod: only the name's suffix differs; its
		// sources and mounts are compared.
		field: "spec.volumes[kube-api-access-*] and its volumeMounts: the name",
		apply: func(orig, restored *corev1.PodSpec) (string, error) {
			var seen []string
			for _, s := range []*corev1.PodSpec{orig, restored} {
				var names []string
				for i := range s.Volumes {
					if strings.HasPrefix(s.Volumes[i].Name, tokenVolume) {
						names = append(names, s.Volumes[i].Name)
						s.Volumes[i].Name = tokenVolume
					}
				}
				seen = append(seen, strings.Join(names, "+"))
				if len(names) != 1 {
					return "", fmt.Errorf("service-account volumes %v, want one", names)
				}
				for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
					for i := range cs {
						for j := range cs[i].VolumeMounts {
							if cs[i].VolumeMounts[j].Name == names[0] {
								cs[i].VolumeMounts[j].Name = tokenVolume
							}
						}
					}
				}
			}
			return fmt.Sprintf("original %s, restored %s", seen[0], seen[1]), nil
		},
	},
}

func volumeNamed(s *corev1.PodSpec, name string) *corev1.Volume {
	for i := range s.Volumes {
		if s.Volumes[i].Name == name {
			return &s.Volumes[i]
		}
	}
	return nil
}

// compareMeta checks that the restored pod has every label and annotation of the
// original with the same value, and besides them only podguard's marks: the restore's
// label and the annotation naming the original.
func compareMeta(t *testing.T, orig, got *corev1.Pod, rid string) {
	t.Helper()
	marks := map[string]map[string]string{
		"label":      {kube.LabelRestore: rid},
		"annotation": {kube.AnnotationRestoredFrom: orig.Namespace + "/" + orig.Name},
	}
	for _, m := range []struct {
		kind      string
		orig, got map[string]string
	}{
		{"label", orig.Labels, got.Labels},
		{"annotation", orig.Annotations, got.Annotations},
	} {
		for k, v := range m.orig {
			if g, ok := m.got[k]; !ok || g != v {
				t.Errorf("%s %s of the original, %q, is %q on the restored pod (present: %v)", m.kind, k, v, g, ok)
			}
		}
		for k, v := range m.got {
			if _, ok := m.orig[k]; ok {
				continue
			}
			if want, mark := marks[m.kind][k]; !mark || v != want {
				t.Errorf("restored pod has %s %s=%q, which the original has not", m.kind, k, v)
			}
		}
		if len(m.orig) == 0 {
			t.Errorf("the original pod has no %ss to compare", m.kind)
		}
	}
}

// compareClaims checks that each claim volume of the restored pod is a claim of the
// restore, bound to a persistent volume on a restored Cinder volume (not the original's)
// of the original's kind: CSI for a CSI original, in-tree for an in-tree one.
func (e *env) compareClaims(ns, target, rid string, orig, got *corev1.Pod) {
	e.t.Helper()
	ctx := context.Background()
	source := func(ns, claim string) (kind, volumeID string) {
		e.t.Helper()
		stacktest.WaitClaimBound(e.t, e.kube, ns, claim, time.Minute)
		c, err := e.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if ns == target && (c.Labels[kube.LabelRestore] != rid || pv.Labels[kube.LabelRestore] != rid) {
			e.t.Errorf("claim %s/%s or its volume %s was not created by restore %s", ns, claim, pv.Name, rid)
		}
		switch s := pv.Spec.PersistentVolumeSource; {
		case s.CSI != nil:
			return "csi " + s.CSI.Driver, s.CSI.VolumeHandle
		case s.Cinder != nil:
			return "in-tree cinder", s.Cinder.VolumeID
		}
		return "other", ""
	}
	kinds := map[string]bool{}
	for _, v := range orig.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		rv := volumeNamed(&got.Spec, v.Name)
		if rv == nil || rv.PersistentVolumeClaim == nil {
			e.t.Errorf("restored pod has no claim volume %s", v.Name)
			continue
		}
		wantKind, origID := source(ns, v.PersistentVolumeClaim.ClaimName)
		kind, id := source(target, rv.PersistentVolumeClaim.ClaimName)
		if kind != wantKind || id == "" || id == origID {
			e.t.Errorf("volume %s: claim %s on %s volume %s, restored as claim %s on %s volume %s",
				v.Name, v.PersistentVolumeClaim.ClaimName, wantKind, origID, rv.PersistentVolumeClaim.ClaimName, kind, id)
		}
		kinds[kind] = true
		e.t.Logf("volume %s: %s claim %s/%s restored as %s/%s on Cinder volume %s", v.Name, kind, ns, v.PersistentVolumeClaim.ClaimName, target, rv.PersistentVolumeClaim.ClaimName, id)
	}
	if len(kinds) != 2 {
		e.t.Errorf("claims of kinds %v, want one CSI and one in-tree", slices.Collect(maps.Keys(kinds)))
	}
}

// specDiff compares two pod specs field by field, as the API server's JSON has them, and
// returns each difference with its path.
func specDiff(t *testing.T, orig, restored corev1.PodSpec) []string {
	t.Helper()
	var out []string
	diffJSON("spec", asJSON(t, orig), asJSON(t, restored), &out)
	return out
}

func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffJSON appends to out every path where a and b, decoded JSON, differ.
func diffJSON(path string, a, b any, out *[]string) {
	am, aMap := a.(map[string]any)
	bm, bMap := b.(map[string]any)
	if aMap && bMap {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			diffJSON(path+"."+k, am[k], bm[k], out)
		}
		return
	}
	as, aList := a.([]any)
	bs, bList := b.([]any)
	if aList && bList && len(as) == len(bs) {
		for i := range as {
			diffJSON(fmt.Sprintf("%s[%d]", path, i), as[i], bs[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		*out = append(*out, fmt.Sprintf("%s: original %s, restored %s", path, ja, jb))
	}
}

// fidelityFields are the fields, named as in the API's JSON, that the fidelity pod uses
// somewhere in its spec: the list (containers and init containers, env with
// valueFrom, volumes of many kinds, security context, resources, tolerations, affinity,
// topology spread, priority class), and more.
var fidelityFields = []string{
	"initContainers", "containers", "command", "args", "workingDir", "ports", "env", "valueFrom",
	"configMapKeyRef", "secretKeyRef", "fieldRef", "resourceFieldRef", "envFrom", "prefix",
	"volumeMounts", "subPath", "subPathExpr", "readOnly", "mountPropagation",
	"persistentVolumeClaim", "configMap", "secret", "projected", "serviceAccountToken", "downwardAPI",
	"emptyDir", "sizeLimit", "hostPath", "items", "defaultMode",
	"securityContext", "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy",
	"supplementalGroups", "sysctls", "seccompProfile", "appArmorProfile", "capabilities",
	"readOnlyRootFilesystem", "allowPrivilegeEscalation",
	"resources", "requests", "limits", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
	"terminationMessagePolicy", "imagePullPolicy",
	"tolerations", "tolerationSeconds", "nodeSelector", "affinity", "nodeAffinity", "podAffinity", "podAntiAffinity",
	"topologySpreadConstraints", "matchLabelKeys", "mismatchLabelKeys", "minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy",
	"priorityClassName", "priority", "preemptionPolicy", "serviceAccountName", "imagePullSecrets",
	"dnsPolicy", "dnsConfig", "hostAliases", "hostname", "subdomain", "terminationGracePeriodSeconds",
	"enableServiceLinks", "shareProcessNamespace", "os",
}

// missingFields lists the fields of fidelityFields that spec does not use.
func missingFields(spec corev1.PodSpec) []string {
	b, _ := json.Marshal(spec)
	var v any
	_ = json.Unmarshal(b, &v)
	seen := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				seen[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	var out []string
	for _, f := range fidelityFields {
		if !seen[f] {
			out = append(out, f)
		}
	}
	return out
}

// priorityClass creates a PriorityClass, deleted when the test ends.
func (e *env) priorityClass(name string) string {
	e.t.Helper()
	never := corev1.PreemptNever
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: 1000, PreemptionPolicy: &never,
		Description: "podguard's fidelity test"}
	if _, err := e.kube.SchedulingV1().PriorityClasses().Create(context.Background(), pc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = e.kube.SchedulingV1().PriorityClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// fidelityObjects creates the ConfigMaps, Secrets and ServiceAccount the fidelity pod
// references in ns (which goes with them when the test ends).
func (e *env) fidelityObjects(ns string) {
	e.t.Helper()
	ctx := context.Background()
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": fidelityPodName}}
	}
	api := e.kube.CoreV1()
	for _, err := range []error{
		create(ctx, api.ConfigMaps(ns).Create, &corev1.ConfigMap{ObjectMeta: meta(fidelityConfig),
			Data: map[string]string{"mode": "strict", "greeting": "hello from " + ns, "app.properties": "retries=3\n"}}),
		create(ctx, api.ConfigMaps(ns).Create, &corev1.ConfigMap{ObjectMeta: meta(fidelityEnv),
			Data: map[string]string{"LOG_LEVEL": "debug", "FEATURE_X": "on"}}),
		create(ctx, api.Secrets(ns).Create, &corev1.Secret{ObjectMeta: meta(fidelitySecret), Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"password": []byte("s3cret of " + ns), "token": []byte("t0ken of " + ns)}}),
		create(ctx, api.Secrets(ns).Create, &corev1.Secret{ObjectMeta: meta(fidelityPull), Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}`)}}),
		create(ctx, api.ServiceAccounts(ns).Create, &corev1.ServiceAccount{ObjectMeta: meta(fidelityAccount)}),
	} {
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func create[T any](ctx context.Context, fn func(context.Context, T, metav1.CreateOptions) (T, error), obj T) error {
	_, err := fn(ctx, obj, metav1.CreateOptions{})
	return err
}

func ref[T any](v T) *T { return &v }

// fidelityPod makes the pod of podWith (container app mounting the claims app-data and
// app-data1) one that uses every field issue 16 lists, running as fidelity-sa with
// priority class class. The scheduler places it (no nodeName): on the kwok node, which
// its node affinity and node selector name, and whose taint kwok's toleration tolerates.
func fidelityPod(p *corev1.Pod, class string) {
	p.Labels["tier"] = "backend"
	p.Labels["example.com/team"] = "storage"
	p.Annotations = map[string]string{
		"example.com/owner":  "podguard e2e",
		"example.com/config": `{"retries":3,"mode":"strict"}`,
	}
	s := &p.Spec
	s.NodeName = ""
	s.NodeSelector = map[string]string{"type": "kwok"}
	s.ServiceAccountName = fidelityAccount
	s.ImagePullSecrets = []corev1.LocalObjectReference{{Name: fidelityPull}}
	s.PriorityClassName = class
	s.TerminationGracePeriodSeconds = ref(int64(17))
	s.RestartPolicy = corev1.RestartPolicyAlways
	s.DNSPolicy = corev1.DNSNone
	s.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.96.0.10"}, Searches: []string{"fidelity.svc.cluster.local"},
		Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ref("2")}, {Name: "edns0"}}}
	s.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"db.internal", "db"}}}
	s.Hostname, s.Subdomain = "app-0", "fidelity"
	s.EnableServiceLinks = ref(false)
	s.ShareProcessNamespace = ref(true)
	s.OS = &corev1.PodOS{Name: corev1.Linux}
	s.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: ref(int64(1000)), RunAsGroup: ref(int64(3000)), RunAsNonRoot: ref(true),
		FSGroup: ref(int64(2000)), FSGroupChangePolicy: ref(corev1.FSGroupChangeOnRootMismatch),
		SupplementalGroups: []int64{4000, 5000},
		Sysctls:            []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}},
		SeccompProfile:     &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	s.Tolerations = append(s.Tolerations,
		corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "storage", Effect: corev1.TaintEffectNoSchedule},
		corev1.Toleration{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ref(int64(120))})
	hostname := "kubernetes.io/hostname"
	s.Affinity = &corev1.Affinity{
		NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: hostname, Operator: corev1.NodeSelectorOpIn, Values: []string{stacktest.KwokNode}}},
			}}},
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 10, Preference: corev1.NodeSelectorTerm{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}}},
			}}},
		},
		PodAffinity: &corev1.PodAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 20, PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "cache"}}, TopologyKey: hostname}}},
		},
		// Nothing matches: no pod has the label fidelity-avoid, nor tier=batch.
		PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fidelity-avoid": "true"}}, TopologyKey: hostname,
				MatchLabelKeys: []string{"app"}}},
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 50, PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "batch"}}, TopologyKey: hostname,
				MismatchLabelKeys: []string{"app"}}}},
		},
	}
	s.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{
		{MaxSkew: 1, TopologyKey: hostname, WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "backend"}}, MatchLabelKeys: []string{"app"},
			MinDomains: ref(int32(1)), NodeAffinityPolicy: ref(corev1.NodeInclusionPolicyHonor), NodeTaintsPolicy: ref(corev1.NodeInclusionPolicyIgnore)},
		{MaxSkew: 2, TopologyKey: "type", WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{fidelityPodName}}}}},
	}

	// Volumes besides the claims: of every kind a pod's definition carries.
	mode := func(m int32) *int32 { return &m }
	cm := corev1.LocalObjectReference{Name: fidelityConfig}
	sec := corev1.LocalObjectReference{Name: fidelitySecret}
	s.Volumes = append(s.Volumes,
		corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: cm, DefaultMode: mode(0o444), Items: []corev1.KeyToPath{{Key: "app.properties", Path: "app.properties", Mode: mode(0o440)}}}}},
		corev1.Volume{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: fidelitySecret, DefaultMode: mode(0o400), Optional: ref(false)}}},
		corev1.Volume{Name: "bundle", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: mode(0o440), Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: ref(int64(3600)), Path: "vault-token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: cm, Items: []corev1.KeyToPath{{Key: "greeting", Path: "greeting"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: sec, Items: []corev1.KeyToPath{{Key: "token", Path: "db/token"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels"}},
				{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
			}}},
		}}}},
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ref(resource.MustParse("64Mi"))}}},
		corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}},
		}}}},
		corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: "/var/log/podguard-fidelity", Type: ref(corev1.HostPathDirectoryOrCreate)}}},
	)

	restricted := func(uid int64) *corev1.SecurityContext {
		return &corev1.SecurityContext{RunAsUser: ref(uid), AllowPrivilegeEscalation: ref(false),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	}
	s.InitContainers = []corev1.Container{{
		Name: "init", Image: "busybox:1.36", Command: []string{"sh", "-c", "cp /etc/app/app.properties /work/"},
		Env: []corev1.EnvVar{{Name: "SETUP_MODE", Value: "copy"}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/app", ReadOnly: true}, {Name: "scratch", MountPath: "/work"}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")}},
		SecurityContext: restricted(1001),
	}}

	app := &s.Containers[0] // mounts the claims at /data/<claim>
	app.Image, app.WorkingDir = "busybox:1.36", "/data"
	app.Args = []string{"--fidelity"}
	app.ImagePullPolicy = corev1.PullIfNotPresent
	app.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	app.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	app.Env = []corev1.EnvVar{
		{Name: "GREETING", Value: "hello"},
		{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: cm, Key: "mode"}}},
		{Name: "OPTIONAL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: cm, Key: "absent", Optional: ref(true)}}},
		{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: sec, Key: "password"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
		{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
		{Name: "MEMORY_REQUEST", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "requests.memory", Divisor: resource.MustParse("1Mi")}}},
		{Name: "URL", Value: "http://$(POD_IP):8080/"},
	}
	app.EnvFrom = []corev1.EnvFromSource{
		{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: fidelityEnv}}},
		{Prefix: "SEC_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: sec}},
	}
	app.VolumeMounts = append(app.VolumeMounts,
		corev1.VolumeMount{Name: p.Name + "-data", MountPath: "/var/lib/app", SubPath: "app"},
		corev1.VolumeMount{Name: "config", MountPath: "/etc/app", ReadOnly: true},
		corev1.VolumeMount{Name: "secret", MountPath: "/etc/secret", ReadOnly: true},
		corev1.VolumeMount{Name: "bundle", MountPath: "/var/run/bundle", ReadOnly: true},
		corev1.VolumeMount{Name: "scratch", MountPath: "/scratch"},
		corev1.VolumeMount{Name: "cache", MountPath: "/cache", SubPathExpr: "$(POD_NAME)"},
		corev1.VolumeMount{Name: "podinfo", MountPath: "/etc/podinfo", ReadOnly: true},
		corev1.VolumeMount{Name: "host", MountPath: "/host/log", MountPropagation: ref(corev1.MountPropagationHostToContainer)},
	)
	app.Resources = corev1.ResourceRequirements{
		// Only what the kwok node has to allocate (no ephemeral-storage).
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	app.SecurityContext = restricted(1000)
	app.SecurityContext.RunAsNonRoot = ref(true)
	app.SecurityContext.ReadOnlyRootFilesystem = ref(true)
	app.SecurityContext.Privileged = ref(false)
	app.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
	app.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	app.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
		InitialDelaySeconds: 5, PeriodSeconds: 10}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}}
	app.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}, FailureThreshold: 30}
	app.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 2"}}}}

	s.Containers = append(s.Containers, corev1.Container{
		Name: "sidecar", Image: "nginx:1.27", Args: []string{"-g", "daemon off;"},
		Env: []corev1.EnvVar{{Name: "NGINX_PORT", Value: "80"},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: sec, Key: "token"}}}},
		Ports: []corev1.ContainerPort{{ContainerPort: 80}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "secret", MountPath: "/etc/nginx/secret", ReadOnly: true},
			{Name: "scratch", MountPath: "/usr/share/nginx/html", SubPath: "html"},
			{Name: p.Name + "-data1", MountPath: "/srv", ReadOnly: true},
		},
		// Limits only: the API server defaults the requests to them.
		Resources:       corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
		SecurityContext: restricted(101),
	})
}
