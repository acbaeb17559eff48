"""UDP listeners: datagrams with their source address, for a module's datagram protocol (SIP later).

Driven by a read watcher, like the plain TCP acceptor: no greenlet. Each wake-up
reads at most `BATCH` datagrams, so a flood on one socket cannot starve the loop
(the watcher is level-triggered: what is left is read on the next iteration).
Sends are non-blocking; a datagram the kernel cannot take now is dropped and
counted, as UDP may drop it anyway (the protocol retransmits).

The protocol handler is made by `factory(endpoint, listener, now)` and gets
`datagram_received(data, addr, now)`, and `listener_closed(now)` (optional) when the
listener closes; it answers through `endpoint.send_to(data, addr)`.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket

log = logging.getLogger("relay.udp")

_READ = 1
MAX_DATAGRAM = 65535


def make_udp_socket(host: str, port: int) -> _stdsocket.socket:
    family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
    s = _stdsocket.socket(family, _stdsocket.SOCK_DGRAM)
    if family == _stdsocket.AF_INET6:
        s.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.setblocking(False)
    return s


class DatagramEndpoint:
    """One bound UDP socket and its protocol handler."""

    BATCH = 64   # datagrams read per wake-up before others get the loop

    def __init__(self, rt, sock: _stdsocket.socket, proto: str, factory, listener):
        self.rt, self.sock, self.proto = rt, sock, proto
        self.host, self.port = sock.getsockname()[:2]
        self.received = self.sent = self.dropped = 0
        self.closed = False
        self.handler = factory(self, listener, rt.now())
        self.watch = rt.hub.loop.io(sock.fileno(), _READ)
        self.watch.start(self._on_readable)

    def send_to(self, data: bytes, addr) -> bool:
        """Send one datagram without blocking; False if it was dropped."""
        if self.closed:
            return False
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
            return False
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                log.info("%s %s:%s: sendto %s: %s", self.proto, self.host, self.port, addr, e.strerror or e)
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def _on_readable(self) -> None:
        recv = self.sock.recvfrom
        handler = self.handler
        for _ in range(self.BATCH):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # e.g. ECONNREFUSED reported for an earlier send: not this socket's failure.
                log.debug("%s %s:%s: recvfrom: %s", self.proto, self.host, self.port, e.strerror or e)
                continue
            self.received += 1
            if isinstance(addr, tuple) and addr[0].startswith("::ffff:"):
                addr = (addr[0][7:], addr[1])
            try:
                handler.datagram_received(data, addr[:2], self.rt.now())
            except Exception:
                # A bug in a protocol handler costs that datagram, never the listener.
                log.exception("%s: handler raised on a datagram from %s", self.proto, addr)
            if self.closed:
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.watch.stop()
        self.watch.close()
        self.sock.close()
        done = getattr(self.handler, "listener_closed", None)
        if callable(done):
            try:
                done(self.rt.now())
            except Exception:
                log.exception("%s: closed() raised", self.proto)
