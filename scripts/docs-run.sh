#!/usr/bin/env bash
# The docs runner: the shell blocks of the Markdown pages a new user copies
# from, run verbatim in a fresh clone, so a page that drifts from the code
# fails CI (issue 19).
#
#   scripts/docs-run.sh                 README.md, deploy/README.md, docs/MODELS.md, docs/CLIENT.md
#   scripts/docs-run.sh FILE.md ...     only these pages
#   scripts/docs-run.sh --self-test     check the runner itself on small made-up pages
#
# What it does:
#   * clones the repository's HEAD (committed work only) into a scratch
#     directory and runs there, so nothing the checkout already has
#     (untracked files, a stale key.json, certs/) can make a command pass;
#   * extracts every ```sh / ```bash / ```shell block of each page (from the
#     Markdown, never a copy) and runs them in order, the pages in the order
#     given, in one bash (`set -eo pipefail`): a variable a block sets is
#     there for the next, and the servers README.md starts are still up when
#     docs/CLIENT.md queries them, as for a user who reads README.md first;
#   * prints every command before it runs it, and stops the page at the first
#     failing one, naming the page and line.
#
# Markers: HTML comments on the lines just before a block (invisible when
# the Markdown is rendered), one directive each:
#   <!-- docs-runner: background cmd="target/release/model-server" port=50051 timeout=300 -->
#       the command of the block starting with cmd (the page says to run it
#       in its own terminal: a server in the foreground) runs in the
#       background; the runner first checks that 127.0.0.1:port is free, then
#       waits until it accepts connections (timeout seconds, default 120) and
#       fails if the process exits first. It is stopped when the page is done.
#   <!-- docs-runner: skip reason="why it cannot run in CI" -->
#       the whole block is not run; the reason is printed.
#   <!-- docs-runner: skip-command cmd="cargo test --workspace" reason="..." -->
#       the block's command starting with cmd is not run; the reason is printed.
# A marker that matches no command of its block, an unknown directive, a
# skip without a reason, or a marker not followed by a shell block is an
# error: a stale marker must not hide a command.
#
# At the end every block is listed as ran, skipped (with its reason) or NOT
# RUN; the runner fails unless every block ran or was skipped explicitly.
#
# Environment:
#   CARGO_TARGET_DIR  the clone's target/ is a symlink to it (default: this
#                     checkout's target/), so the pages' `cargo build` and
#                     `target/release/...` commands stay verbatim and reuse
#                     what is already compiled. DOCS_RUN_FRESH_TARGET=1: a new
#                     target dir inside the clone instead (deleted at the end).
#   DOCS_RUN_KEEP=1   keep the scratch directory (its path is printed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEFAULT_PAGES="README.md deploy/README.md docs/MODELS.md docs/CLIENT.md"

