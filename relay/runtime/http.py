"""The `http` listener's protocol handler: h11 for requests, wsproto for WebSocket.

Both libraries are sans-IO, so this is an ordinary synchronous protocol handler
run inside the connection's `data_received`; it touches no gevent. Requests are
looked up in the core's route table (relay/core/http_routes.py): a plain HTTP
route answers request -> response; a WebSocket route's factory makes a protocol
handler that sees a `WebSocketTransport`, the same interface as on TCP, whose
writes become WebSocket messages.

Limits (config `http:`): header bytes (431), body bytes (413), one message of a
line protocol (close 1009); a request, or keep-alive idleness, may last
`irc.registration_timeout` (408 mid-request). Bad requests get 400 and a close,
unknown paths 404, a plain request on a WebSocket-only path 426, an upgrade on
a path without a WebSocket route 400.
"""

from __future__ import annotations

import base64
import binascii
import logging
from http import HTTPStatus
from typing import NamedTuple

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from relay import __version__
from relay.core.http_routes import (DeferredResponse, Framing, HttpRequest, HttpResponse, HttpRoutes,
                                    WebSocketRoute)

log = logging.getLogger("relay.http")

SERVER_HEADER = f"relaynet/{__version__}".encode()
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = 1000, 1001, 1003, 1009


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


class Upgrade(NamedTuple):
    """A valid WebSocket handshake, answered with 101 once the request has ended."""
    route: WebSocketRoute
    subprotocol: str | None
    framing: Framing
    key: str
    headers: dict
    target: str


class HttpServer:
    """Makes the handler of each `http` connection and times out those still speaking HTTP."""

    def __init__(self, core):
        self.core = core
        self.waiting: dict[HttpConnection, None] = {}  # connections not (yet) upgraded to WebSocket
        core.http.server_factory = self.connection
        interval = min(5.0, self.timeout / 4)
        core.timers.every(interval, self.sweep, core.now(), owner="http")

    @property
    def limits(self):
        return self.core.config.http

    @property
    def timeout(self) -> float:
        return self.core.config.http.request_timeout

    def connection(self, routes: HttpRoutes, transport, listener, now: float, only: str | None = None):
        return HttpConnection(self, routes, transport, listener, now, only)

    def sweep(self, now: float) -> None:
        for c in list(self.waiting):
            c.check(now)


