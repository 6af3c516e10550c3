#!/usr/bin/env bash
# deploy/local/cinder.sh - Cinder (Debian packages) for podguard's local stack, with Keystone
# auth: cinder-api on 127.0.0.1:$CINDER_PORT, cinder-scheduler, cinder-volume and cinder-backup,
# on its own MariaDB and RabbitMQ (with its own epmd).
#
#   volumes: the NFS driver on a bind mount of $STACK_DIR/cinder/export (no NFS server: the
#            driver only looks at /proc/mounts; a stub mount.nfs satisfies its binary check).
#            Volume files (volume-<id>) appear in $STACK_DIR/cinder/export.
#   backups: the posix driver, in $STACK_DIR/cinder/backups.
#
# Usage: deploy/local/cinder.sh start|stop|status     (needs root for the bind mount; start
# Keystone first: service user cinder/cinder)
# Databases, volumes and backups are kept across restarts; stop unmounts the bind mount.
COMPONENT=cinder
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
use_system_python

PROCS=(mysql epmd rabbitmq cinder-api cinder-scheduler cinder-volume cinder-backup)
CONF=$DIR/etc/cinder.conf
EXPORT=$DIR/export
SHARE=$LISTEN_ADDR:/podguard-export
MNT=$DIR/mnt/$(printf '%s' "$SHARE" | md5sum | cut -d' ' -f1)   # where the NFS driver expects the share
RABBIT=$DIR/rabbit
RABBIT_NODE=podguard-cinder@localhost
ERL_LOOPBACK="-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"

# RabbitMQ and its CLI: own node name, ports, data and cookie; Erlang distribution on loopback.
rabbit_env=(
  HOME="$RABBIT/home" RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS="$LISTEN_ADDR"
  RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_PORT="$EPMD_PORT"
  RABBITMQ_CONF_ENV_FILE="$RABBIT/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$RABBIT/rabbitmq"
  RABBITMQ_ADVANCED_CONFIG_FILE="$RABBIT/advanced.config" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT/enabled_plugins"
  RABBITMQ_MNESIA_BASE="$RABBIT/mnesia" RABBITMQ_LOG_BASE="$LOG_DIR" RABBITMQ_LOGS=- RABBITMQ_PID_FILE="$RABBIT/rabbit.pid"
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$ERL_LOOPBACK" RABBITMQ_CTL_ERL_ARGS="$ERL_LOOPBACK"
)
rabbitmqctl() { env "${rabbit_env[@]}" timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -q "$@"; }

write_config() {
  mkdir -p "$DIR/etc" "$DIR/bin" "$DIR/state" "$DIR/lock" "$DIR/backups" "$EXPORT" "$MNT" \
    "$RABBIT/home" "$RABBIT/mnesia"
  : >"$RABBIT/rabbitmq-env.conf"
  echo '[].' >"$RABBIT/enabled_plugins"
  echo '[].' >"$RABBIT/advanced.config"
  printf 'listeners.tcp.default = %s:%s\nloopback_users.guest = true\n' "$LISTEN_ADDR" "$RABBIT_PORT" >"$RABBIT/rabbitmq.conf"

  cat >"$DIR/bin/mount.nfs" <<'EOF'
#!/bin/sh
# The NFS driver only checks that this exists: the share is a bind mount made by cinder.sh.
echo "mount.nfs stub: no real NFS mounts in the local stack ($*)" >&2
exit 32
EOF
  chmod +x "$DIR/bin/mount.nfs"
  echo "$SHARE" >"$DIR/etc/nfs_shares"
  cp /etc/cinder/api-paste.ini "$DIR/etc/api-paste.ini"
  cat >"$CONF" <<EOF
[DEFAULT]
auth_strategy = keystone
transport_url = rabbit://guest:guest@$LISTEN_ADDR:$RABBIT_PORT/
state_path = $DIR/state
api_paste_config = $DIR/etc/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
osapi_volume_listen = $LISTEN_ADDR
osapi_volume_listen_port = $CINDER_PORT
osapi_volume_workers = 1
my_ip = $LISTEN_ADDR
host = podguard-local
enabled_backends = nfs1
default_volume_type = __DEFAULT__
use_stderr = true
debug = false
graceful_shutdown_timeout = 5
periodic_interval = 5
periodic_fuzzy_delay = 0
backup_workers = 1
quota_volumes = -1
quota_snapshots = -1
quota_gigabytes = -1
quota_backups = -1
quota_backup_gigabytes = -1
backup_driver = cinder.backup.drivers.posix.PosixBackupDriver
backup_posix_path = $DIR/backups
backup_compression_algorithm = none
[database]
connection = mysql+pymysql://cinder:cinder@127.0.0.1:$CINDER_MYSQL_PORT/cinder?charset=utf8
[oslo_concurrency]
lock_path = $DIR/lock
[coordination]
backend_url = file://$DIR/state
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = cinder
password = cinder
[nfs1]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = nfs1
nfs_shares_config = $DIR/etc/nfs_shares
nfs_mount_point_base = $DIR/mnt
nfs_sparsed_volumes = true
nfs_qcow2_volumes = false
nfs_snapshot_support = true
nas_secure_file_operations = false
nas_secure_file_permissions = false
EOF
}

