// Package snapshotmetadata is the snapshot-metadata function: it saves into a checkpoint
// what recreating one pod needs (its definition, and those of its claims and persistent
// volumes), and the definitions of the ConfigMaps, Secrets and ServiceAccounts pods
// reference (dependencies.go), and reports each resource available, or error with the
// reason. Every definition reaches the record through one function, saved.
//
// A definition holds whatever its owners put in it (passwords in literal env values, a
// Secret's data), so it is sealed with the bank's primary key (package seal) before it
// is written: Swift holds it only as an envelope, bound to its place in the checkpoint.
// Statuses and reasons stay in clear, for the functions that hold no key. The keys used
// are noted in the bank (bank.NoteKeys) before the record is written, so that the
// checkpoints a key still opens are known when it is to be retired.
package snapshotmetadata

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/step"
)

// Accepts are the event types snapshot-metadata handles.
var Accepts = []string{events.MetadataSnapshot}

// Config is snapshot-metadata's configuration from the environment.
type Config struct {
	Kube      kube.Config
	Bank      bank.Config
	OpenStack openstack.Config
	// Keys is the bank's keyring (BANK_KEYS_DIR); the step does not start without it.
	Keys seal.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if err := c.Keys.Validate(); err != nil {
		return err
	}
	return c.Bank.Validate()
}

// cluster reads the objects a pod's definition is made of, and those a pod references.
type cluster interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	GetPV(ctx context.Context, name string) (*corev1.PersistentVolume, error)
	GetConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	GetServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

// sealer seals saved definitions with its primary key (a *seal.Keyring).
type sealer interface {
	checkpoint.Sealer
	Primary() string
}

// keyNotes records which keys a checkpoint's envelopes are sealed with (the bank).
type keyNotes interface {
	NoteKeys(ctx context.Context, checkpoint string, ids []string) error
}

// Step is the snapshot-metadata step.
type Step struct {
	cluster cluster
	runner  *step.Runner
	keys    sealer
	notes   keyNotes
	now     func() time.Time
}

// New builds the step from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	keys, err := cfg.Keys.Load()
	if err != nil {
		return nil, err
	}
	cs, err := kube.NewClientset(ctx, cfg.Kube)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(kube.Clientset{Interface: cs}, b, keys, time.Now), nil
}

// NewStep builds the step from its dependencies: the cluster, the bank, the keyring
// saved definitions are sealed with, and the clock.
func NewStep(c cluster, b *bank.Bank, keys sealer, now func() time.Time) *Step {
	return &Step{cluster: c, runner: step.New(b, now), keys: keys, notes: b, now: now}
}

// Workers bounds the pods of a batch read at once.
const workers = 8

// kind: snapshot-metadata takes batches of pods of a checkpoint being protected, and of
// the ConfigMaps, Secrets and ServiceAccounts they reference.
var kind = step.Kind{Step: events.FnSnapshotMetadata, Types: append([]string{graph.PodType}, graph.DependencyTypes()...), Reply: events.MetadataSnapshotted}

// Handle saves the definitions of a batch of the checkpoint's pods (the pod, its claims
// and their persistent volumes), or of the objects they reference, in the batch's
// record. A redelivered request finds the work done and reports the same outcome.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return s.runner.Protect(ctx, e, kind, s.batch)
}

// batch saves the pods of a job, or the objects they reference; once any was sealed,
// the key is noted before the record is written.
func (s *Step) batch(ctx context.Context, j *step.Job) (map[string]bank.ResourceRecord, bool, error) {
	each := s.object
	if j.Batch.Type == graph.PodType {
		each = s.pod
	}
	settled, done, err := step.Each(workers, each)(ctx, j)
	if err != nil || !done {
		return nil, false, err
	}
	for _, rr := range settled {
		if rr.Status == events.StatusAvailable {
			if err := s.notes.NoteKeys(ctx, j.Checkpoint.ID, []string{s.keys.Primary()}); err != nil {
				return nil, false, err
			}
			break
		}
	}
	return settled, true, nil
}

// saved is the record of resource r of a job whose definitions were read: info, the
// resource's saved info, sealed as the record's data. Every definition snapshot-metadata
// saves, the Secrets' included, is written into a record here and nowhere else.
func (s *Step) saved(j *step.Job, r graph.Resource, info any) (bank.ResourceRecord, error) {
	data, err := checkpoint.SealInfo(s.keys, j.Checkpoint.ID, j.Batch.Name, r.Key(), info)
	if err != nil {
		return bank.ResourceRecord{}, err
	}
	return bank.ResourceRecord{Status: events.StatusAvailable, Data: data}, nil
}

// pod saves one pod's definition; a pod that can never be saved (gone, or past the
// deadline) is an error with the reason.
func (s *Step) pod(ctx context.Context, j *step.Job, r graph.Resource) (bank.ResourceRecord, bool, error) {
	if j.PastDeadline(s.now()) {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("deadline %s passed before the pod's metadata was saved", j.Deadline.UTC().Format(time.RFC3339))}, true, nil
	}
	ns, name, ok := graph.SplitPodName(r.Name)
	if !ok {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("%q is not namespace:name", r.Name)}, true, nil
	}
	info, reason, err := s.collect(ctx, ns, name)
	if err != nil {
		return bank.ResourceRecord{}, false, err
	}
	if reason != "" {
		return bank.ResourceRecord{Status: events.StatusError, Reason: reason}, true, nil
	}
	rec, err := s.saved(j, r, info)
	return rec, err == nil, err
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
