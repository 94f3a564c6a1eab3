#!/usr/bin/env python3
"""The table of ratios and targets, from one run's raw files:
  OUT/bouncer.json        Bouncer's own workloads (workloads.py)
  OUT/peers/runs.jsonl    the side-by-side run of bench-peer (W1, W2 with a, a_pg, hello, sqlx),
  OUT/peers/argon2.json   and its raw argon2 rates
Prints it and writes RESULTS/<stamp>.md and RESULTS/<stamp>.json (+ RESULTS/LATEST.md when not
in smoke mode). Python 3.10+ standard library only.
Usage: report.py --out RESULTS/<stamp> --stamp STAMP --results RESULTS [--peer-note ..] [--pg-note ..]"""
import argparse, json, statistics
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--stamp", required=True)
ap.add_argument("--results", required=True)
ap.add_argument("--peer-note", default="")
ap.add_argument("--pg-note", default="")
ap.add_argument("--smoke", default="0")
args = ap.parse_args()
OUT, RESULTS = Path(args.out), Path(args.results)
SMOKE = args.smoke == "1"
DBNAME = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def load_json(p, default=None):
    p = Path(p)
    return json.loads(p.read_text()) if p.exists() else default


bouncer = load_json(OUT / "bouncer.json", {"dbs": {}, "broken": ["bouncer.json missing"], "settings": {}})
peer_rows = []
if (OUT / "peers" / "runs.jsonl").exists():
    peer_rows = [json.loads(l) for l in open(OUT / "peers" / "runs.jsonl") if l.strip()]
argon2 = load_json(OUT / "peers" / "argon2.json", [])


