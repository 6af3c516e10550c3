// Command demo shows podguard on the local stack: two pods with real Cinder volumes
// holding known data are protected with one CloudEvent, and the checkpoint is shown as a
// user sees it. Run it with `make demo`, which starts the stack and exports its settings.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

type demo struct {
	ctx      context.Context
	kube     kubernetes.Interface
	volumes  *volumes.Client
	runner   *runner.Runner
	results  chan event.Event
	t0, last time.Time
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func (d *demo) stage(format string, args ...any) {
	now := time.Now()
	if !d.last.IsZero() {
		fmt.Printf("   done in %s\n", now.Sub(d.last).Round(100*time.Millisecond))
	}
	d.last = now
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	d := &demo{ctx: ctx, results: make(chan event.Event, 16), t0: time.Now()}
	ns := fmt.Sprintf("demo-%s", time.Now().UTC().Format("150405"))
	if os.Getenv("KUBECONFIG") == "" || os.Getenv("OS_AUTH_URL") == "" {
		return errors.New("KUBECONFIG and OS_* are not set: run `make demo`, which starts the local stack and exports its settings")
	}
	cs, err := kube.NewClientset(kube.Config{Kubeconfig: os.Getenv("KUBECONFIG"), QPS: 50, Burst: 100})
	if err != nil {
		return err
	}
	d.kube = cs
	sc, err := openstack.Config{Cloud: os.Getenv("OS_CLOUD"), Region: os.Getenv("OS_REGION_NAME")}.BlockStorage(ctx)
	if err != nil {
		return err
	}
	d.volumes = volumes.New(sc)

	d.stage("Starting podguard: every function and the embedded broker on 127.0.0.1 (routing from deploy/base)")
	if err := d.start(); err != nil {
		return err
	}
	defer d.runner.Close(context.Background())
	fmt.Printf("   broker ingress %s\n", d.runner.IngressURL)
	for _, n := range d.runner.Names() {
		fmt.Printf("   %-18s %s\n", n, d.runner.Functions[n])
	}

	d.stage("Creating namespace %s with two pods, each on a real 1 GiB Cinder volume holding known data", ns)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	data := map[string]string{}
	for i, name := range []string{"web", "db"} {
		content := fmt.Sprintf("podguard demo: the data of %s, written %s\n", name, time.Now().UTC().Format(time.RFC3339))
		v, err := d.podOnVolume(ns, name, content, i == 0)
		if err != nil {
			return err
		}
		data[v.ID] = content
		kind := map[bool]string{true: "CSI (cinder.csi.openstack.org)", false: "in-tree cinder"}[i == 0]
		fmt.Printf("   pod %s/%s  claim %s-data -> PV (%s) -> Cinder volume %s\n", ns, name, name, kind, v.ID)
	}

	d.stage("Protecting the namespace with one CloudEvent (dev.podguard.protect.requested)")
	req := events.ProtectRequest{Plan: events.Plan{ID: "demo", Name: "demo namespace", Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Description: "podguard demo", Force: true}}}}
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource("podguard-demo")
	ev.SetType(events.ProtectRequested)
	ev.SetTime(time.Now().UTC())
	_ = ev.SetData(cloudevents.ApplicationJSON, req)
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		return err
	}
	if res := c.Send(cloudevents.ContextWithTarget(ctx, d.runner.IngressURL), ev); !cloudevents.IsACK(res) {
		return fmt.Errorf("send: %w", res)
	}
	id := choreographer.CheckpointID(req, ev)
	fmt.Printf("   checkpoint %s is protecting; waiting for dev.podguard.checkpoint.finished (Cinder backups take a while)\n", id)
	fin, err := d.await(id)
	if err != nil {
		return err
	}
	fmt.Printf("   checkpoint %s: %s, %d resources\n", fin.Checkpoint, strings.ToUpper(fin.Status), fin.Resources)
	if fin.Status != events.StatusAvailable {
		return fmt.Errorf("checkpoint ended %s: %+v", fin.Status, fin.Failed)
	}

	d.stage("The checkpoint, as GET %s/api/checkpoints/%s shows it", d.runner.Functions[events.FnCheckpoints], id)
	if err := d.show(id); err != nil {
		return err
	}
	d.stage("Finished")
	fmt.Printf("   total %s\n", time.Since(d.t0).Round(100*time.Millisecond))
	fmt.Printf("\nWhere to look next:\n")
	fmt.Printf("   the bank:        swift -V 3 -A $OS_AUTH_URL list podguard-demo --prefix checkpoints/%s/\n", id)
	fmt.Printf("   the backups:     openstack volume backup list\n")
	fmt.Printf("   the pods:        kubectl get pods,pvc -n %s\n", ns)
	fmt.Printf("   the local stack: make stack-status\n")
	return nil
}

