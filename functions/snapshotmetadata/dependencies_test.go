package snapshotmetadata

import (
	"bytes"
	"context"
	"encoding/base64"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/seal/sealtest"
)

// The ConfigMaps, Secrets and ServiceAccounts a checkpoint's pods reference come in
// batches of their own, taken by the same step.
func TestSavesTheObjectsPodsReference(t *testing.T) {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("u-" + name), ResourceVersion: "7",
			OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web"}}}
	}
	cs := fake.NewSimpleClientset(
		&corev1.ConfigMap{ObjectMeta: meta("cfg"), Data: map[string]string{"mode": "prod"}},
		&corev1.Secret{ObjectMeta: meta("db"), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("s3cret")}},
		&corev1.ServiceAccount{ObjectMeta: meta("app-sa"), Secrets: []corev1.ObjectReference{{Name: "app-sa-token-abcde"}},
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "db"}}},
	)
	b := banktest.New(t, nil)
	keys := sealtest.Keyring(t)
	s := NewStep(kube.Clientset{Interface: cs}, b, keys, time.Now)
	pod := graph.PodResource("ns", "web")
	cm, sec, gone, sa := graph.ObjectResource(graph.ConfigMapType, "ns", "cfg"), graph.ObjectResource(graph.SecretType, "ns", "db"),
		graph.ObjectResource(graph.SecretType, "ns", "gone"), graph.ObjectResource(graph.ServiceAccountType, "ns", "app-sa")
	g := &graph.Graph{Nodes: []graph.Node{{Resource: pod, Children: []string{cm.Key(), sec.Key(), gone.Key(), sa.Key()}},
		{Resource: cm}, {Resource: sec}, {Resource: gone}, {Resource: sa}}}
	bs := banktest.Protecting(t, b, bank.Checkpoint{ID: "cp1"}, g)
	saved := func(batch, key string) (bank.ResourceRecord, checkpoint.ObjectInfo) {
		t.Helper()
		r := resultOf(t, must(s.Handle(context.Background(), request(t, banktest.Request(bs, batch)))))
		if r.Batch != batch {
			t.Fatalf("result %+v", r)
		}
		rec, err := b.Checkpoints().Record(context.Background(), "cp1", batch)
		if err != nil {
			t.Fatal(err)
		}
		rr := rec.Resources[key]
		var info checkpoint.ObjectInfo
		if rr.Status == events.StatusAvailable {
			if bytes.Contains(rr.Data, []byte("s3cret")) || bytes.Contains(rr.Data, []byte(base64.StdEncoding.EncodeToString([]byte("s3cret")))) || bytes.Contains(rr.Data, []byte("prod")) {
				t.Fatalf("%s holds the definition in clear: %s", key, rr.Data)
			}
			if info, err = checkpoint.OpenObjectInfo(keys, "cp1", batch, key, rr.Data); err != nil {
				t.Fatal(err)
			}
		}
		return rr, info
	}
	if _, info := saved("configmaps-0000", cm.Key()); info.ConfigMap == nil || info.ConfigMap.Data["mode"] != "prod" ||
		info.ConfigMap.UID != "" || info.ConfigMap.ResourceVersion != "" || len(info.ConfigMap.OwnerReferences) != 0 || info.Secret != nil {
		t.Fatalf("saved ConfigMap %+v", info)
	}
	if _, info := saved("secrets-0000", sec.Key()); info.Secret == nil || string(info.Secret.Data["password"]) != "s3cret" || info.Secret.Type != corev1.SecretTypeOpaque {
		t.Fatalf("saved Secret %+v", info)
	}
	if rr, _ := saved("secrets-0000", gone.Key()); rr.Status != events.StatusError || rr.Reason != "Secret ns/gone no longer exists" {
		t.Fatalf("a Secret gone since the listing: %+v", rr)
	}
	if _, info := saved("serviceaccounts-0000", sa.Key()); info.ServiceAccount == nil || len(info.ServiceAccount.Secrets) != 0 || info.ServiceAccount.ImagePullSecrets[0].Name != "db" {
		t.Fatalf("saved ServiceAccount %+v", info)
	}
}
