"""Shared runs for channel messages (relay/core/fanout.py): every client's byte stream must be
exactly what one-by-one delivery gives, in the same order, whatever interleaves with the runs."""

from __future__ import annotations

import random

import pytest

from relay.core.config import parse
from relay.core.fanout import SharedRun
from relay.core.server import Core

NOW = 1_000_000.0


class PlainTransport:
    """No write_shared: the core delivers one by one (the reference behaviour)."""

    def __init__(self):
        self.peer_host, self.peer_port, self.tls, self.proto = "127.0.0.1", 0, False, "irc"
        self.out: list = []
        self.sent = bytearray()
        self.closed = False
        self.congested = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def channel_bindings(self) -> dict:
        return {}

    def close(self, reason: str = "") -> None:
        self.closed = True

    def flush(self) -> None:
        for p in self.out:
            self.sent += p if type(p) is bytes else p.take()
        self.out.clear()


class SharingTransport(PlainTransport):
    """write_shared with the runtime Connection's rules: a run is sealed by any other write and by a flush."""

    def __init__(self):
        super().__init__()
        self.tail = None

    def write(self, data: bytes) -> None:
        if self.tail is not None:
            self.tail.sealed = True
            self.tail = None
        self.out.append(data)

    def write_shared(self, run: SharedRun) -> None:
        if self.tail is not None and self.tail is not run:
            self.tail.sealed = True
        self.tail = run
        self.out.append(run)

    def flush(self) -> None:
        self.tail = None
        super().flush()


def network(tmp_path, transport_cls, n: int = 8):
    cfg = parse({"server": {"id": "001", "name": "a.test"}, "data_dir": str(tmp_path), "shapers": {},
                 "shaper_rules": []})
    core = Core(cfg, NOW)
    core.start(NOW)
    clients = []
    for i in range(n):
        t = transport_cls()
        s = core.services["irc"].new_client(t, None, NOW)
        caps = ["", "CAP REQ :server-time\r\n", "CAP REQ :message-tags echo-message\r\n",
                "CAP REQ :labeled-response batch\r\n"][i % 4]
        s.data_received(f"CAP LS 302\r\n{caps}CAP END\r\nNICK n{i}\r\nUSER u 0 * :r\r\n".encode(), NOW)
        clients.append((t, s))
    return core, clients


def script(seed: int, n: int = 8, steps: int = 400) -> list[tuple[int, bytes, bool]]:
    """Random traffic: (client, line, flush after) with messages, DMs, joins, parts, labels, CAP changes."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append((i, b"JOIN #a\r\n", False))
        if i % 2:
            out.append((i, b"JOIN #b\r\n", False))
    for k in range(steps):
        i = rnd.randrange(n)
        r = rnd.random()
        if r < 0.55:
            line = f"PRIVMSG #{rnd.choice('ab')} :m{k}"
        elif r < 0.65:
            line = f"PRIVMSG n{rnd.randrange(n)} :dm{k}"
        elif r < 0.70:
            line = f"NOTICE #a,#b :both{k}"
        elif r < 0.75:
            line = f"PART #{rnd.choice('ab')}"
        elif r < 0.80:
            line = f"JOIN #{rnd.choice('ab')}"
        elif r < 0.85:
            line = f"@label=L{k} PRIVMSG #a :labeled{k}"
        elif r < 0.88:
            line = f"CAP REQ :{rnd.choice(['server-time', '-server-time', 'account-tag', '-message-tags'])}"
        elif r < 0.92:
            line = f"TAGMSG #a"
        else:
            line = f"PRIVMSG #a :x{k}\r\nPRIVMSG #b :y{k}\r\nPRIVMSG #a :z{k}"
        out.append((i, (line + "\r\n").encode(), rnd.random() < 0.2))
    return out


def play(tmp_path, transport_cls, steps) -> list[bytes]:
    core, clients = network(tmp_path, transport_cls)
    for t, _ in clients:
        t.flush()
        t.sent.clear()
    for i, line, flush in steps:
        clients[i][1].data_received(line, NOW)
        if flush:
            for t, _ in clients:
                t.flush()
    for t, _ in clients:
        t.flush()
    return [bytes(t.sent) for t, _ in clients]


@pytest.mark.parametrize("seed", range(6))
def test_shared_runs_give_every_client_the_bytes_of_one_by_one_delivery(tmp_path, seed):
    steps = script(seed)
    reference = play(tmp_path / "plain", PlainTransport, steps)
    shared = play(tmp_path / "shared", SharingTransport, steps)
    assert sum(r.count(b" PRIVMSG #") for r in reference) > 500  # the script really fans out
    for i, (want, got) in enumerate(zip(reference, shared)):
        assert got == want, f"client n{i}: streams differ"


def test_a_run_is_shared_and_the_sender_is_left_out(tmp_path):
    core, clients = network(tmp_path, SharingTransport, n=4)
    for t, s in clients:
        s.data_received(b"JOIN #r\r\n", NOW)
    for t, s in clients:
        t.flush()
    sender = clients[1][1]
    for k in range(5):
        sender.data_received(f"PRIVMSG #r :hello {k}\r\n".encode(), NOW)
    plain, other_plain, tagged = clients[0][0], clients[3][0], clients[2][0]
    runs = [p for p in plain.out if type(p) is SharedRun]
    assert len(runs) == 1 and len(runs[0].parts) == 5   # one run, five lines, no write per message
    assert [p for p in other_plain.out if type(p) is SharedRun] == runs   # the same object: same profile
    tagged_runs = [p for p in tagged.out if type(p) is SharedRun]
    assert len(tagged_runs) == 1 and tagged_runs[0] is not runs[0]   # message-tags: its own bytes
    assert clients[1][0].out == []                      # the sender gets nothing (no echo-message)
    plain.flush()
    assert plain.sent.count(b"PRIVMSG #r :hello") == 5
    assert runs[0].sealed                               # flushed once: nothing more is appended
