package kube

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

const testRestoreID = "1234abcd-0000-4000-8000-000000000001"

func savedPtr[T any](v T) *T { return &v }

func savedClaimVolume(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func savedTestClaim(name, pv string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"team": "a"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			StorageClassName: savedPtr("csi-cinder"),
			VolumeMode:       savedPtr(corev1.PersistentVolumeFilesystem),
			VolumeName:       pv,
		},
	}
}

func savedCSIPV(name, handle, claim string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"tier": "gold"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              "csi-cinder",
			VolumeMode:                    savedPtr(corev1.PersistentVolumeFilesystem),
			MountOptions:                  []string{"noatime"},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "shop", Name: claim},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "topology.cinder.csi.openstack.org/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"nova"}}},
			}}}},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: graph.CinderCSIDriver, VolumeHandle: handle, FSType: "ext4",
				VolumeAttributes: map[string]string{csiProvisionerIdentity: "1700000000000-8081-cinder.csi.openstack.org", "zone": "nova"},
			}},
		},
	}
}

func savedInTreePV(name, volumeID, claim string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "shop", Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Cinder: &corev1.CinderPersistentVolumeSource{
				VolumeID: volumeID, FSType: "xfs", ReadOnly: true,
			}},
		},
	}
}

// savedInfo is the saved info of pod shop/web: a CSI claim "data", an in-tree claim
// "logs", a generic ephemeral volume "scratch" (claim web-scratch), an inline cinder
// volume, a config map and a secret.
func savedTestInfo() checkpoint.PodInfo {
	runAsUser := int64(1000)
	logs := savedTestClaim("logs", "pv-logs")
	logs.Spec.StorageClassName = nil
	logs.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "logs"}}
	logs.Annotations[annSelectedNode] = "node-1"
	scratch := savedTestClaim("web-scratch", "pv-scratch")
	scratch.Labels = nil
	scratch.Annotations = nil
	scratch.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "VolumeSnapshot", Name: "snap"}
	scratch.Spec.DataSourceRef = &corev1.TypedObjectReference{Kind: "VolumeSnapshot", Name: "snap"}
	return checkpoint.PodInfo{
		Pod: &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "web", GenerateName: "web-", Namespace: "shop",
				Labels: map[string]string{"app": "web", "pod-template-hash": "5d4f8c"}, Annotations: map[string]string{"team": "a"}},
			Spec: corev1.PodSpec{
				NodeName:        "node-1",
				RestartPolicy:   corev1.RestartPolicyAlways,
				SecurityContext: &corev1.PodSecurityContext{RunAsUser: &runAsUser},
				InitContainers: []corev1.Container{{Name: "init", Image: "busybox",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
				Containers: []corev1.Container{{Name: "app", Image: "nginx",
					Env: []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "data", MountPath: "/data"}, {Name: "logs", MountPath: "/logs"},
						{Name: "scratch", MountPath: "/scratch"}, {Name: "legacy", MountPath: "/legacy"},
						{Name: "cfg", MountPath: "/etc/cfg"}, {Name: "sec", MountPath: "/etc/sec"}}}},
				Volumes: []corev1.Volume{
					savedClaimVolume("data", "data"),
					{Name: "logs", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "logs", ReadOnly: true}}},
					{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
						VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: scratch.Spec}}}},
					{Name: "legacy", VolumeSource: corev1.VolumeSource{Cinder: &corev1.CinderVolumeSource{VolumeID: "vol-4", FSType: "ext4"}}},
					{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
					{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
				},
			},
		},
		Claims:  []*corev1.PersistentVolumeClaim{savedTestClaim("data", "pv-data"), logs, scratch},
		Volumes: []*corev1.PersistentVolume{savedCSIPV("pv-data", "vol-1", "data"), savedInTreePV("pv-logs", "vol-2", "logs"), savedCSIPV("pv-scratch", "vol-3", "web-scratch")},
	}
}

