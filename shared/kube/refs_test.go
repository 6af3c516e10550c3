package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/shared/graph"
)

func optional() *bool { t := true; return &t }

func TestPodReferences(t *testing.T) {
	no := false
	p := &corev1.Pod{Spec: corev1.PodSpec{
		ServiceAccountName: "app-sa",
		ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "registry"}},
		Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
			{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls", Optional: &no}}},
			{Name: "maybe", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "maybe", Optional: optional()}}},
			{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "projected-config"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "projected-secret"}, Optional: optional()}},
			}}}},
			// What the API server injects: the root CA is in every namespace.
			{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: RootCAConfigMap}}},
			}}}},
			{Name: "empty", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			// The Secrets other volume plugins authenticate with.
			{Name: "inline-csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io",
				NodePublishSecretRef: &corev1.LocalObjectReference{Name: "csi-creds"}}}},
			{Name: "inline-csi-open", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "example.csi"}}},
			{Name: "ceph", VolumeSource: corev1.VolumeSource{CephFS: &corev1.CephFSVolumeSource{Monitors: []string{"m"}, SecretRef: &corev1.LocalObjectReference{Name: "ceph-key"}}}},
			{Name: "block", VolumeSource: corev1.VolumeSource{RBD: &corev1.RBDVolumeSource{CephMonitors: []string{"m"}, RBDImage: "i", SecretRef: &corev1.LocalObjectReference{Name: "rbd-key"}}}},
			{Name: "lun", VolumeSource: corev1.VolumeSource{ISCSI: &corev1.ISCSIVolumeSource{TargetPortal: "t", IQN: "q", SecretRef: &corev1.LocalObjectReference{Name: "chap"}}}},
			{Name: "flex", VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{Driver: "d", SecretRef: &corev1.LocalObjectReference{Name: "flex-creds"}}}},
			{Name: "share", VolumeSource: corev1.VolumeSource{AzureFile: &corev1.AzureFileVolumeSource{SecretName: "azure-share", ShareName: "s"}}},
		},
		InitContainers: []corev1.Container{{Name: "init", EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "init-config"}}},
		}}},
		Containers: []corev1.Container{{Name: "app",
			Env: []corev1.EnvVar{
				{Name: "PLAIN", Value: "x"},
				{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "mode"}}},
				{Name: "EXTRA", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "extra"}, Key: "k", Optional: optional()}}},
			},
			EnvFrom: []corev1.EnvFromSource{
				{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}},
				// Optional here, required by the volume "tls": required.
				{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "tls"}, Optional: optional()}},
			},
		}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug",
			EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "debug-secret"}}}}}}},
	}}
	var got []string
	for _, r := range podReferences(p) {
		got = append(got, fmt.Sprintf("%s %s optional=%v via=%s", graph.Kind(r.typ), r.name, r.optional, strings.Join(r.via, ", ")))
	}
	want := []string{
		"ConfigMap app-config optional=false via=volume cfg, env MODE of container app",
		"ConfigMap extra optional=true via=",
		"ConfigMap init-config optional=false via=envFrom of init container init",
		"ConfigMap projected-config optional=false via=volume all",
		"Secret azure-share optional=false via=volume share",
		"Secret ceph-key optional=false via=volume ceph",
		"Secret chap optional=false via=volume lun",
		"Secret csi-creds optional=false via=volume inline-csi",
		"Secret db optional=false via=env DB_PASSWORD of container app, envFrom of container app",
		"Secret debug-secret optional=false via=envFrom of ephemeral container debug",
		"Secret flex-creds optional=false via=volume flex",
		"Secret maybe optional=true via=",
		"Secret projected-secret optional=true via=",
		"Secret rbd-key optional=false via=volume block",
		"Secret registry optional=false via=imagePullSecrets",
		"Secret tls optional=false via=volume tls",
		"ServiceAccount app-sa optional=false via=serviceAccountName",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("references\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	for _, sa := range []string{"", DefaultServiceAccount} {
		if refs := podReferences(&corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: sa}}); len(refs) != 0 {
			t.Errorf("service account %q: references %+v; every namespace has it", sa, refs)
		}
	}
	if refs := podReferences(&corev1.Pod{Spec: corev1.PodSpec{DeprecatedServiceAccount: "old"}}); len(refs) != 1 || refs[0].name != "old" {
		t.Errorf("deprecated serviceAccount field: %+v", refs)
	}
}

