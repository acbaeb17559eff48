"""Test support: real server processes on loopback, each in its own tmp dir, and a raw IRC client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tools.relayctl import control_request

ROOT = Path(__file__).resolve().parents[1]
RELAYCTL = str(Path(sys.executable).parent / "relayctl")

# Tests talk a lot; flood control is tested on purpose where it matters.
FAST_SHAPER = {"shapers": {"fast": {"bytes_per_second": 100_000_000, "messages_per_second": 1_000_000,
                                    "burst": 1_000_000}},
               "shaper_rules": [{"fast": "all"}]}


_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw")
_port_base = 12000 + 4000 * (int(_WORKER[2:]) if _WORKER[2:].isdigit() else 4) + (os.getpid() * 7) % 1500
_next_port = iter(range(_port_base, _port_base + 2500))


def free_port() -> int:
    """A free port below the kernel's ephemeral range, from a range of this xdist worker's own:
    the port-0 trick races when parallel tests start many servers."""
    for port in _next_port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in this worker's range")


def relayctl(*args, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([RELAYCTL, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"relayctl {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


class Server:
    """A relaynet server process started with `relayctl start --detach`."""

    def __init__(self, directory: Path, config: dict):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.path = self.dir / "relay.yaml"
        self.path.write_text(yaml.safe_dump(config))

    @property
    def data_dir(self) -> Path:
        return self.dir / self.config.get("data_dir", "data")

    @property
    def irc_port(self) -> int:
        return next(l["port"] for l in self.config["listen"] if l["proto"] == "irc" and not l.get("tls"))

    def ctl(self, *args, check: bool = True, **kw):
        return relayctl(*args[:1], "-c", str(self.path), *args[1:], check=check, **kw)

    def start(self):
        self.ctl("start", "--detach")
        return self

    def call(self, *argv: str) -> dict:
        """An operator command over the control socket, in-process (fast enough to poll)."""
        reply = control_request(str(self.data_dir / "control.sock"), list(argv), timeout=30)
        if not reply.get("ok"):
            raise AssertionError(f"{' '.join(argv)}: {reply.get('text')}")
        return reply["data"]

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json").stdout)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "relay.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        r = self.ctl("stop", check=False)
        if r.returncode != 0 and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return r

    def log(self) -> str:
        p = self.data_dir / "relay.log"
        return p.read_text() if p.exists() else ""


def server_config(**overrides) -> dict:
    cfg = {
        "server": {"id": "001", "name": "test.relay.local", "network": "relaytest"},
        "data_dir": "data",
        "listen": [{"proto": "irc", "host": "127.0.0.1", "port": free_port()}],
        **FAST_SHAPER,
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def process_gone(pid: int) -> bool:
    """True once pid has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][0] in "ZX"
    except FileNotFoundError:
        return True


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class RawClient:
    """A line-level IRC client over a plain socket, for byte-exact checks."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""
        self.lines: list[str] = []

    def send(self, line: str | bytes):
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")

    def read_until(self, pred, timeout: float = 10.0) -> str:
        """Read lines until one satisfies pred (a substring or a callable); returns it."""
        test = pred if callable(pred) else (lambda l: pred in l)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                self.lines.append(line)
                if test(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pred!r}; last lines: {self.lines[-5:]}")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"connection closed; last lines: {self.lines[-5:]}")
            self.buf += data

    def register(self, nick: str, caps: list[str] | None = None) -> "RawClient":
        if caps:
            self.send("CAP LS 302")
            self.send(f"CAP REQ :{' '.join(caps)}")
            self.read_until(" ACK ")
            self.send("CAP END")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick} real")
        self.read_until(" 376 ")
        return self

    def closed(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


def copy_configs(tree: str, dest: Path) -> Path:
    target = dest / tree
    shutil.copytree(ROOT / "configs" / tree, target)
    return target


class TreeNetwork:
    """The servers of configs/<tree>, on free ports in a tmp dir, started with relayctl."""

    def __init__(self, tree: str, dest: Path, extra_listen: tuple[str, ...] = (), **overrides):
        src = ROOT / "configs" / tree
        self.dir = dest / tree
        self.dir.mkdir(parents=True)
        configs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(src.glob("*.yaml"))}
        ports: dict[int, int] = {}

        def remap(port: int) -> int:
            if port not in ports:
                ports[port] = free_port()
            return ports[port]

        self.servers: dict[str, Server] = {}
        for name, cfg in configs.items():
            for l in cfg["listen"]:
                l["port"] = remap(l["port"])
            for b in cfg.get("links", []):
                b["port"] = remap(b["port"])
            for proto in extra_listen:
                cfg["listen"].append({"proto": proto, "host": "127.0.0.1", "port": free_port()})
            cfg.update(FAST_SHAPER)
            for k, v in overrides.items():
                cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
            self.servers[name] = Server(self.dir / name, cfg)

    def __getitem__(self, name: str) -> Server:
        return self.servers[name]

    def start(self, wait: bool = True) -> "TreeNetwork":
        for s in self.servers.values():
            s.start()
        if wait:
            self.wait_linked()
        return self

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()

    def server_count(self, name: str) -> int:
        return len(self.servers[name].call("dump-state")["servers"])

    def wait_linked(self, timeout: float = 30.0) -> None:
        n = len(self.servers)
        wait_for(lambda: all(self.server_count(s) == n for s in self.servers), timeout=timeout,
                 interval=0.1, what=f"all {n} servers linked")

    def digests(self) -> dict[str, str]:
        return {n: s.call("dump-state", "--digest")["digest"] for n, s in self.servers.items()}

    def wait_converged(self, timeout: float = 30.0) -> str:
        def same():
            d = set(self.digests().values())
            return next(iter(d)) if len(d) == 1 else None
        try:
            return wait_for(same, timeout=timeout, interval=0.1, what="equal state digests on every server")
        except AssertionError:
            raise AssertionError("state digests still differ:\n" + self.state_differences()) from None

    def state_differences(self) -> str:
        """What the servers' dump-states disagree on, for a failing test's message."""
        states = {n: s.call("dump-state") for n, s in self.servers.items()}
        names = list(states)
        out = []
        for key in sorted(set().union(*(st.keys() for st in states.values()))):
            vals = {n: json.dumps(states[n].get(key), sort_keys=True, default=str) for n in names}
            if len(set(vals.values())) > 1:
                base = vals[names[0]]
                for n in names:
                    if vals[n] != base or n == names[0]:
                        out.append(f"{n} {key}: {vals[n][:1500]}")
        return "\n".join(out) or "(dump-states equal now)"

    def port(self, name: str, proto: str) -> int:
        return next(l["port"] for l in self.servers[name].config["listen"] if l["proto"] == proto)

    def links(self, name: str) -> dict[str, dict]:
        return {l["name"]: l for l in self.servers[name].call("links")}
