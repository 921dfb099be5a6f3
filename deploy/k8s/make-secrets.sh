#!/usr/bin/env bash
# deploy/k8s/make-secrets.sh: DEVELOPMENT secrets for deploy/k8s.
#
#   deploy/k8s/make-secrets.sh [--out DIR] [--image IMAGE] [--apply]
#
# Writes into DIR (default deploy/.build/k8s-secrets):
#   activation-key.json     a new Paillier key (kept if it already exists)
#   certs/                  `tandem dev-certs` for the in-cluster Service names
#   activation-secrets.yaml Secrets activation-key + activation-tls (tandem-activation)
#   model-secrets.yaml      Secret model-server-tls (tandem-model)
# and with --apply applies them with kubectl (current context).
#
# One dev CA signs both servers' certificates here. In production each
# operator has its own CA: the activation namespace's ca.crt is the CA of the
# model servers' client certificates, the model namespace's ca.crt is the CA
# of the activation server's certificate (see README.md). Never let one party
# hold both activation-secrets.yaml and model-secrets.yaml in production.
#
# Runs `activation-server` and `tandem` from PATH, else from IMAGE
# (default localhost/tandem:latest) with docker or podman.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT="$HERE/../.build/k8s-secrets"
IMAGE=localhost/tandem:latest
APPLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --apply) APPLY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is needed (for 'create secret --dry-run=client')" >&2; exit 1; }

# run PROGRAM ARGS...: the program from PATH, or from the image with $OUT at /out.
# Paths given to it must be written as /out/... (rewritten for a local run).
if command -v activation-server >/dev/null 2>&1 && command -v tandem >/dev/null 2>&1; then
  run() { local a=(); for x in "$@"; do a+=("${x//\/out/$OUT}"); done; "${a[@]}"; }
else
  ENGINE=$(command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo docker || echo podman)
  run() { $ENGINE run --rm -i --no-healthcheck --network none --user "$(id -u):$(id -g)" -v "$OUT:/out" -w /out "$IMAGE" "$@"; }
fi

if [ ! -s "$OUT/activation-key.json" ]; then
  echo "generating the activation server's key (2048 bits)"
  # The server writes the key (0600) before it binds; stop it once it listens.
  run sh -c 'log=$(mktemp); activation-server --insecure --listen 127.0.0.1:0 --key-file /out/activation-key.json >"$log" 2>&1 &
             pid=$!
             until grep -q "^listening on" "$log"; do
               kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
               sleep 0.5
             done
             grep "fingerprint" "$log"; kill $pid; wait $pid 2>/dev/null; rm -f "$log"; true'
else
  echo "keeping the existing $OUT/activation-key.json"
fi

rm -rf "$OUT/certs"
# Role-specific names: only S2's certificate is valid for S2's Service name,
# only S1's for S1's; each also carries its role URI, which the other server
# requires (SECURITY.md, trust).
run tandem dev-certs --out /out/certs --days 90 \
  --activation-name activation-server.tandem-activation.svc \
  --activation-name activation-server.tandem-activation.svc.cluster.local \
  --model-name model-server.tandem-model.svc \
  --model-name model-server.tandem-model.svc.cluster.local \
  --name localhost --name 127.0.0.1 >/dev/null

C="$OUT/certs"
{
  kubectl -n tandem-activation create secret generic activation-key \
    --from-file=activation-key.json="$OUT/activation-key.json" --dry-run=client -o yaml
  echo "---"
  kubectl -n tandem-activation create secret generic activation-tls \
    --from-file=tls.crt="$C/activation-server.pem" --from-file=tls.key="$C/activation-server-key.pem" \
    --from-file=ca.crt="$C/ca.pem" --dry-run=client -o yaml
} >"$OUT/activation-secrets.yaml"
kubectl -n tandem-model create secret generic model-server-tls \
  --from-file=tls.crt="$C/model-server.pem" --from-file=tls.key="$C/model-server-key.pem" \
  --from-file=ca.crt="$C/ca.pem" --dry-run=client -o yaml >"$OUT/model-secrets.yaml"
chmod 600 "$OUT"/*.yaml
echo "wrote $OUT/activation-secrets.yaml and $OUT/model-secrets.yaml (clients trust $C/ca.pem)"

if [ "$APPLY" = 1 ]; then
  kubectl apply -f "$HERE/activation/namespace.yaml" -f "$HERE/model/namespace.yaml"
  kubectl apply -f "$OUT/activation-secrets.yaml"
  kubectl apply -f "$OUT/model-secrets.yaml"
fi
