#!/usr/bin/env bash
# deploy/local/stack.sh - podguard's local stack: a Kubernetes control plane with a fake
# (kwok) node, plus Keystone, Swift and Cinder, all on 127.0.0.1, no containers.
#
# Usage: deploy/local/stack.sh up|down|status|install|build|knative-crds|env
#   up            install (if packages are missing), build (if binaries are missing), then start
#                 Kubernetes, Keystone, Swift and Cinder, and write $STACK_DIR/env and
#                 $STACK_DIR/clouds.yaml. A no-op that prints the status when already running.
#                 With STACK_EVENTING=1, Knative Eventing's broker too (eventing.sh start).
#   down          stop everything up started, in reverse order, by recorded PID; unmount
#                 (Knative Eventing first, if it runs)
#   status        each process with pid, up/down and RSS, and the endpoints
#   install       the Debian packages (apt-get; waits for a running apt/dpkg)
#   build         the Kubernetes, etcd and kwok binaries (see k8s.sh)
#   knative-crds  apply the Knative Serving and Eventing CRDs to the running apiserver
#   env           rewrite $STACK_DIR/env and $STACK_DIR/clouds.yaml
#
# Tests and tools find the stack through $STACK_DIR/env (default
# ~/.local/state/podguard/stack/env, or $PODGUARD_STACK_ENV): it exists only while the stack
# is up. Ports, versions and paths: deploy/local/stack.env (every value overridable).
COMPONENT=stack
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPONENTS=(k8s keystone swift cinder)   # stop runs in reverse order; up starts k8s alongside the rest
ENV_FILE=$STACK_DIR/env
CLOUDS_YAML=$STACK_DIR/clouds.yaml

PACKAGES=(
  swift swift-proxy swift-object swift-container swift-account python3-swiftclient
  python3-keystonemiddleware memcached
  cinder-api cinder-scheduler cinder-volume cinder-backup python3-cinderclient
  rabbitmq-server dmidecode mariadb-server sudo qemu-utils
  keystone python3-openstackclient bc
  uwsgi-plugin-python3 curl openssl   # used by these scripts (already pulled in by the above)
  prometheus   # and promtool: the alert rules' tests; deploy/local/prometheus runs it as a child
)
# Services that Debian's packages start and enable on install (unless policy-rc.d forbids
# it) and that the stack never uses: Prometheus would listen on *:9090. The stack runs only
# processes it starts itself, on 127.0.0.1, and stops by PID.
UNUSED_SERVICES=(prometheus)

component() { "$LOCAL_DIR/$1.sh" "${@:2}"; }

# --- install ----------------------------------------------------------------------------

missing_packages() {
  local installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null |
    awk '$NF == "installed" && $(NF-1) == "ok" { print $1 }' || true)   # dpkg-query fails on unknown names
  local p
  for p in "${PACKAGES[@]}"; do
    grep -qx "$p" <<<"$installed" || echo "$p"
  done
}

# apt_running: an apt, dpkg or unattended-upgrades process runs. One name per pgrep: pgrep
# matches a process name (at most 15 characters) and refuses longer patterns.
apt_running() {
  local n
  for n in apt apt-get aptitude dpkg unattended-upgr; do
    pgrep -x "$n" >/dev/null && return 0
  done
  return 1
}

wait_for_apt() {
  local end=$((SECONDS + 1800)) said=0
  while apt_running; do
    [ "$said" = 1 ] || { log "waiting for a running apt/dpkg to finish"; said=1; }
    [ "$SECONDS" -lt "$end" ] || die "apt/dpkg still running after 30 min"
    sleep 3
  done
}

install() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  wait_for_apt
  missing=$(missing_packages)        # the apt we waited for may have installed them
  [ -z "$missing" ] && return 0
  need_root "installing packages"
  log "missing: $(echo $missing); apt-get update + install (a few minutes), log in $STACK_DIR/apt.log"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >"$STACK_DIR/apt.log" 2>&1 ||
    die "apt-get update failed, see $STACK_DIR/apt.log"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >>"$STACK_DIR/apt.log" 2>&1 ||
    die "apt-get install failed, see $STACK_DIR/apt.log"
  stop_unused_services
}

