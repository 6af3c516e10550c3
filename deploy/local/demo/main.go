// Command demo shows podguard's whole cycle on the local stack: two pods with real Cinder
// volumes holding known data are protected with one CloudEvent; the pods, their claims,
// persistent volumes and Cinder volumes are deleted; the checkpoint is restored into a new
// namespace with another CloudEvent, and the restored volumes are shown to hold the
// original data; finally the checkpoint and its backups are deleted with a third one.
// Run it with `make demo`, which starts the stack and exports its settings.
//
// The restored namespace, its persistent volumes and the restored Cinder volumes are left
// for the user to look at; the demo prints how to remove them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
)

// bankContainer is the Swift container the demo's runner keeps its bank in, unless
// BANK_CONTAINER says otherwise.
const bankContainer = "podguard-demo"

type demo struct {
	ctx     context.Context
	kube    kubernetes.Interface
	volumes *volumes.Client
	backups *backups.Client
	runner  *runner.Runner
	results chan event.Event
	export  string // the NFS export where Cinder keeps volume files
	// deadLetters is the JSON-lines file of the events the broker could not deliver.
	deadLetters string

	t0     time.Time
	stages []timing
}

// timing is how long a stage took.
type timing struct {
	name  string
	start time.Time
	took  time.Duration
}

