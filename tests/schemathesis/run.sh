#!/usr/bin/env bash
# Fuzzes the running Bouncer binary against its own OpenAPI document with schemathesis
# (PyPI), once as a superuser and once anonymously, with every check on. Exits non-zero on
# any failure: a 5xx, a response that violates the document, an ignored authentication, a
# panic in the server's log, or the server dying. See README.md beside this file.
#
#   cargo build && bash tests/schemathesis/run.sh
#
# Environment (all optional):
#   BOUNCER_BIN                 the binary to test (default: target/debug/bouncer); not built here
#   SCHEMATHESIS_VENV           venv to create or reuse (default: ~/.cache/bouncer-ci/schemathesis-venv)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default: 75)
#   SCHEMATHESIS_SEED           a seed, to replay a run exactly (default: random, printed)
#   SCHEMATHESIS_REPORT_DIR     where the JUnit and NDJSON reports go (default: target/schemathesis)
#   SCHEMATHESIS_RUNS           which runs: "auth anon" (default), or one of them
set -uo pipefail

SCHEMATHESIS_VERSION=4.32.5
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/bouncer-ci/schemathesis-venv}"
BIN="${BOUNCER_BIN:-target/debug/bouncer}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-75}"
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$ROOT/target/schemathesis}"
RUNS="${SCHEMATHESIS_RUNS:-auth anon}"
ADMIN=admin
ADMIN_PASSWORD="schemathesis admin password"

say() { printf 'schemathesis: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

[ -x "$BIN" ] || die "no binary at $BIN: run \`cargo build\` first (or set BOUNCER_BIN)"

# --- schemathesis, pinned, in its own venv ------------------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV" || die "cannot create the venv $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || die "cannot install schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"
PY="$VENV/bin/python"

# --- the server: SQLite in a temporary directory, a free port, cheap argon2 --------------
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export DATABASE_URL="sqlite://$WORK/bouncer.db"
export BOUNCER_ARGON2_MEMORY_KIB=64 BOUNCER_ARGON2_ITERATIONS=1
unset BOUNCER_CONF_DIR RUST_LOG BOUNCER_LOG_FORMAT
cd "$WORK" # no ./conf.d here, so no settings file is picked up; schemathesis' own files land here

# Lockout off before the server starts: the fuzzer fails many logins, some as `admin`. (The
# database first: the admin commands do not create one.)
"$BIN" migrate >/dev/null || die "cannot create the database"
"$BIN" settings set AUTH_LOGIN_FAILURE_LIMIT 0 >/dev/null || die "cannot set AUTH_LOGIN_FAILURE_LIMIT"

BOUNCER_BIND=127.0.0.1:0 BOUNCER_ADMIN_USERNAME="$ADMIN" BOUNCER_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ADDR=""
for _ in $(seq 1 300); do
    ADDR="$(sed -n 's/.*listening address=\([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n 1)"
    [ -n "$ADDR" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server did not start"; }
    sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/server.log" >&2; die "the server did not say where it listens"; }
BASE="http://$ADDR"
say "bouncer $("$BIN" --version | awk '{print $2}') listening on $BASE (pid $SERVER_PID, $DATABASE_URL)"

# --- a superuser token ----------------------------------------------------------------------
TOKEN="$("$PY" - "$BASE" "$ADMIN" "$ADMIN_PASSWORD" <<'EOF'
import json, sys, urllib.request
base, username, password = sys.argv[1:]
body = json.dumps({"username": username, "password": password}).encode()
request = urllib.request.Request(base + "/api/login/", data=body, headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(request, timeout=10))["token"])
EOF
)" || die "cannot log in as $ADMIN"

# --- the auth provider of the authenticated run (see README.md: why not a fixed -H) -------
cat >"$WORK/hooks.py" <<'EOF'
"""Bearer auth for the authenticated run that survives the run ending its own session.

Starts with the token run.sh logged in for. Schemathesis drops it on a 401 (`retry_on`, the
default) and replays that request once with a token from `get`, which logs in again; when
that login fails because the run changed the admin's password, locked it out or set
deny_new at the limit, `get` repairs the database with the bouncer CLI and logs in again.
"""
import json, os, subprocess, threading, time, urllib.error, urllib.request

import schemathesis

E = os.environ
_lock = threading.Lock()
_first = [E["BOUNCER_ST_TOKEN"]]


