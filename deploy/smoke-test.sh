#!/usr/bin/env bash
# deploy/smoke-test.sh: build the tandem image, bring deploy/docker-compose.yml
# up, run one private inference per output mode through the published client
# port, compare each result with the plaintext model's integer reference and
# the sample's label, and tear everything down again (also on failure).
#
# By hand, not in CI:   bash deploy/smoke-test.sh
#
# Engine: docker when `docker info` works (with `docker compose` (v2) or
# docker-compose (v1.29)), else podman + podman-compose (installed with apt if
# missing; needs root). Docker Engine without the buildx plugin builds with
# the classic builder (DOCKER_BUILDKIT=0), which the Dockerfile is written for.
#
# Besides the inferences it checks what the deployment promises: both servers
# run as uid 10001; the image holds no private key, certificate or Paillier
# key (file scan + `docker history`); a container on the client network
# reaches the model server but not the activation server; the activation
# server refuses the client certificate (role-bound mutual TLS). Base images: pulled when a registry is reachable;
# otherwise built locally with debootstrap:
#   localhost/debian:bookworm-slim  (minbase)
#   localhost/rust:bookworm-local   (minbase + gcc, libc6-dev, libgmp-dev,
#                                    pkg-config, and this host's Rust toolchain)
# If the build cannot reach crates.io, the crates are vendored on the host into
# deploy/.build/vendor first (`cargo vendor`; the Dockerfile picks that up).
#
# Environment (all optional):
#   SMOKE_PROJECT   compose project name                 (tandem-smoke)
#   SMOKE_IMAGE     image tag to build and run           (localhost/tandem:smoke)
#   SMOKE_PORT      host port for the client port        (first free from 50051)
#   SMOKE_KEEP=1    leave the stack running at the end (tear down by hand)
#   SMOKE_VENDOR=1  vendor the crates even if crates.io is reachable
#   SMOKE_NO_BUILD=1  reuse an existing $SMOKE_IMAGE (the build is the long
#                   step: about 20 min on 2 busy cores)
#   RUST_IMAGE, RUNTIME_IMAGE  base images to try first
#                   (docker.io/library/rust:1.95-bookworm, docker.io/library/debian:bookworm-slim)
#   DEBIAN_MIRROR   for debootstrap                      (http://deb.debian.org/debian)
set -euo pipefail

T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
COMPOSE_FILE="$HERE/docker-compose.yml"
WORK="$HERE/.build"
PROJECT=${SMOKE_PROJECT:-tandem-smoke}
IMAGE=${SMOKE_IMAGE:-localhost/tandem:smoke}
RUST_UPSTREAM=${RUST_IMAGE:-docker.io/library/rust:1.95-bookworm}
RUNTIME_UPSTREAM=${RUNTIME_IMAGE:-docker.io/library/debian:bookworm-slim}
LOCAL_RUST=localhost/rust:bookworm-local
LOCAL_DEBIAN=localhost/debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SAMPLE="$ROOT/models/demo/sample.json"
MODEL_DIR="$ROOT/models/demo"

mkdir -p "$WORK"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tandem-smoke.XXXXXX")
STACK_UP=0
RESULT=FAILED

