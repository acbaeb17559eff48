"""One actor per connection: read events in, a bounded outbox flushed in batches.

Plain TCP connections are driven by the event loop's I/O watchers, without a
greenlet: readable -> one recv -> the protocol handler; everything queued
during one loop iteration leaves in one non-blocking send per connection,
once every ready socket has been read. An idle connection costs no stack.
TLS may need to read to write, so a TLS connection keeps a reader greenlet
and flushes through a writer greenlet; that greenlet first does the TLS
handshake, cooperatively and bounded by a timeout, so a peer that never
finishes one costs only its own greenlet.

A peer that stops reading fills its outbox; past `sendq` bytes its protocol
handler decides (IRC: "SendQ exceeded"), so a slow reader never stalls anyone.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket
import ssl as _ssl
import time

import gevent
from gevent import socket as _gsocket
from gevent.exceptions import ConcurrentObjectUseError

from relay.runtime.tlsutil import tls_handshake

log = logging.getLogger("relay.conn")

READ_SIZE = 65536
_READ, _WRITE = 1, 2
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)
# What a gevent SSLSocket raises when the connection fails, or was closed by the other greenlet
# (ValueError: "Read on closed or unwrapped SSL socket"), or when its read must wait to write
# while the writer greenlet waits to write (a renegotiation; ConcurrentObjectUseError).
_TLS_IO_ERRORS = (OSError, ValueError, ConcurrentObjectUseError)


class Flusher:
    """The connections written to during one loop iteration, flushed by one callback at its end.

    Not a loop callback per connection: on a busy server one read (a batch of channel messages)
    reaches every local member's connection, and a callback each cost more than its send."""

    __slots__ = ("loop", "due", "scheduled")

    def __init__(self, loop):
        self.loop = loop
        self.due: list[Connection] = []
        self.scheduled = False

    def add(self, conn: "Connection") -> None:
        self.due.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self.run)

    def run(self) -> None:
        # Writes made while flushing (a lost peer's quit, told to others) start the next round.
        due, self.due = self.due, []
        self.scheduled = False
        for c in due:
            try:
                c._flush()
            except Exception:      # a bug costs that connection, not the others' flushes
                log.exception("%s %s: flush raised; closing the connection", c.proto, c.peer_host)
                c.close_reason = "Internal error"
                c.abort("Internal error")


