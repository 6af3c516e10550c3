package listpods_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/listpods"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/stacktest"
)

// startListPods runs the list-pods function as its main does, on a free loopback port.
func startListPods(t *testing.T, env map[string]string) string {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	t.Setenv("PORT", "0")
	t.Setenv("BIND_HOST", "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- function.Run(ctx, function.Function[listpods.Config]{
			Name: events.FnListPods, Accepts: listpods.Accepts,
			New: func(ctx context.Context, cfg *listpods.Config, _ function.Env) (function.Handler, error) {
				return listpods.New(ctx, cfg)
			},
		}, ready)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("list-pods: %v", err)
		}
	})
	select {
	case a := <-ready:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("list-pods did not start: %v", err)
	}
	return ""
}

func send(t *testing.T, url, typ string, data any) *event.Event {
	t.Helper()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetSource("integration-test")
	e.SetType(typ)
	_ = e.SetData(cloudevents.ApplicationJSON, data)
	ctx, cancel := context.WithTimeout(cloudevents.ContextWithTarget(context.Background(), url), time.Minute)
	defer cancel()
	reply, res := c.Request(ctx, e)
	if !cloudevents.IsACK(res) || reply == nil {
		t.Fatalf("%s: %v (reply %v)", typ, res, reply)
	}
	return reply
}

