"""Connection.start_tls: a plain, loop-watched connection upgraded in place (STARTTLS), with a tiny
line protocol ("STARTTLS" -> "GO", then TLS) and a real stdlib ssl client in a thread."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time

import gevent

from relay.runtime.connection import Connection
from relay.runtime.tlsutil import ensure_certificate, server_context
from runtime_standin import StandInRuntime


class _StartTlsLines:
    """Lines in; `STARTTLS` answers `GO` and upgrades; every other line is echoed with the TLS state."""

    def __init__(self, t):
        self.t, self.buf, self.done, self.lost, self.bindings = t, b"", [], None, None

    def data_received(self, data, now):
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line == b"STARTTLS":
                self.t.write(b"GO\n")
                self.t.start_tls(self.tls_done)
                self.buf = b""          # nothing read in plaintext after the command is kept
                return
            self.t.write(b"%s tls=%d\n" % (line, self.t.tls))

    def tls_done(self, ok, reason):
        self.done.append((ok, reason))
        if ok:
            self.bindings = self.t.channel_bindings()
            self.t.write(b"WELCOME\n")  # queued during the handshake's end: must leave encrypted

    def connection_lost(self, reason, now):
        self.lost = reason


def _wait(pred, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.01)


def _serve(tmp_path, with_cert=True):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    cert, key = ensure_certificate(tmp_path / "tls", "relay.test")
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    rt = StandInRuntime()
    return rt, lsock, (server_context(cert, key), hashlib.sha256(der).digest()) if with_cert else None, cert


def _accept(rt, lsock, upgrade):
    lsock.setblocking(False)
    box = {}

    def on_accept():
        s, addr = lsock.accept()
        s.setblocking(False)
        c = Connection(rt, s, addr, "test", False, 1 << 20)
        if upgrade is not None:
            c.tls_upgrade = lambda: upgrade
        c.start(lambda t, lst, now: box.setdefault("h", _StartTlsLines(t)), None)
        box["c"] = c

    w = rt.hub.loop.io(lsock.fileno(), 1)
    w.start(on_accept)
    return box, w


def _client(port, cert, out, pipeline=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f = s.makefile("rb")
    s.sendall(b"hello\n")
    out.append(f.readline())
    s.sendall(b"STARTTLS\n" + pipeline)
    out.append(f.readline())
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    tls = ctx.wrap_socket(s, server_hostname="relay.test")
    out.append(hashlib.sha256(tls.getpeercert(binary_form=True)).digest())
    tf = tls.makefile("rb")
    out.append(tf.readline())
    tls.sendall(b"again\n")
    out.append(tf.readline())
    tls.close()


def test_a_plain_connection_is_upgraded_in_place_and_goes_on_over_tls(tmp_path):
    rt, lsock, upgrade, cert = _serve(tmp_path)
    box, w = _accept(rt, lsock, upgrade)
    out: list = []
    th = threading.Thread(target=_client, args=(lsock.getsockname()[1], cert, out), daemon=True)
    th.start()
    _wait(lambda: len(out) == 5 or not th.is_alive(), "the client")
    th.join(10)
    assert out[:2] == [b"hello tls=0\n", b"GO\n"]
    assert out[3] == b"WELCOME\n"
    assert out[4] == b"again tls=1\n"            # read and answered over TLS
    h, c = box["h"], box["c"]
    assert h.done == [(True, "")]
    assert c.tls and not c.watched
    assert h.bindings["tls-server-end-point"] == upgrade[1] == out[2]
    _wait(lambda: h.lost is not None, "connection_lost")
    w.stop()
    lsock.close()


def test_a_failed_handshake_closes_the_connection_and_says_why(tmp_path):
    rt, lsock, upgrade, cert = _serve(tmp_path)
    box, w = _accept(rt, lsock, upgrade)
    out: list = []

    def client():
        s = socket.create_connection(lsock.getsockname(), timeout=20)
        f = s.makefile("rb")
        s.sendall(b"STARTTLS\n")
        out.append(f.readline())
        s.sendall(b"this is not a TLS client hello\r\n\r\n")
        out.append(s.recv(100))
        s.close()

    th = threading.Thread(target=client, daemon=True)
    th.start()
    _wait(lambda: "h" in box and box["h"].lost is not None, "the failed upgrade")
    th.join(10)
    h = box["h"]
    assert out[0] == b"GO\n"
    assert len(h.done) == 1 and h.done[0][0] is False and h.done[0][1]
    assert h.lost == "TLS handshake failed" and box["c"].closed
    w.stop()
    lsock.close()


def test_without_a_certificate_start_tls_is_refused_and_the_connection_goes_on(tmp_path):
    rt, lsock, _, cert = _serve(tmp_path, with_cert=False)
    box, w = _accept(rt, lsock, None)
    s = socket.create_connection(lsock.getsockname(), timeout=20)
    s.sendall(b"STARTTLS\n")
    _wait(lambda: "h" in box and box["h"].done, "on_done")
    assert box["h"].done == [(False, "TLS is not available here")]
    assert not box["c"].closing and not box["c"].tls
    box["c"].abort("done")
    s.close()
    w.stop()
    lsock.close()