func testRestoreOptions(ns string) RestoreOptions {
	return RestoreOptions{RestoreID: testRestoreID, Namespace: ns, PodName: "web-restored",
		Volumes: map[string]string{"vol-1": "new-1", "vol-2": "new-2", "vol-3": "new-3", "vol-4": "new-4"}}
}

func withMark(m map[string]string, v string, key string) map[string]string {
	out := map[string]string{key: v}
	for k, x := range m {
		out[k] = x
	}
	return out
}

func TestRestoredPodVolumes(t *testing.T) {
	got, err := RestoredPod(savedTestInfo(), testRestoreOptions("prod"))
	if err != nil {
		t.Fatal(err)
	}
	marks := func(from string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Labels: map[string]string{LabelRestore: testRestoreID}, Annotations: map[string]string{AnnotationRestoredFrom: from}}
	}
	wantCSI := func(name, newID, claim, from string) *corev1.PersistentVolume {
		pv := savedCSIPV(name, newID, claim)
		pv.ObjectMeta = marks(from)
		pv.Name = name
		pv.Spec.ClaimRef.Namespace = "prod"
		pv.Spec.CSI.VolumeAttributes = map[string]string{"zone": "nova"}
		return pv
	}
	wantInTree := savedInTreePV("podguard-new-2", "new-2", "logs")
	wantInTree.ObjectMeta = marks("pv-logs")
	wantInTree.Name = "podguard-new-2"
	wantInTree.Spec.ClaimRef.Namespace = "prod"
	want := []*corev1.PersistentVolume{
		wantCSI("podguard-new-1", "new-1", "data", "pv-data"),
		wantInTree,
		wantCSI("podguard-new-3", "new-3", "web-scratch", "pv-scratch"),
	}
	if len(got.Volumes) != len(want) {
		t.Fatalf("got %d volumes, want %d", len(got.Volumes), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got.Volumes[i], want[i]) {
			t.Errorf("volume %d:\n got %+v\nwant %+v", i, got.Volumes[i], want[i])
		}
	}
}

func TestRestoredPodClaims(t *testing.T) {
	info := savedTestInfo()
	got, err := RestoredPod(info, testRestoreOptions("prod"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, wantName, wantVolume string
		wantClass                  string
		wantAnnotations            map[string]string
		wantLabels                 map[string]string
	}{
		{"data", "data", "podguard-new-1", "csi-cinder",
			map[string]string{"team": "a", AnnotationRestoredFrom: "shop/data"}, map[string]string{"app": "web", LabelRestore: testRestoreID}},
		{"logs", "logs", "podguard-new-2", "", // selected-node dropped; class of the PV
			map[string]string{"team": "a", AnnotationRestoredFrom: "shop/logs"}, map[string]string{"app": "web", LabelRestore: testRestoreID}},
		{"web-scratch", "web-scratch", "podguard-new-3", "csi-cinder",
			map[string]string{AnnotationRestoredFrom: "shop/web-scratch"}, map[string]string{LabelRestore: testRestoreID}},
	}
	if len(got.Claims) != len(tests) {
		t.Fatalf("got %d claims, want %d", len(got.Claims), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := got.Claims[i]
			if c.Name != tt.wantName || c.Namespace != "prod" {
				t.Errorf("claim is %s/%s, want prod/%s", c.Namespace, c.Name, tt.wantName)
			}
			if c.Spec.VolumeName != tt.wantVolume {
				t.Errorf("volumeName = %q, want %q", c.Spec.VolumeName, tt.wantVolume)
			}
			if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != tt.wantClass {
				t.Errorf("storageClassName = %v, want %q", c.Spec.StorageClassName, tt.wantClass)
			}
			if c.Spec.Selector != nil || c.Spec.DataSource != nil || c.Spec.DataSourceRef != nil {
				t.Errorf("selector/dataSource/dataSourceRef not cleared: %+v", c.Spec)
			}
			if !reflect.DeepEqual(c.Annotations, tt.wantAnnotations) {
				t.Errorf("annotations = %v, want %v", c.Annotations, tt.wantAnnotations)
			}
			if !reflect.DeepEqual(c.Labels, tt.wantLabels) {
				t.Errorf("labels = %v, want %v", c.Labels, tt.wantLabels)
			}
			saved := info.Claims[i]
			if !reflect.DeepEqual(c.Spec.AccessModes, saved.Spec.AccessModes) || !reflect.DeepEqual(c.Spec.Resources, saved.Spec.Resources) ||
				!reflect.DeepEqual(c.Spec.VolumeMode, saved.Spec.VolumeMode) {
				t.Errorf("spec not copied: %+v", c.Spec)
			}
			pv := got.Volumes[i]
			ref := pv.Spec.ClaimRef
			if ref == nil || ref.Namespace != c.Namespace || ref.Name != c.Name || ref.UID != "" || ref.Kind != "PersistentVolumeClaim" || ref.APIVersion != "v1" {
				t.Errorf("volume %s is not pre-bound to the claim: %+v", pv.Name, ref)
			}
		})
	}
}

