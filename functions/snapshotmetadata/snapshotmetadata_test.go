package snapshotmetadata

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/seal/sealtest"
)

// protecting stores checkpoint cp1 being protected, its graph holding pods.
func protecting(t *testing.T, b *bank.Bank, deadline time.Time, pods ...graph.Resource) *bank.Batches {
	t.Helper()
	g := &graph.Graph{}
	for _, p := range pods {
		g.Nodes = append(g.Nodes, graph.Node{Resource: p})
	}
	return banktest.Protecting(t, b, bank.Checkpoint{ID: "cp1", Deadline: deadline}, g)
}

func request(t *testing.T, req events.StepRequest) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType(events.MetadataSnapshot)
	if err := e.SetData(event.ApplicationJSON, req); err != nil {
		t.Fatal(err)
	}
	return e
}

func resultOf(t *testing.T, e *event.Event) events.StepResult {
	t.Helper()
	var r events.StepResult
	if e == nil || e.Type() != events.MetadataSnapshotted {
		t.Fatalf("reply %v", e)
	}
	if err := e.DataAs(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func objects() []runtime.Object {
	return []runtime.Object{
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1"}, Spec: corev1.PodSpec{
			NodeName: "n1", Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}}},
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}},
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			CSI: &corev1.CSIPersistentVolumeSource{Driver: graph.CinderCSIDriver, VolumeHandle: "vol-1"}}}},
	}
}

func TestSavesPodClaimsAndVolumesOnce(t *testing.T) {
	b := banktest.New(t, nil)
	keys := sealtest.Keyring(t)
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, b, keys, time.Now)
	pod, gone := graph.PodResource("ns", "web"), graph.PodResource("ns", "gone")
	bs := protecting(t, b, time.Time{}, pod, gone)
	var first time.Time
	for i := 0; i < 2; i++ { // the second delivery is a duplicate
		r := resultOf(t, must(s.Handle(context.Background(), request(t, banktest.Request(bs, "pods-0000")))))
		if r.Checkpoint != "cp1" || r.Batch != "pods-0000" || len(r.Results) != 2 ||
			r.Results[0].Key != pod.Key() || r.Results[0].Status != events.StatusAvailable ||
			r.Results[1].Status != events.StatusError || r.Results[1].Reason != "pod ns/gone no longer exists" {
			t.Fatalf("result %+v", r)
		}
		rec := record(t, b)
		if i == 0 {
			first = rec.UpdatedAt
		} else if !rec.UpdatedAt.Equal(first) {
			t.Fatalf("the duplicate wrote the record again (%s, then %s)", first, rec.UpdatedAt)
		}
	}
	info, err := checkpoint.OpenPodInfo(keys, "cp1", "pods-0000", pod.Key(), record(t, b).Resources[pod.Key()].Data)
	if err != nil {
		t.Fatal(err)
	}
	if info.Pod.Name != "web" || info.Pod.UID != "" || info.Pod.Spec.NodeName != "" || len(info.Claims) != 1 || len(info.Volumes) != 1 || info.Volumes[0].Spec.CSI.VolumeHandle != "vol-1" {
		t.Fatalf("saved info %+v", info)
	}
}

