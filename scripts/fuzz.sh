#!/usr/bin/env bash
# Property-based fuzzing of every decoder of untrusted input: the same
# properties as the test suite, with many more cases.
#
#   tests/hostile_input.rs    the native model file, ciphertexts, ring vectors,
#                             seeds, packing layouts
#   tests/hostile_formats.rs  the ONNX importer (random bytes; bit flips,
#                             splices, truncations and corrupted length fields
#                             of models/*.onnx; edited graphs), the gRPC
#                             message conversions (tandem-grpc), the client's
#                             check of a server's model info, and S2's session
#                             fed hostile messages; with a per-case heap and
#                             time bound
#
# Bounded: TANDEM_FUZZ_CASES cases per property (default 20000; the test
# suite runs 256) and a wall-clock limit for the whole run (FUZZ_SECONDS,
# default 40 minutes). Any failure is printed with proptest's minimal
# reproducing input; add it to the test file as a regression test.
# TANDEM_FUZZ_STATS=1 prints one `outcome ...` line per ONNX case, to see
# which checks the cases reach (grep ^outcome | sort | uniq -c).
#
#   scripts/fuzz.sh                      both files
#   scripts/fuzz.sh hostile_formats      one file
#   scripts/fuzz.sh hostile_formats onnx only the properties matching "onnx"
set -euo pipefail
cd "$(dirname "$0")/.."
export TANDEM_FUZZ_CASES="${TANDEM_FUZZ_CASES:-20000}"
tests=(--test hostile_input --test hostile_formats)
if [ $# -ge 1 ]; then
  tests=(--test "$1")
  shift
fi
exec timeout "${FUZZ_SECONDS:-2400}" cargo test --release "${tests[@]}" -- --nocapture "$@"
