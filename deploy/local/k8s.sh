#!/usr/bin/env bash
# deploy/local/k8s.sh - a loopback-only Kubernetes control plane for podguard's local stack:
# etcd, kube-apiserver, kube-scheduler, kube-controller-manager (PV/PVC binder included) and
# kwok with one fake node, so pods reach Running without a kubelet or containers.
#
# Usage: deploy/local/k8s.sh build|start|stop|status|knative-crds|envtest-assets
#   build           build missing binaries from the Go module proxy through the tool modules in
#                   deploy/local/tools/{etcd,k8s,kwok} into $PODGUARD_CACHE_DIR/bin/<name>-<version>/
#                   (cold: about 10 min on 2 cores; nothing to do when they exist)
#   start           start (etcd data is wiped: every start is a fresh, empty cluster)
#   stop            stop what start started, by recorded PID
#   status          one line per process: component name pid up|down rss_kib
#   knative-crds    apply the Knative Serving and Eventing CRDs ($KNATIVE_VERSION, from their
#                   module zips) so `kubectl apply --dry-run=server` can check Knative manifests
#   envtest-assets  print a directory usable as KUBEBUILDER_ASSETS (etcd, kube-apiserver, kubectl)
#
# Ports and versions: deploy/local/stack.env. Kubeconfig: $STACK_DIR/kubeconfig.
COMPONENT=k8s
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOOLS=$LOCAL_DIR/tools
K8S_BIN=$PODGUARD_CACHE_DIR/bin/k8s-$K8S_VERSION
ETCD_BIN=$PODGUARD_CACHE_DIR/bin/etcd-$ETCD_VERSION
KWOK_BIN=$PODGUARD_CACHE_DIR/bin/kwok-$KWOK_VERSION
ASSETS=$PODGUARD_CACHE_DIR/bin/envtest-$K8S_VERSION
KUBECTL=$K8S_BIN/kubectl
PKI=$DIR/pki
KUBECONFIG_FILE=$STACK_DIR/kubeconfig
PROCS=(etcd kube-apiserver kube-scheduler kube-controller-manager kwok)

# --- build ----------------------------------------------------------------------------

k8s_ldflags() {
  local v=$K8S_VERSION major minor f="-s -w" p
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$f"
}

# check_pin TOOLDIR MODULE VERSION : the tool module must pin the version stack.env asks for
check_pin() {
  grep -qE "^[[:space:]]*(require )?$2 $3( |$)" "$TOOLS/$1/go.mod" ||
    die "deploy/local/tools/$1/go.mod does not require $2 $3 (update it with: cd deploy/local/tools/$1 && go get -tool ...@$3)"
}

# build_bin TOOLDIR OUT PKG LDFLAGS : go build PKG in the tool module, unless OUT exists
build_bin() {
  local tooldir=$1 out=$2 pkg=$3 ldflags=$4 t
  [ -x "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  log "building $(basename "$out") ($pkg) ..."
  t=$(timer_start)
  (cd "$TOOLS/$tooldir" && go build -trimpath -ldflags="$ldflags" -o "$out.tmp" "$pkg") ||
    die "build of $pkg failed"
  mv -f "$out.tmp" "$out"
  log "built $(basename "$out") in $(elapsed "$t")"
}

build() {
  command -v go >/dev/null || die "go is not installed"
  check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  check_pin k8s k8s.io/kubernetes "$K8S_VERSION"
  check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
  mkdir -p "$PODGUARD_CACHE_DIR/bin"
  # one build at a time, also across clones and concurrent `make` runs
  exec 9>"$PODGUARD_CACHE_DIR/bin/.build.lock"
  flock 9
  build_bin etcd "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3 "-s -w"
  build_bin etcd "$ETCD_BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3 "-s -w"
  local c
  for c in kube-apiserver kubectl kube-scheduler kube-controller-manager; do
    build_bin k8s "$K8S_BIN/$c" "k8s.io/kubernetes/cmd/$c" "$(k8s_ldflags)"
  done
  build_bin kwok "$KWOK_BIN/kwok" sigs.k8s.io/kwok/cmd/kwok "-s -w"
  mkdir -p "$ASSETS"
  ln -sfn "$ETCD_BIN/etcd" "$ASSETS/etcd"
  ln -sfn "$K8S_BIN/kube-apiserver" "$ASSETS/kube-apiserver"
  ln -sfn "$K8S_BIN/kubectl" "$ASSETS/kubectl"
  exec 9>&-
}

# --- configuration ----------------------------------------------------------------------

gen_pki() {
  [ -f "$PKI/admin.token" ] && return 0
  log "generating PKI in $PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    local q=(-days 3650)
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "${q[@]}" -subj /CN=podguard-local-ca
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt "${q[@]}" -extfile apiserver.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj /O=system:masters/CN=admin
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt "${q[@]}" -extfile client.ext
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    local token; token=$(openssl rand -hex 16)
    echo "$token,admin,admin-uid,system:masters" >tokens.csv
    echo "$token" >admin.token
  ) >"$LOG_DIR/pki.log" 2>&1 || die "PKI generation failed, see $LOG_DIR/pki.log"
}

