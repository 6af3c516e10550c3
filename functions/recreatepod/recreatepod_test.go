package recreatepod

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
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

func request(t *testing.T, req events.RestoreStepRequest) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("test")
	e.SetSource("test")
	e.SetType(events.PodRecreate)
	if err := e.SetData(event.ApplicationJSON, req); err != nil {
		t.Fatal(err)
	}
	return e
}

// A request that disagrees with the bank is refused before anything is created.
func TestBadRequestsArePermanent(t *testing.T) {
	pod := graph.PodResource("ns", "web")
	b := banktest.New(t, nil)
	keys := sealtest.Keyring(t)
	good := banktest.RestoringPods(t, b, bank.Checkpoint{ID: "c1"}, []graph.Resource{pod},
		banktest.PodRecord(t, keys, "c1", "pods-0000", savedPod("ns", "web", "v1")),
		bank.Restore{ID: "r1"}, map[string]string{"v1": "n1"})
	cs := fake.NewClientset()
	s := NewStep(cs, b, keys, 0, time.Now)
	for name, change := range map[string]func(*events.RestoreStepRequest){
		"volume": func(r *events.RestoreStepRequest) {
			r.Resources = []graph.Resource{{Type: graph.VolumeType, ID: "v1", Name: "v1"}}
		},
		"volume batch": func(r *events.RestoreStepRequest) { r.Batch = "volumes-0000" },
		"other pod": func(r *events.RestoreStepRequest) {
			r.Resources = []graph.Resource{graph.PodResource("kube-system", "web")}
		},
		"twice":            func(r *events.RestoreStepRequest) { r.Resources = []graph.Resource{pod, pod} },
		"no pods":          func(r *events.RestoreStepRequest) { r.Resources = nil },
		"unknown restore":  func(r *events.RestoreStepRequest) { r.Restore = "r2" },
		"no restore":       func(r *events.RestoreStepRequest) { r.Restore = "" },
		"other checkpoint": func(r *events.RestoreStepRequest) { r.Checkpoint = "c2" },
		"other namespace":  func(r *events.RestoreStepRequest) { r.Parameters.Namespace = "kube-system" },
		"other names":      func(r *events.RestoreStepRequest) { r.Parameters.Names = map[string]string{pod.Name: "admin"} },
		"other volumes":    func(r *events.RestoreStepRequest) { r.Volumes = map[string]string{"v1": "production"} },
		"other deadline":   func(r *events.RestoreStepRequest) { r.Deadline = r.Deadline.Add(time.Hour) },
	} {
		t.Run(name, func(t *testing.T) {
			req := good
			req.Parameters.Names = maps.Clone(good.Parameters.Names)
			change(&req)
			out, err := s.Handle(context.Background(), request(t, req))
			if out != nil || !function.IsPermanent(err) || function.StatusOf(err) != 400 {
				t.Fatalf("want a permanent error, got %v, %v", out, err)
			}
			t.Log(err)
		})
	}
	if objs, _ := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); len(objs.Items) != 0 {
		t.Fatalf("%d pods created by refused requests", len(objs.Items))
	}
	if ns, _ := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); len(ns.Items) != 0 {
		t.Fatalf("%d namespaces created by refused requests", len(ns.Items))
	}
	e := event.New()
	e.SetID("x")
	e.SetSource("x")
	e.SetType(events.PodRecreate)
	_ = e.SetData(event.ApplicationJSON, "not an object")
	if _, err := s.Handle(context.Background(), e); !function.IsPermanent(err) {
		t.Fatalf("undecodable data: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Bank: bank.Config{Auth: "keystone", Container: "podguard"}, PodWait: -time.Second}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "POD_WAIT") {
		t.Fatalf("negative POD_WAIT: %v", err)
	}
	c.PodWait = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "BANK_KEYS_DIR") {
		t.Fatalf("no keyring: %v", err)
	}
	c.Keys.Dir = "/etc/podguard/bank-keys"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Saved definitions open with the key their envelope names, also after the keyring was
