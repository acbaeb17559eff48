"""What the runtime spends per connection per loop iteration to send a shared run (issue 13).

    .venv/bin/python -m tools.bench.outbox [CONNECTIONS] [LINES]

On a busy server one read of a server link or a client reaches every local member of a channel,
and each member's connection then costs a write_shared, a flush and a send, whatever the number
of lines in the run. Here, over real socket pairs and the gevent loop: CONNECTIONS connections
(50) each get one run of LINES lines (20) per iteration, flushed by the loop and read by the
peers. Counted in machine instructions (tools/bench/instructions.py), so it can be compared on a
busy machine; the peers' reads are counted too, the same for any version of the runtime.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def main(conns: int = 50, lines: int = 20, iterations: int = 100) -> None:
    import gevent

    from relay.core.fanout import SharedRun
    from relay.runtime.connection import Connection
    from runtime_standin import StandInRuntime

    class Handler:
        def data_received(self, data, now):
            pass

        def connection_lost(self, reason, now):
            pass

    rt = StandInRuntime()
    out, peers = [], []
    for _ in range(conns):
        a, b = socket.socketpair()
        a.setblocking(False)
        c = Connection(rt, a, ("127.0.0.1", 1), "irc", False, 1 << 24)
        c.start(lambda t, listener, now: Handler(), None)
        out.append(c)
        peers.append(b)
    line = b":nick!user@host PRIVMSG #bench :" + b"x" * 40 + b"\r\n"
    for _ in range(iterations):
        run = SharedRun()
        for c in out:
            c.write_shared(run)
        run.parts.extend([line] * lines)
        gevent.sleep(0)                   # the loop flushes every connection
        for b in peers:
            b.recv(65536)


if __name__ == "__main__":
    from .instructions import per_unit
    n, k = (int(sys.argv[1]) if len(sys.argv) > 1 else 50), (int(sys.argv[2]) if len(sys.argv) > 2 else 20)
    per = per_unit(f"from tools.bench import outbox\noutbox.main({n}, {k}, {{n}})", 100, 600, n)
    print(f"{per / 1000:.1f}k instructions per connection per iteration ({n} connections, runs of {k} lines)")