func TestRestoredClaimName(t *testing.T) {
	long := strings.Repeat("a", 240) + "." + strings.Repeat("b", 12) // 253 characters
	tests := []struct {
		name, claim, restoreID, targetNS, want string
	}{
		{"other namespace keeps the name", "data", testRestoreID, "prod", "data"},
		{"same namespace gets a suffix", "data", testRestoreID, "shop", "data-1234abcd"},
		{"short restore id", "data", "r1", "shop", "data-r1"},
		{"long name trimmed", long, testRestoreID, "shop", strings.Repeat("a", 240) + "." + "bbb" + "-1234abcd"},
		{"trimmed at a dot", strings.Repeat("a", 243) + "." + strings.Repeat("b", 8), testRestoreID, "shop", strings.Repeat("a", 243) + "-1234abcd"},
		{"long name in another namespace", long, testRestoreID, "prod", long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := checkpoint.PodInfo{
				Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
					Spec: corev1.PodSpec{Volumes: []corev1.Volume{savedClaimVolume("data", tt.claim)}}},
				Claims:  []*corev1.PersistentVolumeClaim{savedTestClaim(tt.claim, "pv-data")},
				Volumes: []*corev1.PersistentVolume{savedCSIPV("pv-data", "vol-1", tt.claim)},
			}
			o := testRestoreOptions(tt.targetNS)
			o.RestoreID = tt.restoreID
			got, err := RestoredPod(info, o)
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Claims[0]; c.Name != tt.want || len(c.Name) > 253 {
				t.Errorf("claim name = %q (%d), want %q", c.Name, len(c.Name), tt.want)
			}
			if ref := got.Volumes[0].Spec.ClaimRef; ref.Name != tt.want || ref.Namespace != tt.targetNS {
				t.Errorf("claimRef = %s/%s, want %s/%s", ref.Namespace, ref.Name, tt.targetNS, tt.want)
			}
			if v := got.Pod.Spec.Volumes[0]; v.PersistentVolumeClaim.ClaimName != tt.want {
				t.Errorf("pod volume claim = %q, want %q", v.PersistentVolumeClaim.ClaimName, tt.want)
			}
		})
	}
}