elapsed() { echo $(( $(date +%s) - T0 )); }
log() { printf '[smoke %4ss] %s\n' "$(elapsed)" "$*"; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ engine --
ENGINE=""
COMPOSE=()
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    die "docker works but neither 'docker compose' nor docker-compose is installed"
  fi
  # Without buildx, `DOCKER_BUILDKIT=1 docker build` fails outright; say
  # which builder runs instead of relying on the CLI's fallback.
  if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
  fi
else
  ENGINE=podman
  missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v podman-compose >/dev/null 2>&1 || missing+=(podman-compose)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "no working docker, and ${missing[*]} missing (install them, or run as root)"
    log "installing ${missing[*]} with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  COMPOSE=(podman-compose)
  # On this kind of machine podman only runs containers with runc and without
  # default ulimits (see shared/NOTES.md); set that up unless already configured.
  if [ "$(id -u)" = 0 ] && ! grep -qs '^runtime' /etc/containers/containers.conf; then
    log "configuring podman: runtime = runc, default_ulimits = [] (/etc/containers/containers.conf)"
    mkdir -p /etc/containers
    printf '[engine]\nruntime = "runc"\n\n[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
  fi
fi
log "engine: $ENGINE ($($ENGINE version --format '{{.Server.Version}}' 2>/dev/null || echo '?')), compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))${DOCKER_BUILDKIT:+, DOCKER_BUILDKIT=$DOCKER_BUILDKIT}"

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

# ---------------------------------------------------------------- teardown --
teardown() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ] && [ "$RESULT" != PASSED ]; then
    log "logs of the stack (failure):"
    for svc in certs activation-server model-server; do
      for id in $($ENGINE ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
                               --filter "label=com.docker.compose.service=$svc"); do
        echo "----- $svc ($id)"
        $ENGINE logs "$id" 2>&1 | tail -40
      done
    done
  fi
  if [ "$STACK_UP" = 1 ] && [ "${SMOKE_KEEP:-0}" = 1 ]; then
    log "SMOKE_KEEP=1: the stack is still up; tear it down with:"
    log "  ${COMPOSE[*]} -p $PROJECT -f $COMPOSE_FILE down -v"
  elif [ "$STACK_UP" = 1 ]; then
    log "tearing down"
    compose down -v >"$WORK/down.log" 2>&1
    # podman-compose 1.0 removes neither networks nor (always) volumes.
    for id in $($ENGINE ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
      $ENGINE rm -f "$id" >/dev/null 2>&1
    done
    for v in "${PROJECT}_tls-ca" "${PROJECT}_tls-activation" "${PROJECT}_tls-model" "${PROJECT}_tls-client" \
             "${PROJECT}_activation-key"; do
      $ENGINE volume rm -f "$v" >/dev/null 2>&1
    done
    for n in "${PROJECT}_backend" "${PROJECT}_frontend"; do
      $ENGINE network rm "$n" >/dev/null 2>&1
    done
  fi
  rm -rf "$TMP"
  # A stale vendor dir would silently be used by later manual builds.
  rm -rf "$WORK/vendor"
  if [ "$RESULT" = PASSED ]; then
    log "kept for re-runs: images $IMAGE and the base images; remove with: $ENGINE rmi $IMAGE"
  fi
  log "result: $RESULT (exit $rc); total run time $(elapsed) s ($(( $(elapsed) / 60 )) min $(( $(elapsed) % 60 )) s)"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- base images --
have_image() { $ENGINE image inspect "$1" >/dev/null 2>&1; }
try_pull() {
  log "trying to pull $1"
  timeout 180 $ENGINE pull -q "$1" >/dev/null 2>&1
}

need_debootstrap() {
  [ "$(id -u)" = 0 ] || die "building a base image with debootstrap needs root"
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
}

# rootfs DIR [INCLUDES]: a Debian bookworm minbase in DIR.
rootfs() {
  local dir=$1 include=${2:-}
  need_debootstrap
  log "debootstrap bookworm (minbase${include:+ + $include}) from $MIRROR"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$dir" "$MIRROR" \
    >"$WORK/debootstrap-$(basename "$dir").log" 2>&1 \
    || die "debootstrap failed (see $WORK/debootstrap-$(basename "$dir").log)"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* \
         "$dir"/var/log/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
  # Slim-style: keep apt from installing docs into derived images.
  mkdir -p "$dir/etc/dpkg/dpkg.cfg.d"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    >"$dir/etc/dpkg/dpkg.cfg.d/docker-slim"
}

import_rootfs() {
  local dir=$1 name=$2; shift 2
  log "importing $name"
  tar --numeric-owner -C "$dir" -cf - . | $ENGINE import "$@" - "$name" >/dev/null
}

build_local_debian() {
  local dir="$TMP/debian"
  rootfs "$dir"
  rm -rf "$dir"/usr/share/locale/*
  import_rootfs "$dir" "$LOCAL_DEBIAN" --change 'CMD ["bash"]'
  rm -rf "$dir"
}

build_local_rust() {
  command -v rustc >/dev/null 2>&1 || die "no Rust toolchain on this host to put into the builder image"
  local sysroot tc dir="$TMP/rust"
  sysroot=$(cd / && rustc --print sysroot)
  tc=$(basename "$sysroot")
  log "host toolchain: $tc ($(cd / && rustc --version))"
  rootfs "$dir" gcc,libc6-dev,libgmp-dev,ca-certificates,pkg-config
  # The toolchain as rustup lays it out (docs left out), cargo/rustc on PATH
  # through /usr/local/cargo/bin like the official rust image (symlinks to the
  # toolchain instead of rustup proxies: no rustup needed inside).
  mkdir -p "$dir/usr/local/rustup/toolchains/$tc" "$dir/usr/local/cargo/bin"
  for part in bin lib libexec etc; do
    [ -e "$sysroot/$part" ] && cp -a "$sysroot/$part" "$dir/usr/local/rustup/toolchains/$tc/"
  done
  for b in "$dir/usr/local/rustup/toolchains/$tc/bin"/*; do
    ln -s "/usr/local/rustup/toolchains/$tc/bin/$(basename "$b")" "$dir/usr/local/cargo/bin/$(basename "$b")"
  done
  import_rootfs "$dir" "$LOCAL_RUST" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
  rm -rf "$dir"
}

if [ "${SMOKE_NO_BUILD:-0}" = 1 ]; then
  have_image "$IMAGE" || die "SMOKE_NO_BUILD=1 but there is no image $IMAGE"
  log "SMOKE_NO_BUILD=1: using the existing $IMAGE"
else
  if have_image "$RUNTIME_UPSTREAM" || try_pull "$RUNTIME_UPSTREAM"; then
    RUNTIME_BASE=$RUNTIME_UPSTREAM
  elif have_image "$LOCAL_DEBIAN"; then
    RUNTIME_BASE=$LOCAL_DEBIAN
  else
    build_local_debian
    RUNTIME_BASE=$LOCAL_DEBIAN
  fi
  if have_image "$RUST_UPSTREAM" || try_pull "$RUST_UPSTREAM"; then
    RUST_BASE=$RUST_UPSTREAM
  elif have_image "$LOCAL_RUST"; then
    RUST_BASE=$LOCAL_RUST
  else
    build_local_rust
    RUST_BASE=$LOCAL_RUST
  fi
  log "base images: build $RUST_BASE, runtime $RUNTIME_BASE"

  # ------------------------------------------------------- crates offline? --
  # A real HTTPS request with the builder's own cargo and CA store: a bare TCP
  # check is not enough behind a TLS-intercepting proxy whose CA only the
  # host trusts.
  rm -rf "$WORK/vendor"
  if [ "${SMOKE_VENDOR:-0}" = 1 ] \
     || ! timeout 120 $ENGINE run --rm "$RUST_BASE" cargo search --limit 1 anyhow >/dev/null 2>&1; then
    log "the builder cannot use crates.io: vendoring the crates into deploy/.build/vendor on the host"
    (cd "$ROOT" && { cargo vendor --locked --quiet "$WORK/vendor" >/dev/null \
                     || cargo vendor --locked --offline --quiet "$WORK/vendor" >/dev/null; }) \
      || die "cargo vendor failed: no crates.io and no complete local cache"
    log "vendored $(ls "$WORK/vendor" | wc -l) crates ($(du -sh "$WORK/vendor" | cut -f1))"
  else
    log "the builder can use crates.io"
  fi

  # ------------------------------------------------------------------ build --
  build=( "$ENGINE" build -f "$HERE/Dockerfile" -t "$IMAGE"
          --build-arg "RUST_IMAGE=$RUST_BASE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE" )
  if [ "$ENGINE" = podman ]; then
    # --format docker keeps HEALTHCHECK; --ignorefile: the context is the repo root.
    build+=( --format docker --ignorefile "$ROOT/.dockerignore" )
  fi
  log "building $IMAGE (log: deploy/.build/build.log); this is the long step"
  t_build=$(date +%s)
  if ! nice -n 10 "${build[@]}" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    die "image build failed (full log: $WORK/build.log)"
  fi
  grep -E "Finished|Compiling tandem" "$WORK/build.log" | tail -3 || true
  log "image built in $(( $(date +%s) - t_build )) s"
fi
log "image $IMAGE: $($ENGINE image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}'), user $($ENGINE image inspect "$IMAGE" --format '{{.Config.User}}')"

# ------------------------------------------------------ what the image holds --
# Non-root, and no secret in any layer: the key and the TLS material come
# from volumes at run time.
[ "$($ENGINE image inspect "$IMAGE" --format '{{.Config.User}}')" = "10001:10001" ] || die "the image does not run as 10001:10001"
$ENGINE history --no-trunc --format '{{.Size}}	{{.CreatedBy}}' "$IMAGE" >"$TMP/history.txt"
# Layers that add files: only the binaries and the two helper scripts (to
# /usr/local/bin/) and the demo model may be copied in. (The classic builder
# records `COPY dir:HASH in DEST`, BuildKit `COPY SRC DEST`.)
if grep -E '(COPY|ADD) ' "$TMP/history.txt" | grep -vE '(/usr/local/bin/|/usr/share/tandem/models/demo/)( |$)' | grep -q .; then
  grep -E '(COPY|ADD) ' "$TMP/history.txt"
  die "an unexpected file is copied into the image (see docker history above)"
fi
if grep -iE 'activation-key|\.pem|PRIVATE KEY' "$TMP/history.txt" | grep -v 'ENV TANDEM_KEY_FILE=' | grep -q .; then
  die "docker history mentions key or certificate material"
fi
# A scan of the whole image file system: no PEM private key, no certificate
# outside the system's CA store, no Paillier key file.
$ENGINE run --rm --no-healthcheck --network none --user 0 "$IMAGE" sh -c '
  find / -xdev \( -path /proc -o -path /sys -o -path /etc/ssl -o -path /usr/share/ca-certificates \) -prune -o -type f \
       \( -name "*.pem" -o -name "*.key" -o -name "*.crt" -o -name "activation-key*" \) -print
  grep -rlI --exclude-dir=proc --exclude-dir=sys -e "-----BEGIN [A-Z ]*PRIVATE KEY-----" / 2>/dev/null
  true' >"$TMP/secrets.txt"
if [ -s "$TMP/secrets.txt" ]; then
  cat "$TMP/secrets.txt"
  die "the image holds key or certificate files (listed above)"
fi
log "image: non-root (10001:10001); no key or certificate in its file system or its history ($(wc -l <"$TMP/history.txt") layers)"

# -------------------------------------------------------------- reference --
# The plaintext model's integer reference for every mode, from `tandem demo`
# (both servers in one process; it also checks its own private result).
log "computing the plaintext reference (tandem demo, no network)"
$ENGINE run --rm --no-healthcheck --network none -v "$MODEL_DIR:/in:ro" "$IMAGE" \
  tandem demo --key-bits 1024 --model /in/demo.tandem --input /in/sample.json >"$TMP/reference.txt" 2>&1 \
  || { cat "$TMP/reference.txt"; die "tandem demo failed"; }
awk '/^mode [a-z]+:$/ { sub(/^mode /, ""); sub(/:$/, ""); mode = $0 }
     /^  integer reference : / { line = $0; sub(/^  integer reference : /, "", line); sub(/  \([^()]*\)$/, "", line); print mode "\t" line }' \
  "$TMP/reference.txt" >"$TMP/reference.tsv"
[ -s "$TMP/reference.tsv" ] || { cat "$TMP/reference.txt"; die "no reference lines in the demo's output"; }
EXPECTED_LABEL=$(sed -n 's/.*"label"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$SAMPLE")
log "reference: $(tr '\t' '=' <"$TMP/reference.tsv" | paste -sd ';' -); sample label $EXPECTED_LABEL"

# -------------------------------------------------------------------- up --
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -n "${SMOKE_PORT:-}" ]; then
  PORT=$SMOKE_PORT
else
  PORT=50051
  while ! port_free "$PORT"; do PORT=$((PORT + 1)); [ "$PORT" -lt 50200 ] || die "no free port in 50051-50199"; done
fi
export TANDEM_IMAGE="$IMAGE" TANDEM_PUBLISH_ADDR=127.0.0.1 TANDEM_PUBLISH_PORT="$PORT"
# Leftovers of an interrupted earlier run.
compose down -v >/dev/null 2>&1 || true
log "compose up (project $PROJECT, client port 127.0.0.1:$PORT)"
STACK_UP=1
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "compose up failed"; }

svc_id() { $ENGINE ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" | head -1; }

# The client's CA certificate (and the dev client certificate, for the
# refusal check below), from the client's volume.
log "waiting for the certificates"
for _ in $(seq 1 120); do
  if $ENGINE run --rm --no-healthcheck -v "${PROJECT}_tls-client:/c:ro" "$IMAGE" sh -c 'cat /c/.ready /c/ca.pem' >"$TMP/ca.pem" 2>/dev/null \
     && grep -q "BEGIN CERTIFICATE" "$TMP/ca.pem"; then
    break
  fi
  sleep 2
done
grep -q "BEGIN CERTIFICATE" "$TMP/ca.pem" 2>/dev/null || die "no CA certificate in the ${PROJECT}_tls-client volume"
chmod 644 "$TMP/ca.pem"
# The CA key exists only in tls-ca, which no server mounts.
for svc in activation-server model-server; do
  for m in $($ENGINE inspect "$(svc_id "$svc")" --format '{{range .Mounts}}{{.Name}} {{end}}'); do
    case "$m" in *_tls-ca|*_tls-client) die "$svc mounts $m";; esac
  done
done

client() {
  $ENGINE run --rm --no-healthcheck --network host -v "$TMP/ca.pem:/etc/tandem/client-ca.pem:ro" -v "$MODEL_DIR:/in:ro" \
    "$IMAGE" tandem-client "$@"
}

log "waiting for the model server on https://localhost:$PORT (TLS, ListModels)"
ready=0
for i in $(seq 1 150); do
  if client models --server "https://localhost:$PORT" --tls-ca /etc/tandem/client-ca.pem --timeout-secs 10 \
       >"$TMP/models.txt" 2>"$TMP/models.err"; then
    ready=1
    break
  fi
  for svc in activation-server model-server; do
    id=$(svc_id "$svc")
    state=$([ -n "$id" ] && $ENGINE inspect "$id" --format '{{.State.Status}}' 2>/dev/null || echo missing)
    if [ "$state" != running ] && [ "$state" != created ] && [ $((i % 5)) = 0 ]; then
      log "$svc is $state (restart policy: unless-stopped)"
    fi
  done
  sleep 2
done
[ "$ready" = 1 ] || { cat "$TMP/models.err"; die "the model server did not answer within 300 s"; }
log "model server answers: $(cut -f1,2 "$TMP/models.txt" | paste -sd ' ' -)"

# The image's HEALTHCHECK (TCP) on both servers: podman runs healthchecks from
# systemd timers, which a machine without systemd lacks, so run them once here;
# docker runs them itself.
for svc in activation-server model-server; do
  id=$(svc_id "$svc")
  if [ "$ENGINE" = podman ]; then
    $ENGINE healthcheck run "$id" >/dev/null 2>&1 || die "$svc: healthcheck failed"
    log "$svc: healthcheck passed"
  else
    for _ in $(seq 1 30); do
      h=$($ENGINE inspect "$id" --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}')
      [ "$h" = healthy ] && break
      sleep 2
    done
    [ "$h" = healthy ] || die "$svc: health status $h"
    log "$svc: healthy"
  fi
done

# ------------------------------------------------------------ trust split --
# Both servers run as the image's user, not root.
for svc in activation-server model-server; do
  uid=$($ENGINE exec "$(svc_id "$svc")" id -u)
  [ "$uid" = 10001 ] || die "$svc runs as uid $uid, not 10001"
done
# Networks: a container on the client network (frontend) reaches the model
# server, but neither the activation server's name nor its address.
S2_IP=$($ENGINE inspect "$(svc_id activation-server)" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' | awk '{print $1}')
tcp_from() {  # NETWORK HOST PORT: can a container on NETWORK connect?
  $ENGINE run --rm --no-healthcheck --network "$1" "$IMAGE" timeout 4 bash -c "exec 3<>/dev/tcp/$2/$3" >/dev/null 2>&1
}
tcp_from "${PROJECT}_frontend" model-server 50051 || die "a client-network container cannot reach the model server"
if tcp_from "${PROJECT}_frontend" activation-server 50052 || { [ -n "$S2_IP" ] && tcp_from "${PROJECT}_frontend" "$S2_IP" 50052; }; then
  die "a client-network container reaches the activation server"
fi
log "networks: frontend reaches model-server:50051, not activation-server ($S2_IP:50052)"
# Role-bound mutual TLS: on the backend network, a model server presenting
# the CA-signed CLIENT certificate is refused by the activation server.
if $ENGINE run --rm --no-healthcheck --network "${PROJECT}_backend" -v "${PROJECT}_tls-client:/c:ro" "$IMAGE" \
     model-server --listen 127.0.0.1:0 --models /usr/share/tandem/models/demo \
     --activation-server https://activation-server:50052 --connect-retries 1 \
     --tls-cert /c/client.pem --tls-key /c/client-key.pem --tls-ca /c/ca.pem >"$TMP/impostor.log" 2>&1; then
  die "the activation server accepted the client certificate"
fi
grep -q "urn:tandem:role:model-server" "$TMP/impostor.log" || { tail -5 "$TMP/impostor.log"; die "refused, but not for the role"; }
log "the activation server refuses the CA-signed client certificate: $(grep -o 'PermissionDenied\|permission denied\|not the model server.s' "$TMP/impostor.log" | head -1)"

FINGERPRINT=$($ENGINE logs "$(svc_id activation-server)" 2>&1 | sed -n 's/^activation key fingerprint: \([0-9a-f]*\).*/\1/p' | tail -1)
[ -n "$FINGERPRINT" ] || die "no key fingerprint in the activation server's log"
log "activation key fingerprint (from the activation server's log, pinned): $FINGERPRINT"

# ------------------------------------------------------------- inference --
fail=0
while IFS=$'\t' read -r mode expected; do
  if ! out=$(client infer --server "https://localhost:$PORT" --tls-ca /etc/tandem/client-ca.pem \
               --model demo --input /in/sample.json --mode "$mode" \
               --activation-key-fingerprint "$FINGERPRINT" -v 2>"$TMP/infer.err"); then
    printf '%s\n' "$out"
    cat "$TMP/infer.err"
    die "private inference failed (mode $mode)"
  fi
  got=$(printf '%s\n' "$out" | head -1)
  label=$(printf '%s\n' "$got" | sed -n 's/^label: \([0-9]*\)$/\1/p; s/.*(label \([0-9]*\))$/\1/p')
  latency=$(printf '%s\n' "$out" | sed -n 's/^latency: .*, \(.*\) (whole query)$/\1/p')
  if [ "$got" = "$expected" ]; then
    log "mode $mode: private \"$got\" == plaintext reference  [$latency]"
  else
    log "mode $mode: MISMATCH private \"$got\" != reference \"$expected\""
    fail=1
  fi
  if [ -n "$EXPECTED_LABEL" ] && [ "$label" != "$EXPECTED_LABEL" ]; then
    log "mode $mode: label $label != sample.json's label $EXPECTED_LABEL"
    fail=1
  fi
done <"$TMP/reference.tsv"
[ "$fail" = 0 ] || die "private results differ from the plain model"

RESULT=PASSED
log "PASSED: private inference through the compose stack matches the plain model in every mode"