// rotated; one that does not open (its key retired, moved from another pod, altered, or
// in clear) fails its pod with the reason, and nothing is created for it.
func TestSealedDefinitions(t *testing.T) {
	january := sealtest.Key(t)
	old, err := seal.NewKeyring("2025-01", map[string][]byte{"2025-01": january})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := seal.NewKeyring("2025-06", map[string][]byte{"2025-01": january, "2025-06": sealtest.Key(t)})
	if err != nil {
		t.Fatal(err)
	}
	ok, moved, tampered, inClear, retired := graph.PodResource("ns", "ok"), graph.PodResource("ns", "moved"),
		graph.PodResource("ns", "tampered"), graph.PodResource("ns", "clear"), graph.PodResource("ns", "retired")
	rec := banktest.PodRecord(t, old, "c1", "pods-0000", savedPod("ns", "ok", "v1"), savedPod("ns", "tampered", "v1"))
	rec.Resources[moved.Key()] = rec.Resources[ok.Key()] // a valid envelope, of another pod
	t1 := rec.Resources[tampered.Key()]
	t1.Data = bytes.Replace(t1.Data, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1)
	rec.Resources[tampered.Key()] = t1
	clearData, _ := json.Marshal(savedPod("ns", "clear", "v1"))
	rec.Resources[inClear.Key()] = bank.ResourceRecord{Status: events.StatusAvailable, Data: clearData}
	gone := sealtest.Keyring(t, "2024-01")
	rec.Resources[retired.Key()] = banktest.PodRecord(t, gone, "c1", "pods-0000", savedPod("ns", "retired", "v1")).Resources[retired.Key()]

	b := banktest.New(t, nil)
	pods := []graph.Resource{ok, moved, tampered, inClear, retired}
	ev := request(t, banktest.RestoringPods(t, b, bank.Checkpoint{ID: "c1"}, pods, rec,
		bank.Restore{ID: "r1", Parameters: events.RestoreParameters{CreateNamespace: true, Namespace: "t"}}, map[string]string{"v1": "n1"}))
	cs := fake.NewClientset()
	s := NewStep(cs, b, rotated, 0, time.Now)
	if out, err := s.Handle(context.Background(), ev); out != nil || err != nil {
		t.Fatalf("first delivery: %v %v (the pod that opened is starting)", out, err)
	}
	pl, err := cs.CoreV1().Pods("t").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pl.Items) != 1 || pl.Items[0].Labels[kube.LabelRestore] != "r1" {
		t.Fatalf("want only the pod whose definition opened: %v %+v", err, pl)
	}
	running := pl.Items[0]
	running.Status.Phase = corev1.PodRunning
	if _, err := cs.CoreV1().Pods("t").UpdateStatus(context.Background(), &running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Handle(context.Background(), ev)
	if err != nil || out == nil {
		t.Fatalf("second delivery: %v %v", out, err)
	}
	var res events.RestoreStepResult
	if err := out.DataAs(&res); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		ok.Key():       "",
		moved.Key():    "does not open here",
		tampered.Key(): "its nonce or ciphertext was altered",
		inClear.Key():  "not a sealed envelope",
		retired.Key():  `sealed with key "2024-01", which the keyring (2025-01, 2025-06) does not hold`,
	}
	for _, r := range res.Results {
		reason, known := want[r.Key]
		switch {
		case !known:
			t.Errorf("result for %s", r.Key)
		case reason == "" && r.Status != events.StatusAvailable:
			t.Errorf("%s: %s %q, want available", r.Key, r.Status, r.Reason)
		case reason != "" && (r.Status != events.StatusError || !strings.Contains(r.Reason, "cannot be read: ") || !strings.Contains(r.Reason, reason)):
			t.Errorf("%s: %s %q, want error with %q", r.Key, r.Status, r.Reason, reason)
		}
		t.Logf("%s: %s %s", r.Key, r.Status, r.Reason)
	}
	if len(res.Results) != len(want) {
		t.Fatalf("%d results, want %d", len(res.Results), len(want))
	}
}

func TestDefaultName(t *testing.T) {
	a := DefaultName("r1", "OS::Kubernetes::Pod#p1")
	if a != DefaultName("r1", "OS::Kubernetes::Pod#p1") {
		t.Fatal("not deterministic")
	}
	if a == DefaultName("r2", "OS::Kubernetes::Pod#p1") || a == DefaultName("r1", "OS::Kubernetes::Pod#p2") {
		t.Fatal("the same name for another restore or pod")
	}
	if !strings.HasPrefix(a, "podguard-restored-pod-") || len(validation.IsDNS1123Subdomain(a)) > 0 {
		t.Fatalf("%q is not a valid pod name", a)
	}
}