def peer(server, get):
    """median over the peer run's rounds, or None"""
    vals = [get(r) for r in peer_rows if r["server"] == server]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def path(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


GET_RPS = lambda r: r["get"]["ok_per_s"]  # noqa: E731
GET_CPU = lambda r: r["get"]["server_cpu_ms_per_ok"]  # noqa: E731
LOGINS = lambda r: r.get("login", {}).get("ok_per_s")  # noqa: E731
rust2 = [x["hashes_per_s"] for x in argon2 if x["impl"] == "rust" and x["threads"] == 2]
rust2 = statistics.median(rust2) if rust2 else None

rows = []  # the targets table
mib = lambda kb: "?" if kb is None else f"{kb / 1024:.1f}"  # noqa: E731


def raw_note(rates):
    """The raw rates W2's parts were compared with."""
    if not rates:
        return ""
    return "raw hashes/s around the parts: " + " / ".join("-" if r is None else f"{r:g}" for r in rates)


def row(work, db, what, value, ref_label, ref, target, op, unit="×", kind="ratio", note=""):
    """kind 'ratio': value/ref compared with target; kind 'value': value compared with target."""
    if kind == "ratio":
        measured = value / ref if value is not None and ref else None
    else:
        measured = value
    if measured is None:
        result = "n/a"
    elif target is None:
        result = "info"
    else:
        result = "PASS" if (measured >= target if op == ">=" else measured <= target) else "FAIL"
    rows.append(dict(workload=work, db=db, what=what, value=value, reference=ref_label, reference_value=ref,
                     measured=measured, target=target, op=op, unit=unit, kind=kind, result=result, note=note))


peer_skip = f"peers not run: {args.peer_note}" if args.peer_note else ""
for db, srv, peer_a, want_a in (("sqlite", "bouncer", "a", 30), ("postgres", "bouncer_pg", "a_pg", 20)):
    name = DBNAME[db]
    if db not in bouncer["dbs"] and not any(r["server"] == srv for r in peer_rows):
        continue
    b_rps = peer(srv, GET_RPS)
    note = peer_skip or ("" if b_rps is not None else f"{srv} missing from the peer run")
    row("W1 GET /api/v2/me/ c=32", name, "GET ok/s", b_rps, f"peer {peer_a}", peer(peer_a, GET_RPS), want_a, ">=", note=note)
    row("W1 GET /api/v2/me/ c=32", name, "GET ok/s", b_rps, "hello (axum, no DB)", peer("hello", GET_RPS), 0.40, ">=", note=note)
    row("W1 CPU per request", name, "server CPU ms/req", peer(srv, GET_CPU), f"peer {peer_a}", peer(peer_a, GET_CPU),
        None, "<=", note=note)
    row("W1 CPU per request", name, "server CPU ms/req", peer(srv, GET_CPU), "hello", peer("hello", GET_CPU),
        None, "<=", note=note)
    row("W2 POST /api/login/ c=4 (peer run)", name, "logins/s", peer(srv, LOGINS),
        "raw Rust argon2, 2 threads, at the run's start", rust2, None, ">=",
        note=note or "minutes apart: the target row below compares parts with the raw rate right around each")
    row("W2 POST /api/login/ c=4 (peer run)", name, "logins/s", peer(srv, LOGINS), f"peer {peer_a}",
        peer(peer_a, LOGINS), None, ">=", note=note)
    if db == "sqlite":
        row("W2 ceiling: hello's logins (peer run)", "none", "logins/s", peer("hello", LOGINS),
            "raw Rust argon2, 2 threads, at the run's start", rust2, None, ">=", note=note)

    d = bouncer["dbs"].get(db, {})
    err = lambda ph: path(d, ph, "error") or ("" if ph in d else "not run")  # noqa: E731
    w1 = path(d, "base", "w1", "ok_per_s")
    row("W2 POST /api/login/ c=4", name, "logins/s", path(d, "base", "w2", "ok_per_s"),
        "raw Rust argon2, 2 threads, right before and after each part", path(d, "base", "w2", "raw_argon2_around"),
        0.90, ">=", note=err("base") or raw_note(path(d, "base", "w2", "raw_argon2_rates")))
    row("W3 mixed: GET c=32 + logins c=4", name, "GET p99 ms", path(d, "base", "w3_get", "p99_ms"), "", None,
        20, "<=", unit=" ms", kind="value", note=err("base"))
    row("W3 mixed: GET c=32 + logins c=4", name, "GET ok/s", path(d, "base", "w3_get", "ok_per_s"),
        "W1 alone (same server)", w1, 0.30, ">=", note=err("base"))
    row("W3 mixed: GET c=32 + logins c=4", name, "logins/s", path(d, "base", "w3_login", "ok_per_s"),
        "W2 alone (same server)", path(d, "base", "w2", "ok_per_s"), None, ">=", note=err("base"))
    n_large, n_small = path(d, "scale", "sessions"), path(d, "base", "sessions")
    row("W4 scale", name, f"GET ok/s, {n_large or '?'} sessions", path(d, "scale", "w1", "ok_per_s"),
        f"{n_small or '?'} sessions", w1, 0.80, ">=", note=err("scale") or err("base"))
    hwm = path(d, "rss", "vmhwm_kb")
    row("RSS under W1", name, f"VmHWM MiB, {path(d, 'rss', 'sessions') or '?'} sessions",
        hwm / 1024 if hwm else None, "", None, 32, "<=", unit=" MiB", kind="value",
        note=err("rss") or (f"VmHWM when ready (before any load): {mib(path(d, 'rss', 'vmhwm_at_start_kb'))} MiB; "
                            f"peak VmRSS sampled during W1: {mib(path(d, 'rss', 'w1', 'peak_sampled_rss_kb'))} MiB"))
    sw = d.get("sweep", {})
    swnote = err("sweep") or (f"{sw.get('ended_timeout_reached')}/{sw.get('expired_seeded')} ended as timeout_reached, "
                              f"{sw.get('left_live')} left live; sweep done {sw.get('sweep_done_s')} s after start, "
                              f"load from {sw.get('load_started_s')} s")
    row("Sweeper: W1 during the sweep", name, "GET p99 ms", path(sw, "w1", "p99_ms"), "", None, 20, "<=",
        unit=" ms", kind="value", note=swnote)


def f(v, unit=""):
    if v is None:
        return "—"
    if unit == "×":
        return f"{v:.2f}×"
    if isinstance(v, float) and abs(v) >= 100:
        return f"{v:.0f}{unit}"
    return f"{v:.3g}{unit}" if isinstance(v, float) else f"{v}{unit}"


def targets_table():
    out = ["| workload | DB | Bouncer | value | reference | ref. value | ratio / measured | target | result | note |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = "—" if r["target"] is None else f"{'≥' if r['op'] == '>=' else '≤'} {r['target']:g}{r['unit']}"
        out.append(f"| {r['workload']} | {r['db']} | {r['what']} | {f(r['value'])} | {r['reference'] or '—'} "
                   f"| {f(r['reference_value'])} | **{f(r['measured'], r['unit'])}** | {tgt} | {r['result']} | {r['note']} |")
    return out


def loads_table():
    out = ["| DB | phase | load | sessions stored | ok/s | p50 ms | p99 ms | non-2xx | server CPU ms/req | peak RSS MiB | foreign CPU s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = [("base", "w1", "W1 GET"), ("base", "w2", "W2 logins"), ("base", "w3_get", "W3 GET (+logins)"),
             ("base", "w3_login", "W3 logins (+GET)"), ("scale", "w1", "W1 GET (W4)"), ("rss", "w1", "W1 GET"),
             ("sweep", "w1", "W1 GET during sweep")]
    for db, d in bouncer["dbs"].items():
        for ph, key, label in names:
            r = path(d, ph, key)
            if not r:
                continue
            rss = r.get("peak_sampled_rss_kb")
            out.append(f"| {DBNAME[db]} | {ph} | {label} | {d[ph].get('sessions')} | {r['ok_per_s']:.0f} | {f(r['p50_ms'])} "
                       f"| {f(r['p99_ms'])} | {r['non2xx']} | {r['server_cpu_ms_per_req']:.3f} "
                       f"| {f(rss / 1024) if rss else '—'} | {r['foreign_cpu_s']:.1f} |")
    return out


def peers_table():
    out = ["| server | rounds | GET ok/s | GET p99 ms | GET server CPU ms/req | peak RSS MiB | logins/s | login p99 ms |",
           "|---|---|---|---|---|---|---|---|"]
    for s in dict.fromkeys(r["server"] for r in peer_rows):
        n = sum(1 for r in peer_rows if r["server"] == s)
        out.append(f"| {s} | {n} | {f(peer(s, GET_RPS))} | {f(peer(s, lambda r: r['get']['p99_ms']))} "
                   f"| {f(peer(s, GET_CPU))} | {f(peer(s, lambda r: r['get']['peak_sampled_rss_kB'] / 1024))} "
                   f"| {f(peer(s, LOGINS))} | {f(peer(s, lambda r: r.get('login', {}).get('p99_ms')))} |")
    return out


st = bouncer.get("settings", {})
counts = {k: sum(1 for r in rows if r["result"] == k) for k in ("PASS", "FAIL", "n/a")}
lines = [f"# Bouncer benchmark {args.stamp}{' (SMOKE: short loads, small seeds; the numbers mean little)' if SMOKE else ''}",
         "",
         f"Targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['n/a']} n/a. "
         f"Ratios are Bouncer / reference, measured in this run; 2 cores shared by the server, "
         f"PostgreSQL and oha. bench/README.md explains each row.", ""]
if args.peer_note:
    lines += [f"Peer rows skipped: {args.peer_note}.", ""]
if args.pg_note:
    lines += [f"PostgreSQL rows skipped: {args.pg_note}.", ""]
if bouncer.get("broken"):
    lines += ["BROKEN: " + "; ".join(bouncer["broken"]), ""]
lines += targets_table() + ["", "## Bouncer's own loads", ""] + loads_table()
lines += ["", f"Settings: GET {st.get('get_secs')} s, logins {st.get('login_secs')} s, mixed {st.get('mixed_secs')} s, "
          f"sweep {st.get('sweep_secs')} s, warm-up {st.get('warmup')} s; GET c={st.get('get_c')}, logins c={st.get('login_c')}; "
          f"{st.get('seed_users')} seeded users, {st.get('active_pct')}% of seeded sessions live."]
pg = bouncer["dbs"].get("postgres", {})
if pg and not pg.get("db_cpu_counted"):
    lines += ["Server CPU on PostgreSQL is Bouncer's process only (the PostgreSQL backends are not visible from here)."]
if peer_rows:
    lines += ["", "## Peer run (bench-peer, medians over its rounds)", ""] + peers_table()
    if rust2:
        lines += ["", f"Raw Rust argon2id m=19456 t=2 p=1, 2 threads: {rust2:.1f} hashes/s."]
text = "\n".join(lines) + "\n"
print(text)
RESULTS.mkdir(parents=True, exist_ok=True)
(RESULTS / f"{args.stamp}.md").write_text(text)
(RESULTS / f"{args.stamp}.json").write_text(json.dumps(
    {"stamp": args.stamp, "smoke": SMOKE, "targets": rows, "bouncer": bouncer,
     "peers": {"runs": peer_rows, "argon2": argon2, "note": args.peer_note}, "pg_note": args.pg_note}, indent=1))
if not SMOKE:
    (RESULTS / "LATEST.md").write_text(text)
print(f"written: {RESULTS / (args.stamp + '.md')}, {RESULTS / (args.stamp + '.json')}"
      + ("" if SMOKE else f", {RESULTS / 'LATEST.md'}"))
