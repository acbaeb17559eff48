"""relaynet benchmark: relaynet against ngIRCd and Mosquitto, as ratios measured in the same run.

    tools/bench/run [--quick] [--only irc-fanout,netjoin,...] [--runs 3] [--profile] [--storage postgresql]

Use tools/bench/run (it installs the reference servers and the venv first).
Servers run pinned to CPU 0, this process (the load generator) to CPU 1.
Results: a table on stdout and a dated section appended to tools/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import loadgen as lg
from . import scenarios as sc
from .servers import GEN_CPU, ROOT, SERVER_CPU, mosquitto_version, ngircd_version

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

# name, function, reference, runs (None: --runs), rows
# row: (label, key, target, unit/format); target: (kind, value) with kind ratio>= | ratio<= | abs<= | abs>=
SCENARIOS = [
    ("irc-fanout", sc.irc_fanout, "ngIRCd", None, [
        ("deliveries/s at saturation", "deliveries_per_s", ("ratio>=", 1.0), "int"),
        ("latency p50 at 100 msg/s (ms)", "p50_ms", None, "ms"),
        ("latency p99 at 100 msg/s (ms)", "p99_ms", None, "ms"),
        ("server CPU per delivery (µs)", "server_us_per_delivery", None, "us"),
    ]),
    ("irc-tree", sc.irc_tree, "ngIRCd", None, [
        ("far-server deliveries/s", "far_deliveries_per_s", ("ratio>=", 1.0), "int"),
        ("all-server deliveries/s", "deliveries_per_s", None, "int"),
        ("latency per hop p50 (ms)", "hop_ms", None, "ms"),
        ("latency p50 on a/b/c (ms)", "p50_ms_by_server", None, "list"),
        ("latency p99 on a/b/c (ms)", "p99_ms_by_server", None, "list"),
        ("server CPU per delivery, all servers (µs)", "server_us_per_delivery", None, "us"),
    ]),
    ("netjoin", sc.netjoin, "ngIRCd", None, [
        ("link to convergence (s)", "seconds", ("abs<=", 0.2), "s"),
    ]),
    ("mqtt-fanout-qos0", sc.mqtt_fanout_qos0, "Mosquitto", None, [
        ("deliveries/s at saturation", "deliveries_per_s", ("ratio>=", 1.0), "int"),
        ("latency p50 at 100 msg/s (ms)", "p50_ms", None, "ms"),
        ("latency p99 at 100 msg/s (ms)", "p99_ms", None, "ms"),
    ]),
    ("mqtt-fanout-qos1", sc.mqtt_fanout_qos1, "Mosquitto", None, [
        ("deliveries/s at saturation", "deliveries_per_s", ("ratio>=", 0.5), "int"),
        ("latency p50 at 100 msg/s (ms)", "p50_ms", None, "ms"),
        ("latency p99 at 100 msg/s (ms)", "p99_ms", None, "ms"),
    ]),
    ("mqtt-persistent", sc.mqtt_persistent, "Mosquitto", None, [
        ("deliveries/s at saturation", "deliveries_per_s", None, "int"),
        ("latency p50 at 100 msg/s (ms)", "p50_ms", None, "ms"),
        ("latency p99 at 100 msg/s (ms)", "p99_ms", None, "ms"),
    ]),
    ("mqtt-topics", sc.mqtt_topics, "Mosquitto", None, [
        ("deliveries/s at saturation", "deliveries_per_s", None, "int"),
    ]),
    ("idle", sc.idle, "ngIRCd", None, [
        ("bytes per idle connection", "bytes_per_conn", ("abs<=", 4096), "int"),
        ("handshakes/s", "handshakes_per_s", None, "int"),
        ("handshake p99 (ms)", "handshake_p99_ms", None, "ms"),
    ]),
    ("idle-max", sc.hold, "ngIRCd", 1, [
        ("most registered connections held", "held", ("abs>=", 50_000), "int"),
    ]),
]
ALIASES = {"mqtt-fanout": ["mqtt-fanout-qos0", "mqtt-fanout-qos1"],
           "mqtt": ["mqtt-fanout-qos0", "mqtt-fanout-qos1", "mqtt-persistent", "mqtt-topics"],
           "irc": ["irc-fanout", "irc-tree"], "tree": ["irc-tree"]}


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "nofile": f"{soft}/{hard}",
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def git_commit() -> str:
    def run(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = run("rev-parse", "--short", "HEAD") or "?"
    dirty = [l for l in run("status", "--porcelain").splitlines() if not l[3:].startswith("tools/bench/")]
    return head + (f" (+{len(dirty)} uncommitted changes outside tools/bench)" if dirty else "")


def med(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if isinstance(vals[0], list):
        return [med([v[i] for v in vals if i < len(v)]) for i in range(max(len(v) for v in vals))]
    s = sorted(vals)
    return s[len(s) // 2]


def fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if kind == "list":
        return "/".join(fmt(x, "ms") for x in v)
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if kind == "s":
        return f"{v:.3f}"
    if kind == "us":
        return f"{v:.3f}"
    return f"{v}"


def judge(target, rv, fv):
    """-> (ratio text, target text, verdict)."""
    ratio = rv / fv if isinstance(rv, (int, float)) and isinstance(fv, (int, float)) and fv else None
    rtext = f"{ratio:.2f}x" if ratio is not None else "-"
    if target is None:
        return rtext, "-", ""
    kind, val = target
    if kind == "ratio>=":
        return rtext, f">= {val}x", ("-" if ratio is None else "PASS" if ratio >= val else "FAIL")
    if kind == "abs<=":
        return rtext, f"<= {val:g}", ("-" if rv is None else "PASS" if rv <= val else "FAIL")
    if kind == "abs>=":
        return rtext, f">= {val:,}", ("-" if rv is None else "PASS" if rv >= val else "FAIL")
    return rtext, "?", ""


def render_table(rows: list[list[str]]) -> str:
    head = ["scenario", "metric", "relaynet", "reference", "ratio", "target", "result"]
    allrows = [head] + rows
    w = [max(len(r[i]) for r in allrows) for i in range(len(head))]
    out = [" | ".join(c.ljust(w[i]) for i, c in enumerate(head)),
           "-+-".join("-" * x for x in w)]
    for r in rows:
        out.append(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def markdown_table(rows: list[list[str]]) -> str:
    head = ["scenario", "metric", "relaynet", "reference", "ratio", "target", "result"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: one run, short windows, fewer clients")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " +
                    ", ".join(n for n, *_ in SCENARIOS) + " (aliases: " + ", ".join(ALIASES) + ")")
    ap.add_argument("--runs", type=int, default=None, help="runs per scenario and system (default 3; 1 with --quick)")
    ap.add_argument("--window", type=int, default=None, help="IRC messages in flight per sender (default 256; MQTT uses 128 per publisher)")
    ap.add_argument("--duration", type=float, default=None, help="saturation window in seconds")
    ap.add_argument("--profile", action="store_true",
                    help="also profile relaynet with py-spy during an IRC fan-out at saturation")
    ap.add_argument("--storage", choices=("sqlite", "postgresql"), default="sqlite",
                    help="relaynet's MQTT servers store in SQLite (default) or in a throw-away PostgreSQL "
                         "cluster the bench starts (Debian's postgresql package)")
    ap.add_argument("--no-record", action="store_true", help="do not append to tools/bench/RESULTS.md")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the servers' directories (configs, logs)")
    a = ap.parse_args(argv)

    p = sc.Params.quick_params() if a.quick else sc.Params()
    runs = a.runs or (1 if a.quick else 3)
    if a.window:
        p.window = a.window
    if a.duration:
        p.duration = a.duration
    p.profile = a.profile
    names = [n for n, *_ in SCENARIOS]
    if a.only:
        want = []
        for w in a.only.split(","):
            w = w.strip()
            if not w:
                continue
            if w in ALIASES:
                want += ALIASES[w]
            elif w in names or w == "profile":
                want.append(w)
            else:
                ap.error(f"unknown scenario {w!r} (known: {', '.join(names + list(ALIASES))}, profile)")
        selected = [s for s in SCENARIOS if s[0] in want]
        if want == ["profile"]:
            p.profile = True
    else:
        selected = list(SCENARIOS)
    if a.quick or p.hold_target <= 0:
        selected = [s for s in selected if s[0] != "idle-max"]

    try:
        os.sched_setaffinity(0, {GEN_CPU})
    except OSError as e:
        print(f"warning: cannot pin the load generator to CPU {GEN_CPU}: {e}", file=sys.stderr)
    nofile = lg.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="relaynet-bench-"))
    started = dt.datetime.now(dt.timezone.utc)
    info = machine()
    commit = git_commit()
    print(f"relaynet benchmark {started:%Y-%m-%d %H:%M} UTC, commit {commit}")
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, load average {info['loadavg']}, "
          f"open files limit {info['nofile']}")
    print(f"servers on CPU {SERVER_CPU}, load generator on CPU {GEN_CPU}; runs per system: {runs}; "
          f"{'quick' if a.quick else 'full'} parameters; work dir {tmp}")
    print(f"references: {ngircd_version()}; {mosquitto_version()}")
    if a.storage == "postgresql":
        try:
            cluster = sc.start_pg_cluster()
        except Exception as e:
            print(f"tools/bench/run: --storage postgresql: {e}", file=sys.stderr)
            return 1
        print(f"storage: PostgreSQL {cluster.bindir.parent.name} (throw-away cluster in {cluster.dir}, not pinned)")
    else:
        print("storage: SQLite" + (" (RELAYNET_BENCH_DSN: PostgreSQL)" if os.environ.get("RELAYNET_BENCH_DSN") else ""))

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    results: dict[str, dict[str, list]] = {}
    errors: dict[str, dict[str, str]] = {}
    unavailable: dict[str, str] = {}
    profile_report = None
    t_begin = time.monotonic()
    try:
        mqtt_names = {"mqtt-fanout-qos0", "mqtt-fanout-qos1", "mqtt-topics"}
        if any(s[0] in mqtt_names for s in selected):
            ok, why = sc.mqtt_available()
            if not ok:
                for n in mqtt_names:
                    unavailable[n] = why
                print(f"note: {why}; MQTT scenarios run for Mosquitto only")
        for name, fn, ref, fixed_runs, rows in selected:
            n_runs = fixed_runs or runs
            results[name] = {"relaynet": [], "reference": []}
            errors[name] = {}
            for r in range(n_runs):
                order = ("relaynet", "reference") if r % 2 == 0 else ("reference", "relaynet")
                for system in order:
                    if system == "relaynet" and name in unavailable:
                        continue
                    label = "relaynet" if system == "relaynet" else ref
                    t0 = time.monotonic()
                    print(f"[{time.monotonic() - t_begin:6.0f}s] {name} run {r + 1}/{n_runs} {label} ...",
                          end=" ", flush=True)
                    try:
                        m = fn(system, tmp / f"{name}-{system}-{r}", p)
                    except sc.Unavailable as e:
                        unavailable[name] = str(e)
                        print(f"unavailable: {e}")
                        continue
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:
                        errors[name][system] = f"{type(e).__name__}: {e}"
                        print(f"ERROR {type(e).__name__}: {e}")
                        traceback.print_exc(limit=3)
                        sc.stop_all()
                        continue
                    results[name][system].append(m)
                    print(f"{time.monotonic() - t0:.1f}s  " + _brief(m))
        if p.profile:
            from .profile import profile_fanout
            print(f"[{time.monotonic() - t_begin:6.0f}s] profiling relaynet (py-spy) during IRC fan-out ...",
                  flush=True)
            try:
                profile_report = profile_fanout(tmp / "profile", p)
                print(profile_report["text"])
            except Exception as e:
                profile_report = {"text": f"py-spy profile failed: {type(e).__name__}: {e}"}
                print(profile_report["text"])
                sc.stop_all()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        sc.stop_all()
        return 130
    finally:
        sc.stop_all()
        sc.stop_pg_cluster()
    total = time.monotonic() - t_begin

    # ------------------------------------------------------------------ table
    rows = []
    for name, fn, ref, fixed_runs, spec in selected:
        res = results.get(name, {})
        for label, key, target, kind in spec:
            rv = med([m.get(key) for m in res.get("relaynet", [])])
            fv = med([m.get(key) for m in res.get("reference", [])])
            rtext = fmt(rv, kind)
            if name in unavailable and not res.get("relaynet"):
                rtext = "mqtt: relaynet module not available" if name.startswith("mqtt") else "unavailable"
            elif errors.get(name, {}).get("relaynet") and rv is None:
                rtext = "error"
            ftext = fmt(fv, kind) if not (errors.get(name, {}).get("reference") and fv is None) else "error"
            ratio, ttext, verdict = judge(target, rv, fv)
            if kind == "list":
                ratio = "-"
            rows.append([name, label, rtext, f"{ftext} ({ref})" if ftext not in ("-", "error") else ftext,
                         ratio, ttext, verdict])
    table = render_table(rows)
    print()
    print(table)
    cpu_lines = _cpu_summary(selected, results)
    print()
    print("\n".join(cpu_lines))
    notes = _notes(selected, results, errors, unavailable)
    if notes:
        print()
        print("\n".join(notes))
    print(f"\ntotal {total / 60:.1f} min")
    if not a.no_record:
        _record(started, commit, info, a, runs, p, rows, cpu_lines, notes, results, profile_report, total)
        print(f"results appended to {RESULTS.relative_to(ROOT)}")
    if not a.keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"servers' directories kept in {tmp}")
    return 0


def _brief(m: dict) -> str:
    keys = ["deliveries_per_s", "far_deliveries_per_s", "p50_ms", "p99_ms", "hop_ms", "seconds", "bytes_per_conn",
            "handshakes_per_s", "held", "lost", "gen_cpu", "server_cpu", "server_us_per_delivery"]
    parts = []
    for k in keys:
        if k in m and m[k] is not None:
            v = m[k]
            parts.append(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _cpu_summary(selected, results) -> list[str]:
    lines = ["CPU during the measured windows, medians over runs: load generator (% of core 1; near 100% would "
             "mean it, not the server, set the pace), server (% of core 0, per process), and what other "
             "processes on this shared machine took of core 0 / core 1:"]
    for name, fn, ref, _r, _spec in selected:
        for system in ("relaynet", "reference"):
            ms = results.get(name, {}).get(system, [])
            if not ms:
                continue
            g = med([m.get("gen_cpu") for m in ms])
            gmax = max((m.get("gen_cpu") or 0) for m in ms)
            s = med([m.get("server_cpu") for m in ms])
            label = "relaynet" if system == "relaynet" else ref
            stext = "/".join(f"{x:.0f}" for x in s) if isinstance(s, list) else "-"
            o0 = med([m.get("core0_others") for m in ms])
            o1 = med([m.get("core1_others") for m in ms])
            otext = f"   others {o0:.0f}% / {o1:.0f}%" if o0 is not None and o1 is not None else ""
            lines.append(f"  {name:18s} {label:10s} generator {g:5.1f}% (max {gmax:5.1f}%)   server {stext}%{otext}"
                         if g is not None else f"  {name:18s} {label:10s} -")
    return lines


def _notes(selected, results, errors, unavailable) -> list[str]:
    notes = []
    for name, *_ in selected:
        for system, ms in results.get(name, {}).items():
            lost = sum((m.get("lost") or 0) for m in ms)
            dup = sum((m.get("duplicated") or 0) for m in ms)
            if lost or dup:
                notes.append(f"! {name} {system}: {lost} deliveries lost, {dup} duplicated (not counted as speed)")
            for m in ms:
                if m.get("failures"):
                    notes.append(f"! {name} {system}: {m['failures']} handshakes failed")
                if "held" in m:
                    notes.append(f"  {name} {system}: held {m['held']:,} of {m['attempted']:,} attempted "
                                 f"(registered {m['registered']:,}; server alive: {m['server_alive']}; server "
                                 f"open-files limit {m['server_nofile']}; rss {m['rss_mb']:.0f} MB; "
                                 f"client errors {m['errors']})")
        for system, e in errors.get(name, {}).items():
            notes.append(f"! {name} {system}: {e}")
        if name in unavailable:
            notes.append(f"  {name}: {unavailable[name]}")
    return notes


def _record(started, commit, info, a, runs, p, rows, cpu_lines, notes, results, profile_report, total) -> None:
    new = not RESULTS.exists()
    with RESULTS.open("a") as f:
        if new:
            f.write("# relaynet benchmark results\n\nAppended by `tools/bench/run` (see README.md, "
                    "section Benchmark). Ratios are relaynet / reference measured in the same run; "
                    "each number is the median of the runs.\n")
        f.write(f"\n## {started:%Y-%m-%d %H:%M} UTC, commit {commit}"
                f"{' (quick)' if a.quick else ''}\n\n")
        f.write(f"- machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']} RAM, Linux {info['kernel']}, "
                f"Python {info['python']}, open files {info['nofile']}, load average at start {info['loadavg']}\n")
        f.write(f"- references: {ngircd_version()}; {mosquitto_version()}; relaynet's MQTT storage: {a.storage}\n")
        f.write(f"- servers pinned to CPU {SERVER_CPU} (all of a system's processes, e.g. the 3 of a tree), "
                f"load generator to CPU {GEN_CPU}; {runs} run(s) per system, alternating which goes first; "
                f"closed-loop window {p.window} (IRC) / {p.mqtt_window} (MQTT) messages in flight per sender, counted at the slowest receiver; saturation window {p.duration}s after "
                f"{p.warmup}s warm-up; paced latency at {p.paced_rate:g} msg/s for {p.paced_duration}s; "
                f"total {total / 60:.1f} min\n")
        f.write(f"- command: `tools/bench/run {' '.join(sys.argv[1:])}`\n\n")
        f.write(markdown_table(rows) + "\n\n")
        f.write("```\n" + "\n".join(cpu_lines) + "\n```\n")
        if notes:
            f.write("\nNotes:\n\n" + "\n".join(f"- {n.lstrip('! ').strip()}" for n in notes) + "\n")
        if profile_report:
            f.write("\npy-spy, relaynet during the IRC fan-out at saturation:\n\n```\n"
                    + profile_report["text"] + "\n```\n")
        f.write("\n<details><summary>every run</summary>\n\n```\n")
        for name, by in results.items():
            for system, ms in by.items():
                for i, m in enumerate(ms):
                    f.write(f"{name} {system} run {i + 1}: {json.dumps(_round(m), sort_keys=True)}\n")
        f.write("```\n</details>\n")


def _round(v):
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, list):
        return [_round(x) for x in v]
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


if __name__ == "__main__":
    sys.exit(main())