# stop_unused_services stops and disables each of UNUSED_SERVICES, under systemd or
# sysvinit, so that it neither runs now nor starts at boot. Harmless when it does not run.
stop_unused_services() {
  local s
  for s in "${UNUSED_SERVICES[@]}"; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now --quiet "$s.service" >>"$STACK_DIR/apt.log" 2>&1 || true
    elif [ -x "/etc/init.d/$s" ]; then
      # invoke-rc.d would ask policy-rc.d, which may refuse the stop as it refused the start.
      "/etc/init.d/$s" stop >>"$STACK_DIR/apt.log" 2>&1 || true
      update-rc.d "$s" disable >>"$STACK_DIR/apt.log" 2>&1 || true
    fi
  done
}

# --- env file and clouds.yaml -------------------------------------------------------------

write_env() {
  ks_token || die "Keystone is not answering on $KEYSTONE_URL"
  local pid=$KS_PROJECT_ID l=$LISTEN_ADDR
  local assets=$PODGUARD_CACHE_DIR/bin/envtest-$K8S_VERSION
  cat >"$ENV_FILE.tmp" <<EOF
# podguard local stack: written by \`make stack-up\` (deploy/local/stack.sh), removed by
# \`make stack-down\`. Source it, or parse it: one \`export NAME='value'\` per line.
# OS_*: Keystone admin (openstack CLI, gophercloud, ncw/swift). ST_*: Swift tempauth, so a
# plain \`swift stat\` goes through the tempauth proxy; through Keystone (proxy on :$SWIFT_PORT):
# \`swift -V 3 -A "\$OS_AUTH_URL" stat\` (swift prefers ST_AUTH over OS_AUTH_URL).
export PODGUARD_STACK_DIR='$STACK_DIR'
export PODGUARD_STACK_ENV='$ENV_FILE'
export KUBECONFIG='$STACK_DIR/kubeconfig'
export PODGUARD_KUBECTL='$PODGUARD_CACHE_DIR/bin/k8s-$K8S_VERSION/kubectl'
export PODGUARD_KWOK_NODE='$KWOK_NODE'
export PODGUARD_ETCD_ENDPOINT='http://$l:$ETCD_PORT'
export KUBEBUILDER_ASSETS='$assets'
export OS_AUTH_URL='$KEYSTONE_URL/v3'
export OS_USERNAME='admin'
export OS_PASSWORD='admin'
export OS_PROJECT_NAME='admin'
export OS_USER_DOMAIN_NAME='Default'
export OS_PROJECT_DOMAIN_NAME='Default'
export OS_REGION_NAME='RegionOne'
export OS_INTERFACE='public'
export OS_CLIENT_CONFIG_FILE='$CLOUDS_YAML'
export OS_CLOUD='local'
export PODGUARD_OS_PROJECT_ID='$pid'
export PODGUARD_DEMO_USERNAME='demo'
export PODGUARD_DEMO_PASSWORD='demo'
export PODGUARD_DEMO_PROJECT_NAME='demo'
export ST_AUTH='http://$l:$SWIFT_TEMPAUTH_PORT/auth/v1.0'
export ST_USER='admin:admin'
export ST_KEY='admin'
export PODGUARD_SWIFT_URL='http://$l:$SWIFT_PORT/v1/AUTH_$pid'
export PODGUARD_SWIFT_TEMPAUTH_URL='http://$l:$SWIFT_TEMPAUTH_PORT/auth/v1.0'
export PODGUARD_SWIFT_NOAUTH_URL='http://$l:$SWIFT_NOAUTH_PORT/v1/AUTH_admin'
export PODGUARD_CINDER_URL='http://$l:$CINDER_PORT/v3/$pid'
export PODGUARD_CINDER_EXPORT='$STACK_DIR/cinder/export'
export PODGUARD_CINDER_BACKUP_DIR='$STACK_DIR/cinder/backups'
EOF
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
  cat >"$CLOUDS_YAML" <<EOF
# podguard local stack (deploy/local/stack.sh). Use with OS_CLIENT_CONFIG_FILE=$CLOUDS_YAML
# and --os-cloud local (admin) or demo (member of project demo). $ENV_FILE sets
# OS_CLOUD=local and the same admin values as OS_*; for demo, unset the OS_* user/project
# variables first (the CLI lets them override the cloud entry).
# has_image: false - no Glance runs; python-openstackclient 6.0 builds an image client for
# every "openstack volume create" and fails without it.
clouds:
  local:
    auth:
      auth_url: $KEYSTONE_URL/v3
      username: admin
      password: admin
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    has_image: false
  demo:
    auth:
      auth_url: $KEYSTONE_URL/v3
      username: demo
      password: demo
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    has_image: false
EOF
}

