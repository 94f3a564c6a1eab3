#!/usr/bin/env python3
"""Bouncer-only workloads (W1 baseline, W2, W3 mixed, W4 scale, RSS, sweeper) on SQLite and
PostgreSQL. Python 3.10+ standard library only; PostgreSQL through the `psql` command.

Each phase starts from a fresh database:
  1. prepare: start Bouncer once (it migrates and creates the superuser `bench`), log in as
     `bench` (the GET token), create `loginuser` (the login load's user), stop it. The argon2
     work of these two requests thus happens in a process that is not measured.
  2. seed users and sessions by direct SQL.
  3. start Bouncer again (the measured process) and run the loads with oha.

Phases per database (in this order):
  base   SEED_SMALL sessions: warm-up, W1 (GET c=32), W2 (logins c=4), W3 (both at once)
  scale  SEED_LARGE sessions: warm-up, W1                      -> W4 = scale W1 / base W1
  rss    SEED_RSS sessions: warm-up, W1, then VmHWM of the server
  sweep  SEED_SWEEP idle-expired live sessions, BOUNCER_SWEEP_INTERVAL=1: W1 at once for
         SWEEP_SECS while the sweeper ends them, then a SQL check that all of them ended
Writes OUT/bouncer.json (read by report.py). Exit 1 when something is broken (a server that
does not start, a seed that fails, >1% non-2xx, sessions the sweeper left live); never on speed.

Usage: workloads.py --bin target/release/bouncer --out DIR [--dbs sqlite,postgres] [--pg-url URL] --oha PATH
"""
import argparse, atexit, json, os, resource, signal, socket, sqlite3, subprocess
import sys, threading, time, urllib.error, urllib.parse, urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PW = "hunter2-password"
CLK = os.sysconf("SC_CLK_TCK")
US = 1_000_000  # microseconds per second (Bouncer's timestamps are i64 microseconds)


def env_num(name, default, kind=float):
    v = os.environ.get(name, "")
    return kind(v) if v.strip() else default


SMOKE = os.environ.get("BENCH_SMOKE") == "1"
S = dict(  # settings; smoke mode shrinks the durations and the seeds
    get_secs=env_num("GET_SECS", 1.5 if SMOKE else 10),
    login_secs=env_num("LOGIN_SECS", 1.5 if SMOKE else 10),
    mixed_secs=env_num("MIXED_SECS", env_num("GET_SECS", 1.5 if SMOKE else 10)),
    sweep_secs=env_num("SWEEP_SECS", 2 if SMOKE else 10),
    warmup=env_num("WARMUP", 0.5 if SMOKE else 2),
    get_c=env_num("GET_C", 32, int),
    login_c=env_num("LOGIN_C", 4, int),
    w2_parts=env_num("W2_PARTS", 1 if SMOKE else 4, int),
    raw_secs=env_num("RAW_SECS", 1 if SMOKE else 3),
    seed_users=env_num("SEED_USERS", 200 if SMOKE else 10_000, int),
    seed_small=env_num("SEED_SMALL", 1_000, int),
    seed_large=env_num("SEED_LARGE", 2_000 if SMOKE else 1_000_000, int),
    seed_rss=env_num("SEED_RSS", 2_000 if SMOKE else 100_000, int),
    seed_sweep=env_num("SEED_SWEEP", 2_000 if SMOKE else 100_000, int),
    active_pct=env_num("SEED_ACTIVE_PCT", 20, int),
    quiet_max_wait=env_num("QUIET_MAX_WAIT", 0 if SMOKE else 60),
    smoke=SMOKE,
)

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bin", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--oha", required=True)
ap.add_argument("--dbs", default="sqlite")
ap.add_argument("--pg-url", default="", help="PostgreSQL admin URL (a database is created and dropped there)")
ap.add_argument("--phases", default=os.environ.get("PHASES", "base,scale,rss,sweep"))
args = ap.parse_args()
OUT = Path(args.out)
OUT.mkdir(parents=True, exist_ok=True)
BIN = str(Path(args.bin).resolve())

# ---------------------------------------------------------------------------------------------
# processes: every server we start is in LIVE until stopped; stopped on exit and on signals

LIVE = {}


def stop_all():
    for p in list(LIVE.values()):
        stop_proc(p)


def stop_proc(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    LIVE.pop(p.pid, None)


def on_signal(signum, _frame):
    raise SystemExit(f"interrupted by signal {signum}")


atexit.register(stop_all)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)


