"""500 clients in one channel, over raw sockets: every client receives a message sent to the channel,
and NAMES lists all 500."""

from __future__ import annotations

import selectors
import socket
import time

N = 500
CHANNEL = "#big"


class Fleet:
    """Many raw connections read through one selector; lines are kept per client."""

    def __init__(self, port: int, n: int):
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.bufs: list[bytes] = []
        self.lines: list[list[str]] = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, i)
            self.socks.append(s)
            self.bufs.append(b"")
            self.lines.append([])

    def send(self, i: int, line: str) -> None:
        s = self.socks[i]
        s.setblocking(True)
        s.sendall(line.encode() + b"\r\n")
        s.setblocking(False)

    def pump(self, on_line, done, timeout: float, what: str) -> None:
        """Read from every socket, calling on_line(i, line) for each new line, until done() is true."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            for key, _ in self.sel.select(min(left, 0.5)):
                i = key.data
                try:
                    data = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise AssertionError(f"client {i} was disconnected: {self.lines[i][-5:]}")
                buf = self.bufs[i] + data
                *complete, self.bufs[i] = buf.split(b"\r\n")
                for raw in complete:
                    line = raw.decode()
                    self.lines[i].append(line)
                    on_line(i, line)

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.sel.close()


def test_500_clients_in_one_channel(start_server):
    srv = start_server()
    nicks = [f"big{i}" for i in range(N)]
    fleet = Fleet(srv.port, N)
    try:
        for i, nick in enumerate(nicks):
            fleet.send(i, f"NICK {nick}")
            fleet.send(i, f"USER u{i} 0 * :client {i}")
        registered: set[int] = set()
        fleet.pump(lambda i, line: " 376 " in line and registered.add(i), lambda: len(registered) == N,
                   60, "500 registrations")

        joined: set[int] = set()

        def join_line(i, line):
            if f" 366 {nicks[i]} {CHANNEL} " in line:
                joined.add(i)

        fleet.send(0, f"JOIN {CHANNEL}")  # the creator first
        fleet.pump(join_line, lambda: 0 in joined, 30, "the first JOIN")
        for i in range(1, N):
            fleet.send(i, f"JOIN {CHANNEL}")
        fleet.pump(join_line, lambda: len(joined) == N, 60, "500 JOINs")

        # NAMES lists all 500 (several 353 lines), the creator with @
        listed: list[str] = []
        end = []

        def names_line(i, line):
            if i != 0:
                return
            if f" 353 {nicks[0]} = {CHANNEL} :" in line:
                assert len(line) + 2 <= 512
                listed.extend(line.split(" :", 1)[1].split())
            elif f" 366 {nicks[0]} {CHANNEL} " in line:
                end.append(line)

        fleet.send(0, f"NAMES {CHANNEL}")
        fleet.pump(names_line, lambda: bool(end), 30, "NAMES")
        assert len(listed) == N and len(set(listed)) == N
        assert set(listed) == {"@" + nicks[0], *nicks[1:]}

        # one message to the channel reaches the 499 others; one from the last reaches the first
        want = f"PRIVMSG {CHANNEL} :hello all 500"
        got: dict[int, str] = {}
        back = []

        def message_line(i, line):
            if want in line:
                got[i] = line
            elif "PRIVMSG" in line and "and back" in line and i == 0:
                back.append(line)

        fleet.send(0, f"PRIVMSG {CHANNEL} :hello all 500")
        fleet.send(N - 1, f"PRIVMSG {CHANNEL} :and back")
        fleet.pump(message_line, lambda: len(got) == N - 1 and bool(back), 30,
                   "the channel message at every client")
        assert 0 not in got  # no echo without echo-message
        assert set(got.values()) == {f":big0!~u0@127.0.0.1 {want}"}  # the same bytes for everyone
    finally:
        fleet.close()
    srv.close_clients()