// What the pod's owners put in its definition is in the bank only sealed: the record
// holds an envelope of the primary key bound to the pod's place, its status and reasons
// stay in clear, and the key is noted for the checkpoint before the record is written.
func TestSealsTheDefinition(t *testing.T) {
	const password, note = "s3cr3t-unit-7f3a", "token=t0ken-unit-91c2"
	objs := objects()
	p := objs[0].(*corev1.Pod)
	p.Annotations = map[string]string{"example.com/note": note}
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PASSWORD", Value: password}}
	sw := banktest.NewSwift(time.Now)
	b := banktest.NewOn(t, sw, time.Now)
	keys := sealtest.Keyring(t, "2025-06", "2025-01")
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objs...)}, b, keys, time.Now)
	pod, gone := graph.PodResource("ns", "web"), graph.PodResource("ns", "gone")
	bs := protecting(t, b, time.Time{}, pod, gone)
	resultOf(t, must(s.Handle(context.Background(), request(t, banktest.Request(bs, "pods-0000")))))

	for _, name := range sw.Names("bank") {
		data := sw.Object("bank", name)
		for _, planted := range []string{password, note} {
			for _, form := range []string{planted, base64.StdEncoding.EncodeToString([]byte(planted))} {
				if bytes.Contains(data, []byte(form)) {
					t.Errorf("%s holds %q in clear", name, form)
				}
			}
		}
	}
	rec := record(t, b)
	saved := rec.Resources[pod.Key()]
	if id, err := seal.KeyID(saved.Data); err != nil || id != "2025-06" {
		t.Fatalf("the saved definition is sealed with %q (%v), want the primary key", id, err)
	}
	if r := rec.Resources[gone.Key()]; r.Status != events.StatusError || r.Reason != "pod ns/gone no longer exists" || r.Data != nil {
		t.Fatalf("the failed pod's record: %+v", r)
	}
	info, err := checkpoint.OpenPodInfo(keys, "cp1", "pods-0000", pod.Key(), saved.Data)
	if err != nil || info.Pod.Spec.Containers[0].Env[0].Value != password || info.Pod.Annotations["example.com/note"] != note {
		t.Fatalf("opened: %+v %v", info, err)
	}
	// Bound to its place: the same envelope does not open as another pod's.
	if _, err := checkpoint.OpenPodInfo(keys, "cp1", "pods-0000", gone.Key(), saved.Data); !errors.Is(err, seal.ErrNotAuthentic) {
		t.Fatalf("opened as another pod's: %v", err)
	}
	used, err := b.CheckpointKeys(context.Background(), "cp1")
	if err != nil || !slices.Equal(used, []string{"2025-06"}) {
		t.Fatalf("keys noted for the checkpoint: %v %v", used, err)
	}
	if cps, err := b.SealedWith(context.Background(), "2025-06"); err != nil || !slices.Equal(cps, []string{"cp1"}) {
		t.Fatalf("checkpoints sealed with the key: %v %v", cps, err)
	}
	if cps, err := b.SealedWith(context.Background(), "2025-01"); err != nil || len(cps) != 0 {
		t.Fatalf("checkpoints sealed with the other key: %v %v", cps, err)
	}
}

// A batch in which nothing was saved notes no key.
func TestNothingSavedNotesNoKey(t *testing.T) {
	b := banktest.New(t, nil)
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset()}, b, sealtest.Keyring(t), time.Now)
	bs := protecting(t, b, time.Time{}, graph.PodResource("ns", "gone"))
	resultOf(t, must(s.Handle(context.Background(), request(t, banktest.Request(bs, "pods-0000")))))
	if used, err := b.CheckpointKeys(context.Background(), "cp1"); err != nil || len(used) != 0 {
		t.Fatalf("keys noted: %v %v", used, err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Bank: bank.Config{Auth: "keystone", Container: "podguard"}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "BANK_KEYS_DIR") {
		t.Fatalf("no keyring: %v", err)
	}
	c.Keys.Dir = "/etc/podguard/bank-keys"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func must(e *event.Event, err error) *event.Event {
	if err != nil {
		panic(err)
	}
	return e
}

func record(t *testing.T, b *bank.Bank) *bank.Record {
	t.Helper()
	rec, err := b.Checkpoints().Record(context.Background(), "cp1", "pods-0000")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestPastDeadlineEndsEveryResource(t *testing.T) {
	b := banktest.New(t, nil)
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, b, sealtest.Keyring(t), time.Now)
	bs := protecting(t, b, time.Now().Add(-time.Minute), graph.PodResource("ns", "web"))
	r := resultOf(t, must(s.Handle(context.Background(), request(t, banktest.Request(bs, "pods-0000")))))
	if r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "deadline") {
		t.Fatalf("result %+v", r)
	}
	if record(t, b).Resources[graph.PodResource("ns", "web").Key()].Status != events.StatusError {
		t.Fatal("the error must be recorded in the bank")
	}
}

func TestBankDownIsRetried(t *testing.T) {
	sw := banktest.NewSwift(time.Now)
	b := banktest.NewOn(t, sw, time.Now)
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, b, sealtest.Keyring(t), time.Now)
	req := banktest.Request(protecting(t, b, time.Time{}, graph.PodResource("ns", "web")), "pods-0000")
	sw.Down(errors.New("swift: 503"))
	_, err := s.Handle(context.Background(), request(t, req))
	if err == nil || function.IsPermanent(err) {
		t.Fatalf("want a transient error, got %v", err)
	}
}

// A request for pods the checkpoint does not hold (another namespace's, say) saves
// nothing: the pods of a batch are the checkpoint's graph's.
func TestPodsOutsideTheBatchAreRefused(t *testing.T) {
	b := banktest.New(t, nil)
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, b, sealtest.Keyring(t), time.Now)
	req := banktest.Request(protecting(t, b, time.Time{}, graph.PodResource("ns", "gone")), "pods-0000")
	req.Resources = []graph.Resource{graph.PodResource("ns", "web")}
	_, err := s.Handle(context.Background(), request(t, req))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "not in batch pods-0000") {
		t.Fatalf("want a permanent refusal, got %v", err)
	}
	if _, err := b.Checkpoints().Record(context.Background(), "cp1", "pods-0000"); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("a refused request recorded the batch: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
