package kube

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/podguard/podguard/shared/graph"
)

// memCluster is an in-memory Cluster that pages like the API server and counts requests.
type memCluster struct {
	pods       []corev1.Pod
	pvcs       []corev1.PersistentVolumeClaim
	pvs        []corev1.PersistentVolume
	configMaps []corev1.ConfigMap
	secrets    []corev1.Secret
	accounts   []corev1.ServiceAccount
	mu         sync.Mutex // the resolver reads referenced objects concurrently
	requests   map[string]int
}

func (m *memCluster) count(what string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[what]++
}

// inNamespace keeps the objects of namespace ns ("" for all).
func inNamespace[T any](items []T, ns string, meta func(*T) *metav1.ObjectMeta) []T {
	var out []T
	for i := range items {
		if ns == "" || meta(&items[i]).Namespace == ns {
			out = append(out, items[i])
		}
	}
	return out
}

// named finds the object ns/name.
func named[T any](items []T, ns, name string, meta func(*T) *metav1.ObjectMeta) (*T, bool) {
	for i := range items {
		if m := meta(&items[i]); m.Namespace == ns && m.Name == name {
			return &items[i], true
		}
	}
	return nil, false
}

func cmMeta(c *corev1.ConfigMap) *metav1.ObjectMeta      { return &c.ObjectMeta }
func secretMeta(s *corev1.Secret) *metav1.ObjectMeta     { return &s.ObjectMeta }
func saMeta(s *corev1.ServiceAccount) *metav1.ObjectMeta { return &s.ObjectMeta }

func (m *memCluster) ListConfigMaps(_ context.Context, ns string, o metav1.ListOptions) (*corev1.ConfigMapList, error) {
	m.count("list configmaps")
	items, next := page(inNamespace(m.configMaps, ns, cmMeta), o)
	return &corev1.ConfigMapList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	m.count("get configmap")
	if c, ok := named(m.configMaps, ns, name, cmMeta); ok {
		return c, nil
	}
	return nil, notFound("configmaps", name)
}
func (m *memCluster) ListSecrets(_ context.Context, ns string, o metav1.ListOptions) (*corev1.SecretList, error) {
	m.count("list secrets")
	items, next := page(inNamespace(m.secrets, ns, secretMeta), o)
	return &corev1.SecretList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetSecret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	m.count("get secret")
	if s, ok := named(m.secrets, ns, name, secretMeta); ok {
		return s, nil
	}
	return nil, notFound("secrets", name)
}
func (m *memCluster) ListServiceAccounts(_ context.Context, ns string, o metav1.ListOptions) (*corev1.ServiceAccountList, error) {
	m.count("list serviceaccounts")
	items, next := page(inNamespace(m.accounts, ns, saMeta), o)
	return &corev1.ServiceAccountList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	m.count("get serviceaccount")
	if s, ok := named(m.accounts, ns, name, saMeta); ok {
		return s, nil
	}
	return nil, notFound("serviceaccounts", name)
}

func page[T any](items []T, o metav1.ListOptions) ([]T, string) {
	start := 0
	if o.Continue != "" {
		start, _ = strconv.Atoi(o.Continue)
	}
	end := len(items)
	if o.Limit > 0 && start+int(o.Limit) < end {
		end = start + int(o.Limit)
	}
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next
}

func notFound(res, name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: res}, name)
}

func (m *memCluster) ListPods(_ context.Context, ns string, o metav1.ListOptions) (*corev1.PodList, error) {
	m.count("list pods")
	sel, err := labels.Parse(o.LabelSelector)
	if err != nil {
		return nil, err
	}
	var match []corev1.Pod
	for _, p := range m.pods {
		if (ns == "" || p.Namespace == ns) && sel.Matches(labels.Set(p.Labels)) {
			match = append(match, p)
		}
	}
	items, next := page(match, o)
	return &corev1.PodList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	m.count("get pod")
	for i := range m.pods {
		if m.pods[i].Namespace == ns && m.pods[i].Name == name {
			return &m.pods[i], nil
		}
	}
	return nil, notFound("pods", name)
}
func (m *memCluster) ListPVCs(_ context.Context, ns string, o metav1.ListOptions) (*corev1.PersistentVolumeClaimList, error) {
	m.count("list pvcs")
	var match []corev1.PersistentVolumeClaim
	for _, c := range m.pvcs {
		if ns == "" || c.Namespace == ns {
			match = append(match, c)
		}
	}
	items, next := page(match, o)
	return &corev1.PersistentVolumeClaimList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetPVC(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	m.count("get pvc")
	for i := range m.pvcs {
		if m.pvcs[i].Namespace == ns && m.pvcs[i].Name == name {
			return &m.pvcs[i], nil
		}
	}
	return nil, notFound("persistentvolumeclaims", name)
}
func (m *memCluster) ListPVs(_ context.Context, o metav1.ListOptions) (*corev1.PersistentVolumeList, error) {
	m.count("list pvs")
	items, next := page(m.pvs, o)
	return &corev1.PersistentVolumeList{Items: items, ListMeta: metav1.ListMeta{Continue: next}}, nil
}
func (m *memCluster) GetPV(_ context.Context, name string) (*corev1.PersistentVolume, error) {
	m.count("get pv")
	for i := range m.pvs {
		if m.pvs[i].Name == name {
			return &m.pvs[i], nil
		}
	}
	return nil, notFound("persistentvolumes", name)
}

func pod(ns, name string, phase corev1.PodPhase, vols ...corev1.Volume) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Volumes: vols}, Status: corev1.PodStatus{Phase: phase}}
}
func claimVol(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}
func boundPVC(ns, name, pv string) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pv}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
}
func csiPV(name, driver, handle string) corev1.PersistentVolume {
	return corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}}}}
}
func inTreePV(name, id string) corev1.PersistentVolume {
	return corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{Cinder: &corev1.CinderPersistentVolumeSource{VolumeID: id}}}}
}

