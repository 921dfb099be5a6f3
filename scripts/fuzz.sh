#!/usr/bin/env bash
# Property-based fuzzing of every decoder of untrusted bytes that the core
# crates own (model file, ciphertexts, ring vectors, seeds, packing layouts):
# the same properties as tests/hostile_input.rs, with many more cases.
# Bounded: TANDEM_FUZZ_CASES cases per property (default 20000) and a wall
# clock limit (default 20 minutes). Any failure is printed with proptest's
# minimal reproducing input; add it to tests/hostile_input.rs as a regression.
set -euo pipefail
cd "$(dirname "$0")/.."
export TANDEM_FUZZ_CASES="${TANDEM_FUZZ_CASES:-20000}"
exec timeout "${FUZZ_SECONDS:-1200}" cargo test --release --test hostile_input -- --nocapture