func TestRestoredPodObject(t *testing.T) {
	tests := []struct {
		name, ns, suffix string
	}{
		{"other namespace", "prod", ""},
		{"same namespace", "shop", "-1234abcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := savedTestInfo()
			got, err := RestoredPod(info, testRestoreOptions(tt.ns))
			if err != nil {
				t.Fatal(err)
			}
			want := info.Pod.DeepCopy()
			want.Name = "web-restored"
			want.GenerateName = ""
			want.Namespace = tt.ns
			want.Labels = withMark(want.Labels, testRestoreID, LabelRestore)
			delete(want.Labels, "pod-template-hash")
			want.Annotations = withMark(want.Annotations, "shop/web", AnnotationRestoredFrom)
			want.Spec.NodeName = ""
			v := want.Spec.Volumes
			v[0].PersistentVolumeClaim.ClaimName = "data" + tt.suffix
			v[1].PersistentVolumeClaim.ClaimName = "logs" + tt.suffix // readOnly kept
			v[2].VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "web-scratch" + tt.suffix}}
			v[3].Cinder.VolumeID = "new-4" // fsType kept
			// cfg and sec untouched; containers, init containers, env and security context kept.
			if !reflect.DeepEqual(got.Pod, want) {
				t.Errorf("pod:\n got %+v\nwant %+v", got.Pod, want)
			}
			for i, c := range got.Claims {
				if c.Namespace != tt.ns || got.Volumes[i].Spec.ClaimRef.Name != c.Name {
					t.Errorf("claim %d is %s/%s, bound from %s", i, c.Namespace, c.Name, got.Volumes[i].Spec.ClaimRef.Name)
				}
			}
		})
	}
}

func TestRestoredPodEphemeralNotSaved(t *testing.T) {
	info := savedTestInfo()
	info.Claims = info.Claims[:2]
	info.Volumes = info.Volumes[:2]
	got, err := RestoredPod(info, testRestoreOptions("prod"))
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Pod.Spec.Volumes[2]; v.Ephemeral == nil || v.PersistentVolumeClaim != nil {
		t.Errorf("ephemeral volume without a saved claim changed: %+v", v.VolumeSource)
	}
	if len(got.Claims) != 2 || len(got.Volumes) != 2 {
		t.Errorf("got %d claims and %d volumes, want 2 and 2", len(got.Claims), len(got.Volumes))
	}
}

