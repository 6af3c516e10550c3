package recreatepod_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/recreatepod"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/seal/sealtest"
	"github.com/podguard/podguard/shared/stacktest"
)

const batchName = "pods-0000"

// env is one case's view of the stack: the source namespace with the pods to protect,
// their Cinder volume ids, and a bank of the case's own holding a checkpoint whose pods
// the case saved.
type env struct {
	st         *stacktest.Stack
	cs         kubernetes.Interface
	src        string
	vols       map[string][]string
	bank       *bank.Bank
	checkpoint string
	// keys seal the saved pods, as snapshot-metadata does, and open them in the step.
	keys *seal.Keyring
	// saved are the pods the checkpoint saved, and extra more resources of its record
	// (in clear), stored with the next request.
	saved []checkpoint.PodInfo
	extra map[string]bank.ResourceRecord
}

// sources are the pods of the source namespace and how many Cinder volumes each has.
var sources = map[string]int{"web": 2, "db": 1, "a": 1, "b": 1, "app": 2, "job": 1, "stuck": 1, "late": 1}

// TestRecreatePod runs the cases against the stack, in parallel, on pods created once:
// each case has its own bank container, restore and target namespaces.
func TestRecreatePod(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	src := st.Namespace(t, cs, "rp-src")
	vols, claims := map[string][]string{}, map[string][]string{}
	for name, n := range sources {
		for range n {
			vols[name] = append(vols[name], uuid.NewString())
		}
		claims[name] = stacktest.CinderPod(t, cs, src, name, vols[name]...)
	}
	start := time.Now()
	for name := range sources {
		stacktest.WaitCinderPod(t, cs, src, name, claims[name])
	}
	t.Logf("%d source pods Running, their claims Bound, in %s", len(sources), time.Since(start).Round(time.Millisecond))
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"IntoNewNamespace", testIntoNewNamespace},
		{"BesideOriginal", testBesideOriginal},
		{"NameClash", testNameClash},
		{"WithoutWhatItNeeds", testWithoutWhatItNeeds},
		{"PodFails", testPodFails},
		{"Deadline", testDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := &env{st: st, cs: cs, src: src, vols: vols, checkpoint: uuid.NewString(), keys: sealtest.Keyring(t)}
			e.bank, _ = st.TempBank(t, "keystone")
			tc.fn(t, e)
		})
	}
}

// save keeps the pods the checkpoint saved, for the next request.
func (e *env) save(infos ...checkpoint.PodInfo) {
	e.saved = infos
}

func (e *env) step(podWait time.Duration, now func() time.Time) *recreatepod.Step {
	return recreatepod.NewStep(e.cs, e.bank, e.keys, podWait, now)
}

// restore is a new restore id whose cluster-scoped objects are removed after the test.
func (e *env) restore(t *testing.T) string {
	id := uuid.NewString()
	stacktest.CleanupRestore(t, e.cs, id)
	return id
}

// request stores, in a new checkpoint of its own, what the steps before recreate-pod
// leave for the restore of pods (the saved pods, the restore with params and deadline,
// the volumes restored: original id -> restored id), and returns its request.
func (e *env) request(t *testing.T, restore string, pods []graph.Resource, params events.RestoreParameters, volumes map[string]string, deadline time.Time) event.Event {
	t.Helper()
	e.checkpoint = uuid.NewString()
	saved := banktest.PodRecord(t, e.keys, e.checkpoint, batchName, e.saved...)
	maps.Copy(saved.Resources, e.extra)
	req := banktest.RestoringPods(t, e.bank, bank.Checkpoint{ID: e.checkpoint}, pods, saved,
		bank.Restore{ID: restore, Parameters: params, Deadline: deadline}, volumes)
	ev := event.New()
	ev.SetID(restore + "/" + batchName)
	ev.SetSource("recreatepod-test")
	ev.SetType(events.PodRecreate)
	_ = ev.SetData(event.ApplicationJSON, req)
	return ev
}

