"""One actor per connection: a reader greenlet, a bounded outbox flushed in batches.

Frames queued during one loop iteration leave in one send. A peer that stops
reading fills its outbox; past `sendq` bytes its protocol handler decides
(IRC: "SendQ exceeded"), so a slow reader never stalls anyone else.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket
import time

import gevent
from gevent import socket

log = logging.getLogger("relay.conn")

READ_SIZE = 65536
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)


class Connection:
    """The runtime's Transport: `write`, `close`, `backlog`."""

    __slots__ = ("rt", "sock", "raw_send", "peer_host", "peer_port", "tls", "proto", "handler", "out", "out_bytes",
                 "sendq", "flush_scheduled", "writer", "closing", "closed", "close_reason", "reader",
                 "bytes_in", "bytes_out", "__weakref__")

    def __init__(self, rt, sock, addr, proto: str, tls: bool, sendq: int):
        self.rt = rt
        self.sock = sock
        # Plain TCP is flushed from a loop callback with a non-blocking send on the OS socket
        # (no greenlet for an idle or fast peer). TLS may need to read to write, so it always
        # goes through a writer greenlet.
        raw = None if tls else getattr(sock, "_sock", None)
        self.raw_send = raw.send if raw is not None and raw.gettimeout() == 0.0 else None
        if isinstance(addr, tuple):
            self.peer_host, self.peer_port = addr[0], addr[1]
            if self.peer_host.startswith("::ffff:"):
                self.peer_host = self.peer_host[7:]
        else:
            self.peer_host, self.peer_port = "localhost", 0
        self.proto, self.tls, self.sendq = proto, tls, sendq
        self.handler = None
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.flush_scheduled = False
        self.writer = None
        self.closing = False
        self.closed = False
        self.close_reason = ""
        self.reader = None
        self.bytes_in = self.bytes_out = 0

    # ---------------------------------------------------------------- Transport
    @property
    def backlog(self) -> int:
        return self.out_bytes

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes > self.sendq:
            self._overflow()
            return
        if self.writer is None and not self.flush_scheduled:
            if self.raw_send is None:
                self.writer = gevent.spawn(self._write_loop)
            else:
                self.flush_scheduled = True
                self.rt.hub.loop.run_callback(self._flush)

    def close(self, reason: str = "") -> None:
        """Flush what is queued, then close (bounded by the runtime's drain deadline)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        if self.writer is None and not self.flush_scheduled:
            if self.raw_send is None:
                self.writer = gevent.spawn(self._write_loop)
            else:
                self._flush()

    def _overflow(self) -> None:
        h = self.handler
        over = getattr(h, "send_queue_full", None)
        log.info("%s %s:%s: send queue over %d bytes", self.proto, self.peer_host, self.peer_port, self.sendq)
        if over is not None:
            over(self.rt.now())
        else:
            self.abort("SendQ exceeded")

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding the outbox."""
        self.out.clear()
        self.out_bytes = 0
        self.closing = True
        self.close_reason = self.close_reason or reason
        self._shutdown()

    # ---------------------------------------------------------------- writing
    def _flush(self) -> None:
        """Try to send everything without blocking; hand the rest to a writer greenlet."""
        self.flush_scheduled = False
        if self.closed:
            return
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            self.out_bytes = 0
            try:
                n = self.raw_send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                if e.errno in _WOULD_BLOCK:
                    n = 0
                else:
                    self._lost(f"Write error: {e.strerror or e}")
                    return
            self.bytes_out += n
            if n < len(data):
                rest = data[n:]
                self.out.insert(0, rest)
                self.out_bytes += len(rest)
                self.writer = gevent.spawn(self._write_loop)
                return
        if self.closing:
            self._shutdown()

    def _write_loop(self) -> None:
        try:
            while self.out and not self.closed:
                data = b"".join(self.out)
                self.out.clear()
                self.out_bytes = 0
                self.sock.sendall(data)
                self.bytes_out += len(data)
        except OSError as e:
            self.writer = None
            self._lost(f"Write error: {e.strerror or e}")
            return
        self.writer = None
        if self.closing:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(_stdsocket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.writer is not None and self.writer is not gevent.getcurrent():
            self.writer.kill(block=False)

    def _lost(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self.closing = True
        self._shutdown()

    # ---------------------------------------------------------------- reading
    def run(self, factory, listener) -> None:
        rt = self.rt
        self.reader = gevent.getcurrent()
        rt.connections.add(self)
        try:
            try:
                self.handler = factory(self, listener, rt.now())
            except Exception:
                log.exception("%s: protocol handler failed to start", self.proto)
                return
            handler = self.handler
            recv = self.sock.recv
            while not self.closing:
                try:
                    data = recv(READ_SIZE)
                except OSError as e:
                    self.close_reason = self.close_reason or f"Read error: {e.strerror or e}"
                    break
                if not data:
                    self.close_reason = self.close_reason or "Connection closed"
                    break
                self.bytes_in += len(data)
                try:
                    handler.data_received(data, rt.now())
                except Exception:
                    # A bug in a protocol handler costs that connection, never the server.
                    log.exception("%s %s: handler raised; closing the connection", self.proto, self.peer_host)
                    self.close_reason = "Internal error"
                    break
                # Let the loop run the flushes this read queued before reading more: a fast
                # sender must not fill everyone's outbox while their bytes wait to be sent.
                gevent.sleep(0)
        finally:
            rt.connections.discard(self)
            if self.handler is not None:
                try:
                    self.handler.connection_lost(self.close_reason or "Connection closed", rt.now())
                except Exception:
                    log.exception("%s: connection_lost raised", self.proto)
            if not self.closing:
                self.closing = True
            if self.writer is None:
                if self.raw_send is None:
                    self._shutdown()
                else:
                    self._flush()


def now() -> float:
    return time.time()


def make_listen_socket(host: str, port: int, backlog: int = 1024):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(backlog)
    s.setblocking(False)
    return s