func TestRestoredPodSharedClaim(t *testing.T) {
	info := savedTestInfo()
	info.Pod.Spec.Volumes = append(info.Pod.Spec.Volumes, savedClaimVolume("data-again", "data"))
	info.Claims = append(info.Claims, savedTestClaim("data", "pv-data"))
	info.Volumes = append(info.Volumes, savedCSIPV("pv-data", "vol-1", "data"))
	got, err := RestoredPod(info, testRestoreOptions("prod"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Claims) != 3 || len(got.Volumes) != 3 {
		t.Errorf("got %d claims and %d volumes, want 3 and 3", len(got.Claims), len(got.Volumes))
	}
	if v := got.Pod.Spec.Volumes[len(got.Pod.Spec.Volumes)-1]; v.PersistentVolumeClaim.ClaimName != "data" {
		t.Errorf("second volume on claim data uses %q", v.PersistentVolumeClaim.ClaimName)
	}
}

func TestRestoredPodErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*checkpoint.PodInfo, *RestoreOptions)
		want   []string // substrings of the error
	}{
		{"missing mapping for a CSI claim", func(_ *checkpoint.PodInfo, o *RestoreOptions) { delete(o.Volumes, "vol-1") },
			[]string{"claim shop/data", "Cinder volume vol-1"}},
		{"missing mapping for an in-tree claim", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.Volumes["vol-2"] = "" },
			[]string{"claim shop/logs", "Cinder volume vol-2"}},
		{"missing mapping for an inline volume", func(_ *checkpoint.PodInfo, o *RestoreOptions) { delete(o.Volumes, "vol-4") },
			[]string{"volume legacy", "Cinder volume vol-4"}},
		{"every problem reported", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.Volumes = nil },
			[]string{"vol-1", "vol-2", "vol-3", "vol-4"}},
		{"other CSI driver", func(i *checkpoint.PodInfo, _ *RestoreOptions) { i.Volumes[0].Spec.CSI.Driver = "ebs.csi.aws.com" },
			[]string{"claim shop/data", "pv-data", "ebs.csi.aws.com", "cannot be restored"}},
		{"not a Cinder volume", func(i *checkpoint.PodInfo, _ *RestoreOptions) {
			i.Volumes[1].Spec.PersistentVolumeSource = corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/x"}}
		}, []string{"claim shop/logs", "pv-logs", "nfs"}},
		{"persistent volume not saved", func(i *checkpoint.PodInfo, _ *RestoreOptions) { i.Volumes = i.Volumes[1:] },
			[]string{"claim shop/data", "pv-data was not saved"}},
		{"claim not bound", func(i *checkpoint.PodInfo, _ *RestoreOptions) { i.Claims[0].Spec.VolumeName = "" },
			[]string{"claim shop/data", "not bound"}},
		{"claim not saved", func(i *checkpoint.PodInfo, _ *RestoreOptions) { i.Claims = i.Claims[1:] },
			[]string{"volume data", "claim data was not saved"}},
		{"two claims on one restored volume", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.Volumes["vol-3"] = "new-1" },
			[]string{"podguard-new-1"}},
		{"bad pod name", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.PodName = "Web_1" }, []string{`pod name "Web_1"`}},
		{"empty pod name", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.PodName = "" }, []string{"pod name"}},
		{"bad namespace", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.Namespace = "a.b" }, []string{`namespace "a.b"`}},
		{"empty restore id", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.RestoreID = "" }, []string{"restore id"}},
		{"restore id not a label value", func(_ *checkpoint.PodInfo, o *RestoreOptions) { o.RestoreID = "a/b" }, []string{`restore id "a/b"`}},
		{"no pod", func(i *checkpoint.PodInfo, _ *RestoreOptions) { i.Pod = nil }, []string{"no pod"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, o := savedTestInfo(), testRestoreOptions("prod")
			tt.change(&info, &o)
			got, err := RestoredPod(info, o)
			if err == nil {
				t.Fatalf("no error; got %+v", got)
			}
			if got != nil {
				t.Errorf("objects returned with the error: %+v", got)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestRestoredPodDoesNotMutate(t *testing.T) {
	for _, ns := range []string{"shop", "prod"} {
		info := savedTestInfo()
		before := checkpoint.PodInfo{Pod: info.Pod.DeepCopy()}
		for _, c := range info.Claims {
			before.Claims = append(before.Claims, c.DeepCopy())
		}
		for _, pv := range info.Volumes {
			before.Volumes = append(before.Volumes, pv.DeepCopy())
		}
		got, err := RestoredPod(info, testRestoreOptions(ns))
		if err != nil {
			t.Fatal(err)
		}
		// Changing the result must not reach the input either.
		got.Pod.Labels["x"] = "y"
		got.Pod.Spec.Containers[0].Env[0].Value = "changed"
		got.Claims[0].Annotations["x"] = "y"
		got.Claims[0].Spec.AccessModes[0] = corev1.ReadOnlyMany
		got.Volumes[0].Spec.CSI.VolumeAttributes["x"] = "y"
		got.Volumes[0].Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values[0] = "other"
		got.Volumes[0].Spec.MountOptions[0] = "sync"
		if !reflect.DeepEqual(info, before) {
			t.Errorf("namespace %s: input changed:\n got %+v\nwant %+v", ns, info, before)
		}
	}
}

func TestOwnedByRestore(t *testing.T) {
	labelled := func(l map[string]string) metav1.Object {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: l}}
	}
	tests := []struct {
		name string
		obj  metav1.Object
		id   string
		want bool
	}{
		{"created by the restore", labelled(map[string]string{LabelRestore: testRestoreID}), testRestoreID, true},
		{"created by another restore", labelled(map[string]string{LabelRestore: "other"}), testRestoreID, false},
		{"someone else's object", labelled(map[string]string{"app": "web"}), testRestoreID, false},
		{"no labels", labelled(nil), testRestoreID, false},
		{"empty restore id", labelled(map[string]string{LabelRestore: ""}), "", false},
		{"nil object", nil, testRestoreID, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OwnedByRestore(tt.obj, tt.id); got != tt.want {
				t.Errorf("OwnedByRestore = %v, want %v", got, tt.want)
			}
		})
	}
	got, err := RestoredPod(savedTestInfo(), testRestoreOptions("shop"))
	if err != nil {
		t.Fatal(err)
	}
	objs := []metav1.Object{got.Pod}
	for i := range got.Claims {
		objs = append(objs, got.Claims[i], got.Volumes[i])
	}
	for _, o := range objs {
		if !OwnedByRestore(o, testRestoreID) {
			t.Errorf("%s is not owned by the restore that created it", o.GetName())
		}
		if o.GetAnnotations()[AnnotationRestoredFrom] == "" {
			t.Errorf("%s has no %s annotation", o.GetName(), AnnotationRestoredFrom)
		}
	}
}

