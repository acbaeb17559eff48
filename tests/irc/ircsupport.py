"""Helpers for the IRC scenario tests: a server process, a raw line client and a jaraco `irc` client.

Nothing here sleeps a fixed time: every wait polls with a deadline for the line it expects,
and "nothing else arrived" is checked with a PING/PONG round trip (the server answers in order).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import socket
import time
from dataclasses import dataclass, field

import irc.client
import irc.events
from support import Server, server_config

OPER_NAME = "oper"
OPER_PASSWORD = "operpass"
SERVER_NAME = "test.relay.local"

_counter = itertools.count(1)


def uniq(prefix: str = "u", maxlen: int = 9) -> str:
    """A nick (or channel suffix) unique within this test process; at most `maxlen` characters."""
    n = f"{next(_counter):x}"
    return prefix[: maxlen - len(n)] + n


def chan(prefix: str = "c") -> str:
    return "#" + uniq(prefix, 20)


# ---------------------------------------------------------------------- parsing (independent of the server's codec)

@dataclass
class Msg:
    raw: str
    tags: dict = field(default_factory=dict)
    source: str | None = None
    command: str = ""
    params: list = field(default_factory=list)

    @property
    def nick(self) -> str | None:
        return self.source.split("!")[0] if self.source else None

    def __repr__(self) -> str:
        return f"<Msg {self.raw!r}>"


def _unescape(v: str) -> str:
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            out.append({":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}.get(v[i + 1], v[i + 1]))
            i += 2
            continue
        if c != "\\":
            out.append(c)
        i += 1
    return "".join(out)


def parse(line: str) -> Msg:
    m = Msg(raw=line)
    rest = line
    if rest.startswith("@"):
        tagstr, rest = rest[1:].split(" ", 1)
        for item in tagstr.split(";"):
            k, _, v = item.partition("=")
            m.tags[k] = _unescape(v)
    if rest.startswith(":"):
        m.source, rest = rest[1:].split(" ", 1)
    if " :" in rest:
        rest, trailing = rest.split(" :", 1)
        words = rest.split()
        words.append(trailing)
    elif rest.startswith(":"):
        words = [rest[1:]]
    else:
        words = rest.split()
    m.command, m.params = words[0].upper(), words[1:]
    return m


# ---------------------------------------------------------------------- raw client

class Closed(Exception):
    pass


class RawIrc:
    """A line-level client over a plain socket, for byte-exact checks, bad input and IRCv3 capabilities."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""
        self.pending: list[Msg] = []   # received, not consumed yet
        self.seen: list[Msg] = []      # everything received
        self.nick: str | None = None
        self.eof = False
        self._sync = itertools.count(1)

    # ------------------------------------------------------------ sending
    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # ------------------------------------------------------------ receiving
    def _fill(self, deadline: float) -> bool:
        """Read once (until the deadline); False on timeout. Raises Closed at EOF."""
        if self.eof:
            raise Closed(f"connection closed; last lines: {[m.raw for m in self.seen[-8:]]}")
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            self._split()
            raise Closed(f"connection closed; last lines: {[m.raw for m in self.seen[-8:]]}")
        self.buf += data
        self._split()
        return True

    def _split(self) -> None:
        while b"\n" in self.buf:
            raw, self.buf = self.buf.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                continue
            m = parse(line)
            self.seen.append(m)
            self.pending.append(m)

    def expect(self, pred, timeout: float = 10.0) -> Msg:
        """Consume messages until one matches pred: a command/numeric string, or a callable on Msg."""
        test = _predicate(pred)
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                m = self.pending.pop(0)
                if test(m):
                    return m
            if not self._fill(deadline) and time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {pred!r}; last lines: "
                                     f"{[m.raw for m in self.seen[-10:]]}")

    def collect(self, pred, timeout: float = 10.0) -> list[Msg]:
        """Consume messages up to and including the first that matches pred; return them all."""
        test = _predicate(pred)
        out: list[Msg] = []
        self.expect(lambda m: out.append(m) or test(m), timeout)
        return out

    def sync(self, timeout: float = 10.0) -> list[Msg]:
        """PING round trip: everything the server sent before its PONG (PONG excluded)."""
        token = f"sync{next(self._sync)}"
        self.send(f"PING {token}")
        got = self.collect(lambda m: m.command == "PONG" and m.params[-1:] == [token], timeout)
        return got[:-1]

    def closed(self, timeout: float = 10.0) -> bool:
        """Wait for the server to close the connection (reading whatever comes first)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._fill(deadline)
        except Closed:
            return True
        return False

    # ------------------------------------------------------------ registration
    def register(self, nick: str, caps: list[str] | tuple = (), user: str | None = None,
                 realname: str = "Real Name", wait: bool = True) -> "RawIrc":
        if caps:
            self.send("CAP LS 302")
            self.send(f"CAP REQ :{' '.join(caps)}")
            ack = self.expect(lambda m: m.command == "CAP" and m.params[1] in ("ACK", "NAK"))
            assert ack.params[1] == "ACK", ack
        self.send(f"NICK {nick}")
        self.send(f"USER {user or nick} 0 * :{realname}")
        if caps:
            self.send("CAP END")
        self.nick = nick
        if wait:
            self.expect(lambda m: m.command in ("376", "422"))  # end of MOTD, or no MOTD
            self.sync()
        return self

    def join(self, channel: str) -> list[Msg]:
        self.send(f"JOIN {channel}")
        return self.collect(lambda m: m.command == "366" and m.params[1].lower() == channel.lower())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _predicate(pred):
    if callable(pred):
        return pred
    return lambda m: m.command == pred


def sasl_plain_payload(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


# ---------------------------------------------------------------------- jaraco irc client

_CODES = {name: code for code, name in irc.events.numeric.items()}


def code_of(ev) -> str:
    """The numeric of a jaraco event ('401'), or its type for non-numerics ('pubmsg')."""
    return _CODES.get(ev.type, ev.type)


class JIrc:
    """jaraco `irc` ServerConnection with its own Reactor; events are collected and waited for."""

    def __init__(self, port: int, nick: str, username: str | None = None, ircname: str | None = None,
                 password: str | None = None, sasl_login: str | None = None, wait: bool = True):
        self.reactor = irc.client.Reactor()
        self.events: list = []
        self.pending: list = []
        self.reactor.add_global_handler("all_events", self._on, -10)
        self.conn = self.reactor.server().connect("127.0.0.1", port, nick, password=password,
                                                  username=username, ircname=ircname, sasl_login=sasl_login)
        self.nick = nick
        self._sync = itertools.count(1)
        if wait:
            self.expect("welcome")
            self.expect(lambda ev: code_of(ev) in ("376", "422"))

    def _on(self, conn, ev) -> None:
        if ev.type == "all_raw_messages":
            return
        self.events.append(ev)
        self.pending.append(ev)

    def expect(self, pred, timeout: float = 10.0):
        """Consume events until one matches: an event type ('pubmsg'), a numeric ('401'), or a callable."""
        if callable(pred):
            test = pred
        else:
            test = lambda ev: ev.type == pred or code_of(ev) == pred  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                ev = self.pending.pop(0)
                if test(ev):
                    return ev
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {pred!r}; last events: "
                                     f"{[(e.type, e.target, e.arguments) for e in self.events[-10:]]}")
            self.reactor.process_once(0.05)

    def collect(self, pred, timeout: float = 10.0) -> list:
        out: list = []
        test = pred if callable(pred) else (lambda ev: ev.type == pred or code_of(ev) == pred)
        self.expect(lambda ev: out.append(ev) or test(ev), timeout)
        return out

    def sync(self, timeout: float = 10.0) -> list:
        """PING round trip; the events that arrived before the PONG."""
        token = f"jsync{next(self._sync)}"
        self.conn.ping(token)
        got = self.collect(lambda ev: ev.type == "pong" and ev.arguments[-1:] == [token], timeout)
        return got[:-1]

    def wait_disconnect(self, timeout: float = 10.0):
        return self.expect("disconnect", timeout)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


# ---------------------------------------------------------------------- server

class IrcServer:
    """A relaynet server process for one test module, plus the clients its tests open."""

    def __init__(self, directory, oper_hash: str, **overrides):
        irc_section = {"opers": [{"name": OPER_NAME, "password": oper_hash, "rule": "oper"}],
                       **overrides.pop("irc", {})}
        cfg = server_config(irc=irc_section, **overrides)
        cfg["server"]["name"] = SERVER_NAME
        self.srv = Server(directory, cfg)
        self.accounts: set[str] = set()
        self.clients: list = []

    @property
    def port(self) -> int:
        return self.srv.irc_port

    def start(self) -> "IrcServer":
        self.srv.start()
        return self

    def stop(self) -> None:
        self.close_clients()
        self.srv.stop()

    def log(self) -> str:
        return self.srv.log()

    def alive(self) -> bool:
        pid = self.srv.pid()
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def account(self, name: str, password: str) -> str:
        if name not in self.accounts:
            self.srv.ctl("register", name, password)
            self.accounts.add(name)
        return name

    # clients, closed by the per-test fixture
    def raw(self, nick: str | None = None, caps=(), **kw) -> RawIrc:
        c = RawIrc(self.port)
        self.clients.append(c)
        if nick:
            c.register(nick, caps, **kw)
        return c

    def jaraco(self, nick: str, **kw) -> JIrc:
        c = JIrc(self.port, nick, **kw)
        self.clients.append(c)
        return c

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def numerics(msgs) -> list[str]:
    return [m.command for m in msgs]


TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