say() { printf 'docs-run: %s\n' "$*"; }
die() { printf 'docs-run: error: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------- parsing ---
# extract PAGE OUT_SCRIPT OUT_MANIFEST
# Writes the bash script that runs PAGE's blocks, and a manifest with one
# line per block: "N<TAB>PAGE:FIRST-LAST<TAB>run" or "...<TAB>skip<TAB>REASON".
# Exits non-zero (with the page and line) on a malformed marker.
extract() {
  local page="$1" script="$2" manifest="$3"
  awk -v page="$page" -v script="$script" -v manifest="$manifest" '
    function fail(line, msg) { printf "docs-run: error: %s:%d: %s\n", page, line, msg > "/dev/stderr"; failed = 1; exit 1 }
    function sq(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
    # key="value" or key=value from a directive
    function attr(text, key,    re, m) {
      re = key "=\"[^\"]*\""
      if (match(text, re)) { m = substr(text, RSTART + length(key) + 2, RLENGTH - length(key) - 3); return m }
      re = key "=[^ \"]+"
      if (match(text, re)) return substr(text, RSTART + length(key) + 1, RLENGTH - length(key) - 1)
      return ""
    }
    function check_keys(text, allowed, line,    t, k) {
      t = text
      while (match(t, /[a-z-]+=("[^"]*"|[^ "]+)/)) {
        k = substr(t, RSTART, RLENGTH); sub(/=.*/, "", k)
        if (index(" " allowed " ", " " k " ") == 0) fail(line, "unknown key " k "= in marker (accepted: " allowed ")")
        t = substr(t, RSTART + RLENGTH)
      }
    }
    BEGIN { nd = 0; inblock = 0; other = 0; nblocks = 0 }
    # A marker: remember it for the next block.
    /^<!--[ \t]*docs-runner:/ {
      if (inblock || other) next
      d = $0
      if (d !~ /-->[ \t]*$/) fail(NR, "a docs-runner marker must be one line ending in -->")
      sub(/^<!--[ \t]*docs-runner:[ \t]*/, "", d); sub(/[ \t]*-->[ \t]*$/, "", d)
      verb = d; sub(/[ \t].*/, "", verb)
      rest = substr(d, length(verb) + 1)
      if (verb == "skip") {
        check_keys(rest, "reason", NR)
        if (attr(rest, "reason") == "") fail(NR, "skip needs reason=\"...\": say why the block cannot run in CI")
      } else if (verb == "skip-command") {
        check_keys(rest, "cmd reason", NR)
        if (attr(rest, "cmd") == "" || attr(rest, "reason") == "") fail(NR, "skip-command needs cmd=\"...\" and reason=\"...\"")
      } else if (verb == "background") {
        check_keys(rest, "cmd port timeout", NR)
        if (attr(rest, "cmd") == "" || attr(rest, "port") !~ /^[0-9]+$/) fail(NR, "background needs cmd=\"...\" and port=N")
        if (attr(rest, "timeout") != "" && attr(rest, "timeout") !~ /^[0-9]+$/) fail(NR, "timeout must be a number of seconds")
      } else {
        fail(NR, "unknown docs-runner directive \"" verb "\" (accepted: background, skip, skip-command)")
      }
      nd++; dverb[nd] = verb; dcmd[nd] = attr(rest, "cmd"); dport[nd] = attr(rest, "port")
      dtimeout[nd] = attr(rest, "timeout"); dreason[nd] = attr(rest, "reason"); dline[nd] = NR; dused[nd] = 0
      next
    }
    # Indented or tilde fences could hide a block from this parser: refuse them.
    /^[ \t]+(```|~~~)/ || /^~~~/ {
      if (!inblock) fail(NR, "indented or ~~~ code fence: the docs runner reads only ``` fences at the start of a line")
    }
    /^```/ {
      if (inblock) {
        if ($0 !~ /^```[ \t]*$/) fail(NR, "unexpected fence inside a shell block")
        finish_block(NR); inblock = 0; next
      }
      if (other) { if ($0 ~ /^```[ \t]*$/) other = 0; next }
      lang = $0; sub(/^```[ \t]*/, "", lang); sub(/[ \t].*$/, "", lang)
      if (lang == "sh" || lang == "bash" || lang == "shell") {
        inblock = 1; first = NR; nl = 0; next
      }
      if (nd > 0) fail(dline[nd], "docs-runner marker before a ```" lang " block (only shell blocks run)")
      other = 1; next
    }
    inblock { nl++; L[nl] = $0; LN[nl] = first + nl; next }
    other { next }
    # Anything but blank lines between a marker and its block detaches it.
    nd > 0 && $0 !~ /^[ \t]*$/ { fail(dline[nd], "docs-runner marker not directly followed by a shell block") }
    function starts(cmd, prefix,    c) { c = cmd; sub(/^[ \t]+/, "", c); return index(c, prefix) == 1 }
    function finish_block(endline,    i, j, k, skipall, reason, cmd, start, last, hit, bg, label) {
      nblocks++
      label = page ":" first "-" endline
      skipall = 0
      for (k = 1; k <= nd; k++) if (dverb[k] == "skip") { skipall = 1; reason = dreason[k]; dused[k] = 1 }
      if (skipall) {
        if (nd > 1) fail(dline[1], "a skipped block takes no other marker")
        printf "%d\t%s\tskip\t%s\n", nblocks, label, reason > manifest
        printf "__dr_skip_block %d %s %s\n", nblocks, sq(label), sq(reason) > script
        nd = 0; return
      }
      printf "%d\t%s\trun\t\n", nblocks, label > manifest
      printf "__dr_block %d %s\n", nblocks, sq(label) > script
      i = 1
      while (i <= nl) {
        # One command: a line and its backslash continuations.
        start = i; cmd = L[i]
        while (L[i] ~ /\\$/ && i < nl) { i++; cmd = cmd "\n" L[i] }
        last = i; i++
        if (cmd ~ /^[ \t]*(#|$)/) { printf "%s\n", cmd > script; continue }
        hit = 0
        for (k = 1; k <= nd; k++) {
          if (!starts(cmd, dcmd[k])) continue
          hit = k; dused[k] = 1; break
        }
        printf "__dr_at %s %s\n", sq(page ":" LN[start]), sq(cmd) > script
        if (hit && dverb[hit] == "skip-command") {
          printf "__dr_skip_command %s %s\n", sq(page ":" LN[start]), sq(dreason[hit]) > script
        } else if (hit && dverb[hit] == "background") {
          if (L[last] ~ /#/) fail(LN[last], "a background command must not end in a # comment (the runner appends &)")
          printf "__dr_port_free %s\n", dport[hit] > script
          for (j = start; j < last; j++) printf "%s\n", L[j] > script
          printf "%s &\n", L[last] > script
          printf "__dr_started $! %s %s\n", dport[hit], (dtimeout[hit] == "" ? 120 : dtimeout[hit]) > script
        } else {
          printf "%s\n", cmd > script
        }
      }
      for (k = 1; k <= nd; k++) if (!dused[k]) fail(dline[k], "marker cmd=\"" dcmd[k] "\" matches no command of the block below it (stale marker?)")
      printf "__dr_done %d\n", nblocks > script
      nd = 0
    }
    END {
      if (failed) exit 1
      if (inblock) fail(first, "shell block not closed")
      if (nd > 0) fail(dline[nd], "docs-runner marker at the end of the page, before no block")
      if (nblocks == 0) { printf "" > manifest }
    }
  ' "$page"
}

# --------------------------------------------------------- the prelude -----
# Helpers the generated scripts call (sourced, so the page's own commands run
# in the same shell). Block numbers of finished blocks go to $DR_DONE.
prelude() {
  cat <<'EOF'
set -eo pipefail
__dr_pids=()
__dr_where="(start)"
__dr_cleanup() {
  local rc=$?
  local p
  for p in "${__dr_pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${__dr_pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    printf 'docs-run: FAILED at %s (exit status %s)\n' "$__dr_where" "$rc" >&2
  fi
  exit "$rc"
}
trap __dr_cleanup EXIT
__dr_n=1
__dr_t0=$SECONDS
__dr_page() { __dr_t0=$SECONDS; printf '\n######## %s\n' "$1"; }
__dr_page_done() { printf '######## %s: done in %s s\n' "$1" "$((SECONDS - __dr_t0))"; }
__dr_block() { printf '\n=== block %s: %s\n' "$1" "$2"; }
__dr_done() { echo "$__dr_n:$1" >>"$DR_DONE"; }
__dr_skip_block() {
  printf '\n=== block %s: %s\nSKIPPED (whole block): %s\n' "$1" "$2" "$3"
  echo "$__dr_n:$1" >>"$DR_SKIPPED"
}
__dr_at() { __dr_where="$1"; printf -- '--- %s\n$ %s\n' "$1" "$2"; }
__dr_skip_command() { printf 'SKIPPED (this command): %s\n' "$2"; }
__dr_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
__dr_port_free() {
  if __dr_listening "$1"; then
    echo "docs-run: 127.0.0.1:$1 is already in use, and the page's command listens there; stop what holds it" >&2
    return 1
  fi
}
__dr_started() {
  local pid=$1 port=$2 timeout=$3 t=0
  __dr_pids+=("$pid")
  until __dr_listening "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || true
      echo "docs-run: the background command exited before it listened on 127.0.0.1:$port" >&2
      return 1
    fi
    if [ "$t" -ge "$timeout" ]; then
      echo "docs-run: nothing listens on 127.0.0.1:$port after ${timeout} s" >&2
      return 1
    fi
    sleep 1
    t=$((t + 1))
  done
  echo "(in the background: pid $pid, listening on 127.0.0.1:$port after ${t} s)"
}
EOF
}

# ------------------------------------------------------------- running -----
# run_pages DIR PAGE... : runs the pages' blocks inside DIR, in order, in one
# shell (a user who reads README.md first still has its servers running when
# a later page says "with the servers of README.md"); prints the table;
# returns non-zero unless every block ran or was skipped.
run_pages() {
  local dir="$1"; shift
  local scratch="$DR_SCRATCH" page n=0 status=0
  local script="$scratch/pages.sh" manifest="$scratch/manifest"
  : >"$manifest"
  prelude >"$script"
  for page in "$@"; do
    n=$((n + 1))
    [ -f "$dir/$page" ] || { echo "docs-run: error: $page does not exist" >&2; return 1; }
    if ! (cd "$dir" && extract "$page" "$scratch/page$n.body" "$scratch/page$n.manifest"); then
      echo "docs-run: error: $page has a malformed marker (above); nothing was run" >&2
      return 1
    fi
    printf '__dr_page %q\n' "$page" >>"$script"
    cat "$scratch/page$n.body" >>"$script"
    # Block numbers are per page; the done/skipped files key them by page.
    sed "s|^|$n:|" "$scratch/page$n.manifest" >>"$manifest"
    printf '__dr_page_done %q\n' "$page" >>"$script"
    printf '__dr_n=%d\n' "$((n + 1))" >>"$script"
  done
  export DR_DONE="$scratch/done" DR_SKIPPED="$scratch/skipped"
  : >"$DR_DONE"; : >"$DR_SKIPPED"
  local rc=0
  (cd "$dir" && bash "$script") || rc=$?
  [ "$rc" = 0 ] || status=1
  local num label kind reason
  : >"$scratch/summary"
  while IFS=$'\t' read -r num label kind reason; do
    if [ "$kind" = skip ] && grep -qx "$num" "$DR_SKIPPED"; then
      printf 'skipped  %s  (%s)\n' "$label" "$reason" >>"$scratch/summary"
    elif [ "$kind" = run ] && grep -qx "$num" "$DR_DONE"; then
      printf 'ran      %s\n' "$label" >>"$scratch/summary"
    else
      printf 'NOT RUN  %s\n' "$label" >>"$scratch/summary"
      status=1
    fi
  done <"$manifest"
  echo
  say "summary (every shell block must have run or been skipped with a reason):"
  cat "$scratch/summary"
  return "$status"
}

# ----------------------------------------------------------- self-test -----
# The runner's own guarantees, on made-up pages: what runs, what is
# skipped, and that every way of not running a block fails the run.
self_test() {
  local t; t="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$t'" EXIT
  local fails=0 out rc
  expect() { # NAME WANT_RC MUST_CONTAIN PAGE_TEXT
    local name="$1" want="$2" needle="$3"
    mkdir -p "$t/$name"
    printf '%s\n' "$4" >"$t/$name/page.md"
    local pages=(page.md)
    if [ $# -ge 5 ]; then printf '%s\n' "$5" >"$t/$name/page2.md"; pages+=(page2.md); fi
    rc=0
    out="$(DR_SCRATCH="$t/$name" run_pages "$t/$name" "${pages[@]}" 2>&1)" || rc=$?
    if { [ "$want" = 0 ] && [ "$rc" != 0 ]; } || { [ "$want" != 0 ] && [ "$rc" = 0 ]; } || ! grep -qF -- "$needle" <<<"$out"; then
      printf 'self-test %s: FAILED (exit %s, wanted %s, output must contain %q)\n%s\n' "$name" "$rc" "$want" "$needle" "$out"
      fails=$((fails + 1))
    else
      printf 'self-test %s: ok\n' "$name"
    fi
  }
  local F='```'
  expect runs-and-skips 0 "skipped  page.md:11-13  (needs a GPU)" "$(printf '%s\n' \
    "# t" "$F""sh" "X=1 # set here, used below" "$F" "<!-- docs-runner: skip-command cmd=\"false\" reason=\"never works\" -->" \
    "$F""bash" "test \"\$X\" = 1" "false --really" "$F" "<!-- docs-runner: skip reason=\"needs a GPU\" -->" "$F""sh" "false" "$F" \
    "$F""text" "not run" "$F")"
  # Pages share one shell, and a block is known by its page: page 2's block 1
  # failing is not hidden by page 1's block 1 having run.
  expect pages-share-a-shell 0 "ran      page2.md:1-3" "$(printf '%s\n' "$F""sh" "Y=2" "$F")" "$(printf '%s\n' "$F""sh" "test \"\$Y\" = 2" "$F")"
  expect blocks-are-per-page 1 "NOT RUN  page2.md:1-3" "$(printf '%s\n' "$F""sh" "true" "$F")" "$(printf '%s\n' "$F""sh" "false" "$F")"
  expect a-command-fails 1 "NOT RUN  page.md:5-7" "$(printf '%s\n' "$F""sh" "true" "false" "$F" "$F""sh" "true" "$F")"
  expect early-exit-leaves-blocks-unrun 1 "NOT RUN  page.md:4-6" "$(printf '%s\n' "$F""sh" "exit 0" "$F" "$F""sh" "true" "$F")"
  expect unknown-directive 1 "unknown docs-runner directive \"ignore\"" "$(printf '%s\n' "<!-- docs-runner: ignore -->" "$F""sh" "true" "$F")"
  expect skip-without-reason 1 "skip needs reason" "$(printf '%s\n' "<!-- docs-runner: skip -->" "$F""sh" "true" "$F")"
  expect stale-marker 1 "matches no command" "$(printf '%s\n' "<!-- docs-runner: skip-command cmd=\"cargo test\" reason=\"r\" -->" "$F""sh" "cargo build" "$F")"
  expect marker-before-text-block 1 "before a \`\`\`text block" "$(printf '%s\n' "<!-- docs-runner: skip reason=\"r\" -->" "$F""text" "x" "$F")"
  expect marker-detached 1 "not directly followed" "$(printf '%s\n' "<!-- docs-runner: skip reason=\"r\" -->" "prose" "$F""sh" "true" "$F")"
  expect indented-fence 1 "indented or ~~~ code fence" "$(printf '%s\n' "- item" "  $F""sh" "  true" "  $F")"
  expect background-dies 1 "exited before it listened" "$(printf '%s\n' "<!-- docs-runner: background cmd=\"sleep\" port=1 timeout=5 -->" "$F""sh" "sleep 0" "$F")"
  if [ "$fails" != 0 ]; then
    echo "docs-run self-test: $fails case(s) failed" >&2
    return 1
  fi
  echo "docs-run self-test: all cases passed"
}

