"""CPU per channel message through an in-memory a - b - c tree (issue 13's per-frame cost).

    .venv/bin/python -m tools.bench.tree_frames [--instructions] [MODULES] [MEMBERS]

MODULES: `none`, or a comma-separated list (`mqtt,xmpp,pubsub,sip,muc` is the default
configuration's); MEMBERS: IRC members per server (100). Three cores of tests/support_net.py,
linked a - b - c, every member in #bench; one client on a sends 20 PRIVMSGs per read and each
message crosses both links. No sockets, so what it measures is the core's work per message (link
codec, dispatch, fan-out, hooks), without the kernel's; run it a few times and compare the best,
since CPU time on a shared machine follows the others' load. `PROF=file` writes a cProfile of the
measured part.

`--instructions` counts instead what a message costs in machine instructions, under valgrind's
cachegrind (two runs, 20 and 120 batches; the difference over the 2,000 messages between them), with
the hash seed fixed: the same code gives the same count within about 0.5%, whatever else the machine
runs, so two versions can be compared on a busy machine. About a minute per count.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import support_net  # noqa: E402
from support_net import Client, Wire  # noqa: E402


class _Transport(support_net.FakeClientTransport):
    """A client transport that shares runs, as relay.runtime's Connection does, and is drained."""

    congested = False

    def write_shared(self, run):
        self.out.append(run)

    def drain(self):
        if self.out:
            b"".join([p if type(p) is bytes else p.take() for p in self.out])
            self.out.clear()


def main(mods: str = "none", members: int = 100, batches: int = 500) -> float:
    over = {} if mods == "none" else {"modules": {m: {} for m in mods.split(",")}}
    w = Wire(Path(tempfile.mkdtemp()), ["a", "b", "c"], **over)
    w.link("a", "b")
    w.link("c", "b")
    clients = []
    for name in "abc":
        core = w.cores[name]
        for i in range(members):
            c = Client.__new__(Client)
            c.wire, c.core, c.nick, c.t = w, core, f"{name}{i:03d}", _Transport()
            c.session = core.services["irc"].new_client(c.t, None, w.now)
            c.send(f"NICK {c.nick}", f"USER {c.nick} 0 * :{c.nick}", "JOIN #bench")
            c.t.out.clear()
            clients.append(c)
    sender = clients[0].session
    batch = (b"PRIVMSG #bench :" + b"x" * 40 + b"\r\n") * 20

    def run(k: int) -> None:
        for _ in range(k):
            sender.data_received(batch, w.now)
            w.pump()
            for c in clients:
                c.t.drain()

    run(50)
    gc.collect()
    prof = None
    if os.environ.get("PROF"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.process_time()
    run(batches)
    dt = time.process_time() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["PROF"])
    msgs = batches * 20
    print(f"{mods}: {dt / msgs * 1e6:.1f} us per message ({3 * members} members), "
          f"{msgs * (3 * members - 1) / dt / 1e6:.2f}M deliveries per CPU-s")
    return dt / msgs


def instructions(mods: str, members: int) -> float:
    """Machine instructions per message (valgrind cachegrind): see the module's docstring."""
    from .instructions import per_unit
    code = ("import io, contextlib\nfrom tools.bench import tree_frames as tf\n"
            f"with contextlib.redirect_stdout(io.StringIO()): tf.main({mods!r}, {members}, {{n}})")
    per = per_unit(code, 20, 120, 20)
    print(f"{mods}: {per / 1000:.1f}k instructions per message ({3 * members} members)")
    return per


if __name__ == "__main__":
    args = sys.argv[1:]
    count = "--instructions" in args
    args = [a for a in args if a != "--instructions"]
    mods, members = (args[0] if args else "none"), (int(args[1]) if len(args) > 1 else 100)
    (instructions if count else main)(mods, members)