// start runs the runner with an observer Trigger for the results users subscribe to.
func (d *demo) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ev, err := cehttp.NewEventFromHTTPRequest(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			d.results <- *ev
			w.WriteHeader(http.StatusAccepted)
		}))
	}()
	for k, v := range map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": "podguard-demo", "REDRIVE_AFTER": "3s", "LOG_LEVEL": "warn"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	r, err := runner.Start(d.ctx, runner.Options{
		Triggers: "deploy/base", Tick: 2 * time.Second,
		Observers:    []broker.Trigger{{Name: "demo-finished", Filter: map[string]string{"type": events.CheckpointFinished}, Subscriber: broker.Destination{Ref: "demo"}}},
		ObserverURLs: map[string]string{"demo": "http://" + ln.Addr().String()},
		DeadLetters:  filepath.Join(os.TempDir(), "podguard-demo-dead-letters.jsonl"),
	})
	d.runner = r
	return err
}

func (d *demo) podOnVolume(ns, name, content string, csi bool) (*volumes.Volume, error) {
	v, err := d.volumes.Create(d.ctx, ns+"-"+name, 1, map[string]string{"podguard-demo": ns})
	if err != nil {
		return nil, err
	}
	if v, err = d.volumes.WaitForStatus(d.ctx, v.ID, volumes.StatusAvailable); err != nil {
		return nil, err
	}
	// The NFS driver keeps the volume as a file: write the data into it.
	f, err := os.OpenFile(filepath.Join(os.Getenv("PODGUARD_CINDER_EXPORT"), "volume-"+v.ID), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("write into volume %s: %w", v.ID, err)
	}
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	pv := stacktest.CinderPV(ns+"-"+name, v.ID, csi, ns, name+"-data")
	if _, err := d.kube.CoreV1().PersistentVolumes().Create(d.ctx, pv, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := d.kube.CoreV1().PersistentVolumeClaims(ns).Create(d.ctx, stacktest.Claim(ns, name+"-data", pv.Name), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := d.kube.CoreV1().Pods(ns).Create(d.ctx, stacktest.Pod(ns, name, map[string]string{"app": name}, name+"-data"), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	return v, d.waitReady(ns, name, name+"-data")
}

// waitReady waits until the pod is Running and its claim Bound.
func (d *demo) waitReady(ns, pod, claim string) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		p, err := d.kube.CoreV1().Pods(ns).Get(d.ctx, pod, metav1.GetOptions{})
		c, cerr := d.kube.CoreV1().PersistentVolumeClaims(ns).Get(d.ctx, claim, metav1.GetOptions{})
		if err == nil && cerr == nil && p.Status.Phase == corev1.PodRunning && c.Status.Phase == corev1.ClaimBound {
			return nil
		}
		select {
		case <-d.ctx.Done():
			return fmt.Errorf("pod %s/%s not Running with claim %s Bound: %w", ns, pod, claim, d.ctx.Err())
		case <-tick.C:
		}
	}
}

func (d *demo) await(id string) (events.CheckpointFinishedResult, error) {
	var res events.CheckpointFinishedResult
	for {
		select {
		case ev := <-d.results:
			if ev.Extensions()[events.ExtCheckpoint] != id {
				continue
			}
			return res, ev.DataAs(&res)
		case <-d.ctx.Done():
			return res, fmt.Errorf("checkpoint %s did not finish: %w", id, d.ctx.Err())
		}
	}
}

func (d *demo) show(id string) error {
	resp, err := http.Get(d.runner.Functions[events.FnCheckpoints] + "/api/checkpoints/" + id)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v checkpoint.View
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err
	}
	fmt.Printf("   id        %s\n   plan      %s (%s)\n   status    %s\n   created   %s\n   history  ", v.ID, v.Plan.ID, v.Plan.Name, v.Status, v.CreatedAt.Format(time.RFC3339))
	for _, h := range v.History {
		fmt.Printf(" %s@%s", h.Status, h.At.Format("15:04:05"))
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 3, 2, 2, ' ', 0)
	fmt.Fprintln(w, "   TYPE\tNAME\tID\tSTATUS")
	for _, r := range v.Resources {
		name := r.Name
		if r.Type == graph.VolumeType {
			name = "  " + name
		}
		fmt.Fprintf(w, "   %s\t%s\t%s\t%s %s\n", r.Type, name, r.ID, r.Status, r.Reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, p := range v.Problems {
		fmt.Printf("   problem   pod %s volume %s (claim %s): %s\n", p.Pod, p.Volume, p.Claim, p.Reason)
	}
	for _, x := range v.Excluded {
		fmt.Printf("   excluded  pod %s: %s\n", x.Pod, x.Reason)
	}
	return nil
}
