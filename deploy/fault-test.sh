#!/usr/bin/env bash
# deploy/fault-test.sh: faults against the compose stack under load.
#
#   bash deploy/fault-test.sh            (after deploy/smoke-test.sh has built the image)
#
# Brings deploy/docker-compose.yml up (project tandem-fault, demo model,
# 2048-bit key, S1's query deadline FAULT_QUERY_DEADLINE s and S2-answer
# deadline FAULT_STEP_DEADLINE s), then runs tandem-loadgen (from the image,
# on the host network, through the published port, every answer checked bit
# for bit against the model's integer reference) while it injects, one at a
# time:
#   baseline     no fault (the reference for memory and throughput)
#   kill-s2      SIGKILL to S2's process; Docker's restart policy restarts it
#                (same key from the activation-key volume: fingerprint checked)
#   pause-s2     docker pause S2 for FAULT_PAUSE s (past S1's deadlines), unpause
#   partition    docker network disconnect S1 from backend, FAULT_PARTITION s, reconnect
#   restart-s1   docker restart S1
# For each it requires: 0 wrong answers; every failed query has a documented
# status (UNAVAILABLE or DEADLINE_EXCEEDED; `connect` while S1 itself is
# down; FAILED_PRECONDITION for seeds of the epoch before S2 restarted);
# no query outlives S1's deadline (the load ends at most
# FAULT_QUERY_DEADLINE + 10 s after its planned end); a probe query succeeds
# within FAULT_RECOVERY_MAX s of the fault being healed; and S1's / S2's
# resident memory after the faults is within FAULT_RSS_GROWTH_MIB of its
# value after the baseline load (S2: after its restart).
# Results: deploy/.build/fault/summary.tsv and one loadgen JSON per phase.
#
# Environment (all optional):
#   FAULT_IMAGE (localhost/tandem:smoke), FAULT_PROJECT (tandem-fault),
#   FAULT_PORT (first free from 50061), FAULT_LOAD_SECS (60), FAULT_AT_SECS (15),
#   FAULT_CONCURRENCY (2), FAULT_QUERY_DEADLINE (30), FAULT_STEP_DEADLINE (10),
#   FAULT_PAUSE (25), FAULT_PARTITION (15), FAULT_RECOVERY_MAX (60),
#   FAULT_RSS_GROWTH_MIB (32), FAULT_KEEP=1 (leave the stack up).
set -euo pipefail

T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
COMPOSE_FILE="$HERE/docker-compose.yml"
OUT="$HERE/.build/fault"
PROJECT=${FAULT_PROJECT:-tandem-fault}
IMAGE=${FAULT_IMAGE:-localhost/tandem:smoke}
LOAD_SECS=${FAULT_LOAD_SECS:-60}
AT=${FAULT_AT_SECS:-15}
CONC=${FAULT_CONCURRENCY:-2}
QDEAD=${FAULT_QUERY_DEADLINE:-30}
SDEAD=${FAULT_STEP_DEADLINE:-10}
PAUSE=${FAULT_PAUSE:-25}
PARTITION=${FAULT_PARTITION:-15}
RECOVERY_MAX=${FAULT_RECOVERY_MAX:-60}
RSS_GROWTH=${FAULT_RSS_GROWTH_MIB:-32}
MODEL_DIR="$ROOT/models/demo"

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT/summary.tsv"
RESULT=FAILED
STACK_UP=0
elapsed() { echo $(( $(date +%s) - T0 )); }
log() { printf '[fault %4ss] %s\n' "$(elapsed)" "$*"; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || die "needs a working Docker Engine"
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
else die "needs docker compose or docker-compose"; fi
command -v python3 >/dev/null 2>&1 || die "needs python3 (to read loadgen's JSON)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: build it first (bash deploy/smoke-test.sh, or docker build -f deploy/Dockerfile -t $IMAGE .)"
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }
svc_id() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" | head -1; }

teardown() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    for svc in activation-server model-server; do
      docker logs "$(svc_id "$svc")" >"$OUT/$svc.log" 2>&1
    done
    if [ "${FAULT_KEEP:-0}" = 1 ]; then
      log "FAULT_KEEP=1: stack left up (${COMPOSE[*]} -p $PROJECT -f $COMPOSE_FILE down -v)"
    else
      compose down -v >/dev/null 2>&1
    fi
  fi
  log "result: $RESULT (exit $rc); total $(elapsed) s; servers' logs and loadgen JSON in $OUT"
}
trap teardown EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${FAULT_PORT:-50061}
while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
export TANDEM_IMAGE="$IMAGE" TANDEM_PUBLISH_ADDR=127.0.0.1 TANDEM_PUBLISH_PORT="$PORT" \
       TANDEM_QUERY_TIMEOUT_SECS="$QDEAD" TANDEM_ACTIVATION_TIMEOUT_SECS="$SDEAD"
