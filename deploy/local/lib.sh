# deploy/local/lib.sh - helpers common to the local stack scripts. Sourced, not run:
#
#   COMPONENT=swift; . "$(dirname "$0")/lib.sh"
#
# Sets DIR=$STACK_DIR/$COMPONENT, RUN_DIR (pid files) and LOG_DIR, and provides logging,
# timers, process start/stop by recorded PID, readiness waits and a MariaDB helper.
#
# Every process is started with setsid, so its PID is also its process
# group: stopping signals that group and waits for it and every descendant (workers,
# helpers) - nothing else.
# A pid file holds "PID STARTTIME"; the start time guards against a recycled PID.

set -euo pipefail

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=stack.env
. "$LOCAL_DIR/stack.env"

: "${COMPONENT:=stack}"
DIR=$STACK_DIR/$COMPONENT
RUN_DIR=$DIR/run
LOG_DIR=$DIR/log
export GOWORK=off GOFLAGS=-buildvcs=false

log() { printf '[%-8s %s] %s\n' "$COMPONENT" "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Timers: t=$(timer_start); ...; elapsed "$t"  ->  "12.3s"
timer_start() { echo "${EPOCHREALTIME/./}"; }
elapsed() {
  local us=$(( ${EPOCHREALTIME/./} - $1 ))
  printf '%d.%ds' $((us / 1000000)) $((us % 1000000 / 100000))
}

need_root() { [ "$(id -u)" = 0 ] || die "$* needs root"; }

# The OpenStack services are Debian's: make sure their python3 (not a pyenv/venv one that
# may come first in PATH) runs them and our helper snippets.
use_system_python() { export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH; }

# --- processes ------------------------------------------------------------------------

proc_starttime() { # PID -> start time in clock ticks since boot (field 22 of /proc/PID/stat)
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }            # drop "pid (comm) ", comm may contain spaces
  set -- $stat
  echo "${20}"
}

# proc_start NAME CMD... : run CMD via setsid (its own process group), output to $LOG_DIR/NAME.log,
# record "PID STARTTIME" in $RUN_DIR/NAME.pid. Environment for CMD: use `env K=V CMD`.
proc_start() {
  local name=$1; shift
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  [ -f "$LOG_DIR/$name.log" ] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.1"
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $(proc_starttime "$pid")" >"$RUN_DIR/$name.pid"
}

# proc_pid NAME : print the recorded PID if that process (or its group) still runs.
proc_pid() {
  local f=$RUN_DIR/$1.pid pid st cur
  [ -f "$f" ] || return 1
  read -r pid st <"$f" || return 1
  if cur=$(proc_starttime "$pid"); then
    [ "$cur" = "$st" ] || return 1                 # PID recycled by something else
  else
    kill -0 -- "-$pid" 2>/dev/null || return 1     # leader gone: any of its group left?
  fi
  echo "$pid"
}

proc_up() { # NAME : the leader itself is alive (not a zombie)
  local pid key value
  pid=$(proc_pid "$1") || return 1
  while read -r key value _; do
    if [ "$key" = State: ]; then [ "$value" != Z ]; return; fi
  done 2>/dev/null <"/proc/$pid/status"
  return 1
}

# proc_members PID [PS_SNAPSHOT] : PID, its process group and everything descended from them
# (some programs, like Erlang's helpers, call setsid for their children), one
# "pid rss_kib" line each. PS_SNAPSHOT: output of `ps -eo pid=,ppid=,pgid=,rss=`.
proc_members() {
  local snapshot=${2:-$(ps -eo pid=,ppid=,pgid=,rss=)}
  awk -v root="$1" '
    { pid[NR] = $1; ppid[$1] = $2; pgid[$1] = $3; rss[$1] = $4 }
    END {
      for (i = 1; i <= NR; i++) {
        for (q = pid[i]; q > 1; q = ppid[q])
          if (q == root || pgid[q] == root) { print pid[i], rss[pid[i]]; break }
      }
    }' <<<"$snapshot"
}

