// Package deploy holds podguard's Knative install manifests, and the tests that keep
// them true to the code. It has no Go API.
//
//   - base/: the Broker, its EventPolicies (who may send which types into it), the
//     Triggers, the tick's PingSource, a Knative Service and a ServiceAccount per
//     function, the SinkBinding and the podguard-config ConfigMap, without a namespace
//     or Kubernetes permissions. The local runner routes by the Triggers listed in its
//     kustomization, and admits by its EventPolicies.
//   - overlays/cluster: the cluster-wide install (namespace podguard, ClusterRoles).
//   - overlays/namespaced: podguard protecting one namespace (Roles there; ClusterRoles
//     only for PersistentVolumes, which are cluster-scoped).
//   - overlays/*/namespace-replacements.yaml: the install's namespace into the values
//     that name it (the policies' subjects, the functions' Broker audience,
//     POD_NAMESPACE); a kustomization that sets another namespace carries a copy.
//   - openstack-secret.example.yaml: the template of the clouds.yaml Secret.
//   - bank-keys-secret.example.yaml: the template of the podguard-bank-keys Secret, the
//     keyring that seals saved pod definitions, mounted by snapshot-metadata and
//     recreate-pod only.
//   - monitoring/: Prometheus alerting rules (podguard.rules.yaml, with their promtool
//     unit tests), the same rules as a PrometheusRule, a Grafana dashboard, and a
//     kustomization installing both for the Prometheus Operator and Grafana's sidecar.
//
// The tests render both overlays with `kubectl kustomize` and check them offline (images,
// ServiceAccounts, routing against the event catalog, RBAC, settings against the
// functions' configuration, which Services hold the bank's keys, the EventPolicies
// against events.Senders and the Broker's decision for every sender and type, every
// Trigger's name and audiences, each function's Broker token, an install into another
// namespace); against the local stack they apply each overlay with
// `kubectl apply --dry-run=server`, validate the Knative objects as the Knative webhooks
// do (deploy/local/tools/knative), and ask the API server what each ServiceAccount may do.
// With promtool (Debian's prometheus package, which the local stack installs) they check
// the alerting rules and run their unit tests, and check every query of the dashboard;
// offline, that the rules and the dashboard name only the metrics the functions export.
package deploy