// setup creates, in two namespaces: Running pods with a CSI and an in-tree Cinder
// volume, a Running pod with an unbound claim, one whose PV is of another driver and one
// whose PV is missing; and pods that are Pending, Succeeded, Failed and Unknown.
func setup(t *testing.T, cs kubernetes.Interface, nsA, nsB string) {
	t.Helper()
	ctx := context.Background()
	create := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	pv := func(p *corev1.PersistentVolume) {
		_, err := cs.CoreV1().PersistentVolumes().Create(ctx, p, metav1.CreateOptions{})
		create(err)
		t.Cleanup(func() {
			_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), p.Name, metav1.DeleteOptions{})
		})
	}
	pvc := func(c *corev1.PersistentVolumeClaim) {
		_, err := cs.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{})
		create(err)
	}
	pod := func(p *corev1.Pod) {
		_, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		create(err)
	}
	pv(stacktest.CinderPV(nsA+"-csi", "11111111-aaaa-4aaa-8aaa-"+nsA[len(nsA)-9:]+"aaa", true, nsA, "data-csi"))
	pv(stacktest.CinderPV(nsA+"-intree", "22222222-bbbb-4bbb-8bbb-"+nsA[len(nsA)-9:]+"bbb", false, nsA, "data-intree"))
	pv(stacktest.OtherPV(nsB+"-ebs", corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-0abc"}}, nsB, "data-ebs"))
	pvc(stacktest.Claim(nsA, "data-csi", nsA+"-csi"))
	pvc(stacktest.Claim(nsA, "data-intree", nsA+"-intree"))
	pvc(stacktest.Claim(nsB, "data-unbound", ""))
	pvc(stacktest.Claim(nsB, "data-ebs", nsB+"-ebs"))
	pvc(stacktest.Claim(nsB, "data-nopv", nsB+"-missing"))

	pod(stacktest.Pod(nsA, "web", map[string]string{"app": "web"}, "data-csi"))
	pod(stacktest.Pod(nsA, "legacy", map[string]string{"app": "legacy"}, "data-intree"))
	pod(stacktest.Pod(nsB, "problems", map[string]string{"app": "problems"}, "data-unbound", "data-ebs", "data-nopv"))
	for _, ph := range []corev1.PodPhase{corev1.PodPending, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown} {
		p := stacktest.Pod(nsB, "phase-"+strings.ToLower(string(ph)), map[string]string{"app": "phases"})
		p.Spec.NodeName = ""
		p.Spec.NodeSelector = map[string]string{"podguard.dev/no-such-node": "true"} // never scheduled
		pod(p)
		if ph != corev1.PodPending {
			// The scheduler writes the pod's conditions too: retry on conflict.
			create(retry.RetryOnConflict(retry.DefaultRetry, func() error {
				got, err := cs.CoreV1().Pods(nsB).Get(ctx, p.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				got.Status.Phase = ph
				_, err = cs.CoreV1().Pods(nsB).UpdateStatus(ctx, got, metav1.UpdateOptions{})
				return err
			}))
		}
	}
	for _, p := range []struct{ ns, name string }{{nsA, "web"}, {nsA, "legacy"}, {nsB, "problems"}} {
		stacktest.WaitPod(t, cs, p.ns, p.name, time.Minute, stacktest.Running)
	}
	// The PV controller binds pre-bound pairs, possibly only at its next periodic sync:
	// wait for every claim whose PV exists.
	for _, c := range []struct{ ns, name string }{{nsA, "data-csi"}, {nsA, "data-intree"}, {nsB, "data-ebs"}} {
		stacktest.WaitClaimBound(t, cs, c.ns, c.name, time.Minute)
	}
}

func TestListPodsAgainstTheLocalStack(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	nsA, nsB := st.Namespace(t, cs, "lp-a"), st.Namespace(t, cs, "lp-b")
	setup(t, cs, nsA, nsB)

	container := "podguard-test-" + nsA
	url := startListPods(t, map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": container, "MAX_INLINE_GRAPH_BYTES": "49152"})

	reply := send(t, url, events.PodsList, events.PodsListRequest{Scope: events.Scope{Namespaces: []string{nsA, nsB}}})
	if reply.Type() != events.PodsListed || reply.DataSchema() != events.SchemaURL(events.PodsListed) {
		t.Fatalf("reply %s %s", reply.Type(), reply.DataSchema())
	}
	var res events.PodsListedResult
	if err := reply.DataAs(&res); err != nil {
		t.Fatal(err)
	}
	if res.Graph == nil || res.Pods != 4 || res.Volumes != 2 { // web, legacy, problems and the Succeeded pod
		t.Fatalf("want 4 pods and 2 volumes inline, got %d pods %d volumes graph=%v", res.Pods, res.Volumes, res.Graph != nil)
	}
	nodes := map[string]graph.Node{}
	for _, n := range res.Graph.Nodes {
		nodes[n.Name] = n
	}
	web := nodes[nsA+":web"]
	if web.ID != graph.PodID(nsA, "web") || web.ExtraInfo[graph.InfoNamespace] != nsA || len(web.Children) != 1 {
		t.Fatalf("web pod node %+v", web)
	}
	if v := nodes[nsA+"/data-csi"]; v.ExtraInfo[graph.InfoSource] != graph.SourceCSI || v.Key() != web.Children[0] {
		t.Fatalf("csi volume %+v", v)
	}
	if v := nodes[nsA+"/data-intree"]; v.ExtraInfo[graph.InfoSource] != graph.SourceInTree || v.ID[:8] != "22222222" {
		t.Fatalf("in-tree volume %+v", v)
	}
	if p := nodes[nsB+":problems"]; len(p.Children) != 0 {
		t.Fatalf("problem pod has volumes %v", p.Children)
	}
	reasons := map[string]string{}
	for _, p := range res.Graph.Problems {
		reasons[p.Claim] = p.Reason
	}
	for claim, want := range map[string]string{
		"data-unbound": "persistent volume claim is not bound (phase Pending)",
		"data-ebs":     "persistent volume uses CSI driver ebs.csi.aws.com, not Cinder",
		"data-nopv":    "persistent volume not found",
	} {
		if reasons[claim] != want {
			t.Errorf("problem of %s: %q, want %q", claim, reasons[claim], want)
		}
	}
	excluded := map[string]string{}
	for _, x := range res.Graph.Excluded {
		excluded[x.Pod] = x.Phase
	}
	if len(excluded) != 3 || excluded[nsB+":phase-pending"] != "Pending" || excluded[nsB+":phase-failed"] != "Failed" || excluded[nsB+":phase-unknown"] != "Unknown" {
		t.Fatalf("excluded %v", excluded)
	}
	if _, ok := nodes[nsB+":phase-succeeded"]; !ok {
		t.Fatalf("a Succeeded pod is protectable, as in Karbor")
	}

	t.Run("label selector", func(t *testing.T) {
		var res events.PodsListedResult
		_ = send(t, url, events.PodsList, events.PodsListRequest{Scope: events.Scope{AllNamespaces: true, LabelSelector: "app in (web,legacy)"}}).DataAs(&res)
		var pods []string
		for _, n := range res.Graph.Nodes {
			if n.Type == graph.PodType && (n.ExtraInfo[graph.InfoNamespace] == nsA || n.ExtraInfo[graph.InfoNamespace] == nsB) {
				pods = append(pods, n.Name)
			}
		}
		if len(pods) != 2 {
			t.Fatalf("pods %v", pods)
		}
	})

	t.Run("show by name and by id, and an unknown pod", func(t *testing.T) {
		for _, ref := range []string{nsA + ":web", graph.PodID(nsA, "web")} {
			var res events.PodShownResult
			_ = send(t, url, events.PodShow, events.PodShowRequest{Pod: ref}).DataAs(&res)
			if !res.Found || !res.Protectable || len(res.Graph.Nodes) != 2 {
				t.Fatalf("show %s: %+v", ref, res)
			}
		}
		var res events.PodShownResult
		_ = send(t, url, events.PodShow, events.PodShowRequest{Pod: nsA + ":nope"}).DataAs(&res)
		if res.Found || res.Reason == "" {
			t.Fatalf("unknown pod: %+v", res)
		}
		res = events.PodShownResult{}
		_ = send(t, url, events.PodShow, events.PodShowRequest{Pod: nsB + ":phase-failed"}).DataAs(&res)
		if !res.Found || res.Protectable {
			t.Fatalf("failed pod: %+v", res)
		}
	})

	t.Run("structured mode and bad requests", func(t *testing.T) {
		post := func(body string) (int, string) {
			resp, err := http.Post(url, "application/cloudevents+json", bytes.NewBufferString(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			return resp.StatusCode, b.String()
		}
		code, body := post(`{"specversion":"1.0","id":"s1","source":"t","type":"dev.podguard.pods.list","datacontenttype":"application/json","data":{"scope":{"namespaces":["` + nsA + `"]}}}`)
		if code != 200 || !bytes.Contains([]byte(body), []byte(`"pods":2`)) {
			t.Fatalf("structured: %d %s", code, body)
		}
		code, body = post(`{"specversion":"1.0","id":"s2","source":"t","type":"dev.podguard.pods.list","data":{"scope":{"namespaces":["Bad_NS"]}}}`)
		if code != 400 || !bytes.Contains([]byte(body), []byte("/scope/namespaces/0")) {
			t.Fatalf("bad namespace: %d %s", code, body)
		}
	})

	t.Run("a large graph goes to the bank as a reference", func(t *testing.T) {
		url := startListPods(t, map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": container, "MAX_INLINE_GRAPH_BYTES": "256"})
		var res events.PodsListedResult
		_ = send(t, url, events.PodsList, events.PodsListRequest{Scope: events.Scope{Namespaces: []string{nsA}}}).DataAs(&res)
		if res.Graph != nil || res.GraphRef == nil || res.GraphRef.Container != container {
			t.Fatalf("want a reference into %s, got %+v", container, res)
		}
		b, err := bank.Open(context.Background(), st.Bank("keystone", container), st.OpenStack())
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.GetRef(context.Background(), *res.GraphRef)
		if err != nil {
			t.Fatal(err)
		}
		var g graph.Graph
		if err := json.Unmarshal(data, &g); err != nil || len(g.Nodes) != 4 {
			t.Fatalf("stored graph: %v, %d nodes", err, len(g.Nodes))
		}
	})
}
