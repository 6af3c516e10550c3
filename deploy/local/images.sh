#!/usr/bin/env bash
# deploy/local/images.sh - OCI images of podguard's functions, built offline with ko.
#
# Usage: deploy/local/images.sh all|base|build|check|tools
#   all     base, build, check (`make images`)
#   base    the base image, an OCI layout in $PODGUARD_IMAGES_DIR/base: the CA certificates of
#           Debian's ca-certificates package (installed when missing) as
#           /etc/ssl/certs/ca-certificates.crt, /etc/passwd and /etc/group with the nonroot
#           user 65532, /tmp; runs as 65532. Rewritten only when its digest changes.
#   build   one image per main package functions/*/cmd/<name> (found with `go list`, so a new
#           function is picked up), built with ko's library onto the base (CGO_ENABLED=0,
#           -trimpath, -ldflags=-s -w, $PLATFORM), each an OCI layout in
#           $PODGUARD_IMAGES_DIR/functions/<name>; prints digests and sizes. Nothing is pulled
#           or pushed.
#   check   checks each image (entrypoint /ko-app/<name>, user 65532, a static binary, a CA
#           bundle whose certificates parse) and, as root, starts each binary from its image's
#           root filesystem (chroot, as 65532): with the local stack up it must serve /healthz
#           and answer a CloudEvent, without it fail at start naming the missing configuration.
#   tools   the ko and crane CLIs in $PODGUARD_CACHE_DIR/bin/ko-$KO_VERSION/ (to push images)
#
# The builder, podguard-images (deploy/local/tools/ko, which pins ko $KO_VERSION), is built
# once per version of its sources into $PODGUARD_CACHE_DIR/bin/ko-$KO_VERSION/. ko's layer
# cache lives in $KOCACHE. Cold (nothing compiled yet) this takes minutes; warm, seconds.
COMPONENT=images
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$LOCAL_DIR/../.." && pwd)
TOOL=$LOCAL_DIR/tools/ko
KO_BIN=$PODGUARD_CACHE_DIR/bin/ko-$KO_VERSION
: "${PODGUARD_IMAGES_DIR:=$PODGUARD_CACHE_DIR/images}"
: "${PLATFORM:=linux/$(go env GOARCH)}"
: "${KOCACHE:=$PODGUARD_CACHE_DIR/ko}"
export KOCACHE
STACK_ENV_FILE=${PODGUARD_STACK_ENV:-$STACK_DIR/env}

# --- tools ------------------------------------------------------------------------------

check_ko_pin() {
  grep -qE "^[[:space:]]*(require )?github.com/google/ko $KO_VERSION( |$)" "$TOOL/go.mod" ||
    die "deploy/local/tools/ko/go.mod does not require github.com/google/ko $KO_VERSION (update it with: cd deploy/local/tools/ko && go get -tool github.com/google/ko@$KO_VERSION)"
}

# build_tool OUT PKG : go build PKG in the tool module, unless OUT exists
build_tool() {
  local out=$1 pkg=$2 t
  [ -x "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  log "building $(basename "$out") ($pkg) ..."
  t=$(timer_start)
  (cd "$TOOL" && go build -trimpath -ldflags="-s -w" -o "$out.tmp" "$pkg") || die "build of $pkg failed"
  mv -f "$out.tmp" "$out"
  log "built $(basename "$out") in $(elapsed "$t")"
}

# builder : prints the path of podguard-images built from the current sources
builder() {
  command -v go >/dev/null || die "go is not installed"
  check_ko_pin
  local key out
  key=$( (go env GOVERSION; cd "$TOOL" && find . -name '*.go' -o -name 'go.mod' -o -name 'go.sum' | LC_ALL=C sort | xargs cat) |
    sha256sum | cut -c1-16)
  out=$KO_BIN/podguard-images-$key
  mkdir -p "$KO_BIN"
  exec 8>"$KO_BIN/.build.lock"
  flock 8
  build_tool "$out" ./podguard-images >&2
  # keep the five newest builders (other checkouts may use older sources)
  ls -t "$KO_BIN"/podguard-images-* 2>/dev/null | grep -v '\.tmp$' | tail -n +6 | xargs -r rm -f
  exec 8>&-
  echo "$out"
}

tools() {
  check_ko_pin
  mkdir -p "$KO_BIN"
  exec 8>"$KO_BIN/.build.lock"
  flock 8
  build_tool "$KO_BIN/ko" github.com/google/ko
  build_tool "$KO_BIN/crane" github.com/google/go-containerregistry/cmd/crane
  exec 8>&-
  log "ko and crane in $KO_BIN"
}

# --- base ---------------------------------------------------------------------------------

ca_installed() { dpkg-query -W -f='${Status}' ca-certificates 2>/dev/null | grep -q 'install ok installed'; }

install_ca_certificates() {
  ca_installed && return 0
  need_root "installing ca-certificates"
  log "installing Debian's ca-certificates (apt-get)"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  mkdir -p "$STACK_DIR"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends ca-certificates >"$STACK_DIR/apt-images.log" 2>&1 || {
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >>"$STACK_DIR/apt-images.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends ca-certificates >>"$STACK_DIR/apt-images.log" 2>&1
  } || die "apt-get install ca-certificates failed, see $STACK_DIR/apt-images.log"
}

base() {
  install_ca_certificates
  # The package's own certificates, not /etc/ssl/certs/ca-certificates.crt: that bundle also
  # holds whatever local CAs this machine trusts, which have no business in the images.
  local certs version
  mapfile -t certs < <(dpkg -L ca-certificates | grep -E '^/usr/share/ca-certificates/.+\.crt$' | LC_ALL=C sort)
  [ ${#certs[@]} -gt 0 ] || die "the ca-certificates package lists no certificate"
  version=$(dpkg-query -W -f='${Version}' ca-certificates)
  "$BUILDER" base -out "$PODGUARD_IMAGES_DIR/base" -platform "$PLATFORM" \
    -ca-source "Debian ca-certificates $version" "${certs[@]}"
}

build() {
  local t
  t=$(timer_start)
  "$BUILDER" build -repo "$REPO" -base "$PODGUARD_IMAGES_DIR/base" -out "$PODGUARD_IMAGES_DIR/functions" \
    -platform "$PLATFORM" ${PODGUARD_IMAGES_VERBOSE:+-v}
  log "images built in $(elapsed "$t") (KOCACHE=$KOCACHE)"
}

check() {
  local run=-run
  if [ "$(id -u)" != 0 ]; then
    log "not root: the binaries are not started from the images (chroot needs root)"
    run=-run=false
  elif [ -f "$STACK_ENV_FILE" ]; then
    log "checking the images; each function starts against the local stack ($STACK_ENV_FILE)"
  else
    log "checking the images; the local stack is down, so each function must fail at start on missing configuration"
  fi
  "$BUILDER" check -dir "$PODGUARD_IMAGES_DIR/functions" -platform "$PLATFORM" $run -stack-env "$STACK_ENV_FILE"
}

# one images run at a time (the folder is shared by every checkout)
lock_images() {
  mkdir -p "$PODGUARD_IMAGES_DIR"
  exec 9>"$PODGUARD_IMAGES_DIR/.lock"
  flock 9
}

case ${1:-} in
  all | base | build | check)
    t0=$(timer_start)
    BUILDER=$(builder)
    lock_images
    case $1 in
      all) base; build; check; log "make images: $(elapsed "$t0")" ;;
      *) "$1" ;;
    esac
    ;;
  tools) tools ;;
  *) sed -n '2,/^COMPONENT=/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
