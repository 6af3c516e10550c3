package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// createOriginals creates the namespace and its two pods: web on a CSI volume, db on an
// in-tree one, each volume holding a line of known data at its start.
func (d *demo) createOriginals(ns string) ([]original, error) {
	if _, err := d.kube.CoreV1().Namespaces().Create(d.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var out []original
	for i, name := range []string{"web", "db"} {
		o := original{namespace: ns, pod: name, claim: name + "-data", pv: ns + "-" + name,
			data: fmt.Sprintf("podguard demo: the data of %s, written %s\n", name, time.Now().UTC().Format(time.RFC3339))}
		o.kind = map[bool]string{true: "CSI (cinder.csi.openstack.org)", false: "in-tree cinder"}[i == 0]
		v, err := d.podOnVolume(o, i == 0)
		if err != nil {
			return nil, err
		}
		o.volume = v
		out = append(out, o)
		fmt.Printf("    pod %s/%s  claim %s -> PV %s (%s) -> Cinder volume %s\n", ns, name, o.claim, o.pv, o.kind, v.ID)
		fmt.Printf("        data: %q\n", o.data)
	}
	return out, nil
}

// podOnVolume creates a Cinder volume, writes the data into it, and a Running pod on it
// through a PV and a claim.
func (d *demo) podOnVolume(o original, csi bool) (*volumes.Volume, error) {
	v, err := d.volumes.Create(d.ctx, o.pv, 1, map[string]string{"podguard-demo": o.namespace})
	if err != nil {
		return nil, err
	}
	if v, err = d.volumes.WaitForStatus(d.ctx, v.ID, volumes.StatusAvailable); err != nil {
		return nil, err
	}
	// The NFS driver keeps the volume as a file: write the data into it.
	f, err := os.OpenFile(d.volumeFile(v.ID), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("write into volume %s: %w", v.ID, err)
	}
	if _, err := f.WriteAt([]byte(o.data), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write into volume %s: %w", v.ID, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write into volume %s: %w", v.ID, err)
	}
	pv := stacktest.CinderPV(o.pv, v.ID, csi, o.namespace, o.claim)
	if _, err := d.kube.CoreV1().PersistentVolumes().Create(d.ctx, pv, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := d.kube.CoreV1().PersistentVolumeClaims(o.namespace).Create(d.ctx, stacktest.Claim(o.namespace, o.claim, pv.Name), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := d.kube.CoreV1().Pods(o.namespace).Create(d.ctx, stacktest.Pod(o.namespace, o.pod, map[string]string{"app": o.pod}, o.claim), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	return v, d.waitReady(o.namespace, o.pod, o.claim)
}

// volumeFile is the file the NFS driver keeps a Cinder volume in.
func (d *demo) volumeFile(id string) string { return filepath.Join(d.export, "volume-"+id) }

// waitReady waits until the pod is Running and its claim Bound.
func (d *demo) waitReady(ns, pod, claim string) error {
	return d.poll(fmt.Sprintf("pod %s/%s Running with claim %s Bound", ns, pod, claim), func(ctx context.Context) (bool, error) {
		p, err := d.kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		c, cerr := d.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		return err == nil && cerr == nil && p.Status.Phase == corev1.PodRunning && c.Status.Phase == corev1.ClaimBound, nil
	})
}

// poll checks cond every 200ms until it holds, fails, or the demo's deadline passes.
func (d *demo) poll(what string, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond(d.ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-d.ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, d.ctx.Err())
		case <-tick.C:
		}
	}
}

// gone waits until get answers NotFound.
func (d *demo) gone(what string, get func(context.Context) error) error {
	return d.poll(what+" gone", func(ctx context.Context) (bool, error) {
		err := get(ctx)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// showBackups lists the Cinder backups the checkpoint made of the original volumes.
func (d *demo) showBackups(originals []original) error {
	fmt.Printf("    Cinder backups of the original volumes:\n")
	for _, o := range originals {
		bs, err := d.backups.List(d.ctx, o.volume.ID)
		if err != nil {
			return fmt.Errorf("list the backups of volume %s: %w", o.volume.ID, err)
		}
		for _, b := range bs {
			mode := "full"
			if b.IsIncremental {
				mode = "incremental"
			}
			fmt.Printf("      volume %s (%s): backup %s, %s, %s, %d GiB\n", o.volume.ID, o.volume.Name, b.ID, b.Status, mode, b.Size)
		}
	}
	return nil
}

// deleteOriginals deletes the pods, then their claims, persistent volumes and Cinder
// volumes, then the namespace, waiting for each to be gone.
func (d *demo) deleteOriginals(ns string, originals []original) error {
	noGrace := int64(0)
	w := tabwriter.NewWriter(os.Stdout, 3, 2, 2, ' ', 0)
	fmt.Fprintln(w, "    DELETED\tNAME\t")
	for _, o := range originals {
		pods := d.kube.CoreV1().Pods(ns)
		if err := pods.Delete(d.ctx, o.pod, metav1.DeleteOptions{GracePeriodSeconds: &noGrace}); err != nil {
			return err
		}
		if err := d.gone("pod "+ns+"/"+o.pod, func(ctx context.Context) error { _, err := pods.Get(ctx, o.pod, metav1.GetOptions{}); return err }); err != nil {
			return err
		}
		fmt.Fprintf(w, "    pod\t%s/%s\t\n", ns, o.pod)
	}
	for _, o := range originals {
		claims := d.kube.CoreV1().PersistentVolumeClaims(ns)
		if err := claims.Delete(d.ctx, o.claim, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := d.gone("claim "+ns+"/"+o.claim, func(ctx context.Context) error { _, err := claims.Get(ctx, o.claim, metav1.GetOptions{}); return err }); err != nil {
			return err
		}
		fmt.Fprintf(w, "    claim\t%s/%s\t\n", ns, o.claim)
	}
	for _, o := range originals {
		pvs := d.kube.CoreV1().PersistentVolumes()
		if err := pvs.Delete(d.ctx, o.pv, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := d.gone("persistent volume "+o.pv, func(ctx context.Context) error { _, err := pvs.Get(ctx, o.pv, metav1.GetOptions{}); return err }); err != nil {
			return err
		}
		fmt.Fprintf(w, "    persistent volume\t%s\t(%s)\n", o.pv, o.kind)
	}
	for _, o := range originals {
		if err := d.volumes.Delete(d.ctx, o.volume.ID); err != nil {
			return err
		}
		if err := d.volumes.WaitForDeleted(d.ctx, o.volume.ID); err != nil {
			return err
		}
		if _, err := os.Stat(d.volumeFile(o.volume.ID)); !os.IsNotExist(err) {
			return fmt.Errorf("Cinder volume %s is deleted but its file %s is still there", o.volume.ID, d.volumeFile(o.volume.ID))
		}
		fmt.Fprintf(w, "    Cinder volume\t%s\t(%s, and its file volume-%s)\n", o.volume.ID, o.volume.Name, o.volume.ID)
	}
	nss := d.kube.CoreV1().Namespaces()
	if err := nss.Delete(d.ctx, ns, metav1.DeleteOptions{}); err != nil {
		return err
	}
	if err := d.gone("namespace "+ns, func(ctx context.Context) error { _, err := nss.Get(ctx, ns, metav1.GetOptions{}); return err }); err != nil {
		return err
	}
	fmt.Fprintf(w, "    namespace\t%s\t\n", ns)
	return w.Flush()
}

// showRestoredPods waits for the pods of a restore to run in the namespace and shows them
// as kubectl would.
func (d *demo) showRestoredPods(ns, rid string) error {
	var pods []corev1.Pod
	sel := metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + rid}
	err := d.poll(fmt.Sprintf("the restored pods in %s Running", ns), func(ctx context.Context) (bool, error) {
		l, err := d.kube.CoreV1().Pods(ns).List(ctx, sel)
		if err != nil {
			return false, err
		}
		pods = l.Items
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		return len(pods) > 0, nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("    kubectl get pods -n %s -l %s=%s\n", ns, kube.LabelRestore, rid)
	w := tabwriter.NewWriter(os.Stdout, 3, 2, 2, ' ', 0)
	fmt.Fprintln(w, "    NAME\tPHASE\tNODE\tCLAIMS (-> PV)\tRESTORED FROM")
	for _, p := range pods {
		var claims []string
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				continue
			}
			c, err := d.kube.CoreV1().PersistentVolumeClaims(ns).Get(d.ctx, v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			claims = append(claims, fmt.Sprintf("%s (%s) -> %s", c.Name, c.Status.Phase, c.Spec.VolumeName))
		}
		fmt.Fprintf(w, "    %s\t%s\t%s\t%s\t%s\n", p.Name, p.Status.Phase, p.Spec.NodeName, strings.Join(claims, ", "), p.Annotations[kube.AnnotationRestoredFrom])
	}
	return w.Flush()
}

// checkData compares the start of each restored volume's file with what was written into
// the original volume; it returns the restored volumes.
func (d *demo) checkData(view *checkpoint.RestoreView, originals []original) ([]*volumes.Volume, error) {
	byOriginal := map[string]checkpoint.RestoredVolume{}
	for _, r := range view.Resources {
		if r.Type != graph.VolumeType || len(r.Restored) == 0 {
			continue
		}
		var rv checkpoint.RestoredVolume
		if err := json.Unmarshal(r.Restored, &rv); err != nil {
			return nil, fmt.Errorf("what volume %s was restored as: %w", r.ID, err)
		}
		byOriginal[r.ID] = rv
	}
	var out []*volumes.Volume
	for _, o := range originals {
		rv, ok := byOriginal[o.volume.ID]
		if !ok || rv.VolumeID == "" {
			return nil, fmt.Errorf("the restore shows no restored volume for volume %s", o.volume.ID)
		}
		v, err := d.volumes.Get(d.ctx, rv.VolumeID)
		if err != nil {
			return nil, fmt.Errorf("restored volume %s: %w", rv.VolumeID, err)
		}
		out = append(out, v)
		got, err := readStart(d.volumeFile(rv.VolumeID), len(o.data))
		if err != nil {
			return nil, fmt.Errorf("read restored volume %s: %w", rv.VolumeID, err)
		}
		fmt.Printf("    volume %s (%s) -> restored volume %s (%s, %s)\n", o.volume.ID, o.pod, v.ID, v.Name, v.Status)
		if !bytes.Equal(got, []byte(o.data)) {
			return nil, fmt.Errorf("data mismatch: restored volume %s starts with %q, the original %s held %q", v.ID, got, o.volume.ID, o.data)
		}
		fmt.Printf("        data matches: %q\n", got)
	}
	return out, nil
}

// readStart reads the first n bytes of a file.
func readStart(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}
