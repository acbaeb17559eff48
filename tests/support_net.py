"""Several cores wired together in memory: links and clients without sockets or sleeps."""

from __future__ import annotations

from collections import deque

from relay.core.config import parse
from relay.core.links import LinkSession
from relay.core.server import Core

SECRET = "in-memory-link-secret"


class Pipe:
    """One end of an in-memory connection: what it writes is received by the other end."""

    def __init__(self, net: "Wire", peer_host: str = "127.0.0.1"):
        self.net = net
        self.peer_host, self.peer_port, self.tls, self.proto = peer_host, 0, False, "link"
        self.other: Pipe | None = None
        self.session = None
        self.closed = False
        self.bytes_in = 0

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.net.queue.append((self.other, data))

    def channel_bindings(self) -> dict:
        return {}

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.net.queue.append((self.other, None))


class FakeClientTransport:
    def __init__(self, host: str = "127.0.0.1"):
        self.peer_host, self.peer_port, self.tls, self.proto = host, 0, False, "irc"
        self.out: list[bytes] = []
        self.closed = False
        self.bytes_in = 0

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def channel_bindings(self) -> dict:
        return {}

    def close(self, reason: str = "") -> None:
        self.closed = True

    def lines(self) -> list[str]:
        return b"".join(self.out).decode().splitlines()

    def take(self) -> list[str]:
        l = self.lines()
        self.out.clear()
        return l


class Client:
    def __init__(self, wire: "Wire", core: Core, nick: str):
        self.wire, self.core, self.nick = wire, core, nick
        self.t = FakeClientTransport()
        self.session = core.services["irc"].new_client(self.t, None, wire.now)
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        self.t.out.clear()

    def send(self, *lines: str) -> None:
        self.session.data_received("".join(l + "\r\n" for l in lines).encode(), self.wire.now)
        self.wire.pump()

    @property
    def user(self):
        return self.session.user


class Wire:
    def __init__(self, tmp_path, names: list[str], now: float = 1_000_000.0, **overrides):
        self.now = now
        self.queue: deque = deque()
        self.cores: dict[str, Core] = {}
        for i, n in enumerate(names, 1):
            links = [{"name": f"{m}.test", "id": f"{j:03d}", "port": 7000 + j, "secret": SECRET}
                     for j, m in enumerate(names, 1) if m != n]
            # Only the core modules unless a test asks for more (the built-in default also loads mqtt).
            cfg = parse({"server": {"id": f"{i:03d}", "name": f"{n}.test"}, "data_dir": str(tmp_path / n),
                         "links": links, "shapers": {}, "shaper_rules": [], "modules": {}, **overrides})
            core = Core(cfg, now)
            core.start(now)
            core.links.dial = self._dialer(n)
            self.cores[n] = core

    def _dialer(self, name: str):
        def dial(block, factory, on_fail):
            target = block.name.split(".")[0]
            if target not in self.cores:
                on_fail("connection refused")
                return
            a, b = Pipe(self), Pipe(self)
            a.other, b.other = b, a
            b.session = self.cores[target].links.accept(b, None, self.now)
            a.session = factory(a, None, self.now)
        return dial

    def link(self, a: str, b: str, secret: str | None = None) -> None:
        """`a` dials `b` (with its configured secret unless one is given)."""
        core_a = self.cores[a]
        block = core_a.links.block(f"{b}.test")
        if secret is not None:
            block = block.model_copy(update={"secret": secret})
        pa, pb = Pipe(self), Pipe(self)
        pa.other, pb.other = pb, pa
        pb.session = self.cores[b].links.accept(pb, None, self.now)
        pa.session = LinkSession(core_a.links, pa, "dial", self.now, block)
        self.pump()

    def unlink(self, a: str, b: str) -> None:
        self.cores[a].links.unlink(f"{b}.test", "test unlink", self.now)
        self.pump()

    def pump(self) -> None:
        while self.queue:
            end, data = self.queue.popleft()
            if end.session is None or end.session.closed:
                continue
            if data is None:
                end.session.connection_lost("Connection closed", self.now)
            else:
                end.bytes_in += len(data)
                end.session.data_received(data, self.now)

    def tick(self, dt: float) -> None:
        self.now += dt
        for c in self.cores.values():
            c.tick(self.now)
        self.pump()

    def client(self, core: str, nick: str) -> Client:
        return Client(self, self.cores[core], nick)

    def digests(self) -> set[str]:
        return {c.links.digest() for c in self.cores.values()}

    def frames(self, a: str, b: str, ftype: str) -> int:
        """Frames of `ftype` that `a` sent on its link to `b`."""
        s = next(s for s in self.cores[a].links.peers.values() if s.peer_name == f"{b}.test")
        return s.frames_out.get(ftype, 0)