class Connection:
    """The runtime's Transport: `write`, `close`, `abort`, `backlog`, `peer_host`."""

    __slots__ = ("rt", "sock", "fd", "watched", "peer_host", "peer_port", "tls", "proto", "handler", "out",
                 "out_bytes", "sendq", "flush_scheduled", "writer", "rwatch", "closing", "closed", "close_reason",
                 "lost_told", "bytes_in", "bytes_out", "tail", "runs", "tls_end_point", "tls_upgrade", "flusher")

    def __init__(self, rt, sock, addr, proto: str, tls: bool, sendq: int):
        self.rt = rt
        flusher = getattr(rt, "flusher", None)
        if flusher is None:                  # a runtime without one (tests' stand-ins) gets one
            flusher = rt.flusher = Flusher(rt.hub.loop)
        self.flusher = flusher
        self.sock = sock
        # `watched`: a non-blocking stdlib socket driven by loop watchers (plain TCP);
        # otherwise a gevent socket with a reader and a writer greenlet (TLS).
        self.watched = not tls
        self.fd = sock.fileno()
        if isinstance(addr, tuple):
            host = addr[0]
            self.peer_host = host[7:] if host.startswith("::ffff:") else host
            self.peer_port = addr[1]
        else:
            self.peer_host, self.peer_port = "localhost", 0
        self.proto, self.tls, self.sendq = proto, tls, sendq
        self.handler = None
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.flush_scheduled = False
        self.writer = None  # the write watcher (watched) or writer greenlet (TLS) while one is busy
        self.rwatch = None
        self.closing = False
        self.closed = False
        self.close_reason = ""
        self.lost_told = False
        self.bytes_in = self.bytes_out = 0
        self.tail = None  # the shared run at the end of the outbox, still open (relay.core.fanout)
        self.runs = 0     # shared runs in the outbox
        self.tls_end_point: bytes | None = None  # RFC 5929 hash of our certificate, set by the TLS listener
        # A plain listener's connection: () -> (server SSLContext, end-point hash), for STARTTLS.
        self.tls_upgrade = None

    # ---------------------------------------------------------------- Transport
    @property
    def backlog(self) -> int:
        return self.out_bytes

    @property
    def congested(self) -> bool:
        """The socket took less than it was given: the rest waits for it to drain."""
        return self.writer is not None

    def channel_bindings(self) -> dict[str, bytes]:
        """SASL -PLUS channel bindings this TLS connection can give (relay.core.sasl)."""
        if not self.tls:
            return {}
        out = {}
        if self.tls_end_point is not None:
            out["tls-server-end-point"] = self.tls_end_point
        try:
            if self.sock.version() == "TLSv1.2":
                unique = self.sock.get_channel_binding("tls-unique")
                if unique:
                    out["tls-unique"] = unique
        except (AttributeError, ValueError, OSError):
            pass
        return out

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if self.tail is not None:  # what follows must not overtake the run's later lines
            self.tail.sealed = True
            self.tail = None
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes > self.sendq:
            self._overflow()
            return
        if not self.flush_scheduled and self.writer is None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """The first write since the last flush: send at the end of this loop iteration."""
        if self.watched:
            self.flush_scheduled = True
            self.flusher.add(self)
        else:
            self.writer = gevent.spawn(self._write_loop)

    def write_shared(self, run) -> None:
        """Queue a run of lines shared with other connections; it may grow until it is sealed."""
        if self.closing:
            return
        t = self.tail
        if t is not None and t is not run:
            t.sealed = True
        self.tail = run
        self.out.append(run)
        self.runs += 1
        if not self.flush_scheduled and self.writer is None:
            self._schedule_flush()

    def _take(self) -> bytes:
        """The outbox as one piece of bytes; shared runs in it are sealed and joined once."""
        out = self.out
        if len(out) == 1:          # the common case on a busy server: one shared run, or one line
            data = out[0]
            if type(data) is not bytes:
                data = data.take()
        elif self.runs:
            data = b"".join([p if type(p) is bytes else p.take() for p in out])
        else:
            data = b"".join(out)
        self.runs = 0
        self.tail = None
        out.clear()
        return data

    def close(self, reason: str = "") -> None:
        """Flush what is queued, then close (bounded by the runtime's drain deadline)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        if self.rwatch is not None:
            self.rwatch.stop()  # nothing more is read from a closing connection
        if self.writer is None and not self.flush_scheduled:
            if self.watched:
                self._flush()
            else:
                self.writer = gevent.spawn(self._write_loop)

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding the outbox."""
        self.out.clear()
        self.runs = 0
        self.tail = None
        self.out_bytes = 0
        self.closing = True
        self.close_reason = self.close_reason or reason
        self._shutdown()

    def _overflow(self) -> None:
        over = getattr(self.handler, "send_queue_full", None)
        log.info("%s %s:%s: send queue over %d bytes", self.proto, self.peer_host, self.peer_port, self.sendq)
        if over is not None:
            over(self.rt.now())
        else:
            self.abort("SendQ exceeded")

    # ---------------------------------------------------------------- watched: reading
    def start(self, factory, listener) -> None:
        """Plain TCP: create the protocol handler and watch the socket; returns at once."""
        rt = self.rt
        rt.connections.add(self)
        try:
            self.handler = factory(self, listener, rt.now())
        except Exception:
            log.exception("%s: protocol handler failed to start", self.proto)
            self.abort("Internal error")
            return
        if not self.closing:
            self.rwatch = rt.hub.loop.io(self.fd, _READ)
            self.rwatch.start(self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(f"Read error: {e.strerror or e}")
            return
        if not data:
            # The peer is gone: what is still queued is sent if it can be, then the socket closes.
            self.close_reason = self.close_reason or "Connection closed"
            self.close(self.close_reason)
            self._tell_lost()
            return
        self.bytes_in += len(data)
        try:
            self.handler.data_received(data, self.rt.now())
        except Exception:
            # A bug in a protocol handler costs that connection, never the server.
            log.exception("%s %s: handler raised; closing the connection", self.proto, self.peer_host)
            self.close_reason = "Internal error"
            self.abort("Internal error")
            return
        # Storage back-pressure: a client is read no more while the write queue is full.
        w = getattr(self.rt, "writer", None)
        if w is not None and self.proto != "link" and w.check_full() and self.rwatch is not None:
            self.rwatch.stop()
            self.rt.pause_reading(self)

    def resume_reading(self) -> None:
        if not self.closing and self.rwatch is not None:
            self.rwatch.start(self._on_readable)

    # ---------------------------------------------------------------- watched: writing
    def _flush(self) -> None:
        """Send everything that can go without blocking; wait for writability for the rest."""
        self.flush_scheduled = False
        if self.closed or self.writer is not None:
            return
        out = self.out
        if out:
            data = self._take()
            self.out_bytes = 0
            n = self._send(data)
            if n < 0:
                return
            if n < len(data):
                rest = data[n:]
                out.append(rest)
                self.out_bytes = len(rest)
                self.writer = self.rt.hub.loop.io(self.fd, _WRITE)
                self.writer.start(self._on_writable)
                return
        if self.closing:
            self._shutdown(graceful=True)

    def _on_writable(self) -> None:
        out = self.out
        if out and not self.closed:
            data = self._take()
            n = self._send(data)
            if n < 0:
                return
            if n < len(data):
                out.append(data[n:])
                self.out_bytes = len(out[0])
                return
            self.out_bytes = 0
        w, self.writer = self.writer, None
        if w is not None:
            w.stop()
            w.close()
        if self.closing:
            self._shutdown(graceful=True)

    def _send(self, data: bytes) -> int:
        """Bytes sent (0 when the socket is full), or -1 when the connection is lost."""
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            if e.errno in _WOULD_BLOCK:
                return 0
            self._lost(f"Write error: {e.strerror or e}")
            return -1
        self.bytes_out += n
        return n

    # ---------------------------------------------------------------- TLS: greenlets
    def run(self, factory, listener, tls_context=None, handshake_timeout: float = 10.0) -> None:
        """TLS: the reader greenlet; returns when the connection ends.

        With `tls_context`, `sock` is the accepted plain socket and the server side of the
        handshake is done here first; a failed one is one info line, and no handler is made."""
        rt = self.rt
        rt.connections.add(self)
        if tls_context is not None and not self._handshake(tls_context, listener, handshake_timeout):
            self._end_reading()
            return
        try:
            self.handler = factory(self, listener, rt.now())
        except Exception:
            log.exception("%s: protocol handler failed to start", self.proto)
            self._end_reading()
            return
        self._read_tls()

    def _read_tls(self) -> None:
        """The TLS reader loop (a TLS listener's or dial's greenlet, or the STARTTLS upgrade's)."""
        rt = self.rt
        try:
            handler = self.handler
            recv = self.sock.recv
            while not self.closing:
                try:
                    data = recv(READ_SIZE)
                except _TLS_IO_ERRORS as e:
                    self.close_reason = self.close_reason or f"Read error: {getattr(e, 'strerror', None) or e}"
                    break
                if not data:
                    self.close_reason = self.close_reason or "Connection closed"
                    break
                self.bytes_in += len(data)
                try:
                    handler.data_received(data, rt.now())
                except Exception:
                    log.exception("%s %s: handler raised; closing the connection", self.proto, self.peer_host)
                    self.close_reason = "Internal error"
                    break
                w = getattr(rt, "writer", None)
                if w is not None and self.proto != "link" and w.check_full():
                    w.wait_drained()   # storage back-pressure, as for plain connections
                # Let the loop send what this read queued before reading more.
                gevent.sleep(0)
        finally:
            self._end_reading()

    def _end_reading(self) -> None:
        self._tell_lost()
        if not self.closing:
            self.closing = True
        if self.writer is None:
            self._shutdown(graceful=True)

    # ---------------------------------------------------------------- STARTTLS
    def start_tls(self, on_done) -> None:
        """Upgrade this plain, watched connection to TLS in place (Transport.start_tls).

        What is queued now (the protocol's "proceed") leaves in plaintext first; nothing more is
        read in plaintext. A greenlet then does the server side of the handshake, bounded by the
        handshake timeout, and becomes the reader, as `run` does for a TLS listener; writes made
        meanwhile wait in the outbox and leave encrypted. `on_done(ok, reason)` is called from
        that greenlet before anything is read over TLS; on failure the connection is closed."""
        if self.tls or not self.watched or self.closing or self.tls_upgrade is None:
            reason = "already TLS" if self.tls else "closing" if self.closing else "TLS is not available here"
            self.rt.hub.loop.run_callback(on_done, False, reason)
            return
        try:
            ctx, end_point = self.tls_upgrade()
        except Exception as e:  # no certificate: refused, the plaintext connection goes on
            log.warning("%s %s: STARTTLS refused: no certificate: %s", self.proto, self.peer_host, e)
            self.rt.hub.loop.run_callback(on_done, False, "TLS is not available here")
            return
        for w in (self.rwatch, self.writer):
            if w is not None:
                w.stop()
                w.close()
        self.rwatch = None
        plain = self._take() if self.out else b""
        self.out_bytes = 0
        self.flush_scheduled = False
        raw = self.sock
        self.sock = _gsocket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        self.watched = False
        # The upgrade greenlet holds the writer's place: writes queue until the handshake is done.
        self.writer = gevent.spawn(self._upgrade, plain, ctx, end_point, on_done)

    def _upgrade(self, plain: bytes, ctx, end_point, on_done) -> None:
        reason = None
        try:
            if plain:
                self.sock.sendall(plain)
                self.bytes_out += len(plain)
            self.sock = ctx.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
            reason = tls_handshake(self.sock, getattr(self.rt, "handshake_timeout", 10.0))
        except _TLS_IO_ERRORS as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        except gevent.GreenletExit:  # aborted (or the server stopped) during the handshake
            self.writer = None
            self._tell_lost()
            raise
        self.writer = None
        if reason is None and not self.closing:
            self.tls, self.tls_end_point = True, end_point
        else:
            reason = reason or "closing"
            log.info("%s %s:%s: STARTTLS handshake failed: %s", self.proto, self.peer_host, self.peer_port, reason)
            self.close_reason = self.close_reason or "TLS handshake failed"
        try:
            on_done(reason is None, reason or "")
        except Exception:
            log.exception("%s: start_tls on_done raised", self.proto)
            self.close_reason = "Internal error"
            reason = reason or "Internal error"
        if reason is not None:
            self.closing = True
            self._shutdown()
            self._tell_lost()
            return
        if self.out and not self.closed:
            self.writer = gevent.spawn(self._write_loop)
        self._read_tls()

    def _handshake(self, ctx, listener, timeout: float) -> bool:
        if self.closing:  # the server stopped before this greenlet ran
            return False
        raw = self.sock
        sock = _gsocket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        self.sock = sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        reason = tls_handshake(sock, timeout)
        if reason is None:
            return True
        if not self.closing:  # not our own shutdown
            where = f" on {listener.host}:{listener.port}" if listener is not None else ""
            log.info("%s %s:%s%s (tls): TLS handshake failed: %s", self.proto, self.peer_host, self.peer_port,
                     where, reason)
        self.close_reason = self.close_reason or "TLS handshake failed"
        return False

    def _write_loop(self) -> None:
        try:
            while self.out and not self.closed:
                data = self._take()
                self.out_bytes = 0
                self.sock.sendall(data)
                self.bytes_out += len(data)
        except _TLS_IO_ERRORS as e:
            self.writer = None
            self._lost(f"Write error: {getattr(e, 'strerror', None) or e}")
            return
        self.writer = None
        if self.closing:
            self._shutdown(graceful=True)

    # ---------------------------------------------------------------- ending
    def _shutdown(self, graceful: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.watched:
            for w in (self.rwatch, self.writer):
                if w is not None:
                    w.stop()
                    w.close()
            self.rwatch = self.writer = None
        elif graceful and self.tls:
            _send_close_notify(self.sock)
        try:
            self.sock.shutdown(_stdsocket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if not self.watched and self.writer is not None and self.writer is not gevent.getcurrent():
            self.writer.kill(block=False)
        if self.watched and not self.lost_told:
            # Told from the loop, never from inside the handler's own call that closed it.
            self.rt.hub.loop.run_callback(self._tell_lost)
        self.rt.connections.discard(self)

    def _tell_lost(self) -> None:
        if self.lost_told:
            return
        self.lost_told = True
        if self.handler is not None:
            try:
                self.handler.connection_lost(self.close_reason or "Connection closed", self.rt.now())
            except Exception:
                log.exception("%s: connection_lost raised", self.proto)

    def _lost(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self.closing = True
        self._shutdown()


def _send_close_notify(sock) -> None:
    """End TLS with our close_notify before TCP's FIN, so the peer can tell a finished stream from a
    cut one. Its close_notify is not waited for (RFC 8446 §6.1): with timeout 0, unwrap sends ours
    and stops at "want read"."""
    try:
        sock.settimeout(0)
        sock.unwrap()
    except (_ssl.SSLError, OSError, ValueError):
        pass


def now() -> float:
    return time.time()


def make_listen_socket(host: str, port: int, backlog: int = 1024) -> _stdsocket.socket:
    family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
    s = _stdsocket.socket(family, _stdsocket.SOCK_STREAM)
    s.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
    if family == _stdsocket.AF_INET6:
        s.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


class Acceptor:
    """A plain TCP listener driven by a read watcher: accepts without a greenlet per client."""

    BATCH = 64  # connections accepted per wake-up before others get the loop

    def __init__(self, rt, sock: _stdsocket.socket, on_accept):
        self.rt, self.sock, self.on_accept = rt, sock, on_accept
        self.watch = rt.hub.loop.io(sock.fileno(), _READ)
        self.watch.start(self._on_readable)

    def _on_readable(self) -> None:
        accept = self.sock.accept
        for _ in range(self.BATCH):
            try:
                s, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # EMFILE/ENFILE: out of descriptors. Say so and pause accepting (the watcher is
                # level-triggered: left on, it would spin); the kernel queues clients meanwhile.
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("accept: %s (open-files limit reached); accepting again in 0.1 s", e.strerror)
                    self.watch.stop()
                    t = self.rt.hub.loop.timer(0.1)
                    t.start(self._resume, t)
                    return
                log.warning("accept: %s", e.strerror or e)
                return
            s.setblocking(False)
            try:
                self.on_accept(s, addr)
            except Exception:
                log.exception("accept handler raised")
                s.close()

    def _resume(self, timer) -> None:
        timer.close()
        if self.watch is not None:
            self.watch.start(self._on_readable)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch.close()
            self.watch = None
            self.sock.close()
