"""The runtime Connection's outbox with shared runs, over a real socket pair and the gevent loop."""

from __future__ import annotations

import socket

import gevent

from relay.core.fanout import SharedRun
from relay.runtime.connection import Connection
from runtime_standin import StandInRuntime


class _Handler:
    def __init__(self):
        self.got, self.lost = [], None

    def data_received(self, data, now):
        self.got.append(data)

    def connection_lost(self, reason, now):
        self.lost = reason


def _pair(sendq=1 << 20, rt=None):
    a, b = socket.socketpair()
    a.setblocking(False)
    rt = rt or StandInRuntime()
    c = Connection(rt, a, ("127.0.0.1", 1), "irc", False, sendq)
    h = _Handler()
    c.start(lambda t, lst, now: h, None)
    return rt, c, h, b


def _recv_all(b, n):
    b.settimeout(2)
    data = b""
    while len(data) < n:
        data += b.recv(65536)
    return data


def test_a_run_is_sealed_by_a_later_write_and_sent_in_order():
    rt, c, h, b = _pair()
    run = SharedRun()
    c.write_shared(run)
    run.parts.append(b"one\n")
    c.write(b"two\n")
    assert run.sealed            # a line appended now would overtake "two"
    gevent.sleep(0)              # the loop flushes
    assert _recv_all(b, 8) == b"one\ntwo\n"
    c.abort("done")


def test_a_flush_seals_the_run_and_joins_it_once_for_every_connection():
    rt, c1, _, b1 = _pair()
    _, c2, _, b2 = _pair()
    run = SharedRun()
    for c in (c1, c2):
        c.write_shared(run)
    run.parts += [b"a\n", b"b\n"]
    gevent.sleep(0)
    assert run.sealed and run.data == b"a\nb\n"
    assert _recv_all(b1, 4) == b"a\nb\n" and _recv_all(b2, 4) == b"a\nb\n"
    for c in (c1, c2):
        c.abort("done")


def test_a_second_run_seals_the_first():
    rt, c, h, b = _pair()
    r1, r2 = SharedRun(), SharedRun()
    c.write_shared(r1)
    c.write_shared(r2)
    assert r1.sealed and not r2.sealed
    c.abort("done")


def test_a_peer_that_does_not_read_is_congested_then_dropped_past_its_sendq():
    rt, c, h, b = _pair(sendq=256 * 1024)
    chunk = b"x" * 65536
    for _ in range(64):                  # far more than the socket buffers hold
        c.write(chunk)
        gevent.sleep(0)
        if c.closed:
            break
    assert c.closed and c.close_reason == "SendQ exceeded"
    gevent.sleep(0)
    assert h.lost == "SendQ exceeded"


def test_reading_feeds_the_handler_and_eof_tells_it_once():
    rt, c, h, b = _pair()
    b.sendall(b"hello")
    for _ in range(50):
        gevent.sleep(0.01)
        if h.got:
            break
    assert b"".join(h.got) == b"hello"
    b.close()
    for _ in range(50):
        gevent.sleep(0.01)
        if h.lost:
            break
    assert h.lost == "Connection closed" and c.closed and c not in rt.connections


def test_connections_written_in_one_iteration_share_one_flush_and_a_failing_one_costs_only_itself(monkeypatch):
    rt = StandInRuntime()
    pairs = [_pair(rt=rt) for _ in range(3)]
    conns, peers = [p[1] for p in pairs], [p[3] for p in pairs]
    loop, callbacks = rt.flusher.loop, []

    class _Counting:
        def run_callback(self, fn, *args):
            callbacks.append(fn)
            return loop.run_callback(fn, *args)

    rt.flusher.loop = _Counting()
    flush = Connection._flush

    def failing(self):
        if self is conns[1]:
            raise RuntimeError("a bug in one connection")
        flush(self)

    monkeypatch.setattr(Connection, "_flush", failing)
    for i, c in enumerate(conns):
        c.write(b"line %d\n" % i)
    assert len(callbacks) == 1          # one callback for the three
    gevent.sleep(0)
    assert _recv_all(peers[0], 7) == b"line 0\n" and _recv_all(peers[2], 7) == b"line 2\n"
    assert conns[1].closed and conns[1].close_reason == "Internal error"
    for c in conns:
        c.abort("done")