// TestRestoredPodLabelKeys: the API server merged the pod's labels named by matchLabelKeys
// and mismatchLabelKeys into the label selectors of its affinity terms and topology
// spread constraints when it created the original. The restored pod leaves out what the
// API server merges again from its labels (it refuses a pod whose selector already holds
// a key of matchLabelKeys), and keeps what it cannot merge again: the key of a label the
// restored pod drops, a selector that does not end with what the labels merge.
func TestRestoredPodLabelKeys(t *testing.T) {
	in := func(k string, v ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: v}
	}
	notIn := func(k, v string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{v}}
	}
	sel := func(match map[string]string, exprs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: match, MatchExpressions: exprs}
	}
	term := func(s *metav1.LabelSelector, match, mismatch []string) corev1.PodAffinityTerm {
		return corev1.PodAffinityTerm{LabelSelector: s, TopologyKey: "kubernetes.io/hostname", MatchLabelKeys: match, MismatchLabelKeys: mismatch}
	}
	// The pod as the API server returns it (labels app=web, tier=front and the template
	// hash).
	spec := func(spread, anti, prefer, stale *metav1.LabelSelector) corev1.PodSpec {
		return corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
				WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: spread, MatchLabelKeys: []string{"app", "pod-template-hash"}}},
			Affinity: &corev1.Affinity{
				PodAntiAffinity: &corev1.PodAntiAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term(anti, []string{"app"}, []string{"tier"})},
				},
				PodAffinity: &corev1.PodAffinity{
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
						{Weight: 10, PodAffinityTerm: term(prefer, []string{"missing"}, nil)},
						{Weight: 20, PodAffinityTerm: term(stale, []string{"app"}, nil)},
					},
				},
			},
		}
	}
	saved := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web", "tier": "front", "pod-template-hash": "5d4f8c"}},
		Spec: spec(
			sel(map[string]string{"tier": "front"}, in("zone-class", "a", "b"), in("app", "web"), in("pod-template-hash", "5d4f8c")),
			sel(map[string]string{"tier": "db"}, in("app", "web"), notIn("tier", "front")),
			sel(map[string]string{"cache": "true"}),       // the pod has no label "missing": nothing merged
			sel(nil, in("role", "x"), in("app", "other")), // its label changed since: left as saved
		),
	}
	got, err := RestoredPod(checkpoint.PodInfo{Pod: saved}, testRestoreOptions("prod"))
	if err != nil {
		t.Fatal(err)
	}
	want := spec(
		// The template hash is not a label of the restored pod: its requirement stays.
		sel(map[string]string{"tier": "front"}, in("zone-class", "a", "b"), in("pod-template-hash", "5d4f8c")),
		sel(map[string]string{"tier": "db"}),
		sel(map[string]string{"cache": "true"}),
		sel(nil, in("role", "x"), in("app", "other")),
	)
	if !reflect.DeepEqual(got.Pod.Spec, want) {
		t.Errorf("restored spec:\n got %+v\nwant %+v", got.Pod.Spec, want)
	}
	if !reflect.DeepEqual(saved.Spec.TopologySpreadConstraints[0].LabelSelector.MatchExpressions,
		[]metav1.LabelSelectorRequirement{in("zone-class", "a", "b"), in("app", "web"), in("pod-template-hash", "5d4f8c")}) {
		t.Errorf("the saved pod changed: %+v", saved.Spec.TopologySpreadConstraints[0].LabelSelector)
	}
}
