#!/usr/bin/env bash
# Cross checks: the client-side crates build for wasm32 and aarch64 (issue 13).
#
#   scripts/cross-check.sh            check; if a target or the aarch64 linker
#                                     is missing, warn loudly and exit 0
#   scripts/cross-check.sh --install  install what is missing first (rustup
#                                     targets; Debian's gcc-aarch64-linux-gnu
#                                     and qemu-user), then check
#
# What it runs:
#   1. cargo check --target wasm32-unknown-unknown  for every crate in WASM_CRATES;
#   2. cargo build --release --target aarch64-unknown-linux-gnu  for every
#      crate:bin in AARCH64_BINS, and prints the binaries' sizes;
#   3. if qemu-aarch64 is installed: every crate:example in QEMU_VECTORS is
#      built natively and for aarch64, run both ways, and the outputs must be
#      equal; every crate:test in QEMU_TESTS runs under qemu-aarch64;
#   4. end to end on ARM (issue 17): both servers built natively and started on
#      loopback, and tandem-client's check_exact example, cross-built for
#      aarch64, runs under qemu-aarch64 against them: one private inference
#      per mode of the bundled demo model, each compared bit for bit with the
#      integer reference.
set -euo pipefail
cd "$(dirname "$0")/.."

# Crates that must compile for the browser (no GMP, no OS randomness, no threads).
WASM_CRATES="tandem-paillier-pk tandem-core"
# crate:bin pairs that must build for 64-bit ARM Linux (the refactor adds
# tandem-client:tandem-client).
AARCH64_BINS="tandem-client:tandem-client"
# crate:example pairs whose output must be the same natively and on aarch64.
QEMU_VECTORS="tandem-paillier-pk:encrypt_vector"
# crate:test pairs (integration tests without GMP) run under qemu-aarch64.
QEMU_TESTS="tandem-paillier-pk:encrypt tandem-paillier-pk:vector"

WASM_TARGET=wasm32-unknown-unknown
ARM_TARGET=aarch64-unknown-linux-gnu
ARM_LINKER=aarch64-linux-gnu-gcc
ARM_SYSROOT=/usr/aarch64-linux-gnu
QEMU=qemu-aarch64

install=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "cross-check.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

have() { command -v "$1" >/dev/null 2>&1; }
installed_targets() { if have rustup; then rustup target list --installed 2>/dev/null; fi; }
target_installed() { installed_targets | grep -qx "$1"; }

