"""The servers under test: relaynet (via relayctl), ngIRCd and Mosquitto (Debian packages).

Every server process is pinned to SERVER_CPU with taskset (all threads), the
benchmark process (the load generator) to GEN_CPU. Each server gets its own
directory under the run's tmp dir, free loopback ports and a generated config.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from tools.relayctl import control_request

ROOT = Path(__file__).resolve().parents[2]
RELAYCTL = str(Path(sys.executable).parent / "relayctl")
SERVER_CPU = 0
GEN_CPU = 1

# Flood control relaxed, as the benchmark issue asks (the shaper still runs, it just never bites).
BENCH_SHAPER = {"shapers": {"bench": {"bytes_per_second": 1_000_000_000, "messages_per_second": 1_000_000_000,
                                      "burst": 1_000_000_000}},
                "shaper_rules": [{"bench": "all"}]}

_used_ports: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in _used_ports:
            _used_ports.add(p)
            return p


def pin(pid: int, cpu: int = SERVER_CPU) -> None:
    subprocess.run(["taskset", "-a", "-cp", str(cpu), str(pid)], capture_output=True)


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


class ServerBase:
    kind = "?"
    name = "?"

    def pids(self) -> list[int]:
        raise NotImplementedError

    def procs(self) -> list[psutil.Process]:
        return [psutil.Process(p) for p in self.pids()]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.procs())

    def alive(self) -> bool:
        try:
            return all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in self.procs())
        except psutil.NoSuchProcess:
            return False


class ForegroundServer(ServerBase):
    """A reference server run as one foreground child, pinned, logging to a file in its dir.

    Subclasses set `log_name`, `listen_port` (in __init__) and `argv()`, and may check their
    configuration in `before_start()`.
    """

    log_name = "server.log"
    proc: subprocess.Popen | None = None
    logf = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def before_start(self) -> None:
        pass

    def start(self):
        self.before_start()
        self.logf = open(self.dir / self.log_name, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), *self.argv()],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.listen_port, proc=self.proc)
        pin(self.proc.pid)
        return self

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.logf:
            self.logf.close()

    def log_tail(self, n: int = 20) -> str:
        p = self.dir / self.log_name
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


# ====================================================================== relaynet
class Relaynet(ServerBase):
    kind = "relaynet"

    def __init__(self, directory: Path, config: dict):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.name = config["server"]["name"]
        self.path = self.dir / "relay.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self._pid: int | None = None

    @staticmethod
    def config_for(name: str, sid: str, irc_port: int | None = None, **extra) -> dict:
        cfg = {
            "server": {"id": sid, "name": name, "network": "bench"},
            "data_dir": "data",
            "listen": [{"proto": "irc", "host": "127.0.0.1", "port": irc_port or free_port()}],
            "limits": {"max_connections": 1_000_000},
            # Only what a scenario asks for (the built-in default also loads mqtt): IRC scenarios measure IRC.
            "modules": {},
            **BENCH_SHAPER,
        }
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            elif isinstance(v, list) and k == "listen":
                cfg["listen"] = cfg["listen"] + v
            else:
                cfg[k] = v
        return cfg

    @property
    def data_dir(self) -> Path:
        return self.dir / self.config.get("data_dir", "data")

    def port(self, proto: str = "irc") -> int:
        return next(l["port"] for l in self.config["listen"] if l["proto"] == proto and not l.get("tls"))

    def start(self) -> "Relaynet":
        r = subprocess.run(["taskset", "-c", str(SERVER_CPU), RELAYCTL, "start", "-c", str(self.path), "--detach"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"relayctl start ({self.name}) exited {r.returncode}: {r.stdout}{r.stderr}")
        self._pid = int((self.data_dir / "relay.pid").read_text())
        pin(self._pid)
        return self

    def pids(self) -> list[int]:
        return [self._pid] if self._pid else []

    def call(self, *argv: str, timeout: float = 60.0) -> dict:
        """An operator command over the control socket (JSON lines), in-process."""
        reply = control_request(str(self.data_dir / "control.sock"), list(argv), timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"{' '.join(argv)}: {reply.get('text')}")
        return reply.get("data")

    def stop(self) -> None:
        pid = self._pid
        if pid is None:
            return
        try:
            subprocess.run([RELAYCTL, "stop", "-c", str(self.path)], capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        _reap(pid)
        self._pid = None

    def log_tail(self, n: int = 20) -> str:
        p = self.data_dir / "relay.log"
        return "\n".join(p.read_text().splitlines()[-n:]) if p.exists() else ""


def _reap(pid: int, grace: float = 10.0) -> None:
    """Wait for pid to exit; SIGKILL it after the grace period."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def relaynet_tree3(dest: Path, **overrides) -> list[Relaynet]:
    """configs/tree-3 (a -- b -- c) on free ports, the way tests/support.py TreeNetwork does it."""
    src = ROOT / "configs" / "tree-3"
    ports: dict[int, int] = {}

    def remap(p: int) -> int:
        if p not in ports:
            ports[p] = free_port()
        return ports[p]

    servers = []
    for path in sorted(src.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        for l in cfg["listen"]:
            l["port"] = remap(l["port"])
        for b in cfg.get("links", []):
            b["port"] = remap(b["port"])
        # no TLS listener: not measured, and it would cost a certificate per start
        cfg["listen"] = [l for l in cfg["listen"] if not l.get("tls")]
        cfg.update(BENCH_SHAPER)
        cfg["limits"] = {**cfg.get("limits", {}), "max_connections": 1_000_000}
        for k, v in overrides.items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
        servers.append(Relaynet(dest / path.stem, cfg))
    return servers


# ====================================================================== ngIRCd
NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
NG_PASSWORD = "benchlink"
NG_OPER = ("bench", "benchoper")


class Ngircd(ForegroundServer):
    """One ngIRCd in the foreground (-n), config generated in its own dir.

    Flood control, relaxed as far as ngIRCd allows:
      [Limits] MaxPenaltyTime = 0    every penalty ("Conn_SetPenalty") adds 0 seconds;
      [Options] DefaultUserModes = F every client gets user mode F ("relaxed flood protection"):
                                     never throttled (no 1-second pause after 3 commands or
                                     more than 256 bytes/s), and 10 instead of 3 commands are
                                     handled per connection and main-loop pass;
      [Limits] MaxConnectionsIP = 0, MaxConnections = 0, MaxJoins = 0: no limits.
    What remains is the per-pass command cap (10 per client per loop, more for servers).
    """

    kind = "ngircd"
    log_name = "ngircd.log"

    def __init__(self, directory: Path, name: str, port: int | None = None, links: list[dict] | None = None,
                 extra_limits: dict | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o777)  # ngIRCd drops root for nobody and writes its pid file here
        self.name = name
        self.irc_port = self.listen_port = port or free_port()
        self.links = links or []
        self.conf = self.dir / "ngircd.conf"
        inc = self.dir / "conf.d"
        inc.mkdir(exist_ok=True)
        limits = {"MaxConnections": 0, "MaxConnectionsIP": 0, "MaxJoins": 0, "MaxPenaltyTime": 0,
                  "PingTimeout": 120, "PongTimeout": 60, "ConnectRetry": 1, **(extra_limits or {})}
        lines = ["[Global]", f"\tName = {name}", "\tInfo = relaynet benchmark reference",
                 "\tAdminInfo1 = bench", "\tAdminInfo2 = bench", "\tAdminEMail = root@localhost",
                 "\tListen = 127.0.0.1", f"\tPorts = {self.irc_port}", f"\tPidFile = {self.dir / 'ngircd.pid'}",
                 '\tMotdPhrase = "Welcome to the benchmark."',
                 "[Limits]"] + [f"\t{k} = {v}" for k, v in limits.items()] + [
                 "[Options]", "\tDNS = no", "\tIdent = no", "\tPAM = no", "\tDefaultUserModes = F",
                 f"\tIncludeDir = {inc}", "\tOperCanUseMode = yes",
                 "[Operator]", f"\tName = {NG_OPER[0]}", f"\tPassword = {NG_OPER[1]}"]
        for l in self.links:
            lines += ["[Server]", f"\tName = {l['name']}", "\tHost = 127.0.0.1",
                      f"\tMyPassword = {NG_PASSWORD}", f"\tPeerPassword = {NG_PASSWORD}"]
            if l.get("port"):
                lines.append(f"\tPort = {l['port']}")
            if l.get("passive"):
                lines.append("\tPassive = yes")
        self.conf.write_text("\n".join(lines) + "\n")

    def before_start(self) -> None:
        r = subprocess.run([NGIRCD, "--configtest", "-f", str(self.conf)], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ngircd --configtest failed for {self.conf}:\n{r.stdout[-2000:]}{r.stderr}")

    def argv(self) -> list[str]:
        return [NGIRCD, "-n", "-f", str(self.conf)]

    def port(self, proto: str = "irc") -> int:
        return self.irc_port


def ngircd_version() -> str:
    try:
        r = subprocess.run([NGIRCD, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "ngIRCd (version unknown)"


# ====================================================================== Mosquitto
class Mosquitto(ForegroundServer):
    """Debian's mosquitto on a free loopback port, anonymous, no persistence, default limits but one.

    max_queued_messages is raised from 1000 to 10000: with the default, Mosquitto 2.0.11 started
    dropping QoS 1 messages to subscribers ("Outgoing messages are being dropped") with as few as
    ~250 messages outstanding per subscriber, so a QoS 1 run measured its drop policy, not its
    speed (drops are never counted as deliveries either way).
    """

    kind = "mosquitto"
    log_name = "mosquitto.log"

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o777)
        self.name = "mosquitto"
        self.mqtt_port = self.listen_port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"listener {self.mqtt_port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",  # says when messages are dropped
            "max_queued_messages 10000",
            "",
        ]))

    def argv(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf)]

    def port(self, proto: str = "mqtt") -> int:
        return self.mqtt_port


def mosquitto_version() -> str:
    try:
        r = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return "mosquitto (version unknown)"
