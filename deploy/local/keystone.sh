#!/usr/bin/env bash
# deploy/local/keystone.sh - Keystone (Debian package) for podguard's local stack, on its own
# MariaDB, with fernet tokens, served by uWSGI on 127.0.0.1:$KEYSTONE_PORT.
#
# Usage: deploy/local/keystone.sh start|stop|status
#
# The first start creates the database, keys and the admin user (admin/admin, project admin,
# region RegionOne); both are kept across restarts under $STACK_DIR/keystone. Every start
# makes sure the catalog (object-store -> Swift on $SWIFT_PORT, volumev3 -> Cinder on
# $CINDER_PORT), the service users swift/swift and cinder/cinder (project service, role
# admin) and demo/demo (project demo, role member) exist.
COMPONENT=keystone
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
use_system_python

PROCS=(mysql keystone)
CONF=$DIR/etc/keystone.conf
MANAGE=(keystone-manage --config-file "$CONF")

write_config() {
  mkdir -p "$DIR/etc"
  cat >"$CONF" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = mysql+pymysql://keystone:keystone@127.0.0.1:$KEYSTONE_MYSQL_PORT/keystone?charset=utf8
[identity]
# cheap hashing: local test credentials only
password_hash_rounds = 4
[token]
provider = fernet
expiration = 43200
[fernet_tokens]
key_repository = $DIR/fernet-keys
[fernet_receipts]
key_repository = $DIR/fernet-keys
[credential]
key_repository = $DIR/credential-keys
EOF
}

# Once per database: schema, keys, admin user, project, role and identity endpoint.
bootstrap() {
  local mark=$DIR/mysql/.bootstrapped
  [ -f "$mark" ] && return 0
  log "bootstrapping the Keystone database"
  {
    timeout 300 "${MANAGE[@]}" db_sync &&
      timeout 60 "${MANAGE[@]}" fernet_setup --keystone-user root --keystone-group root &&
      timeout 60 "${MANAGE[@]}" credential_setup --keystone-user root --keystone-group root &&
      timeout 120 "${MANAGE[@]}" bootstrap --bootstrap-password admin \
        --bootstrap-admin-url "$KEYSTONE_URL/v3/" --bootstrap-internal-url "$KEYSTONE_URL/v3/" \
        --bootstrap-public-url "$KEYSTONE_URL/v3/" --bootstrap-region-id RegionOne
  } >"$LOG_DIR/bootstrap.log" 2>&1 || die "Keystone bootstrap failed, see $LOG_DIR/bootstrap.log"
  touch "$mark"
}

# Services, endpoints, projects and users the rest of the stack needs (idempotent; only runs
# when its inputs changed).
ensure_catalog() {
  local want="swift=http://$LISTEN_ADDR:$SWIFT_PORT cinder=http://$LISTEN_ADDR:$CINDER_PORT keystone=$KEYSTONE_URL"
  local mark=$DIR/mysql/.catalog
  [ "$(cat "$mark" 2>/dev/null)" = "$want" ] && return 0
  log "setting up the catalog and users"
  KEYSTONE_URL=$KEYSTONE_URL SWIFT_URL="http://$LISTEN_ADDR:$SWIFT_PORT" CINDER_URL="http://$LISTEN_ADDR:$CINDER_PORT" \
    python3 - >"$LOG_DIR/catalog.log" 2>&1 <<'EOF' || die "catalog setup failed, see $LOG_DIR/catalog.log"
import json, os, urllib.parse, urllib.request

KS = os.environ["KEYSTONE_URL"] + "/v3"

def call(method, path, body=None, token=None):
    req = urllib.request.Request(KS + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return r.headers, (json.loads(data) if data else None)

hdr, _ = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "admin"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
TOKEN = hdr["X-Subject-Token"]

def get(path, key, **q):
    return call("GET", path + "?" + urllib.parse.urlencode(q), token=TOKEN)[1][key]

def ensure(path, key, body, **q):
    found = get(path, key, **q)
    if found:
        return found[0]
    print("create", key, body)
    return call("POST", path, {key[:-1]: body}, token=TOKEN)[1][key[:-1]]

def service(name, type_, url):
    svc = ensure("/services", "services", {"name": name, "type": type_, "enabled": True}, type=type_)
    for iface in ("public", "internal", "admin"):
        eps = get("/endpoints", "endpoints", service_id=svc["id"], interface=iface)
        if eps and eps[0]["url"] != url:
            print("update endpoint", type_, iface, url)
            call("PATCH", "/endpoints/" + eps[0]["id"], {"endpoint": {"url": url}}, token=TOKEN)
        elif not eps:
            ensure("/endpoints", "endpoints", {"service_id": svc["id"], "interface": iface,
                                              "url": url, "region_id": "RegionOne"},
                   service_id=svc["id"], interface=iface)

def user(name, password, project, role):
    p = ensure("/projects", "projects", {"name": project, "domain_id": "default"}, name=project)
    u = ensure("/users", "users", {"name": name, "password": password, "domain_id": "default"}, name=name)
    r = get("/roles", "roles", name=role)[0]
    call("PUT", "/projects/%s/users/%s/roles/%s" % (p["id"], u["id"], r["id"]), token=TOKEN)

service("swift", "object-store", os.environ["SWIFT_URL"] + "/v1/AUTH_%(project_id)s")
service("cinderv3", "volumev3", os.environ["CINDER_URL"] + "/v3/%(project_id)s")
user("swift", "swift", "service", "admin")
user("cinder", "cinder", "service", "admin")
user("demo", "demo", "demo", "member")
print("catalog ok")
EOF
  echo "$want" >"$mark"
}

start() {
  if all_up "${PROCS[@]}"; then log "already running"; return 0; fi
  stop
  local t
  t=$(timer_start)
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  write_config
  mariadb_start "$KEYSTONE_MYSQL_PORT" keystone keystone keystone
  bootstrap
  # --http-socket has no keep-alive: without "Connection: close" clients reuse a connection
  # uWSGI has closed and get "connection reset by peer".
  proc_start keystone env OS_KEYSTONE_CONFIG_DIR="$DIR/etc" OS_KEYSTONE_CONFIG_FILES=keystone.conf \
    uwsgi --plugins python3 --wsgi-file /usr/bin/keystone-wsgi-public --http-socket "$LISTEN_ADDR:$KEYSTONE_PORT" \
    --add-header "Connection: close" \
    --master --processes 1 --threads 8 --enable-threads --lazy-apps --need-app --die-on-term --no-orphans \
    --buffer-size 65535 --procname-prefix-spaced podguard-keystone
  log "processes started in $(elapsed "$t")"
  wait_for "$STACK_READY_TIMEOUT" "Keystone on :$KEYSTONE_PORT" http_ok "$KEYSTONE_URL/v3" ||
    die "Keystone not ready, see $LOG_DIR/keystone.log"
  ensure_catalog
  ks_token || die "cannot get an admin token from $KEYSTONE_URL"
  log "ready in $(elapsed "$t"): $KEYSTONE_URL/v3 (admin/admin, project admin)"
}

stop() { proc_stop 30 keystone mysql; }

status() { proc_status_lines "${PROCS[@]}"; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
