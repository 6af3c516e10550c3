package snapshotmetadata

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/step"
)

// object saves the definition of one ConfigMap, Secret or ServiceAccount that pods
// reference (checkpoint.ObjectInfo); one that can never be saved (gone since the listing,
// or past the deadline) is an error with the reason.
func (s *Step) object(ctx context.Context, j *step.Job, r graph.Resource) (bank.ResourceRecord, bool, error) {
	kind := graph.Kind(r.Type)
	if j.PastDeadline(s.now()) {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("deadline %s passed before the %s was saved", j.Deadline.UTC().Format(time.RFC3339), kind)}, true, nil
	}
	ns, name, ok := graph.SplitPodName(r.Name)
	if !ok {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("%q is not namespace:name", r.Name)}, true, nil
	}
	var info checkpoint.ObjectInfo
	var err error
	switch r.Type {
	case graph.ConfigMapType:
		c, gerr := s.cluster.GetConfigMap(ctx, ns, name)
		if err = gerr; err == nil {
			info.ConfigMap = kube.SavedConfigMap(c)
		}
	case graph.SecretType:
		sec, gerr := s.cluster.GetSecret(ctx, ns, name)
		if err = gerr; err == nil {
			info.Secret = kube.SavedSecret(sec)
		}
	case graph.ServiceAccountType:
		sa, gerr := s.cluster.GetServiceAccount(ctx, ns, name)
		if err = gerr; err == nil {
			info.ServiceAccount = kube.SavedServiceAccount(sa)
		}
	default:
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("snapshot-metadata does not save %s", r.Type)}, true, nil
	}
	if apierrors.IsNotFound(err) {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf("%s %s/%s no longer exists", kind, ns, name)}, true, nil
	}
	if err != nil {
		return bank.ResourceRecord{}, false, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	rec, err := s.saved(j, r, info)
	return rec, err == nil, err
}
