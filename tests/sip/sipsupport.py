"""Helpers for the SIP codec tests: the RFC 4475 messages and a summary of codec events."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridges.sip.codec import (
    KeepalivePing, KeepalivePong, MessageRejected, RequestReceived, ResponseReceived, SipStreamConnection,
)

REPO = Path(__file__).resolve().parents[2]
# CI lays shared/ beside the clone; a worktree lives one level further down (<root>/wt/<branch>).
_CANDIDATES = [REPO.parent / "shared" / "data" / "rfc4475", REPO.parent.parent / "shared" / "data" / "rfc4475"]
if os.environ.get("RELAYNET_RFC4475"):
    _CANDIDATES.insert(0, Path(os.environ["RELAYNET_RFC4475"]))
RFC4475_DIR = next((p for p in _CANDIDATES if p.is_dir()), None)


def rfc4475_names() -> list[str]:
    return sorted(p.stem for p in RFC4475_DIR.glob("*.dat")) if RFC4475_DIR else []


def load_rfc4475(name: str) -> bytes:
    """A message as the RFC means it: bare LF made CRLF unless the file already has CRLF (SOURCE.md)."""
    if RFC4475_DIR is None:
        pytest.skip(f"RFC 4475 messages not found (looked in {', '.join(map(str, _CANDIDATES))})")
    data = (RFC4475_DIR / f"{name}.dat").read_bytes()
    return data if b"\r\n" in data else data.replace(b"\n", b"\r\n")


def summary(event) -> tuple:
    """What an event says, comparable across runs."""
    if isinstance(event, RequestReceived):
        r = event.request
        return ("request", r.method, r.uri_text, list(r.headers), r.body)
    if isinstance(event, ResponseReceived):
        r = event.response
        return ("response", r.status, r.reason, list(r.headers), r.body)
    if isinstance(event, MessageRejected):
        resp = event.response
        return ("rejected", event.reason, resp and (resp.status, resp.reason, list(resp.headers)),
                event.framing_lost)
    assert isinstance(event, (KeepalivePing, KeepalivePong)), event
    return (type(event).__name__,)


def stream_events(chunks, eof: bool = True) -> list:
    conn = SipStreamConnection()
    events = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
    if eof:
        events += conn.receive_eof()
    return events


class DigestResponder:
    """A test-only UDP registrar stand-in built from the codec and digest modules: REGISTER is
    challenged (401) and, with good credentials, answered 200 with its Contacts; anything else 200.
    Runs in a thread on a loopback port; `results` records every digest verdict."""

    def __init__(self, users: dict[str, str], realm: str = "relaynet.test", algorithms=("MD5",),
                 force_rport: bool = False):
        import socket
        import threading

        from bridges.sip.digest import DigestVerifier, registration_ha1s
        from support import free_port

        self.realm = realm
        self.force_rport = force_rport
        self.ha1s = {u: registration_ha1s(u, realm, pw) for u, pw in users.items()}
        self.verifier = DigestVerifier(os.urandom(16), realm, algorithms=algorithms)
        self.results: list = []
        self.requests: list = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.port = free_port()
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.listener = socket.create_server(("127.0.0.1", self.port))  # TCP on the same port
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._guarded, args=(self._run,), daemon=True),
                         threading.Thread(target=self._guarded, args=(self._accept,), daemon=True)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.sock.close()
        self.listener.close()
        assert not self.errors, self.errors  # the codec must not have raised in the responder

    def _guarded(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported by __exit__
            self.errors.append(repr(e))

    def _accept(self):
        import socket
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._guarded, args=(self._serve_stream, conn), daemon=True).start()

    def _serve_stream(self, conn):
        """One TCP connection through SipStreamConnection; closed after a framing fault or at EOF."""
        import time

        from bridges.sip.codec import PONG, KeepalivePing, SipStreamConnection, serialise

        stream = SipStreamConnection()
        with conn:
            while True:
                data = conn.recv(65536)
                events = stream.receive_data(data) if data else stream.receive_eof()
                for event in events:
                    if isinstance(event, KeepalivePing):
                        conn.sendall(PONG)
                        continue
                    if isinstance(event, RequestReceived):
                        self.requests.append(event.request)
                        response = self._answer(event.request, time.time())
                    else:
                        response = getattr(event, "response", None) if isinstance(event, MessageRejected) else None
                    if response is not None:
                        conn.sendall(serialise(response))
                if not data or stream.closed:
                    return

    def _run(self):
        import socket

        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self._guarded(self._datagram, data, source)  # one bad datagram must not stop the service

    def _datagram(self, data, source):
        import time

        from bridges.sip.codec import parse_datagram, serialise
        from bridges.sip.transaction import reply_destination

        event = parse_datagram(data)
        if isinstance(event, MessageRejected):
            response = event.response
        elif isinstance(event, RequestReceived):
            self.requests.append(event.request)
            response = self._answer(event.request, time.time())
        else:
            return
        if response is None:
            return
        destination = reply_destination(response, source, "UDP", self.force_rport)
        if destination is not None:
            self.sock.sendto(serialise(response), (destination.host, destination.port))

    def _answer(self, request, now):
        from bridges.sip.codec import validate_request
        from bridges.sip.digest import parse_credentials
        from bridges.sip.message import make_response

        refusal = validate_request(request, for_us=True)
        if refusal is not None:
            return refusal
        if request.method != "REGISTER":
            return make_response(request, 200)
        credentials = request.headers.get("Authorization")
        creds = parse_credentials(credentials) if credentials else None
        if creds is None:
            return make_response(request, 401, extra=[("WWW-Authenticate", c) for c in self.verifier.challenges(now)])
        result = self.verifier.verify(creds, request.method, self._lookup, now, request.uri_text)
        self.results.append(result)
        if result.stale:
            return make_response(request, 401, extra=[("WWW-Authenticate", c)
                                                      for c in self.verifier.challenges(now, stale=True)])
        if not result.ok:
            return make_response(request, 403, "Forbidden: " + result.reason)
        return make_response(request, 200, extra=[("Contact", c) for c in request.headers.values("Contact")])

    def _lookup(self, user, algorithm):
        return self.ha1s.get(user, {}).get(algorithm)
