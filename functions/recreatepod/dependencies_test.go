package recreatepod

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/seal/sealtest"
	"github.com/podguard/podguard/shared/step"
)

// savedObjects is the checkpoint's record of a batch of objects, each saved.
func savedObjects(t *testing.T, keys checkpoint.Sealer, batch string, infos ...checkpoint.ObjectInfo) (*bank.Record, []graph.Resource) {
	t.Helper()
	rec := &bank.Record{Batch: batch, Resources: map[string]bank.ResourceRecord{}}
	var res []graph.Resource
	for _, info := range infos {
		typ := map[string]string{"ConfigMap": graph.ConfigMapType, "Secret": graph.SecretType, "ServiceAccount": graph.ServiceAccountType}[info.Kind()]
		r := graph.ObjectResource(typ, info.Object().GetNamespace(), info.Name())
		data, err := checkpoint.SealInfo(keys, "c1", batch, r.Key(), info)
		if err != nil {
			t.Fatal(err)
		}
		rec.Resources[r.Key()] = bank.ResourceRecord{Status: events.StatusAvailable, Data: data}
		res = append(res, r)
	}
	return rec, res
}

func configMap(ns, name string, data map[string]string) checkpoint.ObjectInfo {
	return checkpoint.ObjectInfo{ConfigMap: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}}, Data: data}}
}

// objectJob is a job of recreate-pod on a batch of objects of restore r1 into namespace dr.
func objectJob(rec *bank.Record, res []graph.Resource, policy string, deadline time.Time) *step.Job {
	return &step.Job{Checkpoint: &bank.Checkpoint{ID: "c1"}, Restore: &bank.Restore{ID: "r1", Parameters: events.RestoreParameters{CreateNamespace: true, Namespace: "dr", ExistingResources: policy}},
		Batch: graph.Batch{Name: rec.Batch, Type: res[0].Type, Resources: res}, Saved: rec, Deadline: deadline}
}

func restored(t *testing.T, rr bank.ResourceRecord) checkpoint.RestoredObject {
	t.Helper()
	var o checkpoint.RestoredObject
	if err := json.Unmarshal(rr.Data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestRestoresTheObjectsPodsReference(t *testing.T) {
	ctx := context.Background()
	existing := []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dr", Name: "same"}, Data: map[string]string{"k": "v"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dr", Name: "other"}, Data: map[string]string{"k": "theirs"}},
	}
	keys := sealtest.Keyring(t)
	rec, res := savedObjects(t, keys, "configmaps-0000", configMap("shop", "new", map[string]string{"k": "v"}),
		configMap("shop", "same", map[string]string{"k": "v"}), configMap("shop", "other", map[string]string{"k": "ours"}))
	for _, policy := range []string{"", events.ExistingSkip, events.ExistingFail} {
		t.Run("existing_resources="+policy, func(t *testing.T) {
			cs := fake.NewClientset(existing...)
			s := NewStep(cs, banktest.New(t, nil), keys, 0, time.Now)
			for delivery := 0; delivery < 2; delivery++ { // the second finds what the first created
				out, done, err := s.objects(ctx, objectJob(rec, res, policy, time.Time{}))
				if err != nil || !done || len(out) != 3 {
					t.Fatalf("delivery %d: %v %v %v", delivery, out, done, err)
				}
				if o, rr := restored(t, out[res[0].Key()]), out[res[0].Key()]; rr.Status != events.StatusAvailable || o.Outcome != checkpoint.ObjectCreated ||
					o.Original != "shop/new" || o.Namespace != "dr" || o.Name != "new" || o.Kind != "ConfigMap" {
					t.Fatalf("delivery %d: new %+v %+v", delivery, rr, o)
				}
				if o, rr := restored(t, out[res[1].Key()]), out[res[1].Key()]; rr.Status != events.StatusAvailable || o.Outcome != checkpoint.ObjectIdentical || rr.Reason != "" {
					t.Fatalf("same content %+v %+v", rr, o)
				}
				rr, o := out[res[2].Key()], restored(t, out[res[2].Key()])
				if policy == events.ExistingFail {
					if rr.Status != events.StatusError || !strings.Contains(rr.Reason, "ConfigMap dr/other already exists with other content; it is not overwritten") || o.Outcome != "" {
						t.Fatalf("other content, fail: %+v %+v", rr, o)
					}
				} else if rr.Status != events.StatusAvailable || o.Outcome != checkpoint.ObjectKept || !strings.Contains(rr.Reason, "the existing one is kept") {
					t.Fatalf("other content, skip: %+v %+v", rr, o)
				}
			}
			got, err := cs.CoreV1().ConfigMaps("dr").Get(ctx, "new", metav1.GetOptions{})
			if err != nil || got.Data["k"] != "v" || got.Labels[kube.LabelRestore] != "r1" || got.Labels["app"] != "web" || got.Annotations[kube.AnnotationRestoredFrom] != "shop/new" {
				t.Fatalf("created %+v %v", got, err)
			}
			if kept, _ := cs.CoreV1().ConfigMaps("dr").Get(ctx, "other", metav1.GetOptions{}); kept.Data["k"] != "theirs" || kept.Labels[kube.LabelRestore] != "" {
				t.Fatalf("the existing ConfigMap was changed: %+v", kept)
			}
			if ns, err := cs.CoreV1().Namespaces().Get(ctx, "dr", metav1.GetOptions{}); err != nil || ns.Labels[kube.LabelRestore] != "r1" {
				t.Fatalf("target namespace %+v %v", ns, err)
			}
		})
	}
}

