package frontdoor

import (
	"maps"
	"slices"
	"strings"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/graph"
)

// The rights a request needs, as Kubernetes RBAC attributes on podguard's own resources
// (group podguard.dev; deploy/roles/roles.yaml grants them):
//
//	request                      verb, resource                 in
//	protect.requested            create checkpoints             each namespace of the plan's scope
//	restore.requested            get checkpoints                each namespace of the checkpoint
//	                             create restores                the target namespace (each of the checkpoint's when restoring in place)
//	                             and, of Kubernetes itself (objectRights), where the objects land:
//	                             create pods, persistentvolumeclaims, and the configmaps, secrets
//	                             and serviceaccounts the checkpoint holds; impersonate each
//	                             serviceaccount its pods run as; create namespaces (cluster-wide)
//	                             with create_namespace
//	delete.requested             delete checkpoints             each namespace of the checkpoint
//	checkpoint.show, .list       get, list checkpoints          each namespace of the checkpoint (lists show only those)
//	restore.show, restores.list  get, list restores             each namespace the restore lands in
//	schedule.set                 create schedules               each namespace of the plan's scope
//	                             update schedules               each namespace of the schedule it replaces
//	schedule.delete              delete schedules               each namespace of the schedule
//	schedules.list               list schedules                 each namespace of the schedule
//	pods.list, pod.show          list, get protectables         each namespace of the scope, the pod's namespace
//	provider.show                get providers                  cluster-wide
//	deadletters.list             list deadletters               cluster-wide
//	deadletter.replay            create deadletters/replay      cluster-wide
//
// A scope of all namespaces, a label selector over all namespaces or pods named by
// resource id (whose namespace cannot be told without resolving them) is cluster-wide:
// it needs the right in every namespace, granted by a ClusterRoleBinding.

// Resources of group podguard.dev.
const (
	resCheckpoints  = "checkpoints"
	resRestores     = "restores"
	resSchedules    = "schedules"
	resProtectables = "protectables"
	resProviders    = "providers"
	resDeadLetters  = "deadletters"
)

// namespacesOf are the namespaces a scope touches; nil means cluster-wide.
func namespacesOf(s events.Scope) []string {
	switch {
	case len(s.Namespaces) > 0:
		return sortedUnique(s.Namespaces)
	case len(s.Pods) > 0:
		var ns []string
		for _, p := range s.Pods {
			namespace, _, ok := graph.SplitPodName(p)
			if !ok {
				return nil // a resource id: cluster-wide
			}
			ns = append(ns, namespace)
		}
		return sortedUnique(ns)
	}
	return nil
}

// rights are verb on resource in each of namespaces (cluster-wide when nil).
func rights(verb, resource string, namespaces []string) []access.Attributes {
	if namespaces == nil {
		return []access.Attributes{{Verb: verb, Resource: resource}}
	}
	out := make([]access.Attributes, 0, len(namespaces))
	for _, ns := range namespaces {
		out = append(out, access.Attributes{Verb: verb, Resource: resource, Namespace: ns})
	}
	return out
}

// objectRights are the Kubernetes rights a restore of graph g with parameters p needs of
// its caller, so that a restore creates nothing its caller could not create themself:
// podguard creates the objects with its own rights, and refuses instead of impersonating
// (impersonation would need podguard to hold impersonate on every user, group and service
// account: the widest right of a cluster). In each namespace the objects land in (the
// target, or each object's own in place): create pods, and persistentvolumeclaims when
// the pods have volumes, and the configmaps, secrets and serviceaccounts the checkpoint
// holds; impersonate each service account its pods run as (a pod acts with its service
// account's rights; Kubernetes' edit role grants this in a namespace); and create
// namespaces when the restore may create a missing one. The persistent volumes podguard
// binds the restored Cinder volumes to are its own to create, as a provisioner's are.
// Pod Security admission judges each restored pod on its own, whoever creates it.
func objectRights(g *graph.Graph, p events.RestoreParameters) []access.Attributes {
	land := func(name string) (string, string, bool) {
		ns, n, ok := graph.SplitPodName(name)
		if p.Namespace != "" {
			ns = p.Namespace
		}
		return ns, n, ok
	}
	set := map[access.Attributes]bool{}
	add := func(verb, resource, name, ns string) {
		set[access.Attributes{Verb: verb, Group: access.Core, Resource: resource, Name: name, Namespace: ns}] = true
	}
	volumes := false
	for i := range g.Nodes {
		volumes = volumes || g.Nodes[i].Type == graph.VolumeType
	}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		ns, name, ok := land(n.Name)
		if !ok {
			continue
		}
		switch n.Type {
		case graph.PodType:
			add("create", "pods", "", ns)
			if volumes {
				add("create", "persistentvolumeclaims", "", ns)
			}
		case graph.ConfigMapType:
			add("create", "configmaps", "", ns)
		case graph.SecretType:
			add("create", "secrets", "", ns)
		case graph.ServiceAccountType:
			add("create", "serviceaccounts", "", ns)
			add("impersonate", "serviceaccounts", name, ns)
		}
	}
	if p.CreateNamespace {
		add("create", "namespaces", "", "")
	}
	out := slices.Collect(maps.Keys(set))
	slices.SortFunc(out, func(a, b access.Attributes) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// restoreTargets are the namespaces a restore of a checkpoint of sources lands in.
func restoreTargets(p events.RestoreParameters, sources []string) []string {
	if p.Namespace != "" {
		return []string{p.Namespace}
	}
	return sources
}

func sortedUnique(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}
