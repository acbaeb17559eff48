"""relaynet on SQLite against relaynet on PostgreSQL, interleaved (issue 14: within 10%).

    .venv/bin/python -m tools.bench.storage [--only mqtt-persistent,mqtt-fanout-qos1,irc-fanout]
        [--rounds 3] [--quick] [--profile DIR]

relaynet only (no reference servers). Each round runs every scenario once per backend, the order
alternating (SQLite first, then PostgreSQL first...) because the machine is shared. PostgreSQL is a
throw-away cluster (tests/pgsupport.py), a fresh database per server, not pinned. Prints the raw
figures of every run, the ratio per round and the ratio of the medians, and what a delivery costs
in CPU (relaynet's process and, on PostgreSQL, the cluster's processes, over the saturation window):
on a shared machine the throughput follows the other users' load, the CPU per delivery much less.
`--profile DIR`: py-spy records each relaynet server (every thread, idle samples left out) into
DIR/<scenario>-<backend>-<round>.txt (collapsed stacks).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import scenarios as sc
from .servers import GEN_CPU, Relaynet

SCENARIOS = {
    "mqtt-persistent": (sc.mqtt_persistent, "deliveries_per_s"),
    "mqtt-fanout-qos1": (sc.mqtt_fanout_qos1, "deliveries_per_s"),
    "mqtt-fanout-qos0": (sc.mqtt_fanout_qos0, "deliveries_per_s"),
    "irc-fanout": (sc.irc_fanout, "deliveries_per_s"),
}


class _Spy:
    """py-spy on every relaynet server a scenario starts, stopped (and written) when it stops."""

    def __init__(self, out: Path):
        self.out, self.procs, self.label = out, {}, ""
        from .profile import py_spy
        self.exe = py_spy()
        if self.exe is None:
            raise SystemExit("--profile: py-spy is not installed in .venv")
        self._start, self._stop = sc._start, sc.stop
        sc._start, sc.stop = self.start, self.stop

    def start(self, server):
        server = self._start(server)
        if isinstance(server, Relaynet) and server.pids():
            f = self.out / f"{self.label}.txt"
            self.procs[id(server)] = subprocess.Popen(
                ["taskset", "-c", str(GEN_CPU), self.exe, "record", "--pid", str(server.pids()[0]), "--rate", "100",
                 "--nonblocking", "--threads", "--format", "raw", "-o", str(f)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return server

    def stop(self, *servers):
        for s in servers:
            p = self.procs.pop(id(s), None)
            if p is not None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        self._stop(*servers)


def _with_database_procs(cluster) -> None:
    """relaynet's `procs()` (whose CPU the load generator measures) plus the PostgreSQL cluster's processes."""
    import psutil
    own = Relaynet.procs

    def procs(self):
        out = own(self)
        if sc.PG_CLUSTER is not None:
            try:
                pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
                out += [psutil.Process(pid)] + psutil.Process(pid).children()
            except (OSError, ValueError, psutil.Error):
                pass
        return out
    Relaynet.procs = procs


def _cpu(m: dict) -> tuple[float, float, float]:
    """relaynet's CPU %, the database's CPU %, and CPU us per delivery (both together)."""
    cpu = m.get("server_cpu") or [0.0]
    own, db = cpu[0], sum(cpu[1:])
    rate = m.get("deliveries_per_s") or 0
    return own, db, ((own + db) / 100 / rate * 1e6) if rate else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.storage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="mqtt-persistent,mqtt-fanout-qos1,irc-fanout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", type=Path, default=None)
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r} (known: {', '.join(SCENARIOS)})")
    p = sc.Params.quick_params() if a.quick else sc.Params()
    try:
        os.sched_setaffinity(0, {GEN_CPU})
    except OSError as e:
        print(f"warning: cannot pin the load generator: {e}", file=sys.stderr)
    spy = None
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
        spy = _Spy(a.profile)
    tmp = Path(tempfile.mkdtemp(prefix="rn-st-"))   # short: control sockets live below it
    cluster = sc.start_pg_cluster()
    _with_database_procs(cluster)
    print(f"PostgreSQL {cluster.bindir.parent.name}; load average {os.getloadavg()[0]:.1f}; work dir {tmp}")
    res: dict[str, dict[str, list]] = {n: {"sqlite": [], "postgresql": []} for n in names}
    try:
        for r in range(a.rounds):
            for n in names:
                fn, key = SCENARIOS[n]
                order = ("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite")
                for backend in order:
                    sc.PG_CLUSTER = cluster if backend == "postgresql" else None
                    label = f"{n}-{backend}-{r}"
                    if spy:
                        spy.label = label
                    t0 = time.monotonic()
                    m = fn("relaynet", tmp / f"{names.index(n)}{backend[0]}{r}", p)
                    res[n][backend].append(m)
                    own, db, per = _cpu(m)
                    print(f"{time.strftime('%H:%M:%S')} {label}: {m[key]:,.0f}/s  CPU relaynet {own:.0f}% "
                          f"database {db:.0f}%, {per:.3g} us/delivery  "
                          f"others core0/1 {m.get('core0_others')}/{m.get('core1_others')}  lost {m.get('lost')}  "
                          f"load {os.getloadavg()[0]:.1f}  ({time.monotonic() - t0:.0f}s)", flush=True)
    finally:
        sc.PG_CLUSTER = cluster
        sc.stop_all()
        sc.stop_pg_cluster()
    print()
    print("| scenario | SQLite /s (runs) | PostgreSQL /s (runs) | ratio per round | ratio of medians | "
          "CPU us/delivery SQLite / PostgreSQL (medians) |")
    print("|---|---|---|---|---|---|")
    for n in names:
        key = SCENARIOS[n][1]
        s = [m[key] for m in res[n]["sqlite"]]
        g = [m[key] for m in res[n]["postgresql"]]
        per = " / ".join(f"{b / a_:.2f}" for a_, b in zip(s, g))
        ms, mg = sorted(s)[len(s) // 2], sorted(g)[len(g) // 2]
        cs = sorted(_cpu(m)[2] for m in res[n]["sqlite"])[len(s) // 2]
        cg = sorted(_cpu(m)[2] for m in res[n]["postgresql"])[len(g) // 2]
        print(f"| {n} | {', '.join(f'{x:,.0f}' for x in s)} | {', '.join(f'{x:,.0f}' for x in g)} | {per} | "
              f"{mg / ms:.2f} | {cs:.3g} / {cg:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