func TestCinderVolumes(t *testing.T) {
	info := checkpoint.PodInfo{
		Pod: &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "legacy", VolumeSource: corev1.VolumeSource{Cinder: &corev1.CinderVolumeSource{VolumeID: "v-inline"}}},
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
		}}},
		Claims: []*corev1.PersistentVolumeClaim{
			{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-csi"}},
			{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-intree"}},
			{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-ebs"}},
			{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-missing"}},
			{Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-csi"}}, // mounted twice
		},
		Volumes: []*corev1.PersistentVolume{
			{ObjectMeta: metav1.ObjectMeta{Name: "pv-csi"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: graph.CinderCSIDriver, VolumeHandle: "v-csi"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "pv-intree"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
				Cinder: &corev1.CinderPersistentVolumeSource{VolumeID: "v-intree"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "pv-ebs"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-0abc"}}}},
		},
	}
	got := strings.Join(cinderVolumes(info), ",")
	if got != "v-csi,v-intree,v-inline" {
		t.Fatalf("got %s", got)
	}
}

func TestSettle(t *testing.T) {
	scheduled := func(phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: phase}}
	}
	failed := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory. ",
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}},
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}},
			{Name: "sidecar", LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "bad config\n"}}},
			{Name: "ok", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
		}}}
	unschedulable := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available"}}}}
	pulling := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending,
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "no such image"}}}}}}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		past    bool
		settled bool
		status  string
		reason  string
	}{
		{"running", scheduled(corev1.PodRunning), false, true, events.StatusAvailable, ""},
		{"succeeded", scheduled(corev1.PodSucceeded), true, true, events.StatusAvailable, ""},
		{"pending", scheduled(corev1.PodPending), false, false, "", ""},
		{"no phase yet", scheduled(""), false, false, "", ""},
		{"failed", failed, false, true, events.StatusError,
			"pod t/p failed: Evicted: The node was low on resource: memory.; container app terminated: OOMKilled (exit code 137); container sidecar terminated (exit code 1): bad config"},
		{"pending at the deadline", scheduled(corev1.PodPending), true, true, events.StatusError, "pod t/p still Pending at the restore's deadline"},
		{"unschedulable at the deadline", unschedulable, true, true, events.StatusError,
			"pod t/p still Pending at the restore's deadline: not scheduled: Unschedulable: 0/3 nodes are available"},
		{"pulling at the deadline", pulling, true, true, events.StatusError,
			"pod t/p still Pending at the restore's deadline: container app waiting: ImagePullBackOff: no such image"},
		{"deleted", nil, false, false, "", ""},
		{"deleted at the deadline", nil, true, true, events.StatusError, "pod t/p no longer exists at the restore's deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pod{out: checkpoint.RestoredPod{Namespace: "t", Name: "p"}, current: tc.pod}
			if got := p.settle(tc.past); got != tc.settled || p.status != tc.status || p.reason != tc.reason {
				t.Fatalf("settled %t, %s %q; want %t, %s %q", got, p.status, p.reason, tc.settled, tc.status, tc.reason)
			}
		})
	}
}

// savedPod is the saved definition of pod ns/name with one claim "data" on Cinder volume
// volumeID.
func savedPod(ns, name, volumeID string) checkpoint.PodInfo {
	empty := ""
	return checkpoint.PodInfo{
		Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		}},
		Claims: []*corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
			VolumeName: ns + "-pv", StorageClassName: &empty, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}},
		Volumes: []*corev1.PersistentVolume{{ObjectMeta: metav1.ObjectMeta{Name: ns + "-pv"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: graph.CinderCSIDriver, VolumeHandle: volumeID}}}}},
	}
}

// Two pods from different namespaces whose claims have the same name, restored into one
// namespace: the second does not take over the first one's claim.
func TestSameNamesFromTwoNamespaces(t *testing.T) {
	cs := fake.NewClientset()
	b := banktest.New(t, nil)
	x, y := graph.PodResource("x", "web"), graph.PodResource("y", "web")
	keys := sealtest.Keyring(t)
	rec := banktest.PodRecord(t, keys, "c1", "pods-0000", savedPod("x", "web", "vx"), savedPod("y", "web", "vy"))
	ev := request(t, banktest.RestoringPods(t, b, bank.Checkpoint{ID: "c1"}, []graph.Resource{x, y}, rec,
		bank.Restore{ID: "r1", Parameters: events.RestoreParameters{CreateNamespace: true, Namespace: "t"}}, map[string]string{"vx": "nx", "vy": "ny"}))
	s := NewStep(cs, b, keys, 0, time.Now)
	ctx := context.Background()
	if out, err := s.Handle(ctx, ev); out != nil || err != nil {
		t.Fatalf("first delivery: %v %v (a new pod is starting)", out, err)
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, "t", metav1.GetOptions{})
	if err != nil || ns.Labels[kube.LabelRestore] != "r1" {
		t.Fatalf("namespace t: %v %v", err, ns.GetLabels())
	}
	pods, err := cs.CoreV1().Pods("t").List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v %d", err, len(pods.Items))
	}
	running := pods.Items[0]
	running.Status.Phase = corev1.PodRunning
	if _, err := cs.CoreV1().Pods("t").UpdateStatus(ctx, &running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Handle(ctx, ev)
	if err != nil || out == nil {
		t.Fatalf("second delivery: %v %v", out, err)
	}
	var res events.RestoreStepResult
	if err := out.DataAs(&res); err != nil {
		t.Fatal(err)
	}
	var ok, failed int
	for _, r := range res.Results {
		switch {
		case r.Status == events.StatusAvailable:
			ok++
		case strings.Contains(r.Reason, "persistentvolumeclaim t/data was already restored from") && strings.Contains(r.Reason, "by restore r1"):
			failed++
			t.Log(r.Reason)
		default:
			t.Errorf("unexpected result %+v", r)
		}
	}
	if ok != 1 || failed != 1 {
		t.Fatalf("%d available, %d failed: %+v", ok, failed, res)
	}
	claims, _ := cs.CoreV1().PersistentVolumeClaims("t").List(ctx, metav1.ListOptions{})
	if len(claims.Items) != 1 {
		t.Fatalf("%d claims", len(claims.Items))
	}
	// The batch is recorded: a late duplicate is answered from the record.
	if _, err := b.Restores().Record(ctx, "r1", "pods-0000"); err != nil {
		t.Fatalf("no record: %v", err)
	}
	again, err := s.Handle(ctx, ev)
	if err != nil || again == nil || string(again.Data()) != string(out.Data()) {
		t.Fatalf("late duplicate: %v %v", again, err)
	}
}

