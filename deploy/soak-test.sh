#!/usr/bin/env bash
# deploy/soak-test.sh: SOAK_SECS (600) of private MNIST-MLP inference through
# the compose stack, every answer checked bit for bit against the model's
# integer reference (tandem-loadgen --model-file), real MNIST test rows.
# Passes with 0 wrong answers, 0 failed queries and resident memory growth
# of each server within SOAK_RSS_GROWTH_MIB (64).
#
#   bash deploy/soak-test.sh      (after deploy/smoke-test.sh has built the image)
#
# Environment: SOAK_IMAGE (localhost/tandem:smoke), SOAK_PROJECT (tandem-soak),
# SOAK_PORT (first free from 50071), SOAK_SECS (600), SOAK_CONCURRENCY (2),
# SOAK_RSS_GROWTH_MIB (64).
set -euo pipefail
T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT="$HERE/.build/soak"
PROJECT=${SOAK_PROJECT:-tandem-soak}
IMAGE=${SOAK_IMAGE:-localhost/tandem:smoke}
SECS=${SOAK_SECS:-600}
CONC=${SOAK_CONCURRENCY:-2}
GROWTH=${SOAK_RSS_GROWTH_MIB:-64}
mkdir -p "$OUT"
RESULT=FAILED
log() { printf '[soak %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { log "ERROR: $*"; exit 1; }
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$HERE/docker-compose.yml" "$@"; }
svc_id() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" | head -1; }
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE (build it with deploy/smoke-test.sh)"
trap 'rc=$?; for s in activation-server model-server; do docker logs "$(svc_id $s)" >"$OUT/$s.log" 2>&1; done; compose down -v >/dev/null 2>&1; log "result: $RESULT (exit $rc)"' EXIT

PORT=${SOAK_PORT:-50071}
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
# The whole models/ directory: the model server imports the ONNX files.
export TANDEM_IMAGE="$IMAGE" TANDEM_PUBLISH_PORT="$PORT" TANDEM_MODELS_SUBDIR=.
compose down -v >/dev/null 2>&1 || true
compose up -d --no-build >"$OUT/up.log" 2>&1 || { cat "$OUT/up.log"; die "compose up failed"; }
CA="$OUT/ca.pem"
for _ in $(seq 1 120); do
  docker run --rm --no-healthcheck -v "${PROJECT}_tls-client:/c:ro" "$IMAGE" sh -c 'cat /c/.ready /c/ca.pem' >"$CA" 2>/dev/null \
    && grep -q "BEGIN CERTIFICATE" "$CA" && break
  sleep 2
done
chmod 644 "$CA"
FP=""
for _ in $(seq 1 150); do
  FP=$(docker logs "$(svc_id activation-server)" 2>&1 | sed -n 's/^activation key fingerprint: \([0-9a-f]*\).*/\1/p' | tail -1)
  [ -n "$FP" ] && docker run --rm --no-healthcheck --network host -v "$CA:/ca.pem:ro" "$IMAGE" \
    tandem-client models --server "https://localhost:$PORT" --tls-ca /ca.pem --timeout-secs 10 >"$OUT/models.txt" 2>/dev/null && break
  sleep 2
done
grep -q '^mnist_mlp' "$OUT/models.txt" || die "the model server does not serve mnist_mlp"
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$(docker inspect "$(svc_id "$1")" --format '{{.State.Pid}}')/status"; }
log "stack up on port $PORT; ${SECS} s of MNIST MLP queries, concurrency $CONC"
# loadgen's own RSS check needs the server pids in its PID namespace:
# --pid host gives it the host's /proc.
rc=0
docker run --rm --no-healthcheck --network host --pid host -v "$CA:/ca.pem:ro" -v "$ROOT/models:/m:ro" \
  -v "$ROOT/data/mnist:/d:ro" -v "$OUT:/out" --user "$(id -u):$(id -g)" "$IMAGE" \
  tandem-loadgen --server "https://localhost:$PORT" --tls-ca /ca.pem --model mnist_mlp --model-file /m/mnist_mlp.onnx \
    --data /d/test.csv --activation-key-fingerprint "$FP" --concurrency "$CONC" --duration "$SECS" \
    --s1-pid "$(docker inspect "$(svc_id model-server)" --format '{{.State.Pid}}')" \
    --s2-pid "$(docker inspect "$(svc_id activation-server)" --format '{{.State.Pid}}')" \
    --max-rss-growth-mib "$GROWTH" --json /out/soak.json >"$OUT/loadgen.log" 2>&1 || rc=$?
tail -25 "$OUT/loadgen.log"
python3 - "$OUT/soak.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); lv = r["levels"][0]
print(f"queries {lv['queries']}, ok {lv['ok']}, failed {lv['errors']} {lv['errors_by_kind']}, "
      f"checked {lv['reference_checked']}, wrong {lv['reference_mismatches']}, "
      f"true-label accuracy {lv.get('true_label_accuracy')}, elapsed {lv['elapsed_s']:.0f} s")
EOF
[ "$rc" = 0 ] || die "tandem-loadgen exit $rc (3: failed or wrong answers, or memory growth over $GROWTH MiB)"
RESULT=PASSED
log "PASSED"
