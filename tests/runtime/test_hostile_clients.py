"""Hostile clients on every listener type: idle, slowloris, half-open, a cut TLS ClientHello,
garbage, and a thousand of them at once. Meanwhile a normal client on another listener is
served within a second, the server stays up, and the server closes every attacker itself
(the test config makes the registration and handshake timeouts short).

A new listener type is one line in TARGETS (and its module's short timeouts in MODULES).
"""

from __future__ import annotations

import itertools
import random
import resource
import select
import socket
import ssl
import time
from dataclasses import dataclass

import pytest

from support import Server, free_port, process_gone, server_config

TIMEOUT = 2        # seconds: registration, connect and handshake timeouts in the test config
CLOSED_WITHIN = 30  # seconds the server may take to close every attacker (timeouts, sweeps, load)
SERVED_WITHIN = 1.0  # the liveness probe's deadline: a normal client must be served in this

_ids = itertools.count()


def _mqtt_connect(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


def _client_hello() -> bytes:
    """The first flight of a real TLS client, made with memory BIOs."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="relay.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


_LINK_BODY = b'["HELLO","009",0,{"version":1,"name":"hostile.relay.local","id":"009"}]'
_WS_UPGRADE = (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")


@dataclass(frozen=True)
class Target:
    """A listener under attack. `opening`: what a real client sends first (attacks cut it);
    a TLS listener's opening is a ClientHello. `module`: the module that serves `proto`.
    `probe`: the normal client served meanwhile."""
    name: str
    proto: str | None  # the listener's proto; None: the control socket
    tls: bool = False
    opening: bytes = b""
    module: str | None = None
    probe: str = "irc"


# Modules the targets need, with their connect timeouts short (mqtt also serves the probe).
MODULES = {"mqtt": {"connect_timeout": TIMEOUT, "sweep_interval": 0.2, "sys_interval": 0, "persist": False},
           "xmpp": {"negotiation_timeout": TIMEOUT, "roster_file": "", "components": {"bot.localhost": "x"}},
           "sip": {"tcp_first_message_timeout": TIMEOUT, "persist": False}}


TARGETS = [
    Target("irc", "irc", opening=b"NICK hostile\r\nUSER h 0 * :h\r\n", probe="mqtt"),
    Target("irc-tls", "irc", tls=True),
    Target("mqtt", "mqtt", opening=_mqtt_connect("hostile"), module="mqtt"),
    Target("mqtt-tls", "mqtt", tls=True, module="mqtt"),
    Target("mqtt-ws", "mqtt-ws", opening=_WS_UPGRADE, module="mqtt"),
    Target("http", "http", opening=b"GET /irc HTTP/1.1\r\nHost: x\r\n"),
    Target("https", "http", tls=True),
    Target("link", "link", opening=len(_LINK_BODY).to_bytes(4, "big") + _LINK_BODY),
    Target("link-tls", "link", tls=True),
    Target("xmpp", "xmpp", opening=b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
           b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", module="xmpp"),
    Target("xmpp-tls", "xmpp", tls=True, module="xmpp"),
    Target("xmpp-component", "xmpp-component", opening=b"<stream:stream to='bot.localhost' "
           b"xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>", module="xmpp"),
    Target("control", None, opening=b'{"argv": ["status"]}\n'),
    Target("sip", "sip", opening=b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKh\r\n", module="sip"),
]


class Battery:
    """The server under attack (one per module: all listeners at once) and its probes."""

    def __init__(self, directory):
        self.ports = {t.name: free_port() for t in TARGETS if t.proto is not None}
        self.irc_port = free_port()   # the plain IRC listener the probes use
        self.mqtt_port = free_port()  # the MQTT listener the probe uses while IRC is attacked
        listen = [{"proto": "irc", "host": "127.0.0.1", "port": self.irc_port},
                  {"proto": "mqtt", "host": "127.0.0.1", "port": self.mqtt_port}]
        listen += [{"proto": t.proto, "host": "127.0.0.1", "port": self.ports[t.name], "tls": t.tls}
                   for t in TARGETS if t.proto is not None]
        cfg = server_config(listen=listen, irc={"registration_timeout": TIMEOUT}, http={"request_timeout": TIMEOUT},
                            limits={"handshake_timeout": TIMEOUT}, linking={"handshake_timeout": TIMEOUT},
                            modules={m: MODULES[m] for m in {"mqtt", *(t.module for t in TARGETS if t.module)}})
        self.server = Server(directory, cfg)
        self.hello = _client_hello()

    def opening(self, t: Target) -> bytes:
        return self.hello if t.tls else t.opening

    def connect(self, t: Target) -> socket.socket:
        if t.proto is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(self.server.data_dir / "control.sock"))  # blocking: waits while the backlog is full
            s.settimeout(10)
        else:
            s = socket.create_connection(("127.0.0.1", self.ports[t.name]), timeout=10)
        return s

    # -------------------------------------------------------------- probes
    def probe(self, t: Target) -> None:
        """A normal client on another listener is served within SERVED_WITHIN seconds."""
        deadline = time.monotonic() + SERVED_WITHIN
        if t.probe == "mqtt":
            with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=SERVED_WITHIN) as s:
                s.sendall(_mqtt_connect(f"probe{next(_ids)}"))
                got = _read_until(s, lambda b: len(b) >= 4, deadline, f"MQTT CONNACK while {t.name} is attacked")
                assert got[:4] == b"\x20\x02\x00\x00", got
                s.sendall(b"\xe0\x00")  # DISCONNECT
            return
        nick = f"probe{next(_ids)}"
        with socket.create_connection(("127.0.0.1", self.irc_port), timeout=SERVED_WITHIN) as s:
            s.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :probe\r\n".encode())
            _read_until(s, lambda b: f" 001 {nick} ".encode() in b, deadline, f"IRC 001 while {t.name} is attacked")
            s.sendall(b"QUIT\r\n")

    def alive(self, t: Target) -> None:
        pid = self.server.pid()
        assert pid is not None and not process_gone(pid), "the server died"
        self.probe(t)


def _read_until(s: socket.socket, done, deadline: float, what: str) -> bytes:
    buf = b""
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not served within {SERVED_WITHIN} s: {what}; got {buf[:200]!r}")
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise AssertionError(f"closed: {what}; got {buf[:200]!r}")
        buf += data
    return buf


def _send(s: socket.socket, data: bytes) -> bool:
    """Send what an attacker sends; False when the server has already closed the connection."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def _closed(s: socket.socket) -> bool:
    """Read what is there without waiting; True once the server has closed the connection."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_all_closed(socks: list[socket.socket], what: str) -> None:
    """Every attacking connection is closed by the server (EOF or reset), within CLOSED_WITHIN."""
    open_ = list(socks)
    deadline = time.monotonic() + CLOSED_WITHIN
    poller = select.poll()
    for s in open_:
        poller.register(s, select.POLLIN)
    while open_:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = {fd for fd, _ in poller.poll(min(left, 1.0) * 1000)}
        still = []
        for s in open_:
            if s.fileno() in ready and _closed(s):
                poller.unregister(s)
            else:
                still.append(s)
        open_ = still
    for s in socks:
        s.close()
    assert not open_, f"{len(open_)} of {len(socks)} {what} connections still open after {CLOSED_WITHIN} s"


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:  # a thousand attackers at once, and their probes
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    b = Battery(tmp_path_factory.mktemp("hostile"))
    b.server.start()
    yield b
    pid = b.server.pid()
    alive = pid is not None and not process_gone(pid)
    b.server.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = b.server.log()
    assert alive, "the server died during the battery"
    assert "Traceback" not in log, log[-4000:]


def _attack(battery: Battery, t: Target, socks: list[socket.socket], what: str) -> None:
    battery.probe(t)
    wait_all_closed(socks, what)
    battery.alive(t)


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_idle_connection(battery, t):
    _attack(battery, t, [battery.connect(t)], "idle")


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_slowloris_is_closed_while_it_trickles(battery, t):
    """One byte a second of a real opening: the server is served meanwhile and closes the trickler
    (its deadline counts from the connection, not from the last byte) before 12 bytes are sent."""
    s = battery.connect(t)
    sent = 0
    for byte in battery.opening(t)[:12]:
        if not _send(s, bytes([byte])):
            break
        sent += 1
        battery.probe(t)
        time.sleep(1)  # the attacker's pace
    else:
        if not _closed(s):
            raise AssertionError(f"a slowloris on {t.name} was still open after {sent} bytes, one a second")
    wait_all_closed([s], "slowloris")
    battery.alive(t)


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_half_open_connections(battery, t):
    bare = battery.connect(t)
    bare.shutdown(socket.SHUT_WR)
    half = battery.connect(t)
    opening = battery.opening(t)
    _send(half, opening[:len(opening) // 2])
    half.shutdown(socket.SHUT_WR)
    _attack(battery, t, [bare, half], "half-open")


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_cut_tls_client_hello(battery, t):
    socks = []
    for n in (5, len(battery.hello) // 2, len(battery.hello) - 1):
        s = battery.connect(t)
        _send(s, battery.hello[:n])
        socks.append(s)
    _attack(battery, t, socks, "cut ClientHello")


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_garbage(battery, t):
    rnd = random.Random(f"garbage-{t.name}")
    noise = battery.connect(t)
    _send(noise, rnd.randbytes(4096))
    long_line = battery.connect(t)
    _send(long_line, b"x" * 100_000 + b"\r\n")
    _attack(battery, t, [noise, long_line], "garbage")


@pytest.mark.parametrize("t", TARGETS, ids=lambda t: t.name)
def test_a_thousand_hostile_connections_at_once(battery, t):
    rnd = random.Random(f"thousand-{t.name}")
    opening = battery.opening(t)
    socks = []
    for i in range(1000):
        s = battery.connect(t)
        kind = i % 5
        if kind == 1:
            _send(s, opening[:1])
        elif kind == 2:
            s.shutdown(socket.SHUT_WR)
        elif kind == 3:
            _send(s, rnd.randbytes(64))
        elif kind == 4:
            _send(s, battery.hello[:len(battery.hello) // 2])
        socks.append(s)
    _attack(battery, t, socks, "mixed")