func TestRestoresSecretsAndServiceAccounts(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	keys := sealtest.Keyring(t)
	s := NewStep(cs, banktest.New(t, nil), keys, 0, time.Now)
	sec := checkpoint.ObjectInfo{Secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Type: corev1.SecretTypeBasicAuth,
		Data: map[string][]byte{"password": []byte("s3cret")}}}
	sa := checkpoint.ObjectInfo{ServiceAccount: &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "app-sa"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "db"}}}}
	for _, c := range []struct {
		batch string
		info  checkpoint.ObjectInfo
	}{{"secrets-0000", sec}, {"serviceaccounts-0000", sa}} {
		rec, res := savedObjects(t, keys, c.batch, c.info)
		out, _, err := s.objects(ctx, objectJob(rec, res, "", time.Time{}))
		if err != nil || out[res[0].Key()].Status != events.StatusAvailable {
			t.Fatalf("%s: %v %v", c.batch, out, err)
		}
	}
	got, err := cs.CoreV1().Secrets("dr").Get(ctx, "db", metav1.GetOptions{})
	if err != nil || got.Type != corev1.SecretTypeBasicAuth || string(got.Data["password"]) != "s3cret" || got.Labels[kube.LabelRestore] != "r1" {
		t.Fatalf("secret %+v %v", got, err)
	}
	acct, err := cs.CoreV1().ServiceAccounts("dr").Get(ctx, "app-sa", metav1.GetOptions{})
	if err != nil || acct.ImagePullSecrets[0].Name != "db" || acct.Labels[kube.LabelRestore] != "r1" {
		t.Fatalf("service account %+v %v", acct, err)
	}
}

func TestObjectsPastTheDeadlineAreOnlyLookedUp(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	keys := sealtest.Keyring(t)
	s := NewStep(cs, banktest.New(t, nil), keys, 0, time.Now)
	rec, res := savedObjects(t, keys, "configmaps-0000", configMap("shop", "cfg", nil))
	rec.Resources["OS::Kubernetes::ConfigMap#unsaved"] = bank.ResourceRecord{Status: events.StatusError, Reason: "ConfigMap shop/unsaved no longer exists"}
	res = append(res, graph.Resource{Type: graph.ConfigMapType, ID: "unsaved", Name: "shop:unsaved"})
	out, done, err := s.objects(ctx, objectJob(rec, res, "", time.Now().Add(-time.Minute)))
	if err != nil || !done {
		t.Fatal(err)
	}
	if rr := out[res[0].Key()]; rr.Status != events.StatusError || !strings.Contains(rr.Reason, "deadline passed before ConfigMap dr/cfg was created") {
		t.Fatalf("past the deadline: %+v", rr)
	}
	if rr := out[res[1].Key()]; rr.Status != events.StatusError || !strings.Contains(rr.Reason, "was not saved in checkpoint c1") || !strings.Contains(rr.Reason, "no longer exists") {
		t.Fatalf("not saved: %+v", rr)
	}
	if l, _ := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("created past the deadline: %v", l.Items)
	}
}

// A pod whose ConfigMap, Secret or ServiceAccount was not restored is not created.
func TestPodsWithoutTheirObjectsFail(t *testing.T) {
	pod := graph.PodResource("shop", "web")
	keys := sealtest.Keyring(t)
	data, err := checkpoint.SealInfo(keys, "c1", "pods-0000", pod.Key(), savedPod("shop", "web", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := json.Marshal(checkpoint.RestoredObject{Kind: "ServiceAccount", Original: "shop/app-sa", Namespace: "dr", Name: "app-sa"})
	j := &step.Job{Checkpoint: &bank.Checkpoint{ID: "c1"}, Restore: &bank.Restore{ID: "r1", Parameters: events.RestoreParameters{CreateNamespace: true, Namespace: "dr"}},
		Batch:   graph.Batch{Name: "pods-0000", Type: graph.PodType, Resources: []graph.Resource{pod}},
		Saved:   &bank.Record{Resources: map[string]bank.ResourceRecord{pod.Key(): {Status: events.StatusAvailable, Data: data}}},
		Volumes: map[string]string{"v1": "n1"},
		Dependencies: map[string]map[string]bank.ResourceRecord{pod.Key(): {
			"OS::Kubernetes::ServiceAccount#a": {Status: events.StatusError, Reason: "create ServiceAccount dr/app-sa: forbidden", Data: sa},
			"OS::Kubernetes::ConfigMap#b":      {Status: events.StatusAvailable, Reason: "kept"},
		}}}
	p := plan(j, pod, keys)
	if p.status != events.StatusError || p.objs != nil || p.reason != "ServiceAccount dr/app-sa was not restored: create ServiceAccount dr/app-sa: forbidden" {
		t.Fatalf("pod %+v", p)
	}
	delete(j.Dependencies[pod.Key()], "OS::Kubernetes::ServiceAccount#a")
	if p := plan(j, pod, keys); p.status != "" || p.objs == nil {
		t.Fatalf("a pod whose objects are restored (or kept): %+v", p)
	}
}
