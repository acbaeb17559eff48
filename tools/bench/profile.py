"""py-spy on relaynet during the IRC fan-out at saturation: where the server's time goes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import loadgen as lg
from . import scenarios as sc
from .servers import GEN_CPU, Relaynet


def py_spy() -> str | None:
    p = Path(sys.executable).parent / "py-spy"
    return str(p) if p.exists() else shutil.which("py-spy")


def profile_fanout(tmp: Path, p: sc.Params, seconds: float = 10.0) -> dict:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy into .venv)")
    tmp.mkdir(parents=True, exist_ok=True)
    srv = sc._start(Relaynet(tmp / "relaynet", Relaynet.config_for("profile.relay.bench", "001")))
    conns = []
    try:
        conns, st = lg.irc_connect(sc.HOST, srv.port(), [f"f{i:03d}" for i in range(p.fanout_clients)])
        lg.irc_command_all(conns, lambda c: b"JOIN #bench\r\n", b" 366 ")
        lg.drain(conns)
        pid = srv.pids()[0]
        raw, svg = tmp / "relaynet-fanout.txt", Path("/tmp/relaynet-fanout-profile.svg")
        base = ["taskset", "-c", str(GEN_CPU), exe, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                "--duration", str(int(seconds))]
        spies = [subprocess.Popen(base + ["--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE),
                 subprocess.Popen(base + ["--format", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)]
        time.sleep(0.5)
        res = lg.irc_flood(conns, conns[:p.fanout_senders], conns[-1], "#bench", window=p.window, warmup=0.5,
                           duration=seconds, server_procs=srv.procs())
        for s in spies:
            try:
                s.wait(30)
            except subprocess.TimeoutExpired:
                s.kill()
        if not raw.exists():
            err = spies[0].stderr.read().decode(errors="replace")[-500:]
            raise RuntimeError(f"py-spy wrote no profile: {err}")
        text = summarize(raw.read_text(), res)
        shutil.copy(raw, "/tmp/relaynet-fanout-profile.txt")
        text += f"\n(flame graph: {svg}; collapsed stacks: /tmp/relaynet-fanout-profile.txt)"
        return {"text": text}
    finally:
        lg.close_all(conns)
        sc.stop(srv)


def summarize(raw: str, res: dict, top: int = 18) -> str:
    own: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        try:
            n = int(n)
        except ValueError:
            continue
        frames = stack.split(";")
        # py-spy raw: "process;thread;frame;frame..." frames are "func (file:line)"
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        total += n
        own[_short(frames[-1])] += n
        for f in set(_short(f) for f in frames):
            incl[f] += n
    out = [f"{total} samples; fan-out at saturation: {res['deliveries_per_s']:,.0f} deliveries/s, "
           f"server CPU {res['server_cpu']}%",
           "", "self time (where the CPU is spent):"]
    for f, n in own.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    out += ["", "inclusive time (function and what it calls):"]
    for f, n in incl.most_common(top + 10):
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    return "\n".join(out)


def _short(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)' with the package-relative path kept short."""
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    path = loc.rsplit(":", 1)[0]
    for marker in ("/work/main/", "site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"
