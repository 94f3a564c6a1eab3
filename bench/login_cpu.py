#!/usr/bin/env python3
"""Where a login's CPU goes (W2): the CPU of Bouncer's hasher threads, of its other threads,
of the PostgreSQL backends and of oha, per login, and the context switches per login of each
of Bouncer's thread groups, with the raw argon2 rate measured right before and after.

    python3 bench/login_cpu.py --bin target/release/bouncer --db sqlite|postgres [--secs 6] [--reps 2]

Not part of `bench/run.sh`: a diagnostic for the W2 row (docs/PERFORMANCE.md, "What limits
each figure"). It needs bench-peer's oha and `argon2_rate` (built by `bench/run.sh`, under
$BENCH_WORK, default /tmp/bench-peer-work); PostgreSQL at --pg-url (trust auth), where it
creates and drops the database `bouncer_login_cpu`. The PostgreSQL figure is every
`postgres` process of the machine, so keep other PostgreSQL work off it while it runs.
"""
import argparse, glob, json, os, re, socket, subprocess, time, urllib.request

WORK = os.environ.get("BENCH_WORK", os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench-peer-work"))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bin", required=True)
ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
ap.add_argument("--secs", type=int, default=6)
ap.add_argument("--reps", type=int, default=2)
ap.add_argument("--oha", default=os.path.join(WORK, "tools/bin/oha"))
ap.add_argument("--argon2-rate", default=os.path.join(WORK, "target/release/argon2_rate"))
ap.add_argument("--log", default="info", help="RUST_LOG of the server")
args = ap.parse_args()

PW = "hunter2-password"
TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data, headers=headers)) as r:
        return json.load(r)


def threads(pid):
    """{thread name: [cpu seconds, voluntary switches, involuntary switches]} summed by name."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            stat = open(task + "/stat").read()
            status = open(task + "/status").read()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        row = out.setdefault(name, [0.0, 0, 0])
        row[0] += (int(fields[11]) + int(fields[12])) / TCK
        row[1] += vol
        row[2] += invol
    return out


def postgres_cpu():
    total = 0.0
    for proc in glob.glob("/proc/[0-9]*/stat"):
        try:
            stat = open(proc).read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if "(postgres)" in stat:
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / TCK
    return total


def raw_rate(secs):
    out = subprocess.run([args.argon2_rate, str(secs), "2"], capture_output=True, text=True).stdout
    m = re.search(r"([0-9.]+) hashes/s", out)
    return float(m.group(1)) if m else float("nan")


def main():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_") and k != "DATABASE_URL"}
    env.update(BOUNCER_BIND=f"127.0.0.1:{port}", BOUNCER_ADMIN_USERNAME="bench", BOUNCER_ADMIN_PASSWORD=PW,
               RUST_LOG=args.log)
    if args.db == "sqlite":
        path = os.path.join(WORK, "login_cpu.sqlite3")
        for f in glob.glob(path + "*"):
            os.remove(f)
        env["DATABASE_URL"] = "sqlite://" + path
    else:
        subprocess.run(["psql", "-X", "-q", args.pg_url, "-c", "DROP DATABASE IF EXISTS bouncer_login_cpu",
                        "-c", "CREATE DATABASE bouncer_login_cpu"], check=True)
        env["DATABASE_URL"] = args.pg_url.rsplit("/", 1)[0] + "/bouncer_login_cpu"
    log = open(os.path.join(WORK, "login_cpu-server.log"), "w")
    server = subprocess.Popen([args.bin, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz").close()
                break
            except OSError:
                time.sleep(0.05)
        token = http("POST", url + "/api/login/", {"username": "bench", "password": PW})["token"]
        http("POST", url + "/api/v2/users/", {"username": "loginuser", "password": PW}, token)
        body = json.dumps({"username": "loginuser", "password": PW})
        oha = [args.oha, "--no-tui", "--output-format", "json", "-c", "4", "-m", "POST",
               "-H", "Content-Type: application/json", "-d", body, url + "/api/login/"]
        subprocess.run(oha + ["-z", "2s"], capture_output=True, check=True)  # warm-up
        for rep in range(args.reps):
            before = raw_rate(3)
            t0, pg0, ch0 = threads(server.pid), postgres_cpu(), os.times()
            run = subprocess.run(oha + ["-z", f"{args.secs}s"], capture_output=True, text=True, check=True)
            t1, pg1, ch1 = threads(server.pid), postgres_cpu(), os.times()
            after = raw_rate(3)
            summary = json.loads(run.stdout)
            codes = summary.get("statusCodeDistribution", {})
            logins = sum(n for code, n in codes.items() if code.startswith("2"))
            rate = logins / args.secs
            delta = {k: [t1[k][i] - t0.get(k, [0, 0, 0])[i] for i in range(3)] for k in t1}
            hashers = sum(v[0] for k, v in delta.items() if k.startswith("argon2"))
            others = sum(v[0] for k, v in delta.items() if not k.startswith("argon2"))
            oha_cpu = (ch1.children_user - ch0.children_user) + (ch1.children_system - ch0.children_system)
            pg = pg1 - pg0 if args.db == "postgres" else 0.0
            per = lambda s: 1000 * s / max(logins, 1)  # noqa: E731
            raw = (before + after) / 2
            print(f"{args.db} rep {rep}: {rate:.1f} logins/s ({codes}); raw argon2 {before:.1f} / {after:.1f} "
                  f"hashes/s: ratio {rate / raw:.3f}")
            print(f"  CPU ms per login: hashers {per(hashers):.2f}, Bouncer's other threads {per(others):.2f}, "
                  f"PostgreSQL {per(pg):.2f}, oha {per(oha_cpu):.2f}")
            switches = {k: (round(v[1] / max(logins, 1), 1), round(v[2] / max(logins, 1), 1))
                        for k, v in sorted(delta.items()) if v[1] or v[2]}
            print(f"  context switches per login (voluntary, involuntary): {switches}")
    finally:
        server.terminate()
        server.wait()
        if args.db == "postgres":
            subprocess.run(["psql", "-X", "-q", args.pg_url, "-c", "DROP DATABASE IF EXISTS bouncer_login_cpu"])


main()