# --- up / down / status -----------------------------------------------------------------

status_lines() { local c; for c in "${COMPONENTS[@]}"; do component "$c" status; done; }

running() { local lines; lines=$(status_lines); ! grep -q ' down ' <<<"$lines"; }

status() {
  local lines total
  lines=$(status_lines)
  printf '%-9s %-24s %8s  %-5s %9s\n' COMPONENT PROCESS PID STATE RSS
  awk '{ printf "%-9s %-24s %8s  %-5s %7.1fMiB\n", $1, $2, $3, $4, $5 / 1024 }' <<<"$lines"
  total=$(awk '{ s += $5 } END { printf "%.0f", s / 1024 }' <<<"$lines")
  echo "total RSS: ${total} MiB ($(grep -c ' up ' <<<"$lines" || true) of $(wc -l <<<"$lines") processes up)"
  local l=$LISTEN_ADDR
  echo
  echo "endpoints:"
  printf '  %-18s %-44s %s\n' \
    kube-apiserver "https://$l:$APISERVER_PORT" "KUBECONFIG=$STACK_DIR/kubeconfig" \
    etcd "http://$l:$ETCD_PORT" "" \
    keystone "$KEYSTONE_URL/v3" "admin/admin, project admin, domain Default" \
    "swift (keystone)" "http://$l:$SWIFT_PORT/v1/AUTH_<project_id>" "Keystone token" \
    "swift (tempauth)" "http://$l:$SWIFT_TEMPAUTH_PORT/auth/v1.0" "admin:admin / admin" \
    "swift (no auth)" "http://$l:$SWIFT_NOAUTH_PORT/v1/AUTH_admin" "any or no token" \
    cinder "http://$l:$CINDER_PORT/v3/<project_id>" "volume files in $STACK_DIR/cinder/export"
  if [ -f "$ENV_FILE" ]; then
    echo "env: . $ENV_FILE   clouds.yaml: $CLOUDS_YAML (clouds local, demo)"
  else
    echo "env: (none: the stack is not up)"
  fi
}

up() {
  mkdir -p "$STACK_DIR"
  if running; then
    log "already running"
    [ -f "$ENV_FILE" ] || write_env
    status
    return 0
  fi
  local t0 t c
  local -a phases=()
  t0=$(timer_start)
  # Whatever a stopped or killed stack left behind (Knative Eventing's env file and
  # processes) describes nothing that runs any more.
  "$LOCAL_DIR/eventing.sh" stop
  t=$(timer_start); install; phases+=("install $(elapsed "$t")")
  t=$(timer_start); component k8s build; phases+=("build $(elapsed "$t")")
  # Kubernetes does not depend on OpenStack: start it alongside Keystone, Swift and Cinder
  # (which start in that order).
  local k8s_time=$STACK_DIR/.k8s-start-time
  rm -f "$k8s_time"
  (t=$(timer_start) && component k8s start && elapsed "$t" >"$k8s_time") &
  local k8s_job=$!
  for c in keystone swift cinder; do
    t=$(timer_start)
    component "$c" start || die "$c failed to start; logs in $STACK_DIR/$c/log (make stack-down stops the rest)"
    phases+=("$c $(elapsed "$t")")
  done
  wait "$k8s_job" || die "k8s failed to start; logs in $STACK_DIR/k8s/log (make stack-down stops the rest)"
  phases+=("k8s $(cat "$k8s_time") (in parallel)")
  write_env
  if [ "$STACK_EVENTING" = 1 ]; then
    t=$(timer_start); "$LOCAL_DIR/eventing.sh" start || die "Knative Eventing failed to start"; phases+=("eventing $(elapsed "$t")")
  fi
  log "phases: $(IFS=,; echo "${phases[*]}" | sed 's/,/, /g')"
  log "stack up in $(elapsed "$t0"); env: . $ENV_FILE"
  status
}

down() {
  local t i
  t=$(timer_start)
  rm -f "$ENV_FILE"
  "$LOCAL_DIR/eventing.sh" stop
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do component "${COMPONENTS[i]}" stop; done
  log "stack down in $(elapsed "$t")"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  install) mkdir -p "$STACK_DIR"; install ;;
  build) component k8s build ;;
  knative-crds) component k8s knative-crds ;;
  env) write_env; echo "$ENV_FILE" ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