compose down -v >/dev/null 2>&1 || true
log "compose up (project $PROJECT, port $PORT, S1 deadlines: query ${QDEAD} s, S2 answer ${SDEAD} s)"
STACK_UP=1
compose up -d --no-build >"$OUT/up.log" 2>&1 || { cat "$OUT/up.log"; die "compose up failed"; }

CA="$OUT/ca.pem"
for _ in $(seq 1 120); do
  docker run --rm --no-healthcheck -v "${PROJECT}_tls-client:/c:ro" "$IMAGE" sh -c 'cat /c/.ready /c/ca.pem' >"$CA" 2>/dev/null \
    && grep -q "BEGIN CERTIFICATE" "$CA" && break
  sleep 2
done
grep -q "BEGIN CERTIFICATE" "$CA" || die "no CA certificate"
chmod 644 "$CA"

client() {
  docker run --rm --no-healthcheck --network host -v "$CA:/ca.pem:ro" -v "$MODEL_DIR:/in:ro" "$IMAGE" \
    tandem-client "$@"
}
# One query through the whole stack; true when it is answered correctly
# ("label: 1" is models/demo/sample.json's label and its reference label).
probe() {
  client infer --server "https://localhost:$PORT" --tls-ca /ca.pem --model demo --input /in/sample.json \
    --activation-key-fingerprint "$FP" --timeout-secs 20 2>/dev/null | head -1 | grep -qx "label: 1"
}
fingerprint() { docker logs "$(svc_id activation-server)" 2>&1 | sed -n 's/^activation key fingerprint: \([0-9a-f]*\).*/\1/p' | tail -1; }

for _ in $(seq 1 150); do
  FP=$(fingerprint)
  [ -n "$FP" ] && client models --server "https://localhost:$PORT" --tls-ca /ca.pem --timeout-secs 10 >/dev/null 2>&1 && break
  sleep 2
done
[ -n "$FP" ] || die "no key fingerprint in S2's log"
probe || die "the stack does not answer"
log "stack up; activation key fingerprint $FP"

rss_mib() {  # SERVICE: resident memory of its server process, MiB
  local pid
  pid=$(docker inspect "$(svc_id "$1")" --format '{{.State.Pid}}')
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"
}

# load NAME: tandem-loadgen for LOAD_SECS in the background (pid in LOAD_PID).
load() {
  docker run --rm --no-healthcheck --network host -v "$CA:/ca.pem:ro" -v "$MODEL_DIR:/in:ro" -v "$OUT:/out" \
    --user "$(id -u):$(id -g)" "$IMAGE" \
    tandem-loadgen --server "https://localhost:$PORT" --tls-ca /ca.pem --model demo \
      --model-file /in/demo.tandem --activation-key-fingerprint "$FP" \
      --concurrency "$CONC" --duration "$LOAD_SECS" --warmup 0 --timeout-secs $((QDEAD * 3)) \
      --json "/out/$1.json" >"$OUT/$1.log" 2>&1 &
  LOAD_PID=$!
}

# recover: seconds from now until a probe query is answered correctly.
recover() {
  local t=$(date +%s)
  until probe; do
    [ $(( $(date +%s) - t )) -le "$RECOVERY_MAX" ] || { echo "none"; return; }
    sleep 1
  done
  echo $(( $(date +%s) - t ))
}

printf 'phase\tqueries\tok\tfailed_by_status\tmismatches\tload_overrun_s\trecovery_s\trss_s1_mib\trss_s2_mib\n' >"$OUT/summary.tsv"
FAIL=0
# check NAME RECOVERY: reads the phase's JSON, appends to summary.tsv.
check() {
  local name=$1 rec=$2 line
  local lrc=0
  wait "$LOAD_PID" || lrc=$?
  # 3: the run had failed queries (expected here; judged below).
  [ "$lrc" = 0 ] || [ "$lrc" = 3 ] || { cat "$OUT/$name.log"; die "$name: tandem-loadgen failed (exit $lrc)"; }
  line=$(python3 - "$OUT/$name.json" "$LOAD_SECS" "$QDEAD" "$name" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1]))
lv = rep["levels"][0]
load_secs, qdead, name = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
kinds = lv.get("errors_by_kind", {})
mism = lv.get("reference_mismatches", 0)
# loadgen names a status by its gRPC code (UNAVAILABLE, ...), other failures
# in lower case (connect, mismatch, ...).
allowed = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "connect"}
# A restarted S2 starts a new seed epoch: a query whose seed was derived under
# the old one is refused before S2 decrypts it, and the client (here the
# load generator) fetches the model info again (docs/PROTOCOL.md §4.2).
if name == "kill-s2":
    allowed.add("FAILED_PRECONDITION")