write_kubeconfig() {
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podguard-local
  cluster:
    server: https://$LISTEN_ADDR:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $(cat "$PKI/admin.token")
- name: admin-cert
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: podguard-local
  context: {cluster: podguard-local, user: admin}
- name: podguard-local-cert
  context: {cluster: podguard-local, user: admin-cert}
current-context: podguard-local
EOF
}

module_dir() { # MODULE@VERSION -> its extracted directory in the module cache
  local d
  d=$(cd "$DIR" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$d" ] || die "go mod download $1 failed"
  echo "$d"
}

# kwok stages (from its module zip): nodes become Ready and keep a lease, pods go Running.
write_kwok_config() {
  [ -s "$DIR/kwok-stages-$KWOK_VERSION.yaml" ] && return 0
  local st f
  st=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    grep -v '^#' "$st/$f"
  done >"$DIR/kwok-stages-$KWOK_VERSION.yaml.tmp"
  mv "$DIR/kwok-stages-$KWOK_VERSION.yaml.tmp" "$DIR/kwok-stages-$KWOK_VERSION.yaml"
}

kwok_node_manifest() {
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $KWOK_NODE
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/arch: amd64, kubernetes.io/hostname: $KWOK_NODE, kubernetes.io/os: linux, type: kwok}
spec: {}
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "20000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "20000"}
EOF
}

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=20s "$@"; }

# --- start / stop ---------------------------------------------------------------------