// sized gives a persistent volume a capacity.
func sized(pv corev1.PersistentVolume, capacity string) corev1.PersistentVolume {
	pv.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}
	return pv
}

func fixture() *memCluster {
	return &memCluster{
		requests: map[string]int{},
		pods: []corev1.Pod{
			pod("a", "csi", corev1.PodRunning, claimVol("data", "c1"), corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}),
			pod("a", "intree", corev1.PodSucceeded, claimVol("data", "c2")),
			pod("a", "shared", corev1.PodRunning, claimVol("data", "c1")),
			pod("a", "inline", corev1.PodRunning, corev1.Volume{Name: "legacy", VolumeSource: corev1.VolumeSource{Cinder: &corev1.CinderVolumeSource{VolumeID: "vol-inline"}}}),
			pod("b", "problems", corev1.PodRunning, claimVol("unbound", "c3"), claimVol("nfs", "c4"), claimVol("gone", "missing"), claimVol("nopv", "c5"), claimVol("ebs", "c6")),
			pod("b", "pending", corev1.PodPending, claimVol("data", "c1")),
			pod("b", "failed", corev1.PodFailed),
			pod("b", "unknown", corev1.PodUnknown),
			pod("c", "ephemeral", corev1.PodRunning, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}),
		},
		pvcs: []corev1.PersistentVolumeClaim{
			boundPVC("a", "c1", "pv-csi"), boundPVC("a", "c2", "pv-intree"),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "c3"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}},
			boundPVC("b", "c4", "pv-nfs"), boundPVC("b", "c5", "pv-missing"), boundPVC("b", "c6", "pv-ebs"),
			boundPVC("c", "ephemeral-scratch", "pv-eph"),
		},
		pvs: []corev1.PersistentVolume{
			sized(csiPV("pv-csi", graph.CinderCSIDriver, "vol-csi"), "10Gi"), inTreePV("pv-intree", "vol-intree"),
			{ObjectMeta: metav1.ObjectMeta{Name: "pv-nfs"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{}}}},
			csiPV("pv-ebs", "ebs.csi.aws.com", "vol-ebs"), csiPV("pv-eph", graph.CinderCSIDriver, "vol-eph"),
		},
	}
}