class Broken(Exception):
    """Something that is not a matter of speed: the smoke run fails on it."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# databases

class SqliteDb:
    kind = "sqlite"

    def __init__(self, path):
        self.path = Path(path)

    def url(self):
        return f"sqlite://{self.path}"

    def create(self):
        self.drop()

    def drop(self):
        for suf in ("", "-wal", "-shm", "-journal"):
            Path(str(self.path) + suf).unlink(missing_ok=True)

    def run(self, sql, params=()):
        c = sqlite3.connect(self.path, timeout=30)
        try:
            c.execute("PRAGMA synchronous=OFF")
            with c:
                c.execute(sql, params)
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()

    def run_without_indexes(self, table, sql):
        """Bulk insert: the table's secondary indexes (as the migrations made them) are
        dropped first and built again afterwards, which is several times faster."""
        c = sqlite3.connect(self.path, timeout=30)
        try:
            c.execute("PRAGMA synchronous=OFF"); c.execute("PRAGMA cache_size=-262144")
            defs = c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                             "AND sql IS NOT NULL", (table,)).fetchall()
            with c:
                for name, _ in defs:
                    c.execute(f'DROP INDEX "{name}"')
                c.execute(sql)
                for _, ddl in defs:
                    c.execute(ddl)
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()

    def query(self, sql):
        c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return c.execute(sql).fetchall()
        finally:
            c.close()

    def finish_seed(self):
        pass

    def server_pid(self):
        return None


class PgDb:
    kind = "postgres"

    def __init__(self, admin_url, name):
        self.admin_url, self.name = admin_url, name
        u = urllib.parse.urlsplit(admin_url)
        self._url = urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))

    def url(self):
        return self._url

    def psql(self, url, sql, capture=False):
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", url],
                           input=sql, capture_output=True, text=True)
        if p.returncode != 0:
            raise Broken(f"psql failed: {p.stderr.strip()}")
        return p.stdout

    def create(self):
        self.psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE);\nCREATE DATABASE "{self.name}";\n')

    def drop(self):
        try:
            self.psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE);\n')
        except Broken as e:
            log(f"warning: {e}")

    def run(self, sql, params=()):
        assert not params
        self.psql(self._url, "SET synchronous_commit = off;\n" + sql + ";\n")

    def run_without_indexes(self, table, sql):
        """Bulk insert in one transaction: the table's indexes that back no constraint are
        dropped first and built again from their own definitions (pg_indexes) afterwards."""
        rows = self.psql(self._url, (
            "SELECT i.indexname || E'\\t' || i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            f"AND i.tablename = '{table}' AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass);\n"))
        defs = [r.split("\t", 1) for r in rows.splitlines() if r]
        script = ["SET synchronous_commit = off;", "SET maintenance_work_mem = '256MB';", "BEGIN;"]
        script += [f'DROP INDEX "{name}";' for name, _ in defs]
        script += [sql + ";"] + [ddl + ";" for _, ddl in defs] + ["COMMIT;"]
        self.psql(self._url, "\n".join(script) + "\n")

    def query(self, sql):
        out = self.psql(self._url, sql + ";\n")
        return [tuple(int(x) if x.lstrip("-").isdigit() else x for x in line.split("|"))
                for line in out.splitlines() if line]

    def finish_seed(self):
        # VACUUM now, and a checkpoint, so that neither an autovacuum of the freshly loaded
        # million rows nor the checkpoint their WAL calls for lands in a measurement (a
        # W4 run measured 0.80x with an autovacuum in it, 1.05x without).
        self.psql(self._url, "VACUUM (ANALYZE) users;\nVACUUM (ANALYZE) sessions;\nCHECKPOINT;\n")

    def server_pid(self):
        """The postmaster's pid when it runs on this machine (its backends' CPU is then
        counted), else None."""
        try:
            backend = int(self.psql(self.admin_url, "SELECT pg_backend_pid();\n").strip())
            ppid = int(open(f"/proc/{backend}/stat").read().rsplit(")", 1)[1].split()[1])
            if b"postgres" in open(f"/proc/{ppid}/cmdline", "rb").read():
                return ppid
        except (OSError, ValueError, Broken):
            pass
        return None


# ---------------------------------------------------------------------------------------------
# seeding (direct SQL; one statement per table, the rows generated by the database itself)

def series(db, n):
    if db.kind == "sqlite":
        return f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(n)}) "
    return ""


def from_series(db, n):
    return "FROM s" if db.kind == "sqlite" else f"FROM generate_series(1::bigint, {int(n)}::bigint) AS s(i)"


def random_hash(db):
    # token_hash only has to be unique: 32 random bytes (SQLite) or the SHA-256 of a unique text
    if db.kind == "sqlite":
        return "randomblob(32)"
    return "uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())"


def seed_users(db, n, now):
    """n users seed1..seedN with bench's password hash (they never log in)."""
    if n <= 0:
        return
    db.run(f"INSERT INTO users (username, password_hash, is_superuser, is_system_auditor, is_active, "
           f"created_at, modified_at) {series(db, n)}"
           f"SELECT 'seed' || s.i, (SELECT password_hash FROM users WHERE username = 'bench'), "
           f"FALSE, FALSE, TRUE, {now}, {now} {from_series(db, n)}")


