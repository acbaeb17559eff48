"""What one write of a persistent-session MQTT flush costs on each backend, in CPU.

    .venv/bin/python -m tools.bench.storage_flush [--rounds 8] [--sessions 100] [--per 50]

The writes of the `mqtt-persistent` bench scenario without the broker: each flush stores `per`
QoS 1 messages for each of `sessions` persistent sessions (message by message, as a fan-out
enqueues them) and deletes the ones the flush before stored (their PUBACKs). Measured per write:
the writer thread's CPU (the driver, pgbatch, holding the GIL the event loop needs), the database
server's CPU (PostgreSQL's backend process; SQLite runs in the writer thread) and the wall time of
`Database.execute`. CPU time, unlike the bench's throughput, hardly depends on what else the
machine runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bridges.mqtt import store as ms
from relay.core.storage import Op

from .servers import ROOT

DELETE = "DELETE FROM mqtt_messages WHERE server = ? AND client_id = ? AND seq = ?"


def _flush_ops(sessions: int, per: int, base: int) -> tuple[list[Op], list[Op]]:
    ins = [Op(ms._MESSAGE, ("001", f"sub{c:04d}", seq, 1, seq % 65535 + 1, "bench/fanout", b"x" * 16, 1, 0,
                            None, None, None))
           for seq in range(base, base + per) for c in range(sessions)]
    return ins, [Op(DELETE, o.args[:3]) for o in ins]


def measure(db, backend_pid: int | None, rounds: int, sessions: int, per: int) -> dict:
    db.migrate(ms.SCHEMA)
    db.execute([Op(ms._SESSION, ("001", f"sub{c:04d}", 4, None, 0, None)) for c in range(sessions)])
    backend = psutil.Process(backend_pid) if backend_pid else None
    wall = own = other = 0.0
    acks: list[Op] = []
    for r in range(rounds + 1):
        ins, dels = _flush_ops(sessions, per, r * per)
        b0 = sum(backend.cpu_times()[:2]) if backend else 0.0
        t0, c0 = time.perf_counter(), time.thread_time()
        db.execute(ins + acks)
        t1, c1 = time.perf_counter(), time.thread_time()
        b1 = sum(backend.cpu_times()[:2]) if backend else 0.0
        acks = dels
        if r:                   # the first flush has no deletes
            wall, own, other = wall + t1 - t0, own + c1 - c0, other + b1 - b0
    n = rounds * 2 * sessions * per
    return {"wall_us": wall / n * 1e6, "writer_cpu_us": own / n * 1e6, "database_cpu_us": other / n * 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.storage_flush", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--per", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3, help="measurements per backend, alternated")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from pgsupport import PgCluster

    from relay.storage.postgresql import PostgresDatabase
    from relay.storage.sqlite import SqliteDatabase
    cluster = PgCluster().start()
    out: dict[str, list[dict]] = {"sqlite": [], "postgresql": []}
    try:
        with tempfile.TemporaryDirectory() as d:
            for i in range(a.repeat):
                for backend in ("sqlite", "postgresql") if i % 2 == 0 else ("postgresql", "sqlite"):
                    if backend == "sqlite":
                        db, pid = SqliteDatabase(str(Path(d) / f"{i}.db")), None
                    else:
                        db = PostgresDatabase(cluster.new_database(), pool_size=1)
                        conn = db._acquire()
                        pid = conn.info.backend_pid
                        db._release(conn)
                    try:
                        m = measure(db, pid, a.rounds, a.sessions, a.per)
                    finally:
                        db.close()
                    out[backend].append(m)
                    print(f"{backend:10s} per write: wall {m['wall_us']:5.1f} us, "
                          f"writer CPU {m['writer_cpu_us']:4.1f} us, "
                          f"database CPU {m['database_cpu_us']:4.1f} us", flush=True)
    finally:
        cluster.stop()
    for backend, ms_ in out.items():
        med = {k: sorted(m[k] for m in ms_)[len(ms_) // 2] for k in ms_[0]}
        print(f"median {backend:10s}: wall {med['wall_us']:.1f} us, writer CPU {med['writer_cpu_us']:.1f} us, "
              f"database CPU {med['database_cpu_us']:.1f} us per write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