// Over HTTP, as the broker delivers it: a pod still starting is answered 202 with no
// event, a request for a volume 400.
func TestOverHTTP(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	b := banktest.New(t, nil)
	keys := sealtest.Keyring(t)
	web := graph.PodResource("x", "web")
	req := banktest.RestoringPods(t, b, bank.Checkpoint{ID: "c1"}, []graph.Resource{web},
		banktest.PodRecord(t, keys, "c1", "pods-0000", savedPod("x", "web", "vx")),
		bank.Restore{ID: "r1", Parameters: events.RestoreParameters{CreateNamespace: true}}, map[string]string{"vx": "nx"})
	s := NewStep(fake.NewClientset(), b, keys, 0, time.Now)
	srv := function.NewServer(events.FnRecreatePod, Accepts, s, v, function.ServerOptions{})
	post := func(req events.RestoreStepRequest) *httptest.ResponseRecorder {
		body, _ := json.Marshal(req)
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-id", "id-1")
		r.Header.Set("ce-source", "test")
		r.Header.Set("ce-type", events.PodRecreate)
		r.Header.Set("content-type", "application/json")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	if w := post(req); w.Code != http.StatusAccepted || w.Body.Len() != 0 || w.Header().Get("ce-type") != "" {
		t.Fatalf("pod starting: %d %q %v", w.Code, w.Body, w.Header())
	}
	req.Resources = []graph.Resource{{Type: graph.VolumeType, ID: "v1", Name: "v1"}}
	if w := post(req); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "/resources/0") {
		t.Fatalf("a volume: %d %q", w.Code, w.Body)
	}
}

// TestMissingNamespaceIsCreatedOnlyWhenAsked: a restore into a namespace that does not
// exist creates it only with create_namespace; without, its pods fail with the reason and
// nothing is created, in place as into another namespace.
func TestMissingNamespaceIsCreatedOnlyWhenAsked(t *testing.T) {
	keys := sealtest.Keyring(t)
	for _, tc := range []struct {
		name   string
		params events.RestoreParameters
		ns     string
	}{
		{"into another namespace", events.RestoreParameters{Namespace: "dr"}, "dr"},
		{"in place, the namespace gone", events.RestoreParameters{}, "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := banktest.New(t, nil)
			web := graph.PodResource("x", "web")
			ev := request(t, banktest.RestoringPods(t, b, bank.Checkpoint{ID: "c1"}, []graph.Resource{web},
				banktest.PodRecord(t, keys, "c1", "pods-0000", savedPod("x", "web", "vx")),
				bank.Restore{ID: "r1", Parameters: tc.params}, map[string]string{"vx": "nx"}))
			cs := fake.NewClientset()
			out, err := NewStep(cs, b, keys, 0, time.Now).Handle(context.Background(), ev)
			if err != nil || out == nil {
				t.Fatalf("want the pod failed at once: %v %v", out, err)
			}
			var res events.RestoreStepResult
			if err := out.DataAs(&res); err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 1 || res.Results[0].Status != events.StatusError ||
				!strings.Contains(res.Results[0].Reason, "namespace "+tc.ns+" does not exist") || !strings.Contains(res.Results[0].Reason, "create_namespace") {
				t.Fatalf("results %+v", res.Results)
			}
			if nss, _ := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); len(nss.Items) != 0 {
				t.Fatalf("namespaces created: %+v", nss.Items)
			}
			for _, kind := range []string{"pods", "persistentvolumeclaims", "persistentvolumes"} {
				for _, a := range cs.Actions() {
					if a.GetVerb() == "create" && a.GetResource().Resource == kind {
						t.Fatalf("created %s: %+v", kind, a)
					}
				}
			}
		})
	}
}