def seeded_user_range(db):
    lo, hi, cnt = db.query("SELECT MIN(id), MAX(id), COUNT(*) FROM users WHERE username LIKE 'seed%'")[0]
    if cnt and hi - lo + 1 != cnt:
        raise Broken(f"seeded user ids are not contiguous ({lo}..{hi}, {cnt} rows)")
    return lo, cnt


def seed_sessions(db, n, now, kind, active_pct=20):
    """n sessions spread over the seeded users. The timestamps are deterministic functions of
    the row number (SQLite may evaluate random() in a subquery more than once).
    kind 'mix':     active_pct% live (used in the last 10 min), the others ended 1 h to 7 days
                    ago (logged_out, timeout_reached, limit_reached, revoked): none is purged
                    (retention 30 days) nor idle-expired during the run;
    kind 'expired': live (ended_at NULL) but last used 1.5 h to 25.5 h ago, i.e. past the
                    default idle timeout of 1800 s: the sweeper's work. Tagged by user_agent."""
    base, users = seeded_user_range(db)
    if not users:
        raise Broken("no seeded users")
    if kind == "mix":
        live = f"(s.i % 100) < {int(active_pct)}"
        lu = (f"CASE WHEN {live} THEN {now} - (s.i * 7919) % {600 * US} "
              f"ELSE {now} - {3600 * US} - (s.i * 104729) % {6 * 86400 * US} END")
        ended_at = f"CASE WHEN {live} THEN NULL ELSE {lu} + {60 * US} + (s.i * 31) % {1700 * US} END"
        reason = (f"CASE WHEN {live} THEN NULL ELSE CASE s.i % 4 WHEN 0 THEN 'logged_out' "
                  f"WHEN 1 THEN 'timeout_reached' WHEN 2 THEN 'limit_reached' ELSE 'revoked' END END")
        agent = "'bench-seed'"
    elif kind == "expired":
        lu = f"{now} - {5400 * US} - (s.i * 104729) % {86400 * US}"
        ended_at, reason, agent = "NULL", "NULL", "'bench-seed-expired'"
    else:
        raise ValueError(kind)
    created = f"{lu} - (s.i * 15485863) % {86400 * US}"
    db.run_without_indexes("sessions", f"INSERT INTO sessions (user_id, token_hash, created_at, last_used_at, ended_at, end_reason, "
           f"ip_address, user_agent) {series(db, n)}"
           f"SELECT {base} + s.i % {users}, {random_hash(db)}, {created}, {lu}, "
           f"{ended_at}, {reason}, '127.0.0.1', {agent} {from_series(db, n)}")