# ---------------------------------------------------------------- main -----
if [ "${1:-}" = "--self-test" ]; then
  self_test
  exit
fi
case "${1:-}" in -h|--help) sed -n '2,47p' "$0"; exit 0 ;; esac
pages=("$@")
[ ${#pages[@]} -gt 0 ] || read -r -a pages <<<"$DEFAULT_PAGES"

start=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tandem-docs-run.XXXXXX")"
cleanup() {
  if [ "${DOCS_RUN_KEEP:-}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  say "warning: uncommitted changes in $ROOT are not in the clone (it runs HEAD, $(git -C "$ROOT" rev-parse --short HEAD))"
fi
git clone -q "$ROOT" "$WORK/clone"
git -C "$WORK/clone" checkout -q --detach "$(git -C "$ROOT" rev-parse HEAD)"
if [ "${DOCS_RUN_FRESH_TARGET:-}" = 1 ]; then
  unset CARGO_TARGET_DIR
  say "fresh clone of $(git -C "$ROOT" rev-parse --short HEAD) in $WORK/clone, new target dir"
else
  shared="${CARGO_TARGET_DIR:-$ROOT/target}"
  mkdir -p "$shared"
  shared="$(cd "$shared" && pwd)"
  ln -s "$shared" "$WORK/clone/target"
  export CARGO_TARGET_DIR="$shared"
  say "fresh clone of $(git -C "$ROOT" rev-parse --short HEAD) in $WORK/clone, target/ -> $shared"
fi
# The pages assume a user's clean shell: no tandem settings from the caller.
while IFS='=' read -r name _; do
  case "$name" in TANDEM_*) unset "$name" ;; esac
done < <(env)
mkdir -p "$WORK/scratch"
export DR_SCRATCH="$WORK/scratch"
rc=0
run_pages "$WORK/clone" "${pages[@]}" || rc=$?
say "total $((SECONDS - start)) s: $([ "$rc" = 0 ] && echo PASSED || echo FAILED)"
exit "$rc"
