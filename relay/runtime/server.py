"""The daemon: listeners, connection actors, the timer loop, the control socket.

This package is the only gevent code. The core is synchronous; everything
here calls into it with `now` and never holds it across a yield.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import socket as _stdsocket
import ssl
import struct
import sys
import time
from pathlib import Path

import gevent
import gevent.event
from gevent import socket
from gevent.server import StreamServer

from relay import __version__
from relay.core.admin import AdminError
from relay.core.builtin_admin import AdminContext
from relay.core.config import Config, ConfigError
from relay.core.sasl import server_end_point
from relay.core.server import Core
from relay.core.storage import Storage, StorageError, WriteQueue
from relay.proto.control import ControlCodec, ControlError
from relay.runtime.connection import Acceptor, Connection, Flusher, make_listen_socket
from relay.runtime.http import HttpServer
from relay.runtime.udp import DatagramEndpoint, make_udp_socket
from relay.runtime.logs import set_level, setup_logging
from relay.runtime.storage_writer import StorageWriter
from relay.runtime.tlsutil import (client_context, ensure_certificate, link_client_context, server_context,
                                   tls_handshake)

log = logging.getLogger("relay.runtime")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StartupError(Exception):
    """The server cannot start; `status` is the exit status (2: configuration)."""

    def __init__(self, text: str, status: int = 1):
        super().__init__(text)
        self.status = status


class Dial:
    """An outbound connection in progress or made; `cancel` stops it or closes it (module unload)."""

    __slots__ = ("rt", "host", "port", "proto", "greenlet", "conn", "cancelled", "_done")

    def __init__(self, rt, host: str, port: int, proto: str):
        self.rt, self.host, self.port, self.proto = rt, host, port, proto
        self.greenlet = None
        self.conn: Connection | None = None
        self.cancelled = False
        self._done = False

    @property
    def done(self) -> bool:
        """Failed, cancelled, or connected and since closed."""
        return self._done or self.cancelled or (self.conn is not None and self.conn.closed)

    @done.setter
    def done(self, value: bool) -> None:
        self._done = value

    def cancel(self, reason: str = "Cancelled") -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.conn is not None:
            self.conn.close(reason)


class Runtime:
    def __init__(self, config: Config, config_path: str | None = None, foreground: bool = True):
        self.config = config
        self.config_path = config_path
        self.foreground = foreground
        self.hub = gevent.get_hub()
        self.flusher = Flusher(self.hub.loop)   # every connection written to, flushed once per loop iteration
        self.connections: set[Connection] = set()
        self.servers: dict[int, tuple[Acceptor, dict]] = {}  # listen index -> (server, info)
        self.control: StreamServer | None = None
        self.stopped = gevent.event.Event()
        self._timer_wake = gevent.event.Event()
        self._timer_loop = None
        self.core: Core | None = None
        self.db = None
        self.writer: StorageWriter | None = None
        self.paused: set[Connection] = set()   # client connections not read while storage catches up
        self.stopping = False
        self.logging = False  # relay.log is set up (a start refused before that only prints)

    @staticmethod
    def now() -> float:
        return time.time()

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        cfg = self.config
        data = cfg.data_path
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
        # Before logging is set up: a refused second start must not write into the running one's log.
        self._refuse_if_running()
        setup_logging(cfg, data, self.foreground)
        self.logging = True
        now = self.now()
        from relay.storage import open_database
        try:
            self.db = open_database(cfg)
            storage = Storage(self.db, WriteQueue(cfg.storage.queue_limit), cfg.server.id)
            self.writer = StorageWriter(self.db, storage.queue, cfg.storage.flush_interval)
            self.writer.on_drained = self._resume_readers
            self.writer.start()
            storage.backup, storage.export = self._backup, self._export
            storage.reader = self.writer.read
            self.core = core = Core(cfg, now, storage=storage, clock=self.now)
        except StorageError as e:
            raise StartupError(str(e), 1) from None
        log.info("storage: %s (%s)", cfg.storage.backend, self.db.where)
        core.runtime_info = self.info
        core.shutdown_requested = lambda reason: gevent.spawn(self.shutdown, reason)
        core.set_log_level = set_level
        core.reload_requested = self.reload_config if self.config_path else None
        core.timers.wakeup = self._timer_wake.set
        core.links.dial = self.dial
        core.dialer = self.connect
        self.http = HttpServer(core)
        try:
            core.start(now)
        except Exception as e:
            raise StartupError(str(e), 2) from None
        self._check_listeners()
        self._raise_open_files()
        self._open_control()
        self._open_listeners()
        core.protocols_changed = self._sync_listeners
        core.started_serving(self.now())
        self._timer_loop = gevent.spawn(self._run_timers)
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, lambda s=sig: gevent.spawn(self.shutdown, f"Received {signal.Signals(s).name}"))
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self._sighup))
        cfg.pid_path.write_text(f"{os.getpid()}\n")
        log.info("relaynet %s started: server %s (%s), pid %d; listening on %s", __version__, cfg.server.name,
                 cfg.server.id, os.getpid(), self.listening())

    def listening(self) -> str:
        """Every listener address, for the start-up line: `irc 127.0.0.1:6667, irc 127.0.0.1:6697 tls, ...`."""
        parts = [f"{info['proto']} {_hostport(info['host'], info['port'])}{' tls' if info['tls'] else ''}"
                 for _, (_srv, info) in sorted(self.servers.items())]
        return ", ".join(parts + [f"control {self.config.control_path}"])

    def _raise_open_files(self) -> None:
        """Every connection is a descriptor: take the whole hard limit, and say once if it caps
        max_connections (a warning only when the limit could not be raised to the machine's)."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        failed = None
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError) as e:
                failed = e
        self.open_files_limit = soft
        want = self.config.limits.max_connections
        if soft == resource.RLIM_INFINITY or want + 64 <= soft:
            return
        about = max(soft - 64, 0)
        if failed is None:
            log.info("open files: this machine's limit is %d, so about %d connections are possible, fewer than "
                     "limits.max_connections (%d); for more, raise the hard limit (LimitNOFILE= in systemd, "
                     "ulimit -Hn as root)", soft, about, want)
        else:
            log.warning("open files: cannot raise the limit from %d to the hard limit %d (%s), so about %d "
                        "connections are possible, fewer than limits.max_connections (%d); start the server "
                        "with `ulimit -n %d`", soft, hard, failed, about, want, hard)

    def _protocols_for(self, l) -> dict:
        """The protocol table a listen entry draws from: stream (TCP) or datagram (UDP) protocols."""
        return self.core.datagram_protocols if l.transport == "udp" else self.core.protocols

    def _check_listeners(self) -> None:
        errors = [f"listen[{i}].proto: no loaded module provides {l.proto!r}"
                  f"{' over udp' if l.transport == 'udp' else ''} (known: "
                  f"{', '.join(sorted(self._protocols_for(l)))})"
                  for i, l in enumerate(self.config.listen) if l.proto not in self._protocols_for(l)]
        if errors:
            raise StartupError("\n".join(errors), 2)

    def _open_listeners(self) -> None:
        for i, l in enumerate(self.config.listen):
            if i not in self.servers and l.proto in self._protocols_for(l):
                self._open_listener(i)

    def _sync_listeners(self) -> None:
        """A module added or removed a protocol: open or close the matching listeners."""
        if self.stopping:
            return
        for i, (srv, info) in list(self.servers.items()):
            if info["proto"] not in self._protocols_for(self.config.listen[i]):
                srv.close()
                del self.servers[i]
                log.info("listener %s:%s (%s) closed: its module was unloaded", info["host"], info["port"],
                         info["proto"])
        for i, l in enumerate(self.config.listen):
            if i not in self.servers and l.proto in self._protocols_for(l):
                try:
                    self._open_listener(i)
                except OSError as e:
                    log.error("listen[%d]: cannot listen on %s:%s: %s", i, l.host, l.port, e.strerror)

    def _open_listener(self, i: int) -> None:
        l = self.config.listen[i]
        if l.transport == "udp":
            self._open_udp_listener(i)
            return
        try:
            sock = make_listen_socket(l.host, l.port)
        except OSError as e:
            raise StartupError(f"listen[{i}]: cannot listen on {l.host}:{l.port}: {e.strerror}", 1) from None
        ctx = end_point = None
        if l.tls:
            try:
                ctx, end_point = self._listener_tls(l)
            except (OSError, ssl.SSLError) as e:
                raise StartupError(f"listen[{i}]: {e}", 2) from None
        upgrade_cache: list = []

        def tls_upgrade():
            """STARTTLS on a plain listener: its certificate, loaded at the first upgrade."""
            if not upgrade_cache:
                upgrade_cache.append(self._listener_tls(l))
            return upgrade_cache[0]
        proto, tls = l.proto, l.tls
        sendq = self.config.limits.link_sendq if l.proto == "link" else self.config.limits.sendq

        def on_accept(client_sock, addr):
            factory = self.core.protocols.get(proto)
            if len(self.connections) >= self.config.limits.max_connections or self.stopping or factory is None:
                client_sock.close()
                return
            client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, client_sock, addr, proto, tls, sendq)
            if ctx is None:
                conn.tls_upgrade = tls_upgrade
                conn.start(factory[0], l)
            else:  # a greenlet per TLS client: its handshake and reads wait on the loop
                conn.tls_end_point = end_point
                gevent.spawn(conn.run, factory[0], l, ctx, self.handshake_timeout)

        port = sock.getsockname()[1]
        srv = Acceptor(self, sock, on_accept)
        self.servers[i] = (srv, {"proto": l.proto, "host": l.host, "port": port, "tls": l.tls})

    def _listener_tls(self, l) -> tuple:
        """(server SSLContext, tls-server-end-point hash) of a listener: its own certificate, the
        tls: section's, or the self-signed one made in <data_dir>/tls."""
        cert, key = l.cert or self.config.tls.cert, l.key or self.config.tls.key
        if cert is None:
            cert, key = ensure_certificate(self.config.data_path / "tls", self.config.server.name,
                                           [x.host for x in self.config.listen])
        else:
            cert, key = self.config.path(cert), self.config.path(key or cert)
        try:
            return server_context(cert, key), _end_point_hash(cert)
        except (OSError, ssl.SSLError) as e:
            raise OSError(f"cannot load TLS certificate {cert}: {e}") from None

    def _open_udp_listener(self, i: int) -> None:
        l = self.config.listen[i]
        try:
            sock = make_udp_socket(l.host, l.port)
        except OSError as e:
            raise StartupError(f"listen[{i}]: cannot bind udp {l.host}:{l.port}: {e.strerror}", 1) from None
        factory = self.core.datagram_protocols[l.proto][0]
        try:
            ep = DatagramEndpoint(self, sock, l.proto, factory, l)
        except Exception:
            sock.close()
            log.exception("listen[%d]: %s protocol handler failed to start", i, l.proto)
            raise StartupError(f"listen[{i}]: the {l.proto} datagram protocol failed to start", 1) from None
        self.servers[i] = (ep, {"proto": l.proto, "host": l.host, "port": ep.port, "tls": False,
                                "transport": "udp"})

    def dial(self, block, factory, on_fail) -> None:
        """Connect to a link peer; the session starts (as the dialling side) once connected."""
        self.connect(block.host, block.port, factory, "link", tls=block.tls, on_fail=on_fail,
                     fingerprint=block.fingerprint, verify=False, sendq=self.config.limits.link_sendq)

    @property
    def handshake_timeout(self) -> float:
        """Seconds a TLS handshake (or a control-socket request) may take."""
        return self.config.limits.handshake_timeout

    def connect(self, host: str, port: int, factory, proto: str, tls: bool = False, on_fail=None,
                fingerprint: str | None = None, verify: bool | None = None, sendq: int | None = None) -> "Dial":
        """Connect out (links and modules share this path); `factory(transport, None, now)` makes the
        handler once connected, `on_fail(reason)` is told otherwise. TLS checks the certificate against
        the system's CAs and `host` unless `verify` is False (a link pins its peer's fingerprint instead)."""
        d = Dial(self, host, port, proto)
        d.greenlet = gevent.spawn(self._dial, d, factory, tls, on_fail, fingerprint,
                                  (fingerprint is None) if verify is None else verify,
                                  sendq or self.config.limits.sendq)
        return d

    def _dial(self, d: "Dial", factory, tls: bool, on_fail, fingerprint, verify: bool, sendq: int) -> None:
        host, port = d.host, d.port
        try:
            sock = socket.create_connection((host, port), timeout=10)
            sock.settimeout(None)
            if tls:
                ctx = link_client_context() if not verify else client_context()
                sock = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
                failed = tls_handshake(sock, self.handshake_timeout)
                if failed:
                    sock.close()
                    raise OSError(f"TLS handshake failed: {failed}")
                if fingerprint:
                    got = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
                    if not hmac.compare_digest(got, fingerprint.replace(":", "").lower()):
                        sock.close()
                        raise OSError(f"certificate fingerprint mismatch (got {got})")
        except OSError as e:
            d.done = True
            if on_fail is not None and not d.cancelled:
                on_fail(getattr(e, "strerror", None) or str(e))
            return
        if d.cancelled:
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            d.conn = conn = Connection(self, sock, (host, port), d.proto, True, sendq)
            d.greenlet = None
            try:
                conn.run(factory, None)
            finally:
                d.done = True
        else:
            raw = _stdsocket.socket(fileno=sock.detach())
            raw.setblocking(False)
            d.conn = conn = Connection(self, raw, (host, port), d.proto, False, sendq)
            d.greenlet = None
            conn.start(factory, None)

    def _refuse_if_running(self) -> None:
        """Another server answering on our control socket: refuse; a stale socket file is removed."""
        path = self.config.control_path
        if path.exists():
            probe = _stdsocket.socket(_stdsocket.AF_UNIX)
            try:
                probe.connect(str(path))
                raise StartupError(f"another server is running here (control socket {path} answers)", 1)
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)
            finally:
                probe.close()

    def _open_control(self) -> None:
        path = self.config.control_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()  # again: one may have started while the core started
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user (and root) may connect
        try:
            s.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(1024)  # a burst of clients (or attackers) waits in the kernel, not in EAGAIN
        self.control = StreamServer(s, self._control_client)
        self.control.start()

    def info(self) -> dict:
        conns: dict[str, int] = {}
        for c in list(self.connections):
            conns[c.proto] = conns.get(c.proto, 0) + 1
        return {"listeners": [info for _, (_srv, info) in sorted(self.servers.items())], "connections": conns,
                "open_files_limit": getattr(self, "open_files_limit", None)}

    # ---------------------------------------------------------------- timers
    def _run_timers(self) -> None:
        timers = self.core.timers
        while not self.stopped.is_set():
            deadline = timers.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.now())
            self._timer_wake.clear()
            if timeout is None or timeout > 0:
                self._timer_wake.wait(timeout)
            self.core.tick(self.now())

    # ---------------------------------------------------------------- control socket
    def _control_client(self, sock, addr) -> None:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except OSError:
            uid = -1
        codec = ControlCodec()
        allowed = uid in (os.getuid(), 0)
        if not allowed:
            log.warning("control socket: refused a client with uid %d", uid)
        try:
            while True:
                requests = self._control_read(sock, codec)
                if requests is None:
                    return
                for req in requests:
                    if not allowed:
                        # Answer the request with the refusal, so the client reads a reason, not a reset.
                        sock.sendall(codec.send({"ok": False, "status": 77, "text":
                                                 f"permission denied: the control socket is for uid {os.getuid()}"}))
                        return
                    sock.sendall(codec.send(self.run_command(req.get("argv"))))
        except OSError:
            return
        finally:
            sock.close()

    def _control_read(self, sock, codec: ControlCodec) -> list[dict] | None:
        """The next request(s), complete within the handshake timeout; None once the client is gone
        (or was told why it is closed: bad input, or too slow)."""
        limit = self.handshake_timeout
        deadline = gevent.Timeout(limit)
        deadline.start()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return None
                requests = codec.receive_data(data)
                if requests:
                    return requests
        except ControlError as e:
            log.info("control socket: client refused: %s", e)
            sock.sendall(codec.send({"ok": False, "status": 2, "text": f"bad request: {e}"}))
            return None
        except gevent.Timeout as e:
            if e is not deadline:
                raise
            sock.sendall(codec.send({"ok": False, "status": 2, "text": f"no complete request within {limit:g} s"}))
            return None
        finally:
            deadline.close()

    def run_command(self, argv) -> dict:
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return {"ok": False, "status": 2, "text": "bad request: argv must be a list of strings"}
        queue = self.core.storage.queue
        before = queue.mark()
        ctx = AdminContext(self.core, self.now())
        try:
            reply = self.core.admin.dispatch(argv, ctx)
        except AdminError as e:
            return {"ok": False, "status": e.status, "text": str(e)}
        except Exception as e:
            log.exception("operator command %r raised", argv)
            return {"ok": False, "status": 1, "text": f"internal error: {type(e).__name__}: {e}"}
        # What a command reports as done is committed first (kill -9 after the reply loses none of it).
        if (self.writer is not None and (queue.mark() > before or ctx.wait_for_commit)
                and not self.writer.wait_committed(queue.mark(), 30.0)):
            return {"ok": False, "status": 1, "text": f"{reply.text}\nbut storage has not committed it yet "
                                                      f"({self.db.where} is not answering)"}
        return {"ok": reply.status == 0, "status": reply.status, "text": reply.text,
                "data": json.loads(json.dumps(reply.data, default=str))}

    # ---------------------------------------------------------------- storage
    def pause_reading(self, conn: Connection) -> None:
        self.paused.add(conn)

    def _resume_readers(self) -> None:
        paused, self.paused = self.paused, set()
        for c in paused:
            c.resume_reading()

    def _backup(self, path: str) -> dict:
        """`backup FILE`: everything committed (the queue flushed first), as a portable dump."""
        from relay.storage import dump
        self.writer.wait_committed(self.core.storage.queue.mark())
        return self.writer.pool.apply(dump.backup, (self.db, dump.stores(self.core), self.config.path(path)))

    def _export(self, dsn: str) -> dict:
        """`export DSN`: copy this server's database onto a PostgreSQL database (its stores created there)."""
        from relay.storage import dump
        self.writer.wait_committed(self.core.storage.queue.mark())
        return self.writer.pool.apply(dump.export, (self.db, dump.stores(self.core), dsn, self.config))

    # ---------------------------------------------------------------- reload
    def _sighup(self) -> None:
        if self.config_path:
            try:
                self.reload_config()
            except Exception as e:
                log.error("reload on SIGHUP failed: %s", e)

    def reload_config(self) -> list[str]:
        """Re-read the config; apply what can change at runtime (log level, IRC limits, ACL, modules' options)."""
        from relay.core import config as config_mod
        from relay.core.acl import Acl
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as e:
            raise AdminError("config not reloaded:\n" + "\n".join(e.errors), 2) from None
        old = self.config
        fixed = [k for k in ("server", "data_dir", "control_socket", "listen")
                 if getattr(old, k) != getattr(new, k)]
        if fixed:
            raise AdminError(f"config not reloaded: {', '.join(fixed)} cannot change while running; restart", 2)
        changed = [k for k in Config.model_fields if k not in ("base_dir", "sections")
                   and getattr(old, k) != getattr(new, k)]
        # Modules' own sections (irc:): their modules pick them up on config_reloaded.
        changed += [k for k in sorted(set(old.sections) | set(new.sections))
                    if old.section(k) != new.section(k)]
        core = self.core
        core.acl = Acl.from_config(new.acl, new.access_rules, new.shapers, new.shaper_rules)
        for k in changed:
            if k in Config.model_fields:
                setattr(old, k, getattr(new, k))
        old.sections = new.sections
        if "log" in changed:
            set_level(new.log.level)
        core.hooks.run("config_reloaded", changed)
        log.info("configuration reloaded: %s", ", ".join(changed) or "no change")
        return changed

    # ---------------------------------------------------------------- shutdown
    def shutdown(self, reason: str = "Server shutting down") -> None:
        """Stop accepting, tell peers, drain outboxes with a deadline, then close."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down: %s", reason)
        for srv, _ in self.servers.values():
            srv.close()
        self.servers.clear()
        try:
            self.core.stop(self.now(), reason)
        except Exception:
            log.exception("core stop raised")
        for c in list(self.connections):
            c.close(reason)
        deadline = self.now() + self.config.limits.shutdown_grace
        while any(not c.closed for c in list(self.connections)) and self.now() < deadline:
            gevent.sleep(0.02)
        for c in list(self.connections):
            c.abort(reason)
        if self.control is not None:
            self.control.close()
        for p in (self.config.control_path, self.config.pid_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if self.writer is not None:
            self.writer.stop()
            w = self.writer
            log.info("storage flushed: %d writes committed (%d statements in %d flushes; clients paused %d times "
                     "by a full queue)", self.core.storage.queue.committed, w.ops_written, w.flushes, w.paused)
        self.core.storage.close()
        self.stopped.set()
        self._timer_wake.set()
        log.info("stopped")

    def serve_forever(self) -> None:
        self.stopped.wait()


def _end_point_hash(cert_path) -> bytes | None:
    """tls-server-end-point channel binding of the first certificate in a PEM file."""
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())
    except (OSError, ValueError):
        return None
    return server_end_point(der)


def run(config: Config, config_path: str | None, foreground: bool = True, ready=None) -> int:
    """Start a server and block until it stops. `ready(msg)` is called once listening (or failing)."""
    rt = Runtime(config, config_path, foreground)
    try:
        rt.start()
    except StartupError as e:
        if rt.logging:
            logging.getLogger("relay").error("%s", e)
        elif foreground:
            print(f"cannot start: {e}", file=sys.stderr)
        if ready:
            ready(f"error {e.status} {e}")
        if rt.writer is not None:
            rt.writer.stop(5.0)
        if rt.db is not None:
            rt.db.close()
        if rt.core is not None:
            if rt.control is not None:
                rt.control.close()
                try:
                    config.control_path.unlink()
                except FileNotFoundError:
                    pass
        return e.status
    if ready:
        ready("ready")
    rt.serve_forever()
    return 0