# ---------------------------------------------------------------------------------------------
# HTTP, server, oha

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_json(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise Broken(f"{method} {url} -> {e.code}: {e.read()[:300]!r}") from None


class Server:
    def __init__(self, db, label, extra_env=None):
        self.db, self.label, self.extra_env = db, label, extra_env or {}

    def __enter__(self):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_") and k != "DATABASE_URL"}
        env.update(DATABASE_URL=self.db.url(), BOUNCER_BIND=f"{HOST}:{self.port}",
                   BOUNCER_ADMIN_USERNAME="bench", BOUNCER_ADMIN_PASSWORD=PW, **self.extra_env)
        self.log_path = OUT / f"{self.db.kind}-{self.label}.server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "serve"], env=env, cwd=str(OUT), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        LIVE[self.proc.pid] = self.proc
        self.pid = self.proc.pid
        t0 = time.time()
        while True:
            if self.proc.poll() is not None:
                raise Broken(f"server exited with code {self.proc.returncode} before it was ready; "
                             f"log {self.log_path}:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            if time.time() - t0 > 60:
                raise Broken(f"server not ready after 60 s; log {self.log_path}:\n{tail(self.log_path)}")
            time.sleep(0.05)
        self.ready_s = time.time() - t0
        return self

    def __exit__(self, *exc):
        stop_proc(self.proc)
        self.log.close()


def tail(path, n=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def proc_tree(root):
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            pass
    return out


def cpu_s(root, tree=False):
    """utime + stime in seconds (of the whole process tree when tree)."""
    total = 0
    for p in (proc_tree(root) if tree else [root]):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / CLK


def status_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def machine_busy_s():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / CLK


def wait_quiet(max_wait, thresh=0.06):
    """Wait (at most max_wait s) until the machine is idle: it is shared with other work."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        a = machine_busy_s(); time.sleep(1.0); b = machine_busy_s()
        if (b - a) / (os.cpu_count() or 1) < thresh:
            break
    return round(time.time() - t0, 1)


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            except OSError:
                return
            self.stop.wait(0.1)


def oha_cmd(c, secs, url, extra):
    return [args.oha, "-z", f"{secs:g}s", "-c", str(c), "--no-tui", "--output-format", "json", *extra, url]


def get_load(srv, token):
    return dict(c=S["get_c"], url=srv.url + "/api/v2/me/", extra=["-H", f"Authorization: Bearer {token}"])


def login_load(srv):
    body = json.dumps({"username": "loginuser", "password": PW})
    return dict(c=S["login_c"], url=srv.url + "/api/login/",
                extra=["-m", "POST", "-H", "Content-Type: application/json", "-d", body])


def summarize_oha(raw, secs):
    j = json.loads(raw)
    s, lp = j["summary"], j["latencyPercentiles"]
    codes = j.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    # requests still in flight when oha's -z deadline came are cut by oha itself: not counted
    errors = {e: n for e, n in j.get("errorDistribution", {}).items() if e != "aborted due to deadline"}
    total = sum(codes.values()) + sum(errors.values())
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    return {"ok": ok, "total": total, "ok_per_s": ok / secs, "non2xx": total - ok,
            "non2xx_pct": 100.0 * (total - ok) / total if total else 100.0,
            "status_codes": codes, "errors": errors,
            "p50_ms": ms(lp.get("p50")), "p99_ms": ms(lp.get("p99")), "max_ms": ms(s.get("slowest"))}


def measure(srv, loads, secs, name, db_pid=None, sample_rss=False, save=True, quiet=True):
    """Run the oha loads at the same time for secs; server CPU and RSS around them.
    quiet: first wait (at most QUIET_MAX_WAIT s) for an idle machine."""
    quiet = wait_quiet(S["quiet_max_wait"]) if quiet and S["quiet_max_wait"] else 0
    sampler = RssSampler(srv.pid) if sample_rss else None
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m0, c0, d0 = machine_busy_s(), cpu_s(srv.pid), cpu_s(db_pid, tree=True) if db_pid else 0.0
    if sampler:
        sampler.start()
    t0 = time.time()
    procs = [subprocess.Popen(oha_cmd(l["c"], secs, l["url"], l["extra"]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for l in loads]
    outs = [p.communicate() for p in procs]
    wall = time.time() - t0
    if sampler:
        sampler.stop.set(); sampler.join()
    m1, c1, d1 = machine_busy_s(), cpu_s(srv.pid), cpu_s(db_pid, tree=True) if db_pid else 0.0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    oha_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    res = []
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            raise Broken(f"oha failed: {err.strip()[:500]}")
        if save:
            (OUT / f"{srv.db.kind}-{name}-{i}.oha.json").write_text(out)
        res.append(summarize_oha(out, secs))
    ok_all = sum(r["ok"] for r in res)
    common = {"secs": secs, "wall_s": round(wall, 2), "quiet_wait_s": quiet,
              "server_cpu_s": round(c1 - c0, 3), "db_cpu_s": round(d1 - d0, 3) if db_pid else None,
              "oha_cpu_s": round(oha_cpu, 3),
              "foreign_cpu_s": round((m1 - m0) - oha_cpu - (c1 - c0) - (d1 - d0), 2)}
    for r in res:
        r.update(common)
        # CPU per request: the server's utime+stime over the 2xx responses of all loads at once
        r["server_cpu_ms_per_req"] = 1000 * (c1 - c0) / max(ok_all, 1)
        r["db_cpu_ms_per_req"] = 1000 * (d1 - d0) / max(ok_all, 1) if db_pid else None
        if sampler:
            r["peak_sampled_rss_kb"] = sampler.peak_kb
    return res


def check_ok(r, what):
    if r["non2xx_pct"] > 1.0:
        raise Broken(f"{what}: {r['non2xx_pct']:.1f}% non-2xx ({r['status_codes']}, errors {r['errors']})")


def line(name, r):
    return (f"{name:22s} {r['ok_per_s']:9.0f} ok/s  p50 {fmt(r['p50_ms'])} ms  p99 {fmt(r['p99_ms'])} ms  "
            f"non-2xx {r['non2xx']}  srv CPU {r['server_cpu_ms_per_req']:.3f} ms/req  foreign CPU {r['foreign_cpu_s']:.1f} s")


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


# ---------------------------------------------------------------------------------------------
# phases

def prepare(db, seed):
    """Fresh database; the superuser `bench` (its token for the GET loads) and `loginuser`
    made through a first server process; then `seed(db, now)` by direct SQL."""
    db.create()
    with Server(db, "prepare") as srv:
        token = http_json("POST", srv.url + "/api/login/", {"username": "bench", "password": PW})["token"]
        http_json("POST", srv.url + "/api/v2/users/", {"username": "loginuser", "password": PW}, token=token)
    t0 = time.time()
    now = int(time.time() * US)
    try:
        seed_users(db, S["seed_users"], now)
        seed(db, now)
        db.finish_seed()
    except Broken:
        raise
    except Exception as e:  # noqa: BLE001 - sqlite3 errors etc.
        raise Broken(f"seed failed: {type(e).__name__}: {e}") from None
    seed_s = time.time() - t0
    n = db.query("SELECT COUNT(*) FROM sessions")[0][0]
    return token, seed_s, n


ARGON2_RATE = Path(os.environ.get("ARGON2_RATE") or
                   Path(os.environ.get("BENCH_WORK", "/tmp/bench-peer-work")) / "target/release/argon2_rate")


def measure_w2(srv, pg_pid):
    """W2 in W2_PARTS parts, each between two raw argon2 measurements (RAW_SECS each): the
    machine's speed drifts by several percent within a minute, so each part is compared with the
    raw rate measured right before and right after it. The result is the parts' sum, with
    `raw_argon2_around` the raw rate weighted as the parts (so logins / raw is the ratio of the
    sums), every raw figure, and each part's own figures."""
    n = max(1, S["w2_parts"])
    secs = S["login_secs"] / n
    rates = [raw_argon2(S["raw_secs"])]
    parts = []
    for i in range(n):
        # no wait for a quiet machine: the raw measurement right before is the reference
        parts.append(measure(srv, [login_load(srv)], secs, f"w2-part{i}", pg_pid, quiet=i == 0)[0])
        rates.append(raw_argon2(S["raw_secs"]))
    refs = [(a + b) / 2 if a and b else (a or b) for a, b in zip(rates, rates[1:])]
    ok, total = sum(p["ok"] for p in parts), sum(p["total"] for p in parts)
    cpu = sum(p["server_cpu_s"] for p in parts)
    w2 = {
        "ok": ok, "total": total, "ok_per_s": ok / (secs * n), "secs": secs * n,
        "non2xx": total - ok, "non2xx_pct": 100.0 * (total - ok) / total if total else 100.0,
        "status_codes": {k: sum(p["status_codes"].get(k, 0) for p in parts) for p in parts for k in p["status_codes"]},
        "errors": {k: sum(p["errors"].get(k, 0) for p in parts) for p in parts for k in p["errors"]},
        # percentiles do not add up: the parts' median p50 and their worst p99
        "p50_ms": sorted(p["p50_ms"] for p in parts)[n // 2], "p99_ms": max(p["p99_ms"] for p in parts),
        "server_cpu_s": round(cpu, 3), "server_cpu_ms_per_req": 1000 * cpu / max(ok, 1),
        "db_cpu_s": sum(p["db_cpu_s"] or 0 for p in parts) if pg_pid else None,
        "oha_cpu_s": round(sum(p["oha_cpu_s"] for p in parts), 3),
        "foreign_cpu_s": round(sum(p["foreign_cpu_s"] for p in parts), 2),
        "raw_argon2_rates": rates,
        "raw_argon2_around": None if None in refs else round(sum(refs) / n, 1),
        "parts": parts,
    }
    return w2


def raw_argon2(secs):
    """The raw Rust argon2id rate with 2 threads (bench-peer's `argon2_rate`), or None when
    that binary is not built. Measured right before and after W2, so that the ratio compares
    loads minutes apart on a machine whose speed drifts less than the run-start figure does."""
    if not ARGON2_RATE.is_file():
        return None
    out = subprocess.run([str(ARGON2_RATE), str(secs), "2"], capture_output=True, text=True).stdout
    for word, nxt in zip(out.split(), out.split()[1:]):
        if nxt == "hashes/s":
            try:
                return float(word)
            except ValueError:
                pass
    return None


def phase_base(db, pg_pid):
    token, seed_s, n = prepare(db, lambda d, now: seed_sessions(d, S["seed_small"], now, "mix", S["active_pct"]))
    log(f"{db.kind} base: {n} sessions stored (seeded in {seed_s:.1f} s)")
    with Server(db, "base") as srv:
        measure(srv, [get_load(srv, token)], S["warmup"], "warmup", save=False, quiet=False)
        w1 = measure(srv, [get_load(srv, token)], S["get_secs"], "w1", pg_pid)[0]
        check_ok(w1, f"{db.kind} W1")
        log(line(f"{db.kind} W1 ({n})", w1))
        w2 = measure_w2(srv, pg_pid)
        check_ok(w2, f"{db.kind} W2")
        log(line(f"{db.kind} W2 logins", w2) + f"  (raw argon2 around its parts: {w2['raw_argon2_rates']} hashes/s)")
        w3g, w3l = measure(srv, [get_load(srv, token), login_load(srv)], S["mixed_secs"], "w3", pg_pid)
        check_ok(w3g, f"{db.kind} W3 GET")
        check_ok(w3l, f"{db.kind} W3 logins")
        log(line(f"{db.kind} W3 GET", w3g))
        log(line(f"{db.kind} W3 logins", w3l))
    return {"sessions": n, "seed_s": round(seed_s, 2), "w1": w1, "w2": w2, "w3_get": w3g, "w3_login": w3l}


def phase_scale(db, pg_pid):
    token, seed_s, n = prepare(db, lambda d, now: seed_sessions(d, S["seed_large"], now, "mix", S["active_pct"]))
    log(f"{db.kind} scale: {n} sessions stored (seeded in {seed_s:.1f} s)")
    with Server(db, "scale") as srv:
        measure(srv, [get_load(srv, token)], S["warmup"], "warmup", save=False, quiet=False)
        w1 = measure(srv, [get_load(srv, token)], S["get_secs"], "w4", pg_pid)[0]
        check_ok(w1, f"{db.kind} W4")
        log(line(f"{db.kind} W1 ({n})", w1))
    return {"sessions": n, "seed_s": round(seed_s, 2), "w1": w1}


def phase_rss(db, pg_pid):
    token, seed_s, n = prepare(db, lambda d, now: seed_sessions(d, S["seed_rss"], now, "mix", S["active_pct"]))
    log(f"{db.kind} rss: {n} sessions stored (seeded in {seed_s:.1f} s)")
    with Server(db, "rss") as srv:
        rss_start, hwm_start = status_kb(srv.pid, "VmRSS"), status_kb(srv.pid, "VmHWM")
        measure(srv, [get_load(srv, token)], S["warmup"], "warmup", save=False, quiet=False)
        w1 = measure(srv, [get_load(srv, token)], S["get_secs"], "rss", pg_pid, sample_rss=True)[0]
        check_ok(w1, f"{db.kind} RSS W1")
        hwm = status_kb(srv.pid, "VmHWM")
        log(line(f"{db.kind} W1 ({n})", w1) + f"  VmHWM {hwm / 1024:.1f} MiB (when ready: VmHWM "
            f"{hwm_start / 1024:.1f} MiB, VmRSS {rss_start / 1024:.1f} MiB)")
    return {"sessions": n, "seed_s": round(seed_s, 2), "w1": w1, "vmhwm_kb": hwm, "rss_at_start_kb": rss_start,
            "vmhwm_at_start_kb": hwm_start}


def phase_sweep(db, pg_pid):
    tag = "user_agent = 'bench-seed-expired'"
    token, seed_s, n = prepare(db, lambda d, now: seed_sessions(d, S["seed_sweep"], now, "expired"))
    live0 = db.query(f"SELECT COUNT(*) FROM sessions WHERE {tag} AND ended_at IS NULL")[0][0]
    log(f"{db.kind} sweep: {live0} idle-expired live sessions stored (seeded in {seed_s:.1f} s)")
    progress, stop = [], threading.Event()

    def poll(t0):  # how many of them are still live, every 0.5 s (to time the sweep)
        while not stop.is_set():
            try:
                progress.append((round(time.time() - t0, 2),
                                 db.query(f"SELECT COUNT(*) FROM sessions WHERE {tag} AND ended_at IS NULL")[0][0]))
            except Exception:  # noqa: BLE001 - a busy database: try again
                pass
            stop.wait(0.5)

    t_start = time.time()
    with Server(db, "sweep", {"BOUNCER_SWEEP_INTERVAL": "1"}) as srv:
        poller = threading.Thread(target=poll, args=(t_start,), daemon=True)
        poller.start()
        started_at = round(time.time() - t_start, 2)
        w1 = measure(srv, [get_load(srv, token)], S["sweep_secs"], "sweep", pg_pid, quiet=False)[0]
        check_ok(w1, f"{db.kind} sweep W1")
        # the sweep may outlast the load on a slow machine: wait for it (not a speed check)
        deadline = time.time() + 30
        while time.time() < deadline and db.query(
                f"SELECT COUNT(*) FROM sessions WHERE {tag} AND ended_at IS NULL")[0][0] > 0:
            time.sleep(0.5)
        stop.set(); poller.join()
    ended, timeout_reason, left = db.query(
        f"SELECT SUM(CASE WHEN ended_at IS NOT NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN ended_at IS NOT NULL AND end_reason = 'timeout_reached' THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END) FROM sessions WHERE {tag}")[0]
    done_at = next((t for t, live in progress if live == 0), None)
    res = {"sessions": n, "seed_s": round(seed_s, 2), "expired_seeded": live0, "w1": w1,
           "ended": ended or 0, "ended_timeout_reached": timeout_reason or 0, "left_live": left or 0,
           "server_ready_s": round(srv.ready_s, 2), "load_started_s": started_at,
           "sweep_done_s": done_at, "progress": progress}
    log(line(f"{db.kind} W1 during sweep", w1) +
        f"  ended {res['ended']}/{live0} (timeout_reached {res['ended_timeout_reached']}), "
        f"load started at {started_at} s, all ended by {done_at} s after start")
    if res["left_live"] or res["ended_timeout_reached"] != live0:
        raise Broken(f"{db.kind} sweeper: {res['left_live']} of {live0} expired sessions still live, "
                     f"{res['ended_timeout_reached']} ended with timeout_reached, 30 s after the load")
    return res


PHASES = {"base": phase_base, "scale": phase_scale, "rss": phase_rss, "sweep": phase_sweep}


def main():
    dbs = [d.strip() for d in args.dbs.split(",") if d.strip()]
    results = {"settings": S, "bin": BIN, "oha": args.oha, "dbs": {}, "broken": [],
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (OUT / "db").mkdir(exist_ok=True)
    for kind in dbs:
        if kind == "sqlite":
            db = SqliteDb(OUT / "db" / "bouncer.sqlite3")
        else:
            db = PgDb(args.pg_url, f"bouncer_bench_{os.getpid()}")
        pg_pid = db.server_pid() if kind == "postgres" else None
        out = results["dbs"][kind] = {"db_cpu_counted": bool(pg_pid) if kind == "postgres" else None}
        for ph in [p.strip() for p in args.phases.split(",") if p.strip()]:
            try:
                out[ph] = PHASES[ph](db, pg_pid)
            except Broken as e:
                msg = f"{kind} {ph}: {e}"
                log(f"BROKEN {msg}")
                results["broken"].append(msg)
                out[ph] = {"error": str(e)}
            finally:
                stop_all()
                db.drop()
        (OUT / "bouncer.json").write_text(json.dumps(results, indent=1))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (OUT / "bouncer.json").write_text(json.dumps(results, indent=1))
    return 1 if results["broken"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