def note(message):
    with open(E["BOUNCER_ST_REAUTH_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def login():
    body = json.dumps({"username": E["BOUNCER_ST_USERNAME"], "password": E["BOUNCER_ST_PASSWORD"]}).encode()
    request = urllib.request.Request(E["BOUNCER_ST_BASE"] + "/api/login/", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.load(err)
        except ValueError:
            return err.code, {}


def cli(*args):
    env = dict(E, BOUNCER_PASSWORD=E["BOUNCER_ST_PASSWORD"])
    done = subprocess.run([E["BOUNCER_ST_BIN"], *args], env=env, capture_output=True, text=True, timeout=30)
    note(f"repair: bouncer {' '.join(args)} -> exit {done.returncode} {done.stdout.strip()} {done.stderr.strip()}")


def repair(status, body):
    reason = body.get("reason")
    if reason == "invalid_credentials":  # the run changed the admin's password
        cli("user", "passwd", E["BOUNCER_ST_USERNAME"])
    elif reason == "locked_out":  # the run turned the lockout back on and failed logins as admin
        cli("settings", "set", "AUTH_LOGIN_FAILURE_LIMIT", "0")
    elif reason == "limit_reached":  # deny_new at the limit (a session of the run is still live)
        cli("settings", "set", "SESSION_LIMIT_POLICY", '"kick_oldest"')
    time.sleep(1.5)  # a running server picks up settings the CLI changed within a second


@schemathesis.hook
def after_call(context, case, response):
    """Keeps the lockout off: the run's own writes to the settings (a PATCH or PUT with
    AUTH_LOGIN_FAILURE_LIMIT > 0, a DELETE that resets it to 10) would otherwise let the
    fuzzer's made-up Basic credentials lock their username out, and a locked-out login is
    a 429 by design, which `ignored_auth` takes for an ignored credential."""
    if not case.path.startswith("/api/v2/settings/") or case.method not in ("PATCH", "PUT", "DELETE") \
            or response.status_code >= 300:
        return
    auth = (case.headers or {}).get("Authorization", "")
    if not auth.startswith("Bearer "):
        return
    body = json.dumps({"AUTH_LOGIN_FAILURE_LIMIT": 0}).encode()
    request = urllib.request.Request(E["BOUNCER_ST_BASE"] + "/api/v2/settings/all/", data=body, method="PATCH",
                                     headers={"Content-Type": "application/json", "Authorization": auth})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as err:
        note(f"could not turn the lockout off again after {case.method} {case.path}: {err.code}")


@schemathesis.auth()
class BouncerLogin:
    def get(self, case, context):
        with _lock:
            if _first:
                return _first.pop()
            for attempt in range(4):
                status, body = login()
                if status == 200:
                    note(f"re-login ok (a 401 on {case.operation.label})")
                    return body["token"]
                note(f"re-login failed: {status} {body}")
                repair(status, body)
            raise RuntimeError(f"cannot log in again: {status} {body}")

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
EOF

# --- the runs ---------------------------------------------------------------------------------
mkdir -p "$REPORT_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
# --output-sanitize false: a failure shows the request whole, the Authorization header too
# (the token of a throwaway server, dead when this script ends).
# No --checks: every check is on by default in schemathesis 4, and a --checks on the command
# line overrides the per-operation settings of schemathesis.toml (its baseline), which
# `--checks all` silently switched off (CI, 2026-11-28).
COMMON=(--max-examples "$EXAMPLES" --request-timeout 10 --generation-database none
    --output-sanitize false --no-color --report junit,ndjson --report-dir "$REPORT_DIR")
[ -n "${SCHEMATHESIS_SEED:-}" ] && COMMON+=(--seed "$SCHEMATHESIS_SEED")
FAILED=()

server_ok() {
    kill -0 "$SERVER_PID" 2>/dev/null || { say "the server DIED during the $1 run"; return 1; }
    if grep -n "panicked at" "$WORK/server.log" >&2; then say "the server PANICKED during the $1 run"; return 1; fi
    return 0
}

run() {
    local name="$1"
    shift
    local started=$SECONDS
    say "run '$name': $ST run $BASE/api/openapi.json ${COMMON[*]} $*"
    timeout 600 "$ST" --config-file "$ROOT/tests/schemathesis/schemathesis.toml" run "$BASE/api/openapi.json" "${COMMON[@]}" \
        --report-junit-path "$REPORT_DIR/$name-$STAMP.xml" --report-ndjson-path "$REPORT_DIR/$name-$STAMP.ndjson" "$@" \
        2>&1 | tee "$REPORT_DIR/$name-$STAMP.txt"
    local status=${PIPESTATUS[0]}
    say "run '$name': exit $status in $((SECONDS - started)) s; output in $REPORT_DIR/$name-$STAMP.txt"
    [ "$status" -eq 0 ] || FAILED+=("$name (schemathesis exit $status)")
    server_ok "$name" || FAILED+=("$name (server)")
}

for which in $RUNS; do
    case "$which" in
    auth)
        # Every operation as the superuser. GET /api/v2/me/events/ is left out: it is an
        # event stream that never ends, so every case would be a client time-out.
        : >"$WORK/reauth.log"
        SCHEMATHESIS_HOOKS="$WORK/hooks.py" BOUNCER_ST_TOKEN="$TOKEN" BOUNCER_ST_BASE="$BASE" \
            BOUNCER_ST_USERNAME="$ADMIN" BOUNCER_ST_PASSWORD="$ADMIN_PASSWORD" BOUNCER_ST_BIN="$BIN" \
            BOUNCER_ST_REAUTH_LOG="$WORK/reauth.log" \
            run authenticated --exclude-path /api/v2/me/events/
        say "run 'authenticated': $(grep -c 're-login ok' "$WORK/reauth.log") re-logins, $(grep -c 'repair:' "$WORK/reauth.log") repairs"
        sed 's/^/    /' "$WORK/reauth.log" | grep -v 're-login ok' >&2 || true
        ;;
    anon)
        # No credentials at all: every protected operation must answer 401, never 2xx or 5xx.
        run anonymous
        ;;
    *) die "unknown run '$which' in SCHEMATHESIS_RUNS (auth, anon)" ;;
    esac
done

cp "$WORK/server.log" "$REPORT_DIR/server-$STAMP.log"
if [ "${#FAILED[@]}" -gt 0 ]; then
    say "FAILED: ${FAILED[*]} (server log: $REPORT_DIR/server-$STAMP.log)"
    exit 1
fi
say "passed"