missing() {
  local m=()
  have rustup || m+=("rustup (needed to add the targets)")
  target_installed "$WASM_TARGET" || m+=("rustup target $WASM_TARGET")
  target_installed "$ARM_TARGET" || m+=("rustup target $ARM_TARGET")
  have "$ARM_LINKER" || m+=("the linker $ARM_LINKER (Debian: gcc-aarch64-linux-gnu)")
  if [ ${#m[@]} -gt 0 ]; then
    local joined
    joined="$(printf '%s; ' "${m[@]}")"
    echo "${joined%; }"
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif have sudo; then sudo "$@"
  else echo "cross-check.sh: need root or sudo to run: $*" >&2; return 1; fi
}

# ---------------------------------------------------------------- 1. tools
if [ "$install" = 1 ]; then
  have rustup || { echo "cross-check.sh: rustup not found; install the targets by hand" >&2; exit 1; }
  for t in "$WASM_TARGET" "$ARM_TARGET"; do
    target_installed "$t" || rustup target add "$t"
  done
  if ! have "$ARM_LINKER" || ! have "$QEMU"; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user
  fi
fi

gaps="$(missing)"
if [ -n "$gaps" ]; then
  echo "=============================================================================="
  echo "WARNING: cross checks SKIPPED: missing $gaps; run scripts/cross-check.sh --install"
  echo "=============================================================================="
  exit 0
fi

target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$ARM_LINKER"
size_of() { local b; b=$(stat -c %s "$1"); printf '%s (%s bytes)' "$(numfmt --to=iec-i --suffix=B "$b")" "$b"; }

# ---------------------------------------------------------------- 2. wasm32
if [ -n "$WASM_CRATES" ]; then
  pkgs=()
  for c in $WASM_CRATES; do pkgs+=(-p "$c"); done
  echo "== cargo check --target $WASM_TARGET ${pkgs[*]}"
  cargo check --target "$WASM_TARGET" "${pkgs[@]}"
  echo "wasm32 check: OK ($WASM_CRATES)"
fi

# ---------------------------------------------------------------- 3. aarch64
for pair in $AARCH64_BINS; do
  crate="${pair%%:*}"; bin="${pair#*:}"
  echo "== cargo build --release --target $ARM_TARGET -p $crate --bin $bin"
  cargo build --release --target "$ARM_TARGET" -p "$crate" --bin "$bin"
  echo "aarch64 binary $bin: $(size_of "$target_dir/$ARM_TARGET/release/$bin")"
  if [ -f "$target_dir/release/$bin" ]; then
    echo "x86_64 binary $bin (last native release build): $(size_of "$target_dir/release/$bin")"
  fi
done

# ---------------------------------------------------------------- 4. qemu
if ! have "$QEMU"; then
  echo "note: $QEMU not found: the aarch64 runs are skipped (scripts/cross-check.sh --install installs qemu-user)"
  exit 0
fi
qemu_run() { "$QEMU" -L "$ARM_SYSROOT" "$@"; }
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$QEMU -L $ARM_SYSROOT"

for pair in $QEMU_VECTORS; do
  crate="${pair%%:*}"; ex="${pair#*:}"
  echo "== example $ex: native vs aarch64 under $QEMU"
  cargo build --release -p "$crate" --example "$ex"
  cargo build --release --target "$ARM_TARGET" -p "$crate" --example "$ex"
  native="$("$target_dir/release/examples/$ex")"
  arm="$(qemu_run "$target_dir/$ARM_TARGET/release/examples/$ex")"
  echo "native : $native" | sed '2,$s/^/         /'
  echo "aarch64: $arm" | sed '2,$s/^/         /'
  if [ "$native" != "$arm" ]; then
    echo "cross-check.sh: example $ex prints different output on aarch64" >&2
    exit 1
  fi
  echo "aarch64 example $ex ($(size_of "$target_dir/$ARM_TARGET/release/examples/$ex")): same output as native"
done

for pair in $QEMU_TESTS; do
  crate="${pair%%:*}"; t="${pair#*:}"
  echo "== cargo test --release --target $ARM_TARGET -p $crate --test $t (under $QEMU)"
  cargo test --release --target "$ARM_TARGET" -p "$crate" --test "$t"
done
# ---------------------------------------------------------------- 5. ARM end to end
echo "== end to end: the aarch64 client (under $QEMU) against the servers on loopback"
cargo build -p tandem-activation-server -p tandem-model-server
cargo build --release --target "$ARM_TARGET" -p tandem-client --example check_exact
e2e="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$e2e"; }
trap cleanup EXIT
# The bound address from a server's "listening on ADDR" line (port 0: a free one).
wait_addr() {
  local log="$1" i
  for i in $(seq 1 600); do
    if grep -q '^listening on ' "$log"; then sed -n 's/^listening on //p' "$log" | head -1; return 0; fi
    sleep 0.1
  done
  echo "cross-check.sh: a server did not start; its log:" >&2; cat "$log" >&2; return 1
}
"$target_dir/debug/activation-server" --listen 127.0.0.1:0 --key-file "$e2e/key.json" --insecure >"$e2e/s2.log" 2>&1 &
pids+=($!)
s2="$(wait_addr "$e2e/s2.log")"
"$target_dir/debug/model-server" --listen 127.0.0.1:0 --models models/demo --activation-server "http://$s2" \
  --insecure >"$e2e/s1.log" 2>&1 &
pids+=($!)
s1="$(wait_addr "$e2e/s1.log")"
qemu_run "$target_dir/$ARM_TARGET/release/examples/check_exact" "http://$s1" demo models/demo/demo.tandem models/demo/sample.json
echo "aarch64 client end to end: OK"

echo "cross checks: OK"
