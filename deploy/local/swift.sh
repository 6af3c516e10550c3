#!/usr/bin/env bash
# deploy/local/swift.sh - Swift all-in-one (Debian package) for podguard's local stack:
# one replica, storage on a plain directory, three proxies in front of the same storage:
#
#   http://127.0.0.1:$SWIFT_PORT           Keystone auth (authtoken + keystoneauth; start Keystone first)
#                                          storage URL .../v1/AUTH_<project_id> from the catalog
#   http://127.0.0.1:$SWIFT_TEMPAUTH_PORT  tempauth: auth/v1.0 with admin:admin / admin
#   http://127.0.0.1:$SWIFT_NOAUTH_PORT    no auth at all: .../v1/AUTH_<anything>
#
# Usage: deploy/local/swift.sh start|stop|status
# Objects are kept across restarts in $STACK_DIR/swift/devices.
COMPONENT=swift
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
use_system_python

PROCS=(memcached object container account proxy proxy-tempauth proxy-noauth)
ETC=$DIR/etc
DEV=$DIR/devices

write_config() {
  mkdir -p "$ETC" "$DEV/d1" "$DIR/cache"
  cat >"$ETC/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = podguard-local
swift_hash_path_prefix = podguard-local
[storage-policy:0]
name = Policy-0
default = yes
[swift-constraints]
EOF
  local server port
  for server in object:$SWIFT_OBJECT_PORT container:$SWIFT_CONTAINER_PORT account:$SWIFT_ACCOUNT_PORT; do
    port=${server#*:}; server=${server%%:*}
    cat >"$ETC/$server-server.conf" <<EOF
[DEFAULT]
bind_ip = $LISTEN_ADDR
bind_port = $port
workers = 0
user = $(id -un)
swift_dir = $ETC
devices = $DEV
mount_check = false
log_address = /nonexistent
[pipeline:main]
pipeline = healthcheck recon $server-server
[app:$server-server]
use = egg:swift#$server
$([ "$server" = container ] && echo "allow_versions = true")
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:recon]
use = egg:swift#recon
recon_cache_path = $DIR/cache
EOF
  done
  proxy_config "$SWIFT_PORT" "authtoken keystoneauth" >"$ETC/proxy.conf"
  proxy_config "$SWIFT_TEMPAUTH_PORT" tempauth >"$ETC/proxy-tempauth.conf"
  proxy_config "$SWIFT_NOAUTH_PORT" "" >"$ETC/proxy-noauth.conf"
}

# proxy_config PORT AUTH_FILTERS
proxy_config() {
  cat <<EOF
[DEFAULT]
bind_ip = $LISTEN_ADDR
bind_port = $1
workers = 0
user = $(id -un)
swift_dir = $ETC
log_address = /nonexistent
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl slo dlo $2 copy versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
reseller_prefix = AUTH
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KEYSTONE_URL/v3
auth_url = $KEYSTONE_URL
auth_type = password
username = swift
password = swift
project_name = service
user_domain_name = Default
project_domain_name = Default
delay_auth_decision = True
cache = swift.cache
include_service_catalog = False
service_token_roles_required = True
[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_prefix = AUTH_
reseller_admin_role = ResellerAdmin
[filter:cache]
use = egg:swift#memcache
memcache_servers = $LISTEN_ADDR:$SWIFT_MEMCACHED_PORT
# Every request's token is looked up through this cache. The default pool of 2
# connections runs dry under a few hundred concurrent requests; each miss validates the
# token against Keystone, whose queue then grows until the proxy answers in minutes.
memcache_max_connections = 64
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:copy]
use = egg:swift#copy
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
allow_object_versioning = true
[filter:symlink]
use = egg:swift#symlink
EOF
}

# One-replica rings on device d1; rebuilt only when the storage ports change.
build_rings() {
  local want="$SWIFT_OBJECT_PORT $SWIFT_CONTAINER_PORT $SWIFT_ACCOUNT_PORT"
  [ "$(cat "$ETC/rings.ports" 2>/dev/null)" = "$want" ] && return 0
  log "building rings"
  (
    cd "$ETC"
    rm -f ./*.builder ./*.ring.gz
    local r
    for r in object:$SWIFT_OBJECT_PORT container:$SWIFT_CONTAINER_PORT account:$SWIFT_ACCOUNT_PORT; do
      swift-ring-builder "${r%%:*}.builder" create 8 1 1
      swift-ring-builder "${r%%:*}.builder" add "r1z1-$LISTEN_ADDR:${r#*:}/d1" 100
      swift-ring-builder "${r%%:*}.builder" rebalance || true
    done
  ) >"$LOG_DIR/rings.log" 2>&1
  [ -f "$ETC/account.ring.gz" ] || die "ring build failed, see $LOG_DIR/rings.log"
  echo "$want" >"$ETC/rings.ports"
}

healthy() {
  local p
  for p in "$SWIFT_OBJECT_PORT" "$SWIFT_CONTAINER_PORT" "$SWIFT_ACCOUNT_PORT" \
    "$SWIFT_PORT" "$SWIFT_TEMPAUTH_PORT" "$SWIFT_NOAUTH_PORT"; do
    http_ok "http://$LISTEN_ADDR:$p/healthcheck" || return 1
  done
}

# The admin account works end to end through both authenticating proxies.
usable() {
  curl -sf --max-time 10 -o /dev/null -H "X-Auth-Token: $KS_TOKEN" \
    "http://$LISTEN_ADDR:$SWIFT_PORT/v1/AUTH_$KS_PROJECT_ID" || return 1
  local tok
  tok=$(curl -sf --max-time 10 -i -H 'X-Auth-User: admin:admin' -H 'X-Auth-Key: admin' \
    "http://$LISTEN_ADDR:$SWIFT_TEMPAUTH_PORT/auth/v1.0" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-auth-token" { print $2 }')
  [ -n "$tok" ] && curl -sf --max-time 10 -o /dev/null -H "X-Auth-Token: $tok" \
    "http://$LISTEN_ADDR:$SWIFT_TEMPAUTH_PORT/v1/AUTH_admin"
}

start() {
  if all_up "${PROCS[@]}"; then log "already running"; return 0; fi
  stop
  http_ok "$KEYSTONE_URL/v3" || die "Keystone is not running on $KEYSTONE_URL (start it first)"
  local t
  t=$(timer_start)
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  write_config
  build_rings
  proc_start memcached memcached -l "$LISTEN_ADDR" -p "$SWIFT_MEMCACHED_PORT" -U 0 -m 64 -u "$(id -un)"
  local s
  for s in object container account; do
    proc_start "$s" "swift-$s-server" "$ETC/$s-server.conf" -v
  done
  for s in proxy proxy-tempauth proxy-noauth; do
    proc_start "$s" swift-proxy-server "$ETC/$s.conf" -v
  done
  log "processes started in $(elapsed "$t")"
  wait_for "$STACK_READY_TIMEOUT" "Swift healthchecks" healthy || die "Swift not healthy, see $LOG_DIR"
  ks_token || die "cannot get a Keystone token"
  wait_for 60 "Swift accounts through Keystone and tempauth" usable || die "Swift auth not working, see $LOG_DIR/proxy*.log"
  all_up "${PROCS[@]}" || die "a Swift process exited, see $LOG_DIR"
  log "ready in $(elapsed "$t"): keystone :$SWIFT_PORT, tempauth :$SWIFT_TEMPAUTH_PORT, noauth :$SWIFT_NOAUTH_PORT"
}

stop() { proc_stop 10 proxy-noauth proxy-tempauth proxy account container object memcached; }

status() { proc_status_lines "${PROCS[@]}"; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
