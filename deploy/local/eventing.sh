#!/usr/bin/env bash
# deploy/local/eventing.sh - Knative Eventing's own broker for podguard's local stack: the
# eventing controller, the mt-channel broker controller, broker ingress and filter, the
# in-memory channel controller and dispatcher and the eventing webhook, built from the Go
# module proxy and run as local processes against the local kube-apiserver, on 127.0.0.1.
#
# Usage: deploy/local/eventing.sh build|start|stop|status|env
#   build   build the binaries at $KNATIVE_VERSION through the tool module deploy/local/tools/eventing
#           into $PODGUARD_CACHE_DIR/bin/eventing-<version>-<key>/ (key: a hash of the tool
#           module, its patches included, and the Go version; nothing to do when they exist).
#           `go mod vendor` into $PODGUARD_CACHE_DIR/build/, asserted patches so every server
#           binds 127.0.0.1 and the hard-coded ports can be moved (tools/eventing/cmd/patch),
#           then `go build -overlay`. EVENTING_GOCACHE sets another GOCACHE (cold-build figures).
#   start   build if needed, apply the eventing system objects (from the module's config/),
#           start the processes, wait until they serve, write $STACK_DIR/eventing.env
#   stop    stop them by recorded PID; remove the webhook configurations (so nothing in the
#           cluster waits on a webhook that is gone) and the env file
#   status  one line per process: component name pid up|down rss_kib
#   env     print the env file's path (it exists while eventing runs)
#
# Addressing. Knative's data plane names its parts by cluster DNS names on port 80
# (broker-ingress.knative-eventing.svc.cluster.local, ...). The ingress, filter and
# dispatcher get HTTP_PROXY=svcproxy (tools/eventing/cmd/svcproxy), which maps those names
# to the local ports; Go never proxies loopback, so 127.0.0.1 subscribers and the
# kube-apiserver are reached directly. They also get HTTPS_PROXY=svcproxy, which tunnels
# kubernetes.default.svc (where Knative's OIDC verifier reads the apiserver's discovery
# document) to the kube-apiserver: the local Knative mode runs with authentication-oidc
# enabled, as podguard is installed. Readiness: the upstream Deployments and Services of
# the ingress, filter and dispatcher are applied unchanged, so kwok runs their pods and the
# broker and channel reconcilers see Available deployments and ready endpoints; those pods
# are never dialled. The webhook is reached by kube-apiserver through an ExternalName
# Service (127.0.0.1) and webhook configurations pointing at $EVENTING_WEBHOOK_PORT.
#
# Ports: deploy/local/stack.env. Logs and PID files: $STACK_DIR/eventing/{log,run}.
COMPONENT=eventing
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOOL=$LOCAL_DIR/tools/eventing
K8S_BIN=$PODGUARD_CACHE_DIR/bin/k8s-$K8S_VERSION
KUBECTL=$K8S_BIN/kubectl
KUBECONFIG_FILE=$STACK_DIR/kubeconfig
EVENTING_ENV=$STACK_DIR/eventing.env
NS=knative-eventing
L=$LISTEN_ADDR
# Process names, in start order; stop runs in reverse.
PROCS=(svcproxy eventing-webhook eventing-controller mt-broker-controller imc-controller broker-ingress broker-filter imc-dispatcher)
# The upstream packages and what their binaries are called here.
UPSTREAM=(
  controller=knative.dev/eventing/cmd/controller
  mtchannel_broker=knative.dev/eventing/cmd/mtchannel_broker
  ingress=knative.dev/eventing/cmd/broker/ingress
  filter=knative.dev/eventing/cmd/broker/filter
  channel_dispatcher=knative.dev/eventing/cmd/in_memory/channel_dispatcher
  webhook=knative.dev/eventing/cmd/webhook
)
declare -A BIN_NAME=(
  [controller]=eventing-controller [mtchannel_broker]=mt-broker-controller [ingress]=broker-ingress
  [filter]=broker-filter [channel_dispatcher]=imc-dispatcher [webhook]=eventing-webhook
  [imc-controller]=imc-controller [svcproxy]=svcproxy
)
# Fixed internal ports (stack.env lists them): https receivers, probes, profiling.
INGRESS_HTTPS_PORT=18611 FILTER_HTTPS_PORT=18612 DISPATCHER_HTTPS_PORT=18613
declare -A PROBES_PORT=([eventing-controller]=18621 [mt-broker-controller]=18622 [imc-controller]=18623 [eventing-webhook]=18624)
declare -A PPROF_PORT=([eventing-controller]=18631 [mt-broker-controller]=18632 [imc-controller]=18633 [eventing-webhook]=18634
  [broker-ingress]=18635 [broker-filter]=18636 [imc-dispatcher]=18637)

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=30s "$@"; }

