package snapshotmetadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
)

type memRecords struct {
	m    map[string]bank.Record
	puts int
	err  error
}

func (r *memRecords) Record(_ context.Context, cp, batch string) (*bank.Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, ok := r.m[cp+batch]
	if !ok {
		return nil, fmt.Errorf("record: %w", bank.ErrNotFound)
	}
	return &rec, nil
}
func (r *memRecords) PutRecord(_ context.Context, cp string, rec bank.Record) error {
	r.puts++
	r.m[cp+rec.Batch] = rec
	return nil
}

func request(t *testing.T, deadline time.Time, res ...graph.Resource) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType(events.MetadataSnapshot)
	if err := e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: "cp1", Batch: "pods-0000", Resources: res, Deadline: deadline}); err != nil {
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
	recs := &memRecords{m: map[string]bank.Record{}}
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, recs, time.Now)
	pod, gone := graph.PodResource("ns", "web"), graph.PodResource("ns", "gone")
	for i := 0; i < 2; i++ { // the second delivery is a duplicate
		r := resultOf(t, must(s.Handle(context.Background(), request(t, time.Now().Add(time.Hour), pod, gone))))
		if r.Checkpoint != "cp1" || r.Batch != "pods-0000" || len(r.Results) != 2 ||
			r.Results[0].Key != pod.Key() || r.Results[0].Status != events.StatusAvailable ||
			r.Results[1].Status != events.StatusError || r.Results[1].Reason != "pod ns/gone no longer exists" {
			t.Fatalf("result %+v", r)
		}
	}
	if recs.puts != 1 {
		t.Fatalf("%d writes for one batch delivered twice", recs.puts)
	}
	var info checkpoint.PodInfo
	if err := json.Unmarshal(recs.m["cp1pods-0000"].Resources[pod.Key()].Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Pod.Name != "web" || info.Pod.UID != "" || info.Pod.Spec.NodeName != "" || len(info.Claims) != 1 || len(info.Volumes) != 1 || info.Volumes[0].Spec.CSI.VolumeHandle != "vol-1" {
		t.Fatalf("saved info %+v", info)
	}
}

func must(e *event.Event, err error) *event.Event {
	if err != nil {
		panic(err)
	}
	return e
}

func TestPastDeadlineEndsEveryResource(t *testing.T) {
	recs := &memRecords{m: map[string]bank.Record{}}
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, recs, time.Now)
	r := resultOf(t, must(s.Handle(context.Background(), request(t, time.Now().Add(-time.Minute), graph.PodResource("ns", "web")))))
	if r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "deadline") {
		t.Fatalf("result %+v", r)
	}
	if recs.m["cp1pods-0000"].Resources[graph.PodResource("ns", "web").Key()].Status != events.StatusError {
		t.Fatal("the error must be recorded in the bank")
	}
}

func TestBankDownIsRetried(t *testing.T) {
	recs := &memRecords{m: map[string]bank.Record{}, err: errors.New("swift: 503")}
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset(objects()...)}, recs, time.Now)
	_, err := s.Handle(context.Background(), request(t, time.Now().Add(time.Hour), graph.PodResource("ns", "web")))
	if err == nil || function.IsPermanent(err) {
		t.Fatalf("want a transient error, got %v", err)
	}
}

func TestWrongResourceTypeIsPermanent(t *testing.T) {
	s := NewStep(kube.Clientset{Interface: fake.NewSimpleClientset()}, &memRecords{m: map[string]bank.Record{}}, time.Now)
	_, err := s.Handle(context.Background(), request(t, time.Time{}, graph.Resource{Type: graph.VolumeType, ID: "v", Name: "v"}))
	if !function.IsPermanent(err) {
		t.Fatalf("want permanent, got %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
