// Package snapshotmetadata is the snapshot-metadata function: it saves into a checkpoint
// what recreating one pod needs (its definition, and those of its claims and persistent
// volumes), and reports the resource available, or error with the reason.
package snapshotmetadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
)

// Accepts are the event types snapshot-metadata handles.
var Accepts = []string{events.MetadataSnapshot}

// Config is snapshot-metadata's configuration from the environment.
type Config struct {
	Kube      kube.Config
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// cluster reads the objects a pod's definition is made of.
type cluster interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	GetPV(ctx context.Context, name string) (*corev1.PersistentVolume, error)
}

// records reads and writes the records of a checkpoint.
type records interface {
	Record(ctx context.Context, checkpoint, key string) (*bank.Record, error)
	PutRecord(ctx context.Context, checkpoint string, r bank.Record) error
}

// Step is the snapshot-metadata step.
type Step struct {
	cluster cluster
	records records
	now     func() time.Time
}

// New builds the step from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	cs, err := kube.NewClientset(cfg.Kube)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(kube.Clientset{Interface: cs}, b, time.Now), nil
}

// NewStep builds the step from its dependencies.
func NewStep(c cluster, r records, now func() time.Time) *Step {
	return &Step{cluster: c, records: r, now: now}
}

// Workers bounds the pods of a batch read at once.
const workers = 8

// Handle saves the definitions of a batch of pods. A pod that no longer exists, or a
// request past its deadline, ends that resource in error (answered 200: the request
// itself was fine); an unreachable API server or bank is answered 5xx so the whole
// batch is redelivered.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.StepRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	for i, r := range req.Resources {
		if r.Type != graph.PodType {
			return nil, function.Permanent(fmt.Errorf("/resources/%d/type: snapshot-metadata saves %s, not %s", i, graph.PodType, r.Type))
		}
		if _, _, ok := strings.Cut(r.Name, ":"); !ok {
			return nil, function.Permanent(fmt.Errorf("/resources/%d/name: %q is not namespace:name", i, r.Name))
		}
	}
	// A redelivered request finds the work done and reports the same outcome.
	if r, err := s.records.Record(ctx, req.Checkpoint, req.Batch); err == nil {
		return result(req, r)
	} else if !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	rec := bank.Record{Batch: req.Batch, UpdatedAt: s.now().UTC(), Resources: make(map[string]bank.ResourceRecord, len(req.Resources))}
	if !req.Deadline.IsZero() && s.now().After(req.Deadline) {
		reason := fmt.Sprintf("deadline %s passed before the pod's metadata was saved", req.Deadline.UTC().Format(time.RFC3339))
		for _, r := range req.Resources {
			rec.Resources[r.Key()] = bank.ResourceRecord{Status: events.StatusError, Reason: reason}
		}
	} else if err := s.snapshot(ctx, req.Resources, &rec); err != nil {
		return nil, err
	}
	if err := s.records.PutRecord(ctx, req.Checkpoint, rec); err != nil {
		return nil, err
	}
	return result(req, &rec)
}

// snapshot saves each pod of the batch into rec, a few at a time.
func (s *Step) snapshot(ctx context.Context, pods []graph.Resource, rec *bank.Record) error {
	var mu sync.Mutex
	return batch.Each(ctx, pods, workers, func(ctx context.Context, r graph.Resource) error {
		ns, name, _ := strings.Cut(r.Name, ":")
		info, reason, err := s.collect(ctx, ns, name)
		rr := bank.ResourceRecord{Status: events.StatusAvailable}
		if reason != "" {
			rr = bank.ResourceRecord{Status: events.StatusError, Reason: reason}
		} else if err == nil {
			rr.Data, err = json.Marshal(info)
		}
		mu.Lock()
		rec.Resources[r.Key()] = rr
		mu.Unlock()
		return err
	})
}

// collect reads the pod, its claims and their volumes. A reason is returned for what can
// never succeed (the pod or a claim is gone); an error for what may succeed on retry.
func (s *Step) collect(ctx context.Context, ns, name string) (*checkpoint.PodInfo, string, error) {
	p, err := s.cluster.GetPod(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Sprintf("pod %s/%s no longer exists", ns, name), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	info := &checkpoint.PodInfo{Pod: kube.SavedPod(p)}
	for _, v := range p.Spec.Volumes {
		claim := ""
		switch {
		case v.PersistentVolumeClaim != nil:
			claim = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			claim = p.Name + "-" + v.Name
		default:
			continue
		}
		c, err := s.cluster.GetPVC(ctx, ns, claim)
		if apierrors.IsNotFound(err) {
			return nil, fmt.Sprintf("persistent volume claim %s/%s of pod %s no longer exists", ns, claim, name), nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("get persistent volume claim %s/%s: %w", ns, claim, err)
		}
		info.Claims = append(info.Claims, kube.SavedClaim(c))
		if c.Spec.VolumeName == "" {
			continue
		}
		pv, err := s.cluster.GetPV(ctx, c.Spec.VolumeName)
		if apierrors.IsNotFound(err) {
			continue // reported by list-pods as a problem; the claim is still saved
		}
		if err != nil {
			return nil, "", fmt.Errorf("get persistent volume %s: %w", c.Spec.VolumeName, err)
		}
		info.Volumes = append(info.Volumes, kube.SavedVolume(pv))
	}
	return info, "", nil
}

func result(req events.StepRequest, rec *bank.Record) (*event.Event, error) {
	return function.Reply(events.MetadataSnapshotted, rec.Result(req))
}