// depsFixture: in namespace shop, web and worker share a ConfigMap, a Secret and a
// ServiceAccount; web also reads a service-account-token Secret and an optional ConfigMap
// that does not exist; broken references a Secret that does not exist; plain references
// nothing.
func depsFixture() *memCluster {
	m := &memCluster{requests: map[string]int{}}
	web := pod("shop", "web", corev1.PodRunning, corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
		corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "legacy-token"}}})
	web.Spec.ServiceAccountName = "app-sa"
	web.Spec.Containers = []corev1.Container{{Name: "app", Env: []corev1.EnvVar{
		{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}, Key: "password"}}},
	}, EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: optional()}}}}}
	worker := pod("shop", "worker", corev1.PodRunning)
	worker.Spec.ServiceAccountName = "app-sa"
	worker.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "app-secret"}}
	worker.Spec.Containers = []corev1.Container{{Name: "app", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}}}
	broken := pod("shop", "broken", corev1.PodRunning)
	broken.Spec.Containers = []corev1.Container{{Name: "app", Env: []corev1.EnvVar{
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "t"}}},
	}}}
	plain := pod("other", "plain", corev1.PodRunning)
	plain.Spec.ServiceAccountName = DefaultServiceAccount
	m.pods = []corev1.Pod{web, worker, broken, plain}
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: "shop", Name: name} }
	m.configMaps = []corev1.ConfigMap{{ObjectMeta: meta("app-config")}, {ObjectMeta: meta("unrelated")}, {ObjectMeta: meta(RootCAConfigMap)}}
	m.secrets = []corev1.Secret{{ObjectMeta: meta("app-secret"), Type: corev1.SecretTypeOpaque},
		{ObjectMeta: meta("legacy-token"), Type: corev1.SecretTypeServiceAccountToken}}
	m.accounts = []corev1.ServiceAccount{{ObjectMeta: meta("app-sa")}, {ObjectMeta: meta(DefaultServiceAccount)}}
	return m
}

func TestResolveDependencies(t *testing.T) {
	for _, threshold := range []int{1, 32} { // listed per namespace, or read one by one: the same graph
		t.Run(fmt.Sprintf("getThreshold=%d", threshold), func(t *testing.T) {
			m := depsFixture()
			g, err := NewResolver(m, ResolverOptions{PageSize: 1, GetThreshold: threshold}).Resolve(context.Background(), Selection{})
			if err != nil {
				t.Fatal(err)
			}
			cm, sec, sa := graph.ObjectResource(graph.ConfigMapType, "shop", "app-config"), graph.ObjectResource(graph.SecretType, "shop", "app-secret"),
				graph.ObjectResource(graph.ServiceAccountType, "shop", "app-sa")
			var nodes []string
			children := map[string]string{}
			for _, n := range g.Nodes {
				nodes = append(nodes, graph.Kind(n.Type)+" "+n.Name)
				children[n.Name+" "+n.Type] = strings.Join(n.Children, ",")
			}
			// Parents first; each object once, after the first pod that references it.
			want := []string{"Pod other:plain", "Pod shop:broken", "Pod shop:web", "ConfigMap shop:app-config", "Secret shop:app-secret", "ServiceAccount shop:app-sa", "Pod shop:worker"}
			if strings.Join(nodes, "; ") != strings.Join(want, "; ") {
				t.Fatalf("nodes\n got %v\nwant %v", nodes, want)
			}
			both := cm.Key() + "," + sec.Key() + "," + sa.Key()
			for _, pod := range []string{"shop:web", "shop:worker"} {
				if got := children[pod+" "+graph.PodType]; got != both {
					t.Errorf("children of %s: %s, want %s", pod, got, both)
				}
			}
			for _, n := range g.Nodes {
				if n.Type == graph.SecretType && (n.ID != sec.ID || n.ExtraInfo[graph.InfoNamespace] != "shop") {
					t.Errorf("secret node %+v", n)
				}
			}
			if len(g.Problems) != 1 {
				t.Fatalf("problems %+v: only the missing required Secret (the optional ConfigMap is skipped)", g.Problems)
			}
			if p := g.Problems[0]; p.Pod != "shop:broken" || p.Object != "Secret/gone" || p.Key() != "shop:broken/Secret/gone" ||
				p.Describe() != "Secret gone of pod shop:broken is not in the checkpoint: not found; referenced by env TOKEN of container app" {
				t.Errorf("problem %+v: %s", p, p.Describe())
			}
		})
	}
}

func TestDependenciesAreReadOncePerObject(t *testing.T) {
	m := depsFixture()
	if _, err := NewResolver(m, ResolverOptions{}).Resolve(context.Background(), Selection{}); err != nil {
		t.Fatal(err)
	}
	// app-config, absent; app-secret, legacy-token, gone; app-sa: one GET each, however
	// many pods reference them.
	for what, want := range map[string]int{"get configmap": 2, "get secret": 3, "get serviceaccount": 1} {
		if m.requests[what] != want {
			t.Errorf("%s: %d requests, want %d (%v)", what, m.requests[what], want, m.requests)
		}
	}
	// Many objects of one kind in a namespace: one list, paged.
	m = &memCluster{requests: map[string]int{}}
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("p%03d", i)
		p := pod("ns", name, corev1.PodRunning)
		p.Spec.Containers = []corev1.Container{{Name: "app", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}}}}
		m.pods = append(m.pods, p)
		m.configMaps = append(m.configMaps, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}})
	}
	g, err := NewResolver(m, ResolverOptions{PageSize: 50}).Resolve(context.Background(), Selection{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 200 || len(g.Problems) != 0 {
		t.Fatalf("%d nodes, problems %v", len(g.Nodes), g.Problems)
	}
	if m.requests["list configmaps"] != 2 || m.requests["get configmap"] != 0 {
		t.Fatalf("requests %v, want 2 pages of configmaps", m.requests)
	}
}
