// Package deploy holds podguard's Knative install manifests, and the tests that keep
// them true to the code. It has no Go API.
//
//   - base/: the Broker, the Triggers, the tick's PingSource, a Knative Service and a
//     ServiceAccount per function, the SinkBinding and the podguard-config ConfigMap,
//     without a namespace or Kubernetes permissions. The local runner routes by the
//     Triggers listed in its kustomization.
//   - overlays/cluster: the cluster-wide install (namespace podguard, ClusterRoles).
//   - overlays/namespaced: podguard protecting one namespace (Roles there; ClusterRoles
//     only for PersistentVolumes, which are cluster-scoped).
//   - openstack-secret.example.yaml: the template of the clouds.yaml Secret.
//
// The tests render both overlays with `kubectl kustomize` and check them offline (images,
// ServiceAccounts, routing against the event catalog, RBAC, settings against the
// functions' configuration); against the local stack they apply each overlay with
// `kubectl apply --dry-run=server`, validate the Knative objects as the Knative webhooks
// do (deploy/local/tools/knative), and ask the API server what each ServiceAccount may do.
package deploy
