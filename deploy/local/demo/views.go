package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// getJSON reads a view of the front door, as the runner's admin.
func (d *demo) getJSON(path string, out any) error {
	url := d.runner.FrontDoor + path
	resp, err := d.runner.Read(d.ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

func history(h []bank.StatusChange) string {
	var parts []string
	for _, c := range h {
		parts = append(parts, c.Status+"@"+c.At.Local().Format("15:04:05"))
	}
	return strings.Join(parts, " -> ")
}

func (d *demo) showCheckpoint(id string) error {
	var v checkpoint.View
	if err := d.getJSON("/api/checkpoints/"+id, &v); err != nil {
		return err
	}
	fmt.Printf("    id        %s\n    plan      %s (%s)\n    status    %s\n    created   %s\n    history   %s\n",
		v.ID, v.Plan.ID, v.Plan.Name, v.Status, v.CreatedAt.Local().Format(time.RFC3339), history(v.History))
	w := tabwriter.NewWriter(os.Stdout, 3, 2, 2, ' ', 0)
	fmt.Fprintln(w, "    TYPE\tNAME\tID\tSTATUS")
	for _, r := range v.Resources {
		name := r.Name
		if r.Type == graph.VolumeType {
			name = "  " + name
		}
		fmt.Fprintf(w, "    %s\t%s\t%s\t%s %s\n", r.Type, name, r.ID, r.Status, r.Reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, p := range v.Problems {
		fmt.Printf("    problem   pod %s volume %s (claim %s): %s\n", p.Pod, p.Volume, p.Claim, p.Reason)
	}
	for _, x := range v.Excluded {
		fmt.Printf("    excluded  pod %s: %s\n", x.Pod, x.Reason)
	}
	return nil
}

// showRestore prints a restore as the checkpoints function shows it: its status and
// history, and each resource with its status and what it was restored as.
func (d *demo) showRestore(id string) (*checkpoint.RestoreView, error) {
	var v checkpoint.RestoreView
	if err := d.getJSON("/api/restores/"+id, &v); err != nil {
		return nil, err
	}
	fmt.Printf("    id          %s\n    name        %s\n    checkpoint  %s\n    namespace   %s\n    status      %s\n    created     %s\n    history     %s\n",
		v.ID, v.Parameters.RestoreName, v.Checkpoint, v.Parameters.Namespace, v.Status, v.CreatedAt.Local().Format(time.RFC3339), history(v.History))
	w := tabwriter.NewWriter(os.Stdout, 3, 2, 2, ' ', 0)
	fmt.Fprintln(w, "    RESOURCE\tSTATUS\tRESTORED AS")
	for _, r := range v.Resources {
		name := r.Type + " " + r.Name
		if r.Type == graph.VolumeType {
			name = "  " + name
		}
		status := r.Status
		if r.Reason != "" {
			status += ": " + r.Reason
		}
		fmt.Fprintf(w, "    %s\t%s\t%s\n", name, status, restoredAs(r))
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	for _, f := range v.Failed {
		fmt.Printf("    failed      %s: %s\n", f.Key, f.Reason)
	}
	return &v, nil
}

// restoredAs says in a few words what a resource was restored as.
func restoredAs(r checkpoint.RestoreResourceView) string {
	if len(r.Restored) == 0 {
		return "-"
	}
	switch r.Type {
	case graph.VolumeType:
		var v checkpoint.RestoredVolume
		if err := json.Unmarshal(r.Restored, &v); err != nil || v.VolumeID == "" {
			break
		}
		return fmt.Sprintf("Cinder volume %s %q, from backup %s", v.VolumeID, v.Name, v.BackupID)
	case graph.PodType:
		var p checkpoint.RestoredPod
		if err := json.Unmarshal(r.Restored, &p); err != nil || p.Name == "" {
			break
		}
		s := fmt.Sprintf("pod %s/%s", p.Namespace, p.Name)
		if p.Phase != "" {
			s += " (" + p.Phase + ")"
		}
		if len(p.Claims) > 0 {
			s += ", claims " + strings.Join(p.Claims, ", ")
		}
		if len(p.PersistentVolumes) > 0 {
			s += ", PVs " + strings.Join(p.PersistentVolumes, ", ")
		}
		return s
	case graph.ConfigMapType, graph.SecretType, graph.ServiceAccountType:
		var o checkpoint.RestoredObject
		if err := json.Unmarshal(r.Restored, &o); err != nil || o.Name == "" || o.Outcome == "" {
			break
		}
		return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Namespace, o.Name, o.Outcome)
	}
	return string(r.Restored)
}