// original is a pod the demo created, with what it stands on.
type original struct {
	namespace, pod, claim, pv string
	volume                    *volumes.Volume
	kind                      string // CSI or in-tree
	data                      string // written at the start of the volume
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

// stage ends the stage running, if any, and starts the next: name is its line in the
// timing summary, the format its headline.
func (d *demo) stage(name, format string, args ...any) {
	d.endStage()
	d.stages = append(d.stages, timing{name: name, start: time.Now()})
	fmt.Printf("\n==> "+format+"\n", args...)
}

func (d *demo) endStage() {
	if n := len(d.stages); n > 0 && d.stages[n-1].took == 0 {
		s := &d.stages[n-1]
		s.took = time.Since(s.start)
		fmt.Printf("    (%s)\n", round(s.took))
	}
}

// why prints the one line that says why a stage does what it does.
func why(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if os.Getenv("KUBECONFIG") == "" || os.Getenv("OS_AUTH_URL") == "" || os.Getenv("PODGUARD_CINDER_EXPORT") == "" {
		return errors.New("KUBECONFIG, OS_* and PODGUARD_CINDER_EXPORT are not set: run `make demo`, which starts the local stack and exports its settings")
	}
	d := &demo{ctx: ctx, results: make(chan event.Event, 16), t0: time.Now(), export: os.Getenv("PODGUARD_CINDER_EXPORT"),
		deadLetters: filepath.Join(os.TempDir(), "podguard-demo-dead-letters.jsonl")}
	cs, err := kube.NewClientset(ctx, kube.Config{Kubeconfig: os.Getenv("KUBECONFIG"), QPS: 50, Burst: 100})
	if err != nil {
		return err
	}
	d.kube = cs
	sc, err := openstack.Config{Cloud: os.Getenv("OS_CLOUD"), Region: os.Getenv("OS_REGION_NAME")}.BlockStorage(ctx)
	if err != nil {
		return err
	}
	d.volumes, d.backups = volumes.New(sc), backups.New(sc)
	ns := fmt.Sprintf("demo-%s", time.Now().UTC().Format("150405"))
	target := ns + "-restored"

	// 1. Start, create, protect.
	d.stage("start podguard", "Starting podguard: every function and the embedded broker on 127.0.0.1")
	why("the broker routes events between the functions by the Triggers of deploy/base, as Knative would")
	if err := d.start(); err != nil {
		return fmt.Errorf("start podguard: %w", err)
	}
	defer d.runner.Close(context.Background())
	fmt.Printf("    broker ingress %s\n", d.runner.IngressURL)
	fmt.Printf("    front door     %s (requests go here, with a bearer token of podguard-local-admin)\n", d.runner.FrontDoor)
	for _, n := range d.runner.Names() {
		fmt.Printf("    %-18s %s\n", n, d.runner.Functions[n])
	}

	d.stage("create pods", "Creating namespace %s with two pods, each on a real 1 GiB Cinder volume holding known data", ns)
	why("one claim goes through the Cinder CSI driver, the other through the legacy in-tree cinder source")
	originals, err := d.createOriginals(ns)
	if err != nil {
		return fmt.Errorf("create the pods to protect: %w", err)
	}

	d.stage("protect", "Protecting the namespace with one CloudEvent (%s)", events.ProtectRequested)
	why("podguard saves each pod's definition in the Swift bank and starts a Cinder backup of each volume")
	cp, err := d.protect(ns)
	if err != nil {
		return err
	}

	d.stage("show checkpoint", "The checkpoint, as GET %s/api/checkpoints/%s shows it", d.runner.Functions[events.FnFrontDoor], cp)
	if err := d.showCheckpoint(cp); err != nil {
		return fmt.Errorf("show checkpoint %s: %w", cp, err)
	}
	if err := d.showBackups(originals); err != nil {
		return err
	}

	// 2. Lose everything.
	d.stage("delete originals", "Deleting the original pods, claims, persistent volumes and Cinder volumes")
	why("as if the namespace and its storage were lost: only the checkpoint is left to bring them back")
	if err := d.deleteOriginals(ns, originals); err != nil {
		return fmt.Errorf("delete the original pods and volumes: %w", err)
	}

	// 3. Restore.
	d.stage("restore", "Restoring the checkpoint into namespace %s with one CloudEvent (%s)", target, events.RestoreRequested)
	why("podguard creates a new Cinder volume from each backup, then recreates each pod on its restored volumes")
	rid, res, err := d.restore(cp, target)
	if err != nil {
		return err
	}
	d.stage("show restore", "The restore, as GET %s/api/restores/%s shows it", d.runner.Functions[events.FnFrontDoor], rid)
	view, err := d.showRestore(rid)
	if err != nil {
		return fmt.Errorf("show restore %s: %w", rid, err)
	}
	if res.Status != events.RestoreSuccess {
		return fmt.Errorf("restore %s ended %s, not %s: %s", rid, res.Status, events.RestoreSuccess, failures(res.Failed))
	}

	// 4. Check the restored pods and data.
	d.stage("check restored", "The restored pods are Running, and their volumes hold the original data")
	why("the original volume files are gone: what the restored volumes hold came from the Cinder backups")
	if err := d.showRestoredPods(target, rid); err != nil {
		return err
	}
	restored, err := d.checkData(view, originals)
	if err != nil {
		return err
	}

	// 5. Delete the checkpoint.
	d.stage("delete checkpoint", "Deleting the checkpoint with one CloudEvent (%s)", events.DeleteRequested)
	why("podguard deletes the Cinder backups, then the checkpoint's metadata in the bank")
	if err := d.deleteCheckpoint(cp, originals); err != nil {
		return err
	}
	d.endStage()

	// 6. Summary.
	d.summary(ns, target, cp, rid, restored)
	return nil
}

// summary prints the timings, what the demo leaves behind and where to look next.
func (d *demo) summary(ns, target, cp, rid string, restored []*volumes.Volume) {
	fmt.Printf("\n==> Finished in %s\n", round(time.Since(d.t0)))
	for _, s := range d.stages {
		fmt.Printf("    %-18s %8s\n", s.name, round(s.took))
	}
	env := os.Getenv("PODGUARD_STACK_ENV")
	if env == "" {
		env = "~/.local/state/podguard/stack/env"
	}
	bank := os.Getenv("BANK_CONTAINER")
	var names, ids []string
	for _, v := range restored {
		names = append(names, v.Name)
		ids = append(ids, v.ID)
	}

	fmt.Printf("\nLeft for you to look at:\n")
	fmt.Printf("    namespace %s: the restored pods and claims; their persistent volumes (label %s=%s)\n", target, kube.LabelRestore, rid)
	fmt.Printf("    Cinder volumes %s\n", strings.Join(names, ", "))
	fmt.Printf("    in the bank (Swift container %s): the restore's record restores/%s/ and the deletion's deletions/%s/;\n", bank, rid, cp)
	fmt.Printf("    the checkpoint's objects and its Cinder backups are deleted, the original namespace %s too\n", ns)

	fmt.Printf("\nWhere to look next (in a shell with the stack's settings: set -a; . %s; set +a):\n", env)
	fmt.Printf("    kubectl get pods,pvc -n %s -o wide\n", target)
	fmt.Printf("    kubectl get pv -l %s=%s\n", kube.LabelRestore, rid)
	fmt.Printf("    kubectl get pods -n %s -o yaml      # the restored spec, with podguard's labels and annotations\n", target)
	for _, n := range names {
		fmt.Printf("    openstack volume list --long --name %s\n", n)
	}
	fmt.Printf("    openstack volume backup list               # the checkpoint's backups are gone\n")
	fmt.Printf("    swift -V 3 -A $OS_AUTH_URL list %s --prefix restores/%s/\n", bank, rid)
	fmt.Printf("    swift -V 3 -A $OS_AUTH_URL download %s restores/%s/restore.json -o -\n", bank, rid)
	fmt.Printf("    ls -l $PODGUARD_CINDER_EXPORT              # each Cinder volume is a file volume-<id>\n")
	fmt.Printf("    make stack-status\n")

	fmt.Printf("\nTo clean up:\n")
	fmt.Printf("    kubectl delete namespace %s; kubectl delete pv -l %s=%s\n", target, kube.LabelRestore, rid)
	fmt.Printf("    openstack volume delete %s\n", strings.Join(ids, " "))
	fmt.Printf("    make stack-down stops the stack: the next start begins with an empty Kubernetes, but Cinder\n")
	fmt.Printf("    volumes and Swift objects are kept, so delete the volumes above first\n")
}

// failures renders failed resources for an error message.
func failures(fs []events.FailedResource) string {
	if len(fs) == 0 {
		return "no resource reported"
	}
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString("; ")
		}
		name := f.Key
		if f.Name != "" {
			name = f.Name + " (" + f.Key + ")"
		}
		fmt.Fprintf(&b, "%s: %s", name, f.Reason)
	}
	return b.String()
}
