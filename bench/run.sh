#!/usr/bin/env bash
# Bouncer's benchmark suite, one command (see bench/README.md):
#   1. cargo build --release (this repository, the normal target dir)
#   2. the peers side by side with Bouncer (W1 GET, W2 login, raw argon2, RSS, CPU/req) through
#      the read-only bench-peer package ($BENCH_PEER): a, hello, sqlx, bouncer, a_pg, bouncer_pg
#   3. Bouncer's own workloads (bench/workloads.py): W1 baseline, W2, W3 mixed, W4 1M sessions,
#      peak RSS with 100k sessions, W1 during the sweep of 100k expired sessions
#   4. the table of ratios and targets (bench/report.py) -> bench/results/<UTC stamp>.md/.json
#      and bench/results/LATEST.md
# BENCH_SMOKE=1: every Bouncer workload for ~1-2 s with small seeds, no peers; fails only when
# something is broken, never on speed.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$BENCH_DIR/.." && pwd -P)
SMOKE=${BENCH_SMOKE:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)${TAG:+-$TAG}
[ "$SMOKE" != 1 ] || STAMP=$STAMP-smoke
RESULTS=$BENCH_DIR/results
OUT=$RESULTS/$STAMP      # raw files of this run (oha JSON, server logs, peer results, run.log)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
t0=$(date +%s)
say() { echo "[run $(date -u +%H:%M:%S)] $*"; }

# Kill whatever we started, on every exit path (the Python scripts stop their own servers too).
CHILD=""
cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# run_child CMD...: run in the background and wait, so that the trap can stop it
run_child() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return $rc
}