// handle delivers the request once; nil when the step answered nothing (pods starting).
func handle(t *testing.T, s *recreatepod.Step, ev event.Event) *events.RestoreStepResult {
	t.Helper()
	start := time.Now()
	out, err := s.Handle(logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar()), ev)
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	t.Logf("handled in %s (reply: %t)", time.Since(start).Round(time.Millisecond), out != nil)
	if out == nil {
		return nil
	}
	if out.Type() != events.PodRecreated {
		t.Fatalf("reply type %s", out.Type())
	}
	var r events.RestoreStepResult
	if err := out.DataAs(&r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// handleUntilReply delivers the request again, as the choreographer's progress checks
// do, each time the step answers nothing, after the pod has become Running.
func handleUntilReply(t *testing.T, e *env, s *recreatepod.Step, ev event.Event, ns, pod string) *events.RestoreStepResult {
	t.Helper()
	for range 5 {
		if r := handle(t, s, ev); r != nil {
			return r
		}
		stacktest.WaitPod(t, e.cs, ns, pod, time.Minute, stacktest.Running)
	}
	t.Fatal("no reply after 5 deliveries")
	return nil
}

func (e *env) restoredPod(t *testing.T, restore string) map[string]bank.ResourceRecord {
	t.Helper()
	rec, err := e.bank.Restores().Record(context.Background(), restore, batchName)
	if err != nil {
		t.Fatalf("restore record: %v", err)
	}
	return rec.Resources
}

func decode(t *testing.T, rr bank.ResourceRecord) checkpoint.RestoredPod {
	t.Helper()
	var p checkpoint.RestoredPod
	if err := json.Unmarshal(rr.Data, &p); err != nil {
		t.Fatalf("record data %s: %v", rr.Data, err)
	}
	return p
}

func wantResult(t *testing.T, r *events.RestoreStepResult, key, status, reason string) {
	t.Helper()
	for _, res := range r.Results {
		if res.Key != key {
			continue
		}
		if res.Status != status || !strings.Contains(res.Reason, reason) {
			t.Fatalf("%s: %s %q, want %s with %q", key, res.Status, res.Reason, status, reason)
		}
		return
	}
	t.Fatalf("no result for %s in %+v", key, r)
}

func uniqueNS(prefix string) string {
	return fmt.Sprintf("%s-%08x", prefix, uuid.New().ID())
}

// A pod with two claims restored into a new namespace under the name the restore gives:
// the volumes and claims are bound, the pod Running, the record holds the mapping; a
// second delivery answers the same and creates nothing.
func testIntoNewNamespace(t *testing.T, e *env) {
	src, orig := e.src, e.vols["web"]
	e.save(stacktest.SavedPodInfo(t, e.cs, src, "web"))

	restore, dst := e.restore(t), uniqueNS("rp-dst")
	restored := map[string]string{orig[0]: uuid.NewString(), orig[1]: uuid.NewString()}
	res := graph.PodResource(src, "web")
	ev := e.request(t, restore, []graph.Resource{res},
		events.RestoreParameters{CreateNamespace: true, Namespace: dst, Names: map[string]string{res.Name: "web-restored"}}, restored, time.Now().Add(time.Hour))
	s := e.step(10*time.Second, time.Now)

	start := time.Now()
	r := handleUntilReply(t, e, s, ev, dst, "web-restored")
	t.Logf("Running and answered %s after the first delivery", time.Since(start).Round(time.Millisecond))
	wantResult(t, r, res.Key(), events.StatusAvailable, "")

	ctx := context.Background()
	ns, err := e.cs.CoreV1().Namespaces().Get(ctx, dst, metav1.GetOptions{})
	if err != nil || ns.Labels[kube.LabelRestore] != restore {
		t.Fatalf("namespace %s: %v, labels %v", dst, err, ns.GetLabels())
	}
	p, err := e.cs.CoreV1().Pods(dst).Get(ctx, "web-restored", metav1.GetOptions{})
	if err != nil || p.Status.Phase != corev1.PodRunning || p.Labels["app"] != "web" {
		t.Fatalf("restored pod: %v, phase %s, labels %v", err, p.Status.Phase, p.Labels)
	}
	for i, id := range orig {
		claim := fmt.Sprintf("web-data-%d", i)
		stacktest.WaitClaimBound(t, e.cs, dst, claim, 30*time.Second)
		pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, "podguard-"+restored[id], metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Status.Phase != corev1.VolumeBound || pv.Spec.ClaimRef.Namespace != dst || pv.Spec.ClaimRef.Name != claim ||
			pv.Spec.CSI.VolumeHandle != restored[id] {
			t.Fatalf("persistent volume %s: %s, claim %s/%s, handle %s", pv.Name, pv.Status.Phase, pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name, pv.Spec.CSI.VolumeHandle)
		}
	}
	got := decode(t, e.restoredPod(t, restore)[res.Key()])
	want := checkpoint.RestoredPod{Original: src + "/web", Namespace: dst, Name: "web-restored",
		Claims:            []string{dst + "/web-data-0", dst + "/web-data-1"},
		PersistentVolumes: []string{"podguard-" + restored[orig[0]], "podguard-" + restored[orig[1]]}, Phase: "Running"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("record:\n got %+v\nwant %+v", got, want)
	}

	before := stacktest.CountRestored(t, e.cs, restore)
	if before != (stacktest.Restored{Namespaces: 1, Volumes: 2, Claims: 2, Pods: 1}) {
		t.Fatalf("restored objects: %+v", before)
	}
	again := handle(t, s, ev)
	if !reflect.DeepEqual(again, r) {
		t.Fatalf("second delivery: %+v, first %+v", again, r)
	}
	if after := stacktest.CountRestored(t, e.cs, restore); after != before {
		t.Fatalf("second delivery created objects: %+v, before %+v", after, before)
	}
}

// Restored into its own namespace beside the original, under the default name: the
// claims get the restore's suffix, and the original pod is untouched.
func testBesideOriginal(t *testing.T, e *env) {
	ns, orig := e.src, e.vols["db"][0]
	e.save(stacktest.SavedPodInfo(t, e.cs, ns, "db"))
	original, err := e.cs.CoreV1().Pods(ns).Get(context.Background(), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	restore := e.restore(t)
	res := graph.PodResource(ns, "db")
	name := recreatepod.DefaultName(restore, res.Key())
	if name != recreatepod.DefaultName(restore, res.Key()) || !strings.HasPrefix(name, "podguard-restored-pod-") {
		t.Fatalf("default name %q", name)
	}
	ev := e.request(t, restore, []graph.Resource{res}, events.RestoreParameters{}, map[string]string{orig: uuid.NewString()}, time.Now().Add(time.Hour))
	r := handleUntilReply(t, e, e.step(10*time.Second, time.Now), ev, ns, name)
	wantResult(t, r, res.Key(), events.StatusAvailable, "")

	got := decode(t, e.restoredPod(t, restore)[res.Key()])
	claim := "db-data-0-" + restore[:8]
	if got.Namespace != ns || got.Name != name || !reflect.DeepEqual(got.Claims, []string{ns + "/" + claim}) {
		t.Fatalf("record: %+v", got)
	}
	stacktest.WaitClaimBound(t, e.cs, ns, claim, 30*time.Second)
	now, err := e.cs.CoreV1().Pods(ns).Get(context.Background(), "db", metav1.GetOptions{})
	if err != nil || now.ResourceVersion != original.ResourceVersion {
		t.Fatalf("original pod changed: %v", err)
	}
	if n := stacktest.CountRestored(t, e.cs, restore); n != (stacktest.Restored{Volumes: 1, Claims: 1, Pods: 1}) {
		t.Fatalf("restored objects: %+v (an existing namespace is not labelled)", n)
	}
}

// Names taken by objects the restore did not create fail their pod with a reason naming
// the object, which is left as it was; what was created before the clash is recorded.
func testNameClash(t *testing.T, e *env) {
	ctx := context.Background()
	src, dst := e.src, e.st.Namespace(t, e.cs, "rp-clash")
	vols := []string{e.vols["a"][0], e.vols["b"][0]}
	e.save(stacktest.SavedPodInfo(t, e.cs, src, "a"), stacktest.SavedPodInfo(t, e.cs, src, "b"))

	taken, err := e.cs.CoreV1().Pods(dst).Create(ctx, stacktest.Pod(dst, "taken", map[string]string{"owner": "someone"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	takenClaim, err := e.cs.CoreV1().PersistentVolumeClaims(dst).Create(ctx, stacktest.Claim(dst, "b-data-0", ""), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	restore := e.restore(t)
	a, b := graph.PodResource(src, "a"), graph.PodResource(src, "b")
	restored := map[string]string{vols[0]: uuid.NewString(), vols[1]: uuid.NewString()}
	ev := e.request(t, restore, []graph.Resource{a, b}, events.RestoreParameters{CreateNamespace: true, Namespace: dst, Names: map[string]string{a.Name: "taken"}},
		restored, time.Now().Add(time.Hour))
	r := handle(t, e.step(10*time.Second, time.Now), ev)
	if r == nil {
		t.Fatal("no reply: both pods should have failed")
	}
	wantResult(t, r, a.Key(), events.StatusError, fmt.Sprintf("pod %s/taken already exists and was not created by restore %s; it is not overwritten", dst, restore))
	wantResult(t, r, b.Key(), events.StatusError, fmt.Sprintf("persistentvolumeclaim %s/b-data-0 already exists and was not created by restore %s; it is not overwritten", dst, restore))

	if p, err := e.cs.CoreV1().Pods(dst).Get(ctx, "taken", metav1.GetOptions{}); err != nil || p.Labels[kube.LabelRestore] != "" ||
		p.Annotations[kube.AnnotationRestoredFrom] != "" || !reflect.DeepEqual(p.Labels, taken.Labels) || !reflect.DeepEqual(p.Spec.Volumes, taken.Spec.Volumes) {
		t.Fatalf("existing pod was changed: %v %+v", err, p)
	}
	// The claim clash is found before b's volume is created: a volume pre-bound to the
	// name could otherwise be bound to that claim.
	if c, err := e.cs.CoreV1().PersistentVolumeClaims(dst).Get(ctx, "b-data-0", metav1.GetOptions{}); err != nil ||
		c.Labels[kube.LabelRestore] != "" || c.Spec.VolumeName != takenClaim.Spec.VolumeName {
		t.Fatalf("existing claim was changed: %v %+v", err, c)
	}
	recs := e.restoredPod(t, restore)
	if got := decode(t, recs[a.Key()]); !reflect.DeepEqual(got.Claims, []string{dst + "/a-data-0"}) || len(got.PersistentVolumes) != 1 {
		t.Fatalf("pod a: objects created before the clash not recorded: %+v", got)
	}
	if got := decode(t, recs[b.Key()]); len(got.Claims) != 0 || len(got.PersistentVolumes) != 0 {
		t.Fatalf("pod b: %+v", got)
	}
	if n := stacktest.CountRestored(t, e.cs, restore); n != (stacktest.Restored{Volumes: 1, Claims: 1}) {
		t.Fatalf("restored objects: %+v", n)
	}
}

// A pod whose volume was not restored, one the checkpoint did not save, and one whose
// saved definition is unreadable (not sealed) fail at once, and nothing is created for them.
func testWithoutWhatItNeeds(t *testing.T, e *env) {
	src, vols := e.src, e.vols["app"]
	e.save(stacktest.SavedPodInfo(t, e.cs, src, "app"))
	broken := graph.PodResource(src, "broken")
	failed := graph.PodResource(src, "gone")
	e.extra = map[string]bank.ResourceRecord{
		broken.Key(): {Status: events.StatusAvailable, Data: json.RawMessage(`{"pod": 42}`)},
		failed.Key(): {Status: events.StatusError, Reason: "pod gone no longer exists"},
	}

	restore := e.restore(t)
	app, unsaved := graph.PodResource(src, "app"), graph.PodResource(src, "never")
	ev := e.request(t, restore, []graph.Resource{app, unsaved, broken, failed}, events.RestoreParameters{CreateNamespace: true, Namespace: uniqueNS("rp-missing-dst")},
		map[string]string{vols[0]: uuid.NewString()}, time.Now().Add(time.Hour))
	r := handle(t, e.step(10*time.Second, time.Now), ev)
	if r == nil {
		t.Fatal("no reply")
	}
	wantResult(t, r, app.Key(), events.StatusError, fmt.Sprintf("volume %s was not restored", vols[1]))
	wantResult(t, r, unsaved.Key(), events.StatusError, fmt.Sprintf("checkpoint %s has no saved definition of pod %s", e.checkpoint, unsaved.Name))
	wantResult(t, r, broken.Key(), events.StatusError, "cannot be read: not a sealed envelope")
	wantResult(t, r, failed.Key(), events.StatusError, "pod gone no longer exists")
	if n := stacktest.CountRestored(t, e.cs, restore); n != (stacktest.Restored{}) {
		t.Fatalf("objects created for pods that cannot be restored: %+v", n)
	}
}

// A pod that ends Failed after a first request left it starting fails, on the next
// request, with its reason; that request creates nothing new.
func testPodFails(t *testing.T, e *env) {
	ns, orig := e.src, e.vols["job"][0]
	e.save(stacktest.SavedPodInfo(t, e.cs, ns, "job"))

	restore := e.restore(t)
	res := graph.PodResource(ns, "job")
	ev := e.request(t, restore, []graph.Resource{res}, events.RestoreParameters{Names: map[string]string{res.Name: "job-restored"}},
		map[string]string{orig: uuid.NewString()}, time.Now().Add(time.Hour))
	s := e.step(0, time.Now) // look once, never wait
	if r := handle(t, s, ev); r != nil {
		t.Fatalf("a just-created pod is not settled: %+v", r)
	}
	created := stacktest.CountRestored(t, e.cs, restore)
	stacktest.WaitPod(t, e.cs, ns, "job-restored", time.Minute, stacktest.Running)
	stacktest.SetPodFailed(t, e.cs, ns, "job-restored", "Evicted", "The node was low on resource: ephemeral-storage.", 137)

	r := handle(t, s, ev)
	if r == nil {
		t.Fatal("no reply for a Failed pod")
	}
	wantResult(t, r, res.Key(), events.StatusError,
		fmt.Sprintf("pod %s/job-restored failed: Evicted: The node was low on resource: ephemeral-storage.; container app terminated: Error (exit code 137)", ns))
	if got := decode(t, e.restoredPod(t, restore)[res.Key()]); got.Phase != "Failed" || len(got.Claims) != 1 || len(got.PersistentVolumes) != 1 {
		t.Fatalf("record: %+v", got)
	}
	if n := stacktest.CountRestored(t, e.cs, restore); n != created || n.Pods != 1 {
		t.Fatalf("the second request created objects: %+v, after the first %+v", n, created)
	}
}

// A pod that cannot be scheduled stays Pending; at the restore's deadline it fails with
// the reason. Past the deadline, a pod not yet created is not created.
func testDeadline(t *testing.T, e *env) {
	ns, vols := e.src, []string{e.vols["stuck"][0], e.vols["late"][0]}
	stuck := stacktest.SavedPodInfo(t, e.cs, ns, "stuck")
	stuck.Pod.Spec.NodeSelector = map[string]string{"podguard.dev/test": "no-such-node"}
	e.save(stuck, stacktest.SavedPodInfo(t, e.cs, ns, "late"))
	restored := map[string]string{vols[0]: uuid.NewString(), vols[1]: uuid.NewString()}

	t.Run("unschedulable", func(t *testing.T) {
		restore := e.restore(t)
		res := graph.PodResource(ns, "stuck")
		deadline := time.Now().Add(time.Hour)
		ev := e.request(t, restore, []graph.Resource{res}, events.RestoreParameters{}, restored, deadline)
		if r := handle(t, e.step(0, time.Now), ev); r != nil {
			t.Fatalf("before the deadline: %+v", r)
		}
		after := func() time.Time { return time.Now().Add(2 * time.Hour) }
		r := handle(t, e.step(10*time.Second, after), ev)
		if r == nil {
			t.Fatal("no reply past the deadline")
		}
		wantResult(t, r, res.Key(), events.StatusError,
			fmt.Sprintf("pod %s/%s still Pending at the restore's deadline", ns, recreatepod.DefaultName(restore, res.Key())))
		t.Logf("reason: %s", r.Results[0].Reason)
		if got := decode(t, e.restoredPod(t, restore)[res.Key()]); got.Phase != "Pending" || len(got.Claims) != 1 {
			t.Fatalf("record: %+v", got)
		}
	})
	t.Run("not created", func(t *testing.T) {
		restore := e.restore(t)
		res := graph.PodResource(ns, "late")
		ev := e.request(t, restore, []graph.Resource{res}, events.RestoreParameters{CreateNamespace: true, Namespace: uniqueNS("rp-late-dst")}, restored, time.Now().Add(-time.Minute))
		r := handle(t, e.step(10*time.Second, time.Now), ev)
		if r == nil {
			t.Fatal("no reply past the deadline")
		}
		wantResult(t, r, res.Key(), events.StatusError, "the restore's deadline passed before pod")
		if n := stacktest.CountRestored(t, e.cs, restore); n != (stacktest.Restored{}) {
			t.Fatalf("objects created past the deadline: %+v", n)
		}
	})
}