class HttpConnection:
    """One connection of the `http` listener: HTTP/1.1 requests (keep-alive), or one WebSocket session."""

    proto = "http"

    def __init__(self, server: HttpServer, routes: HttpRoutes, transport, listener, now: float,
                 only: str | None = None):
        self.server, self.routes, self.t, self.listener = server, routes, transport, listener
        self.only = only  # an alias listener (e.g. `mqtt-ws`): just this WebSocket route, at any path
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes)
        self.since = now          # start of the current request, or of the idle wait before it
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.action = None        # what the request's end triggers: an HttpRoute's handler, or an Upgrade
        self.session: WebSocketSession | None = None
        self.done = False
        self.started = False      # bytes of a request have arrived since the last response
        self.deferred: DeferredResponse | None = None   # a response its route gives later
        server.waiting[self] = None

    # ---------------------------------------------------------------- protocol handler
    def data_received(self, data: bytes, now: float) -> None:
        if self.session is not None:
            self.session.data_received(data, now)
            return
        if self.done:
            return
        self.started = True
        self.h11.receive_data(data)
        self._drive(now)

    def connection_lost(self, reason: str, now: float) -> None:
        self.done = True
        self.server.waiting.pop(self, None)
        if self.deferred is not None:
            deferred, self.deferred = self.deferred, None
            deferred.lost()
        if self.session is not None:
            self.session.connection_lost(reason, now)

    def send_queue_full(self, now: float) -> None:
        inner = self.session.handler if self.session is not None else None
        over = getattr(inner, "send_queue_full", None)
        if over is not None:
            over(now)
        else:
            self.t.abort("SendQ exceeded")

    def check(self, now: float) -> None:
        """Sweep: a request, or the wait for one, past the timeout ends the connection."""
        if self.done or self.session is not None or self.deferred is not None \
                or now - self.since <= self.server.timeout:
            return
        if self.started:
            self._fail(408, "request timeout")
        else:
            self._finish("Idle timeout")

    # ---------------------------------------------------------------- HTTP
    def _drive(self, now: float) -> None:
        while not self.done and self.session is None:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._fail(e.error_status_hint, str(e) or "bad request")
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            t = type(ev)
            if t is h11.Request:
                self._on_request(ev, now)
            elif t is h11.Data:
                self.body += ev.data
                if len(self.body) > self.server.limits.max_body_bytes:
                    self._fail(413, "request body too large")
            elif t is h11.EndOfMessage:
                self._on_end(now)
            elif t is h11.ConnectionClosed:
                self._finish("Connection closed")

    def _on_request(self, req: h11.Request, now: float) -> None:
        self.since = now
        self.request, self.body, self.action = req, bytearray(), None
        # h11 bounds only a head still incomplete; one that arrived whole in a read is measured here.
        if len(req.target) + sum(len(k) + len(v) + 4 for k, v in req.headers) > self.server.limits.max_header_bytes:
            return self._fail(431, "request header fields too large")
        headers = {}
        for k, v in req.headers:
            k = k.decode("latin-1")
            headers[k] = f"{headers[k]}, {v.decode('latin-1')}" if k in headers else v.decode("latin-1")
        target = req.target.decode("latin-1")
        path = target.partition("?")[0]
        ws_route = self.routes.find_websocket(self.only) if self.only else self.routes.find_websocket(path)
        http_route = None if self.only else self.routes.find_http(path)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.limits.max_body_bytes:
            return self._fail(413, "request body too large")
        if "websocket" in _tokens(headers.get("upgrade")):
            if ws_route is None:
                return self._fail(400 if http_route is not None else 404,
                                  "not a WebSocket endpoint" if http_route is not None else f"no route for {path}")
            self.action = self._check_handshake(req, headers, ws_route)
        elif http_route is not None:
            self.action = http_route
            if self.h11.they_are_waiting_for_100_continue:
                self.t.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        elif ws_route is not None:
            self._fail(426, "this path speaks WebSocket only", [(b"Upgrade", b"websocket")], websocket=True)
        else:
            self._fail(404, f"no route for {path}")

    def _check_handshake(self, req: h11.Request, headers: dict, route: WebSocketRoute):
        if req.method != b"GET" or req.http_version != b"1.1":
            return self._fail(400, "a WebSocket handshake is an HTTP/1.1 GET", websocket=True)
        if "upgrade" not in _tokens(headers.get("connection")):
            return self._fail(400, "Connection: Upgrade missing", websocket=True)
        if headers.get("sec-websocket-version") != "13":
            return self._fail(426, "WebSocket version 13 only", [(b"Sec-WebSocket-Version", b"13")], websocket=True)
        key = headers.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError
        except (ValueError, binascii.Error):
            return self._fail(400, "bad Sec-WebSocket-Key", websocket=True)
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        chosen = route.choose(offered)
        if chosen is None:
            want = ", ".join(sorted(p for p in route.subprotocols if p))
            return self._fail(400, f"subprotocol required: {want}" if not offered
                              else f"none of the offered subprotocols is spoken here (want {want})", websocket=True)
        return Upgrade(route, chosen[0], chosen[1], key, headers, req.target.decode("latin-1"))

    def _on_end(self, now: float) -> None:
        action, self.action = self.action, None
        if action is None:
            return
        if type(action) is Upgrade:
            self._upgrade(action, now)
            return
        req = self.request
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        request = HttpRequest(req.method.decode("latin-1"), target, path, query,
                              [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers],
                              bytes(self.body), self.t.peer_host, getattr(self.t, "tls", False))
        self.body = bytearray()
        try:
            resp = action.handler(request, now)
        except Exception:
            log.exception("HTTP route %s (%s) raised on %s %s", action.prefix, action.owner,
                          request.method, path)
            resp = HttpResponse(500, body=b"internal error\n")
        head = request.method == "HEAD"
        if type(resp) is DeferredResponse:
            # Answered later (long polling): what the client pipelines meanwhile waits in h11.
            self.deferred = resp
            resp.attach(lambda r: self._answer(r, head, self.server.core.now(), later=True))
            return
        self._answer(resp, head, now)

    def _answer(self, resp: HttpResponse, head: bool, now: float, later: bool = False) -> None:
        self.deferred = None
        if self.done:
            return
        self._respond(resp, head=head)
        if self.done:
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.since = now
            self.started = bool(self.h11.trailing_data[0])  # a pipelined request already begun
            if later and self.started:
                self._drive(now)
        else:
            self._finish("HTTP connection closed")

    def _respond(self, resp: HttpResponse, head: bool = False, extra: list | None = None) -> None:
        body = resp.body
        headers = [(b"Server", SERVER_HEADER), (b"Content-Type", resp.content_type.encode()),
                   (b"Content-Length", str(len(body)).encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        headers += extra or []
        try:
            out = self.h11.send(h11.Response(status_code=resp.status, headers=headers,
                                             reason=HTTPStatus(resp.status).phrase.encode()))
            if body and not head:
                out += self.h11.send(h11.Data(data=body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11 cannot frame a response now (e.g. the request was unparseable): write it plainly.
            out = (f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}\r\n".encode()
                   + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
                   + b"Connection: close\r\n\r\n" + (b"" if head else body))
        self.t.write(out)

    def _fail(self, status: int, text: str, extra: list | None = None, websocket: bool = False) -> None:
        """An error response, then close: the request cannot be trusted to frame what follows."""
        if self.done:
            return None
        t = self.t
        log.info("%s %s:%s: %s refused (HTTP %d): %s", t.proto, t.peer_host, t.peer_port,
                 "WebSocket handshake" if websocket else "request", status, text)
        self._respond(HttpResponse(status, body=text.encode() + b"\n"),
                      extra=[(b"Connection", b"close")] + (extra or []))
        self._finish(f"HTTP {status}: {text}")
        return None

    def _finish(self, reason: str) -> None:
        self.done = True
        self.server.waiting.pop(self, None)
        self.t.close(reason)

    # ---------------------------------------------------------------- WebSocket
    def _upgrade(self, up: Upgrade, now: float) -> None:
        resp_headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                        (b"Sec-WebSocket-Accept", generate_accept_token(up.key.encode("ascii")))]
        if up.subprotocol:
            resp_headers.append((b"Sec-WebSocket-Protocol", up.subprotocol.encode("ascii")))
        self.t.write(self.h11.send(h11.InformationalResponse(status_code=101, headers=resp_headers)))
        trailing, _closed = self.h11.trailing_data
        self.h11 = None   # the HTTP part is over; an idle WebSocket keeps no parser
        self.server.waiting.pop(self, None)
        self.session = WebSocketSession(self, up.route, up.subprotocol, up.framing, up.headers, up.target, now)
        if trailing and self.session.handler is not None:
            self.session.data_received(bytes(trailing), now)


class WebSocketSession:
    """One WebSocket connection: wsproto frames in, the route's protocol handler behind a WebSocketTransport."""

    def __init__(self, conn: HttpConnection, route: WebSocketRoute, subprotocol: str | None, framing: Framing,
                 headers: dict, target: str, now: float):
        self.conn, self.route, self.framing = conn, route, framing
        self.ws = WsConnection(ConnectionType.SERVER)
        self.max_message = conn.server.limits.max_message_bytes
        self.in_message = False   # a fragmented message is being received
        self.message_bytes = 0
        self.fragments: list[bytes] = []   # messages framing: the message received so far
        self.transport = WebSocketTransport(self, conn.t, subprotocol, target, headers)
        self.handler = None
        route.live[self] = self.transport.going_away
        try:
            self.handler = route.factory(self.transport, conn.listener, now)
        except Exception:
            log.exception("WebSocket route %s (%s): protocol handler failed to start", route.path, route.owner)
            route.live.pop(self, None)
            conn.t.abort("Internal error")

    def data_received(self, data: bytes, now: float) -> None:
        if self.transport.closing:
            return
        ws, framing = self.ws, self.framing
        ws.receive_data(data)
        out: list[bytes] = []
        for ev in ws.events():
            t = type(ev)
            if t is BytesMessage or t is TextMessage:
                if not self.in_message:
                    if ("text" if t is TextMessage else "binary") not in framing.receive:
                        self._deliver(out, now)
                        self.transport.close_with(CLOSE_UNSUPPORTED,
                                                  f"WebSocket {'text' if t is TextMessage else 'binary'} "
                                                  "messages are not accepted here")
                        return
                    self.in_message = True
                chunk = ev.data.encode("utf-8") if t is TextMessage else ev.data
                if framing.lines or framing.messages:
                    self.message_bytes += len(chunk)
                    if self.message_bytes > self.max_message:
                        self._deliver(out, now)
                        self.transport.close_with(CLOSE_TOO_BIG, "WebSocket message too big")
                        return
                if framing.messages:
                    # Whole messages only: fragments wait here, across reads, until the last one.
                    if chunk:
                        self.fragments.append(chunk)
                    if ev.message_finished:
                        self.in_message = False
                        self.message_bytes = 0
                        message, self.fragments = b"".join(self.fragments), []
                        if message:
                            self._deliver([message], now)
                        if self.transport.closing:
                            return
                    continue
                if chunk:
                    out.append(chunk)
                if ev.message_finished:
                    self.in_message = False
                    self.message_bytes = 0
                    if framing.lines:
                        out.append(b"\r\n")
            elif t is Ping:
                self.conn.t.write(ws.send(ev.response()))
            elif t is CloseConnection:
                self._deliver(out, now)
                if ws.state is ConnectionState.REMOTE_CLOSING:   # the peer closed: answer in kind
                    self.transport.closing = True
                    self.conn.t.write(ws.send(ev.response()))
                    self.conn.t.close(f"WebSocket closed ({ev.code})")
                else:                                            # wsproto found a protocol error
                    self.transport.close_with(ev.code, f"WebSocket protocol error: {ev.reason}")
                return
        self._deliver(out, now)

    def _deliver(self, out: list[bytes], now: float) -> None:
        if out and self.handler is not None and not self.transport.closing:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            self.handler.data_received(data, now)

    def connection_lost(self, reason: str, now: float) -> None:
        self.route.live.pop(self, None)
        self.transport.closing = True
        if self.handler is not None:
            self.handler.connection_lost(reason, now)


class WebSocketTransport:
    """The Transport a WebSocket protocol handler writes to: each write (or line) becomes one message."""

    __slots__ = ("_s", "_t", "peer_host", "peer_port", "tls", "subprotocol", "path", "headers", "closing",
                 "_partial")
    proto = "websocket"

    def __init__(self, session: WebSocketSession, outer, subprotocol: str | None, target: str, headers: dict):
        self._s, self._t = session, outer
        self.peer_host, self.peer_port = outer.peer_host, getattr(outer, "peer_port", 0)
        self.tls = getattr(outer, "tls", False)
        self.subprotocol, self.path, self.headers = subprotocol, target.partition("?")[0], headers
        self.closing = False
        self._partial = b""   # lines mode: a line not yet ended by the writer

    @property
    def backlog(self) -> int:
        return self._t.backlog

    @property
    def congested(self) -> bool:
        return getattr(self._t, "congested", False)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        ws, framing = self._s.ws, self._s.framing
        if not framing.lines:
            msg = TextMessage(data.decode("utf-8", "replace")) if framing.send_text else BytesMessage(data)
            self._t.write(ws.send(msg))
            return
        lines = (self._partial + data).split(b"\n") if self._partial else data.split(b"\n")
        self._partial = lines.pop()
        frames = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                msg: Message = (TextMessage(line.decode("utf-8", "replace")) if framing.send_text
                                else BytesMessage(line))
                frames.append(ws.send(msg))
        if frames:
            self._t.write(b"".join(frames))

    def close(self, reason: str = "") -> None:
        self.close_with(CLOSE_NORMAL, reason)

    def going_away(self, reason: str) -> None:
        self.close_with(CLOSE_GOING_AWAY, reason)

    def close_with(self, code: int, reason: str) -> None:
        """Send a close frame (`code`, no reason text), then close the connection once it is flushed."""
        if self.closing:
            return
        self.closing = True
        ws = self._s.ws
        if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._t.write(ws.send(CloseConnection(code)))
        self._t.close(reason)

    def abort(self, reason: str) -> None:
        self.closing = True
        self._t.abort(reason)