# --- build ----------------------------------------------------------------------------

# module_files : the tool module's files a build uses (go.mod, go.sum, the non-test Go
# files: the patches are Go), relative to it.
module_files() {
  (cd "$TOOL" && find . -type f \( -name go.mod -o -name go.sum -o \( -name '*.go' ! -name '*_test.go' \) \) | LC_ALL=C sort)
}

# cache_key : hash of those files and of the Go version, so a changed patch or toolchain
# builds anew.
cache_key() {
  (
    go version
    cd "$TOOL" && module_files | xargs sha256sum
  ) | sha256sum | cut -c1-12
}

BIN_DIR=   # set by bin_dir
bin_dir() { BIN_DIR=$PODGUARD_CACHE_DIR/bin/eventing-$KNATIVE_VERSION-$(cache_key); }

built() { local b; for b in "${BIN_NAME[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done; }

build() {
  command -v go >/dev/null || die "go is not installed"
  grep -qE "^[[:space:]]*(require )?knative.dev/eventing $KNATIVE_VERSION( |$)" "$TOOL/go.mod" ||
    die "deploy/local/tools/eventing/go.mod does not require knative.dev/eventing $KNATIVE_VERSION (update it with: cd deploy/local/tools/eventing && go get -tool knative.dev/eventing/cmd/...@$KNATIVE_VERSION)"
  bin_dir
  built && return 0
  mkdir -p "$PODGUARD_CACHE_DIR/bin" "$PODGUARD_CACHE_DIR/build"
  exec 9>"$PODGUARD_CACHE_DIR/bin/.build.lock"   # one build at a time, across clones too
  flock 9
  if built; then exec 9>&-; return 0; fi
  local key=${BIN_DIR##*-} t t0 work
  work=$PODGUARD_CACHE_DIR/build/eventing-$KNATIVE_VERSION-$key
  t0=$(timer_start)
  log "building Knative Eventing $KNATIVE_VERSION (key $key) in $work; log $LOG_DIR/build.log"
  mkdir -p "$LOG_DIR"
  rm -rf "$work.tmp"
  mkdir -p "$work.tmp"
  (cd "$TOOL" && module_files | xargs cp --parents -t "$work.tmp") || die "copy of the tool module failed"
  t=$(timer_start)
  (cd "$work.tmp" && go mod vendor) >"$LOG_DIR/build.log" 2>&1 || die "go mod vendor failed, see $LOG_DIR/build.log"
  log "vendored in $(elapsed "$t")"
  rm -rf "$work" "$BIN_DIR.tmp"
  mv "$work.tmp" "$work"
  # The overlay names the vendored files by absolute path: patch in the final place.
  (cd "$work" && go run -mod=vendor ./cmd/patch -vendor vendor -out overlay) >>"$LOG_DIR/build.log" 2>&1 ||
    die "patching the vendored sources failed (an anchor is gone upstream?), see $LOG_DIR/build.log"
  local pkgs=() u
  for u in "${UPSTREAM[@]}"; do pkgs+=("${u#*=}"); done
  t=$(timer_start)
  (
    cd "$work"
    [ -z "${EVENTING_GOCACHE:-}" ] || export GOCACHE=$EVENTING_GOCACHE
    go build -mod=vendor -trimpath -ldflags="-s -w" -overlay=overlay/overlay.json -o "$BIN_DIR.tmp/" \
      "${pkgs[@]}" ./cmd/imc-controller ./cmd/svcproxy
  ) >>"$LOG_DIR/build.log" 2>&1 || die "go build failed, see $LOG_DIR/build.log"
  local b
  for b in "${!BIN_NAME[@]}"; do
    [ "$b" = "${BIN_NAME[$b]}" ] || mv "$BIN_DIR.tmp/$b" "$BIN_DIR.tmp/${BIN_NAME[$b]}"
  done
  # The patched code is in: every sharedmain process reads EVENTING_PROBES_PORT, the
  # dispatcher its ports.
  for b in eventing-controller mt-broker-controller imc-controller eventing-webhook imc-dispatcher; do
    grep -q EVENTING_PROBES_PORT "$BIN_DIR.tmp/$b" || die "$b was built without the patches"
  done
  grep -q EVENTING_DISPATCHER_HTTP_PORT "$BIN_DIR.tmp/imc-dispatcher" || die "imc-dispatcher was built without the patches"
  rm -rf "$BIN_DIR"
  mv "$BIN_DIR.tmp" "$BIN_DIR"
  # Older keys' build trees (73 MB of vendored sources each) and binaries (440 MB) are
  # not needed any more.
  find "$PODGUARD_CACHE_DIR/build" -maxdepth 1 -name "eventing-*" ! -name "eventing-$KNATIVE_VERSION-$key" -exec rm -rf {} +
  find "$PODGUARD_CACHE_DIR/bin" -maxdepth 1 -name "eventing-$KNATIVE_VERSION-*" ! -name "eventing-$KNATIVE_VERSION-$key" -exec rm -rf {} +
  log "built $(ls "$BIN_DIR" | wc -l) binaries in $(elapsed "$t") (whole build $(elapsed "$t0")): $BIN_DIR"
  exec 9>&-
}

# --- system objects -------------------------------------------------------------------

module_dir() { # MODULE@VERSION -> its extracted directory in the module cache
  local d
  d=$(cd "$TOOL" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$d" ] || die "go mod download $1 failed"
  echo "$d"
}

webhook_service() {
  cat <<EOF
# The eventing webhook runs on this machine: kube-apiserver reaches it through this
# ExternalName Service (service resolution gives $L) on the port its configurations name.
apiVersion: v1
kind: Service
metadata:
  name: eventing-webhook
  namespace: $NS
  labels: {app.kubernetes.io/name: knative-eventing, app.kubernetes.io/component: eventing-webhook}
spec:
  type: ExternalName
  externalName: $L
  ports:
    - {name: https-webhook, port: $EVENTING_WEBHOOK_PORT}
EOF
}

# The webhook configurations the local webhook serves. The sinkbindings one is left out:
# it would put every Deployment of the shared cluster behind this webhook.
WEBHOOK_CONFIGS=(
  mutatingwebhookconfiguration/webhook.eventing.knative.dev
  validatingwebhookconfiguration/validation.webhook.eventing.knative.dev
  validatingwebhookconfiguration/config.webhook.eventing.knative.dev
)

system() {
  local e c b t crd
  t=$(timer_start)
  e=$(module_dir "knative.dev/eventing@$KNATIVE_VERSION")/config
  c=$e/channels/in-memory-channel
  b=$e/brokers/mt-channel-broker
  if ! kc get crd brokers.eventing.knative.dev inmemorychannels.messaging.knative.dev >/dev/null 2>&1; then
    "$LOCAL_DIR/k8s.sh" knative-crds
  fi
  kc apply -f "$e/core/100-namespace.yaml" >/dev/null
  kc apply -f "$e/core/200-eventing-serviceaccount.yaml" -f "$e/core/configmaps/" -f "$c/configmaps/" \
    -f "$c/200-imc-controller-serviceaccount.yaml" -f "$c/200-imc-dispatcher-serviceaccount.yaml" \
    -f "$e/core/roles/" -f "$b/roles/" -f "$c/roles/" >/dev/null || die "cannot apply the eventing configuration"
  # Sender identity, as podguard is installed: the broker's ingress verifies each sender's
  # token and applies the Broker's EventPolicies; Triggers deliver with their own OIDC
  # identity's token for the subscriber's audience.
  kc -n "$NS" patch configmap config-features --type merge -p '{"data":{"authentication-oidc":"enabled"}}' >/dev/null ||
    die "cannot enable authentication-oidc in config-features"
  # Stand-ins: kwok runs these pods, so the reconcilers find Available deployments and
  # ready endpoints; the processes below do the work.
  kc apply -f "$b/deployments/broker-ingress.yaml" -f "$b/deployments/broker-filter.yaml" \
    -f "$c/deployments/dispatcher.yaml" -f "$c/deployments/dispatcher-service.yaml" >/dev/null ||
    die "cannot apply the data plane deployments"
  webhook_service | kc apply -f - >/dev/null
  kc apply -f "$e/core/webhooks/secret.yaml" -f "$e/core/webhooks/defaulting.yaml" \
    -f "$e/core/webhooks/resource-validation.yaml" -f "$e/core/webhooks/config-validation.yaml" >/dev/null ||
    die "cannot apply the webhook configurations"
  for c in "${WEBHOOK_CONFIGS[@]}"; do
    kc patch "$c" --type=json -p "[{\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/service/port\", \"value\": $EVENTING_WEBHOOK_PORT}]" >/dev/null
  done
  # CRD conversion (eventtypes, pingsources ...) goes to the same webhook.
  for crd in $(kc get crd -o jsonpath='{range .items[?(@.spec.conversion.webhook.clientConfig.service.name=="eventing-webhook")]}{.metadata.name}{"\n"}{end}'); do
    kc patch crd "$crd" --type=json -p "[{\"op\": \"add\", \"path\": \"/spec/conversion/webhook/clientConfig/service/port\", \"value\": $EVENTING_WEBHOOK_PORT}]" >/dev/null
  done
  kc -n "$NS" wait --for=condition=Available --timeout="${STACK_READY_TIMEOUT}s" \
    deploy/mt-broker-ingress deploy/mt-broker-filter deploy/imc-dispatcher >/dev/null ||
    die "the stand-in deployments are not Available (is kwok running?)"
  log "system objects applied in $(elapsed "$t")"
}

# --- start / stop ---------------------------------------------------------------------

# run NAME ENV... -- ARGS... : start binary NAME with the common environment plus ENV
run() {
  local name=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  proc_start "$name" env KUBECONFIG="$KUBECONFIG_FILE" SYSTEM_NAMESPACE=$NS POD_NAME="$name-local" \
    CONFIG_LOGGING_NAME=config-logging CONFIG_OBSERVABILITY_NAME=config-observability \
    PROFILING_PORT="${PPROF_PORT[$name]:-0}" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    "${envs[@]}" "$BIN_DIR/$name" "$@"
}

start_procs() {
  # HTTPS_PROXY: Knative's OIDC verifier reads https://kubernetes.default.svc/.well-known/
  # openid-configuration; svcproxy tunnels that name to the local kube-apiserver.
  local dp=(HTTP_PROXY="http://$L:$EVENTING_PROXY_PORT" http_proxy="http://$L:$EVENTING_PROXY_PORT"
    HTTPS_PROXY="http://$L:$EVENTING_PROXY_PORT" https_proxy="http://$L:$EVENTING_PROXY_PORT")
  local images=() i
  for i in APISERVER_RA AUTH_PROXY EVENT_TRANSFORM_JSONATA INTEGRATION_SOURCE_TIMER INTEGRATION_SOURCE_AWS_S3 \
    INTEGRATION_SOURCE_AWS_SQS INTEGRATION_SOURCE_AWS_DDB_STREAMS INTEGRATION_SINK_LOG INTEGRATION_SINK_AWS_S3 \
    INTEGRATION_SINK_AWS_SQS INTEGRATION_SINK_AWS_SNS; do images+=("${i}_IMAGE=none"); done
  proc_start svcproxy "$BIN_DIR/svcproxy" -listen "$L:$EVENTING_PROXY_PORT" \
    -route "broker-ingress.$NS.svc.cluster.local=$EVENTING_INGRESS_PORT" \
    -route "broker-filter.$NS.svc.cluster.local=$EVENTING_FILTER_PORT" \
    -route "imc-dispatcher.$NS.svc.cluster.local=$EVENTING_DISPATCHER_PORT" \
    -route ".svc.cluster.local=$EVENTING_DISPATCHER_PORT" \
    -route "kubernetes.default.svc=$APISERVER_PORT"
  run eventing-webhook METRICS_DOMAIN=knative.dev/eventing WEBHOOK_NAME=eventing-webhook \
    WEBHOOK_PORT="$EVENTING_WEBHOOK_PORT" SINK_BINDING_SELECTION_MODE=exclusion \
    EVENTING_PROBES_PORT="${PROBES_PORT[eventing-webhook]}" -- --disable-ha
  run eventing-controller METRICS_DOMAIN=knative.dev/eventing "${images[@]}" \
    EVENTING_PROBES_PORT="${PROBES_PORT[eventing-controller]}" -- --disable-ha
  run mt-broker-controller METRICS_DOMAIN=knative.dev/eventing \
    EVENTING_PROBES_PORT="${PROBES_PORT[mt-broker-controller]}" -- --disable-ha
  run imc-controller METRICS_DOMAIN=knative.dev/inmemorychannel-controller DISPATCHER_IMAGE=none \
    EVENTING_PROBES_PORT="${PROBES_PORT[imc-controller]}" -- --disable-ha
  # NAMESPACE only where the upstream Deployment sets it (ingress, filter): the dispatcher
  # takes a NAMESPACE as "watch the channels of this namespace only".
  run broker-ingress "${dp[@]}" NAMESPACE=$NS CONTAINER_NAME=ingress METRICS_DOMAIN=knative.dev/internal/eventing \
    INGRESS_PORT="$EVENTING_INGRESS_PORT" INGRESS_PORT_HTTPS=$INGRESS_HTTPS_PORT --
  run broker-filter "${dp[@]}" NAMESPACE=$NS CONTAINER_NAME=filter METRICS_DOMAIN=knative.dev/internal/eventing \
    FILTER_PORT="$EVENTING_FILTER_PORT" FILTER_PORT_HTTPS=$FILTER_HTTPS_PORT --
  run imc-dispatcher "${dp[@]}" CONTAINER_NAME=dispatcher METRICS_DOMAIN=knative.dev/inmemorychannel-dispatcher \
    MAX_IDLE_CONNS=1000 MAX_IDLE_CONNS_PER_HOST=1000 \
    EVENTING_DISPATCHER_HTTP_PORT="$EVENTING_DISPATCHER_PORT" EVENTING_DISPATCHER_HTTPS_PORT=$DISPATCHER_HTTPS_PORT -- --disable-ha
}

listening() { (exec 3<>"/dev/tcp/$L/$1") 2>/dev/null; }

webhook_ready() {
  local c
  for c in "${WEBHOOK_CONFIGS[@]}"; do
    [ -n "$(kc get "$c" -o jsonpath='{.webhooks[0].rules}' 2>/dev/null)" ] || return 1
  done
  curl -sk --max-time 2 -o /dev/null "https://$L:$EVENTING_WEBHOOK_PORT/"
}

wait_ready() {
  local p n
  for p in "$EVENTING_PROXY_PORT" "$EVENTING_INGRESS_PORT" "$EVENTING_FILTER_PORT" "$EVENTING_DISPATCHER_PORT" \
    "${PROBES_PORT[eventing-controller]}" "${PROBES_PORT[mt-broker-controller]}" "${PROBES_PORT[imc-controller]}"; do
    wait_for "$STACK_READY_TIMEOUT" "port $p" listening "$p" || return 1
  done
  wait_for "$STACK_READY_TIMEOUT" "the eventing webhook" webhook_ready || return 1
  for n in "${PROCS[@]}"; do proc_up "$n" || { log "$n exited, see $LOG_DIR/$n.log"; return 1; }; done
}

write_env() {
  local addrs=() f
  for f in $FUNCTION_PORTS; do addrs+=("${f%%=*}=$L:${f#*=}"); done
  cat >"$EVENTING_ENV.tmp" <<EOF
# podguard local Knative mode: written by \`make eventing-up\` (deploy/local/eventing.sh),
# removed by \`make eventing-down\`. One \`export NAME='value'\` per line.
# A Broker <name> in namespace <ns> takes events at \$PODGUARD_EVENTING_INGRESS/<ns>/<name>;
# the Triggers of deploy/overlays/local-eventing deliver to the functions at
# PODGUARD_FUNCTION_ADDRS.
export PODGUARD_EVENTING_ENV='$EVENTING_ENV'
export PODGUARD_EVENTING_VERSION='$KNATIVE_VERSION'
export PODGUARD_EVENTING_INGRESS='http://$L:$EVENTING_INGRESS_PORT'
export PODGUARD_FUNCTION_ADDRS='$(IFS=,; echo "${addrs[*]}")'
EOF
  mv -f "$EVENTING_ENV.tmp" "$EVENTING_ENV"
}

start() {
  [ -f "$KUBECONFIG_FILE" ] && kc get --raw /readyz >/dev/null 2>&1 || die "kube-apiserver is not running (make stack-up)"
  local t0 t
  t0=$(timer_start)
  if all_up "${PROCS[@]}"; then
    log "already running"
    write_env
    return 0
  fi
  build
  stop_procs
  t=$(timer_start)
  system
  t=$(timer_start)
  start_procs
  if ! wait_ready; then
    stop_procs
    die "Knative Eventing did not get ready; logs in $LOG_DIR"
  fi
  write_env
  log "processes ready in $(elapsed "$t") (start $(elapsed "$t0") in all): ingress http://$L:$EVENTING_INGRESS_PORT/<namespace>/<broker>; env: . $EVENTING_ENV"
}

stop_procs() {
  local i procs=()
  for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do procs+=("${PROCS[i]}"); done
  # The data plane first (it drains), then the controllers; the webhook lame-ducks for
  # longer than is useful here.
  proc_stop 5 "${procs[@]}"
}

stop() {
  rm -f "$EVENTING_ENV"
  if [ -f "$KUBECONFIG_FILE" ] && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete --ignore-not-found "${WEBHOOK_CONFIGS[@]}" >/dev/null || log "could not remove the webhook configurations"
    kc -n "$NS" delete --ignore-not-found service/eventing-webhook >/dev/null || true
  fi
  stop_procs
}

status() { proc_status_lines "${PROCS[@]}"; }

case ${1:-} in
  build) build; echo "$BIN_DIR" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "$EVENTING_ENV" ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
