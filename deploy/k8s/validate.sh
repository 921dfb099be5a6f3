#!/usr/bin/env bash
# deploy/k8s/validate.sh: offline validation of deploy/k8s (and the compose file).
#   1. yamllint          syntax and style of every YAML file in deploy/
#   2. kubernetes-validate --strict: every object against the Kubernetes
#                        OpenAPI schemas (several versions), unknown fields rejected
#   3. kubectl kustomize both kustomizations render (when kubectl is installed)
#   4. check_manifests.py cross-references, trust split, pod security, and
#                        TANDEM_* variables against the servers' clap definitions
# Tools go into a venv in deploy/.build/venv (PyPI: yamllint, kubernetes-validate).
# No cluster is needed or contacted.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$(dirname "$HERE")
VENV="$DEPLOY/.build/venv"
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.32.0 1.35.0"}

if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/yamllint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q yamllint kubernetes-validate
fi
fail=0
step() { printf '\n== %s\n' "$*"; }

step "yamllint"
"$VENV/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 140}, document-start: disable, comments: {min-spaces-from-content: 1}, octal-values: {forbid-implicit-octal: false}}}' \
  "$DEPLOY/docker-compose.yml" "$HERE"/activation/*.yaml "$HERE"/model/*.yaml && echo ok || fail=1

manifests=()
for f in "$HERE"/activation/*.yaml "$HERE"/model/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for v in $K8S_VERSIONS; do
  step "kubernetes-validate --strict -k $v (${#manifests[@]} files)"
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}" && echo ok || fail=1
done

if command -v kubectl >/dev/null 2>&1; then
  for d in activation model; do
    step "kubectl kustomize $d"
    if out=$(kubectl kustomize "$HERE/$d" 2>&1); then
      echo "$out" | grep -E '^kind: ' | sort | uniq -c
      echo "$out" | "$VENV/bin/kubernetes-validate" --strict --quiet - 2>/dev/null \
        || { printf '%s\n' "$out" >"$DEPLOY/.build/kustomize-$d.yaml"
             "$VENV/bin/kubernetes-validate" --strict --quiet "$DEPLOY/.build/kustomize-$d.yaml" || fail=1; }
    else
      echo "$out"; fail=1
    fi
  done
else
  step "kubectl not installed: kustomize rendering skipped"
fi

step "check_manifests.py"
"$VENV/bin/python" "$HERE/check_manifests.py" || fail=1

echo
[ "$fail" = 0 ] && echo "deploy/k8s: all checks passed" || { echo "deploy/k8s: FAILED"; exit 1; }