any_alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# proc_stop GRACE_SECONDS NAME... : SIGTERM each process group (in the given order), wait
# for them and all their descendants, SIGKILL what is left after the grace time; remove the
# pid files.
proc_stop() {
  local grace=$1 name pid i
  shift
  local -a members=() names=()
  for name in "$@"; do
    if pid=$(proc_pid "$name"); then
      members+=($(proc_members "$pid" | cut -d' ' -f1))
      names+=("$name ($pid)")
      kill -TERM -- "-$pid" 2>/dev/null || true
    fi
  done
  if [ ${#members[@]} -gt 0 ]; then
    for ((i = 0; i < grace * 10; i++)); do
      any_alive "${members[@]}" || break
      sleep 0.1
    done
    if any_alive "${members[@]}"; then
      log "still running after ${grace}s, SIGKILL: $(ps -o pid=,comm= -p "$(IFS=,; echo "${members[*]}")" | tr '\n' ' ')"
      kill -KILL "${members[@]}" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do any_alive "${members[@]}" || break; sleep 0.1; done
    fi
    log "stopped $(IFS=,; echo "${names[*]}" | sed 's/,/, /g')"
  fi
  for name in "$@"; do rm -f "$RUN_DIR/$name.pid"; done
}

# proc_status_lines NAME... : one "component name pid up|down rss_kib" line per process
# (RSS of the process with its group and descendants)
proc_status_lines() {
  local n pid snapshot
  snapshot=$(ps -eo pid=,ppid=,pgid=,rss=)
  for n in "$@"; do
    if proc_up "$n" && pid=$(proc_pid "$n"); then
      echo "$COMPONENT $n $pid up $(proc_members "$pid" "$snapshot" | awk '{ s += $2 } END { print s + 0 }')"
    else
      echo "$COMPONENT $n - down 0"
    fi
  done
}

all_up() { local n; for n in "$@"; do proc_up "$n" || return 1; done; }

# wait_for SECONDS WHAT CMD... : retry CMD until it succeeds
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

http_ok() { curl -sf -o /dev/null --max-time 5 "$1"; }

# --- MariaDB (one private instance per component) ---------------------------------------

# mariadb_start PORT DB USER PASSWORD : data in $DIR/mysql (kept across restarts),
# listening on LISTEN_ADDR:PORT and a socket in $DIR/mysql; creates DB and USER once.
mariadb_start() {
  local port=$1 db=$2 user=$3 pass=$4 my=$DIR/mysql
  mkdir -p "$my"
  if [ ! -d "$my/data/mysql" ]; then
    log "initialising MariaDB data dir $my/data"
    mariadb-install-db --no-defaults --user=root --datadir="$my/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG_DIR/mysql-install.log" 2>&1 ||
      die "mariadb-install-db failed, see $LOG_DIR/mysql-install.log"
  fi
  proc_start mysql mariadbd --no-defaults --user=root --datadir="$my/data" \
    --socket="$my/mysql.sock" --pid-file="$my/mysqld.pid" --port="$port" --bind-address="$LISTEN_ADDR" \
    --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
    --max-connections=300 --log-error="$LOG_DIR/mysqld.err"
  wait_for 30 "MariaDB on :$port" mariadb --no-defaults -S "$my/mysql.sock" -uroot -e 'select 1' ||
    die "MariaDB did not start, see $LOG_DIR/mysqld.err"
  mariadb --no-defaults -S "$my/mysql.sock" -uroot -e "
    CREATE DATABASE IF NOT EXISTS $db;
    CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
    GRANT ALL ON $db.* TO '$user'@'127.0.0.1';" || die "MariaDB: cannot create database $db"
}

# --- Keystone ---------------------------------------------------------------------------

KEYSTONE_URL=http://$LISTEN_ADDR:$KEYSTONE_PORT

# ks_token [USER PASSWORD PROJECT] : sets KS_TOKEN and KS_PROJECT_ID (project-scoped token)
ks_token() {
  local user=${1:-admin} pass=${2:-admin} project=${3:-admin} out
  out=$(curl -sf -i --max-time 20 -H 'Content-Type: application/json' "$KEYSTONE_URL/v3/auth/tokens" -d '{"auth": {
      "identity": {"methods": ["password"], "password": {"user": {"name": "'"$user"'", "domain": {"name": "Default"}, "password": "'"$pass"'"}}},
      "scope": {"project": {"name": "'"$project"'", "domain": {"name": "Default"}}}}}') || return 1
  KS_TOKEN=$(printf '%s\n' "$out" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }')
  KS_PROJECT_ID=$(printf '%s\n' "$out" | sed -n '/^\r\{0,1\}$/,$p' |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"]["project"]["id"])')
  [ -n "$KS_TOKEN" ] && [ -n "$KS_PROJECT_ID" ]
}