start() {
  if all_up "${PROCS[@]}"; then log "already running"; return 0; fi
  stop_procs
  build
  mkdir -p "$DIR" "$RUN_DIR" "$LOG_DIR"
  gen_pki
  write_kubeconfig
  write_kwok_config
  local t
  t=$(timer_start)
  rm -rf "$DIR/etcd-data"
  proc_start etcd "$ETCD_BIN/etcd" --name local --data-dir "$DIR/etcd-data" --log-level warn \
    --listen-client-urls "http://$LISTEN_ADDR:$ETCD_PORT" --advertise-client-urls "http://$LISTEN_ADDR:$ETCD_PORT" \
    --listen-peer-urls "http://$LISTEN_ADDR:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$LISTEN_ADDR:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://$LISTEN_ADDR:$ETCD_PEER_PORT" --quota-backend-bytes 2147483648 --unsafe-no-fsync
  wait_for 30 etcd http_ok "http://$LISTEN_ADDR:$ETCD_PORT/health" || die "etcd not ready, see $LOG_DIR/etcd.log"
  # The discovery document names a key set URL reachable from here
  # (--service-account-jwks-uri), so that Knative's broker, like podguard's functions, can
  # verify service-account tokens against the apiserver's keys.
  proc_start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://$LISTEN_ADDR:$ETCD_PORT" --bind-address="$LISTEN_ADDR" --advertise-address="$LISTEN_ADDR" \
    --secure-port="$APISERVER_PORT" --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-jwks-uri="https://$LISTEN_ADDR:$APISERVER_PORT/openid/v1/jwks" \
    --authorization-mode=RBAC --allow-privileged=true --profiling=false
  wait_for 90 kube-apiserver apiserver_ready || die "kube-apiserver not ready, see $LOG_DIR/kube-apiserver.log"
  log "etcd + kube-apiserver ready in $(elapsed "$t")"
  proc_start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --leader-elect=false --bind-address="$LISTEN_ADDR" --secure-port="$KUBE_SCHEDULER_PORT" \
    --kube-api-qps=500 --kube-api-burst=1000
  # namespaces, GC, service accounts, PV/PVC binder, deployments/replicasets, jobs, ...
  # The PV binder binds a pre-bound PV/claim pair (what a restore creates) at once or, when
  # its workers race, at its next periodic sync: every 2 s here instead of 15 s.
  proc_start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --leader-elect=false --bind-address="$LISTEN_ADDR" --secure-port="$KUBE_CONTROLLER_MANAGER_PORT" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=false \
    --kube-api-qps=500 --kube-api-burst=1000 --pvclaimbinder-sync-period=2s \
    --controllers='*,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller'
  proc_start kwok "$KWOK_BIN/kwok" --kubeconfig="$KUBECONFIG_FILE" --config="$DIR/kwok-stages-$KWOK_VERSION.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip="$LISTEN_ADDR" \
    --server-address="$LISTEN_ADDR:$KWOK_PORT"
  kwok_node_manifest | kc apply -f - >/dev/null || die "cannot create node $KWOK_NODE"
  log "processes started in $(elapsed "$t"); waiting for node $KWOK_NODE Ready and the default service account"
  wait_for "$STACK_READY_TIMEOUT" "node $KWOK_NODE Ready" node_ready || die "node $KWOK_NODE not Ready, see $LOG_DIR/kwok.log"
  wait_for "$STACK_READY_TIMEOUT" "service account default/default" kc -n default get serviceaccount default ||
    die "no default service account, see $LOG_DIR/kube-controller-manager.log"
  all_up "${PROCS[@]}" || die "a control plane process exited, see $LOG_DIR"
  if [ "$STACK_KNATIVE_CRDS" = 1 ]; then knative_crds; fi
  log "ready in $(elapsed "$t"): KUBECONFIG=$KUBECONFIG_FILE"
}

apiserver_ready() {
  [ "$(curl -s --max-time 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")" \
    "https://$LISTEN_ADDR:$APISERVER_PORT/readyz")" = ok ]
}

node_ready() {
  [ "$(kc get node "$KWOK_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

stop_procs() {
  proc_stop 10 kwok kube-controller-manager kube-scheduler kube-apiserver
  proc_stop 10 etcd
}

stop() { stop_procs; }

status() { proc_status_lines "${PROCS[@]}"; }

# --- Knative CRDs -----------------------------------------------------------------------

knative_crds() {
  local t sd ed n
  t=$(timer_start)
  sd=$(module_dir "knative.dev/serving@$KNATIVE_VERSION")
  ed=$(module_dir "knative.dev/eventing@$KNATIVE_VERSION")
  kc apply --server-side -f "$sd/config/core/300-resources/" -f "$ed/config/core/resources/" \
    -f "$ed/config/channels/in-memory-channel/resources/" >/dev/null
  kc wait --for condition=established --timeout=60s crd -l knative.dev/crd-install=true >/dev/null
  n=$(kc get crd -l knative.dev/crd-install=true -o name | wc -l)
  log "Knative $KNATIVE_VERSION CRDs established: $n (in $(elapsed "$t"))"
}

case ${1:-} in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  knative-crds) apiserver_ready || die "kube-apiserver is not running (make stack-up)"; knative_crds ;;
  envtest-assets) build >&2; echo "$ASSETS" ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