mounted() { grep -q " $MNT " /proc/mounts; }

unmount() {
  mounted || return 0
  umount "$MNT" 2>/dev/null || umount -l "$MNT"
  log "unmounted $MNT"
}

db_sync() {
  local mark=$DIR/mysql/.synced
  [ -f "$mark" ] && return 0
  log "creating the Cinder database schema"
  timeout 300 cinder-manage --config-file "$CONF" db sync >"$LOG_DIR/db-sync.log" 2>&1 ||
    die "cinder-manage db sync failed, see $LOG_DIR/db-sync.log"
  touch "$mark"
}

scheduler_listening() { rabbitmqctl list_queues name | grep -q '^cinder-scheduler_fanout'; }

start_service() { proc_start "cinder-$1" env PATH="$DIR/bin:$PATH" "cinder-$1" --config-file "$CONF"; }

# scheduler, volume and backup report up, and the scheduler knows the nfs1 pool
cinder_ready() {
  local api="http://$LISTEN_ADDR:$CINDER_PORT/v3/$KS_PROJECT_ID" up
  up=$(curl -sf --max-time 10 -H "X-Auth-Token: $KS_TOKEN" "$api/os-services" | grep -o '"state": "up"' | wc -l)
  [ "$up" -ge 3 ] &&
    curl -sf --max-time 10 -H "X-Auth-Token: $KS_TOKEN" "$api/scheduler-stats/get_pools" | grep -q '#nfs1'
}

start() {
  if all_up "${PROCS[@]}" && mounted; then log "already running"; return 0; fi
  need_root "cinder (bind mount)"
  stop
  http_ok "$KEYSTONE_URL/v3" || die "Keystone is not running on $KEYSTONE_URL (start it first)"
  local t
  t=$(timer_start)
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  write_config
  proc_start epmd epmd -address "$LISTEN_ADDR" -port "$EPMD_PORT"
  wait_for 10 epmd epmd -port "$EPMD_PORT" -names || die "epmd did not start, see $LOG_DIR/epmd.log"
  proc_start rabbitmq env "${rabbit_env[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
  mariadb_start "$CINDER_MYSQL_PORT" cinder cinder cinder
  mount --bind "$EXPORT" "$MNT" || die "bind mount of $EXPORT on $MNT failed"
  db_sync
  wait_for 60 RabbitMQ rabbitmqctl await_startup || die "RabbitMQ did not start, see $LOG_DIR/rabbitmq.log"
  log "MariaDB and RabbitMQ ready in $(elapsed "$t")"
  # cinder-volume announces its pool once at start over a fanout exchange: the scheduler's
  # fanout queue must exist by then, or the first create fails with "No valid backend".
  start_service api
  start_service scheduler
  wait_for 60 "the scheduler's fanout queue" scheduler_listening || log "warning: scheduler fanout queue not seen"
  start_service volume
  start_service backup
  log "processes started in $(elapsed "$t")"
  ks_token || die "cannot get a Keystone token"
  wait_for "$STACK_READY_TIMEOUT" "Cinder services and the nfs1 pool" cinder_ready ||
    die "Cinder not ready, see $LOG_DIR/cinder-*.log"
  all_up "${PROCS[@]}" || die "a Cinder process exited, see $LOG_DIR"
  log "ready in $(elapsed "$t"): http://$LISTEN_ADDR:$CINDER_PORT/v3/$KS_PROJECT_ID, volume files in $EXPORT"
}

stop() {
  proc_stop 15 cinder-backup cinder-volume cinder-scheduler cinder-api
  proc_stop 30 rabbitmq mysql
  proc_stop 5 epmd
  unmount
}

status() { proc_status_lines "${PROCS[@]}"; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