# --- oha: $OHA, oha on PATH, bench-peer's, the CI cache; else install it into the CI cache
find_oha() {
  local c
  for c in "${OHA:-}" "$(command -v oha || true)" /tmp/bench-peer-work/tools/bin/oha \
           "$HOME/.cache/bouncer-ci/tools/bin/oha"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
if ! OHA=$(find_oha); then
  say "oha not found: cargo install oha --version 1.16.0 --locked --root ~/.cache/bouncer-ci/tools"
  cargo install oha --version 1.16.0 --locked --root "$HOME/.cache/bouncer-ci/tools"
  OHA=$HOME/.cache/bouncer-ci/tools/bin/oha
fi
export OHA
say "oha: $OHA ($("$OHA" --version))"

# --- build
if [ -n "${BOUNCER_BIN:-}" ]; then
  # A binary built already (CI's smoke run uses the debug one `cargo test` built).
  case "$BOUNCER_BIN" in /*) BIN=$BOUNCER_BIN ;; *) BIN=$REPO/$BOUNCER_BIN ;; esac
else
  say "cargo build --release in $REPO"
  (cd "$REPO" && cargo build --release --quiet)
  BIN=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/bouncer
fi
[ -x "$BIN" ] || { say "error: $BIN not built"; exit 2; }
say "bouncer: $BIN"

# --- PostgreSQL: used when it answers (trust auth); a database is created and dropped there
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DBS=sqlite
PG_NOTE=""
if [ "${BENCH_SKIP_PG:-0}" = 1 ]; then
  PG_URL=""; PG_NOTE="BENCH_SKIP_PG=1"
elif ! command -v psql >/dev/null; then
  PG_URL=""; PG_NOTE="psql not installed"
elif PGCONNECT_TIMEOUT=5 psql -X -At "$PG_URL" -c 'SHOW server_version' >/dev/null 2>"$OUT/pg-check.err"; then
  DBS=sqlite,postgres
  say "PostgreSQL $(psql -X -At "$PG_URL" -c 'SHOW server_version') at $PG_URL"
else
  PG_NOTE="PostgreSQL at $PG_URL does not answer: $(head -c 300 "$OUT/pg-check.err")"; PG_URL=""
fi
[ -z "$PG_NOTE" ] || say "PostgreSQL rows SKIPPED: $PG_NOTE"

# --- the peers, through bench-peer (not in smoke mode)
PEER_DIR=""
PEER_NOTE=""
PEER_RC=0
if [ -z "${BENCH_PEER:-}" ]; then
  BENCH_PEER=$BENCH_DIR/../../shared/bench-peer
  [ -f "$BENCH_PEER/run.sh" ] || BENCH_PEER=/work/shared/bench-peer
fi
if [ "$SMOKE" = 1 ]; then
  PEER_NOTE="smoke mode"
elif [ "${BENCH_SKIP_PEERS:-0}" = 1 ]; then
  PEER_NOTE="BENCH_SKIP_PEERS=1"
elif [ ! -f "$BENCH_PEER/run.sh" ]; then
  PEER_NOTE="bench-peer package not found at $BENCH_PEER (set BENCH_PEER)"
else
  BENCH_PEER=$(cd "$BENCH_PEER" && pwd -P)
  servers=${PEER_SERVERS:-a,hello,sqlx,bouncer}
  if [ -n "$PG_URL" ] && [ -z "${PEER_SERVERS:-}" ]; then servers=$servers,a_pg,bouncer_pg; fi
  peer_tag=bouncer-$STAMP
  say "peers: $BENCH_PEER/run.sh SERVERS=$servers ROUNDS=${ROUNDS:-1}"
  # bench-peer writes under its work dir (BENCH_WORK, default /tmp/bench-peer-work), never in its folder
  run_child env BOUNCER_BIN="$BIN" SERVERS="$servers" TAG="$peer_tag" OHA="$OHA" \
      ${PG_URL:+BENCH_PG_URL="$PG_URL"} ROUNDS="${ROUNDS:-1}" \
      GET_SECS="${GET_SECS:-10}" LOGIN_SECS="${LOGIN_SECS:-10}" WARMUP="${WARMUP:-2}" \
      QUIET_MAX_WAIT="${QUIET_MAX_WAIT:-60}" \
      bash "$BENCH_PEER/run.sh" || PEER_RC=$?
  peer_work=$(realpath -m "${BENCH_WORK:-${TMPDIR:-/tmp}/bench-peer-work}")
  PEER_DIR=$(ls -d "$peer_work"/results/*-"$peer_tag" 2>/dev/null | tail -1 || true)
  if [ -n "$PEER_DIR" ] && [ -f "$PEER_DIR/runs.jsonl" ]; then
    mkdir -p "$OUT/peers"
    cp "$PEER_DIR"/{runs.jsonl,summary.md,ratios.json,meta.json} "$OUT/peers/" 2>/dev/null || true
    cp "$PEER_DIR"/argon2.json "$OUT/peers/" 2>/dev/null || true
    cp "$PEER_DIR"/failures.json "$OUT/peers/" 2>/dev/null || true
    [ "$PEER_RC" = 0 ] || PEER_NOTE="bench-peer exited with $PEER_RC (see $PEER_DIR/run.log)"
  else
    PEER_NOTE="bench-peer failed (exit $PEER_RC) before it wrote results"
  fi
fi
[ -z "$PEER_NOTE" ] || say "peer rows SKIPPED: $PEER_NOTE"

# --- Bouncer's own workloads
WL_RC=0
say "Bouncer workloads on $DBS"
run_child python3 "$BENCH_DIR/workloads.py" --bin "$BIN" --oha "$OHA" --out "$OUT" --dbs "$DBS" \
    ${PG_URL:+--pg-url "$PG_URL"} || WL_RC=$?

# --- the table
run_child python3 "$BENCH_DIR/report.py" --out "$OUT" --stamp "$STAMP" --results "$RESULTS" \
    --peer-note "$PEER_NOTE" --pg-note "$PG_NOTE" --smoke "$SMOKE"
say "done in $(( $(date +%s) - t0 )) s; raw files in $OUT"
if [ "$WL_RC" != 0 ]; then
  say "BROKEN: a Bouncer workload failed (see above and $OUT/bouncer.json)"
  exit 1
fi
exit 0