bad = sorted(k for k in kinds if k not in allowed and k != "mismatch")
overrun = lv["elapsed_s"] - load_secs
problems = []
if mism: problems.append(f"{mism} wrong answers")
if bad: problems.append("undocumented failures " + ",".join(bad) + " " + "; ".join(lv.get("error_examples", [])))
if overrun > qdead + 10: problems.append(f"the load ran {overrun:.1f} s past its end (a query outlived the {qdead:.0f} s deadline)")
if lv["ok"] == 0: problems.append("no query answered")
fails = ",".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "-"
print(f"{lv['queries']}\t{lv['ok']}\t{fails}\t{mism}\t{overrun:.1f}\t" + ("PROBLEM: " + " | ".join(problems) if problems else "OK"))
EOF
)
  local verdict=${line##*$'\t'}
  local figures=${line%$'\t'*}
  local r1 r2
  r1=$(rss_mib model-server); r2=$(rss_mib activation-server)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$figures" "$rec" "$r1" "$r2" >>"$OUT/summary.tsv"
  log "$name: queries/ok/failed/wrong/overrun: $(echo "$figures" | tr '\t' ' '); recovery ${rec} s; RSS S1 ${r1} MiB, S2 ${r2} MiB; $verdict"
  [ "$verdict" = OK ] || FAIL=1
  [ "$rec" != none ] || { log "$name: the stack did not serve again within $RECOVERY_MAX s"; FAIL=1; }
}

# ---------------------------------------------------------------- phases --
log "baseline: ${LOAD_SECS} s of load, concurrency $CONC, no fault"
load baseline; check baseline 0
RSS1_BASE=$(rss_mib model-server)

log "kill-s2: SIGKILL to the activation server at ${AT} s; the restart policy brings it back"
load kill-s2; sleep "$AT"
S2_PID=$(docker inspect "$(svc_id activation-server)" --format '{{.State.Pid}}')
kill -9 "$S2_PID"
t=$(date +%s)
until [ "$(docker inspect "$(svc_id activation-server)" --format '{{.State.Running}} {{.State.Pid}}')" != "false 0" ] \
      && [ "$(docker inspect "$(svc_id activation-server)" --format '{{.State.Pid}}')" != "$S2_PID" ]; do
  [ $(( $(date +%s) - t )) -lt 60 ] || die "Docker did not restart the activation server"
  sleep 0.5
done
log "kill-s2: restarted by Docker after $(( $(date +%s) - t )) s (restart count $(docker inspect "$(svc_id activation-server)" --format '{{.RestartCount}}'))"
rec=$(recover)
check kill-s2 "$rec"
[ "$(fingerprint)" = "$FP" ] || die "kill-s2: the restarted activation server has another key ($(fingerprint))"
RSS2_BASE=$(rss_mib activation-server)

log "pause-s2: docker pause the activation server for ${PAUSE} s (S2-answer deadline ${SDEAD} s)"
load pause-s2; sleep "$AT"
docker pause "$(svc_id activation-server)" >/dev/null
sleep "$PAUSE"
docker unpause "$(svc_id activation-server)" >/dev/null
rec=$(recover)
check pause-s2 "$rec"

log "partition: disconnect the model server from the backend network for ${PARTITION} s"
load partition; sleep "$AT"
S1_ID=$(svc_id model-server)
BACKEND=$(docker inspect "$S1_ID" --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' | tr ' ' '\n' | grep '_backend$')
docker network disconnect "$BACKEND" "$S1_ID"
sleep "$PARTITION"
docker network connect --alias model-server "$BACKEND" "$S1_ID"
rec=$(recover)
check partition "$rec"
RSS1_FAULTS=$(rss_mib model-server)

log "restart-s1: docker restart the model server"
load restart-s1; sleep "$AT"
docker restart "$S1_ID" >/dev/null
rec=$(recover)
check restart-s1 "$rec"
RSS2_END=$(rss_mib activation-server)

# ---------------------------------------------------------------- memory --
growth() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
g1=$(growth "$RSS1_BASE" "$RSS1_FAULTS"); g2=$(growth "$RSS2_BASE" "$RSS2_END")
log "memory: S1 ${RSS1_BASE} -> ${RSS1_FAULTS} MiB over kill-s2, pause-s2, partition (+${g1}); S2 ${RSS2_BASE} -> ${RSS2_END} MiB after its restart (+${g2}); limit +${RSS_GROWTH} MiB"
for g in "$g1" "$g2"; do
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$g" "$RSS_GROWTH" \
    || { log "memory grew by $g MiB"; FAIL=1; }
done
printf 'memory\tS1 %s -> %s MiB; S2 %s -> %s MiB\n' "$RSS1_BASE" "$RSS1_FAULTS" "$RSS2_BASE" "$RSS2_END" >>"$OUT/summary.tsv"

column -t -s $'\t' "$OUT/summary.tsv"
[ "$FAIL" = 0 ] || die "a fault phase failed (see above)"
RESULT=PASSED
log "PASSED: every answer bit-exact, every failure a documented status, no query past its deadline, recovery within $RECOVERY_MAX s, no memory growth"