func TestResolveAllNamespaces(t *testing.T) {
	for _, threshold := range []int{1, 32} { // list-based and get-based strategies agree
		t.Run(fmt.Sprintf("getThreshold=%d", threshold), func(t *testing.T) {
			m := fixture()
			g, err := NewResolver(m, ResolverOptions{PageSize: 2, GetThreshold: threshold}).Resolve(context.Background(), Selection{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, n := range g.Nodes {
				names = append(names, n.Name)
			}
			want := []string{"a:csi", "a/c1", "a:inline", "legacy", "a:intree", "a/c2", "a:shared", "b:problems", "c:ephemeral", "c/ephemeral-scratch"}
			if fmt.Sprint(names) != fmt.Sprint(want) {
				t.Fatalf("nodes\n got %v\nwant %v", names, want)
			}
			byName := map[string]graph.Node{}
			for _, n := range g.Nodes {
				byName[n.Name] = n
			}
			if c := byName["a:shared"].Children; len(c) != 1 || c[0] != graph.VolumeType+"#vol-csi" {
				t.Errorf("shared pod children %v: the volume of a shared claim is one node", c)
			}
			if v := byName["a/c1"]; v.ID != "vol-csi" || v.ExtraInfo[graph.InfoSource] != graph.SourceCSI || v.ExtraInfo[graph.InfoPV] != "pv-csi" {
				t.Errorf("csi volume %+v", v)
			}
			if size, ok := byName["a/c1"].SizeBytes(); !ok || size != 10<<30 {
				t.Errorf("csi volume size %d %v, want the PV's capacity, 10Gi", size, ok)
			}
			if v := byName["a/c2"]; v.ID != "vol-intree" || v.ExtraInfo[graph.InfoSource] != graph.SourceInTree {
				t.Errorf("in-tree volume %+v", v)
			}
			if v := byName["legacy"]; v.ID != "vol-inline" || v.ExtraInfo[graph.InfoSource] != graph.SourceInTree {
				t.Errorf("inline volume %+v", v)
			}
			for _, name := range []string{"a/c2", "legacy"} { // a PV without capacity, a volume in the pod itself
				if _, ok := byName[name].ExtraInfo[graph.InfoSizeBytes]; ok {
					t.Errorf("%s: a size recorded that nothing gave: %+v", name, byName[name])
				}
			}
			if p := byName["a:csi"]; p.ID != graph.PodID("a", "csi") || p.Type != graph.PodType {
				t.Errorf("pod %+v", p)
			}
			reasons := map[string]string{}
			for _, p := range g.Problems {
				reasons[p.Volume] = p.Reason
			}
			for vol, want := range map[string]string{
				"unbound": "persistent volume claim is not bound (phase Pending)",
				"nfs":     "persistent volume is not a Cinder volume (nfs)",
				"gone":    "persistent volume claim not found",
				"nopv":    "persistent volume not found",
				"ebs":     "persistent volume uses CSI driver ebs.csi.aws.com, not Cinder",
			} {
				if reasons[vol] != want {
					t.Errorf("problem of %s: %q, want %q", vol, reasons[vol], want)
				}
			}
			if len(g.Excluded) != 3 {
				t.Errorf("excluded %v, want pending, failed, unknown", g.Excluded)
			}
		})
	}
}

func TestResolveScopes(t *testing.T) {
	tests := []struct {
		name string
		sel  Selection
		want []string // pod names in the graph
	}{
		{"namespaces", Selection{Namespaces: []string{"a"}}, []string{"a:csi", "a:inline", "a:intree", "a:shared"}},
		{"label selector", Selection{LabelSelector: "app in (csi,problems)"}, []string{"a:csi", "b:problems"}},
		{"namespace and selector", Selection{Namespaces: []string{"b"}, LabelSelector: "app=csi"}, nil},
		{"explicit by name and id", Selection{Pods: []string{"a:csi", graph.PodID("c", "ephemeral")}}, []string{"a:csi", "c:ephemeral"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewResolver(fixture(), ResolverOptions{}).Resolve(context.Background(), tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range g.Nodes {
				if n.Type == graph.PodType {
					got = append(got, n.Name)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("pods %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResolveReportsUnknownExplicitPods(t *testing.T) {
	g, err := NewResolver(fixture(), ResolverOptions{}).Resolve(context.Background(),
		Selection{Pods: []string{"a:nope", "00000000-0000-5000-8000-000000000000"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Problems) != 2 || g.Problems[0].Reason != "pod not found" {
		t.Fatalf("problems %+v", g.Problems)
	}
}

func TestShow(t *testing.T) {
	r := NewResolver(fixture(), ResolverOptions{})
	ctx := context.Background()
	g, found, err := r.Show(ctx, "a:csi")
	if err != nil || !found || len(g.Nodes) != 2 {
		t.Fatalf("show a:csi: %v %v %+v", err, found, g)
	}
	g, found, err = r.Show(ctx, graph.PodID("b", "pending"))
	if err != nil || !found || len(g.Excluded) != 1 || len(g.Nodes) != 0 {
		t.Fatalf("show pending pod: %v %v %+v", err, found, g)
	}
	if _, found, err = r.Show(ctx, "a:nope"); err != nil || found {
		t.Fatalf("show unknown: found=%v err=%v", found, err)
	}
}

func TestRequestsGrowWithPagesNotPods(t *testing.T) {
	m := &memCluster{requests: map[string]int{}}
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("p%04d", i)
		m.pods = append(m.pods, pod("ns", name, corev1.PodRunning, claimVol("data", name)))
		m.pvcs = append(m.pvcs, boundPVC("ns", name, "pv-"+name))
		m.pvs = append(m.pvs, csiPV("pv-"+name, graph.CinderCSIDriver, "vol-"+name))
	}
	g, err := NewResolver(m, ResolverOptions{PageSize: 500}).Resolve(context.Background(), Selection{})
	if err != nil {
		t.Fatal(err)
	}
	if pods, vols := g.Counts(); pods != 1000 || vols != 1000 {
		t.Fatalf("counts %d %d", pods, vols)
	}
	total := 0
	for _, n := range m.requests {
		total += n
	}
	if total != 6 { // 2 pages each of pods, claims and volumes
		t.Fatalf("requests %v, want 2 pages of each kind", m.requests)
	}
}
