"""The HTTP listener's route table: plain HTTP handlers by path prefix, WebSocket protocols by path.

Protocol-neutral and synchronous. Modules register through their `Module`
handle (`http_route`, `websocket_route`), so unloading removes what they added;
the runtime's HTTP handler (relay/runtime/http.py) looks requests up here.

    routes.add_http("/metrics", lambda req, now: HttpResponse(200, body=b"..."), owner="stats")
    routes.add_websocket("/mqtt", {"mqtt": BINARY_STREAM, None: BINARY_STREAM}, factory, owner="mqtt")

A WebSocket route's `subprotocols` maps each subprotocol it speaks to a
`Framing` (how messages become the handler's byte stream); the key None is
the framing used when the client offers no subprotocol (absent: refused).
The client's order of preference is respected (IRCv3 websocket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True, slots=True)
class Framing:
    """How WebSocket messages map onto a protocol handler's byte stream.

    `send_text`: outgoing messages are text frames (bytes decoded as UTF-8, invalid
    bytes replaced by U+FFFD). `receive`: message types accepted; any other closes
    with 1003. `lines`: one line per message (CRLF appended on the way in, split
    off on the way out, as IRCv3 websocket says); otherwise each write is one
    message and received frames are a byte stream whose boundaries mean nothing
    (MQTT), bounded by the protocol's own codec rather than a message size. `messages`:
    each whole received message is one `data_received` call (RFC 7395 XMPP: one XML document
    per message), bounded by `http.max_message_bytes` as lines are.
    """

    send_text: bool = False
    receive: frozenset = frozenset({"binary"})
    lines: bool = False
    messages: bool = False


BINARY_STREAM = Framing()
BINARY_LINES = Framing(lines=True)
TEXT_LINES = Framing(send_text=True, receive=frozenset({"text"}), lines=True)
# No subprotocol negotiated by a line protocol: either message type in, text out (legacy web clients).
ANY_LINES = Framing(send_text=True, receive=frozenset({"text", "binary"}), lines=True)
TEXT_MESSAGES = Framing(send_text=True, receive=frozenset({"text"}), messages=True)


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str                      # as sent, with the query string
    path: str                        # without the query string
    query: str
    headers: list[tuple[str, str]]   # names lower-cased, in order
    body: bytes
    peer_host: str
    tls: bool

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


class DeferredResponse:
    """What a handler returns to answer later (BOSH long polling): `resolve(response)` sends it, once;
    `on_lost()` is called instead if the connection goes first. The runtime applies no request timeout
    to it: its owner answers in time."""

    __slots__ = ("_send", "_early", "done", "on_lost")

    def __init__(self, on_lost: Callable[[], None] | None = None):
        self._send: Callable[[HttpResponse], None] | None = None
        self._early: HttpResponse | None = None
        self.done = False
        self.on_lost = on_lost

    def resolve(self, response: HttpResponse) -> None:
        if self.done:
            return
        self.done = True
        if self._send is None:
            self._early = response
        else:
            self._send(response)

    def attach(self, send: Callable[[HttpResponse], None]) -> None:
        """The runtime: where the response goes (at once if it was resolved already)."""
        self._send = send
        if self._early is not None:
            early, self._early = self._early, None
            send(early)

    def lost(self) -> None:
        if not self.done:
            self.done = True
            if self.on_lost is not None:
                self.on_lost()


@dataclass(slots=True, eq=False)
class HttpRoute:
    prefix: str
    handler: Callable[[HttpRequest, float], HttpResponse]
    owner: str

    def matches(self, path: str) -> bool:
        p = self.prefix
        return path == p or path.startswith(p if p.endswith("/") else p + "/")


@dataclass(slots=True, eq=False)
class WebSocketRoute:
    path: str
    subprotocols: dict            # str | None -> Framing
    factory: Callable             # factory(transport, listener, now) -> handler, as for TCP listeners
    owner: str
    # Close callbacks of the route's open connections (kept by the runtime): unloading closes them.
    live: dict = field(default_factory=dict)

    def choose(self, offered: list[str]) -> tuple[str | None, Framing] | None:
        """The first offered subprotocol this route speaks (client's preference), or None if none fits."""
        if not offered:
            f = self.subprotocols.get(None)
            return None if f is None else (None, f)
        for name in offered:
            f = self.subprotocols.get(name)
            if f is not None and name is not None:
                return name, f
        return None


def _check_path(path: str, what: str) -> str:
    if not path.startswith("/") or "?" in path or "#" in path or any(c.isspace() for c in path):
        raise ValueError(f"{what} {path!r}: must start with '/' and hold no '?', '#' or spaces")
    return path


class HttpRoutes:
    def __init__(self):
        self.http: list[HttpRoute] = []
        self.websocket: dict[str, WebSocketRoute] = {}
        # Set by the runtime: makes the protocol handler of one HTTP connection,
        # server_factory(routes, transport, listener, now, only=None).
        self.server_factory: Callable | None = None

    # ---------------------------------------------------------------- registration
    def add_http(self, prefix: str, handler: Callable, owner: str) -> HttpRoute:
        _check_path(prefix, "HTTP route")
        for r in self.http:
            if r.prefix == prefix:
                raise ValueError(f"HTTP route {prefix} is already provided by {r.owner}")
        route = HttpRoute(prefix, handler, owner)
        self.http.append(route)
        self.http.sort(key=lambda r: len(r.prefix), reverse=True)  # longest prefix first
        return route

    def add_websocket(self, path: str, subprotocols: Mapping, factory: Callable, owner: str) -> WebSocketRoute:
        _check_path(path, "WebSocket route")
        if path in self.websocket:
            raise ValueError(f"WebSocket route {path} is already provided by {self.websocket[path].owner}")
        if not subprotocols or not all(isinstance(f, Framing) for f in subprotocols.values()):
            raise ValueError(f"WebSocket route {path}: subprotocols must map names (or None) to a Framing")
        route = WebSocketRoute(path, dict(subprotocols), factory, owner)
        self.websocket[path] = route
        return route

    def remove(self, route, owner: str) -> None:
        """Remove a route; its open WebSocket connections are closed (1001, going away)."""
        if isinstance(route, HttpRoute):
            if route in self.http and route.owner == owner:
                self.http.remove(route)
        elif self.websocket.get(route.path) is route and route.owner == owner:
            del self.websocket[route.path]
            for close in list(route.live.values()):
                close("Route removed")
            route.live.clear()

    # ---------------------------------------------------------------- lookup
    def find_http(self, path: str) -> HttpRoute | None:
        for r in self.http:
            if r.matches(path):
                return r
        return None

    def find_websocket(self, path: str) -> WebSocketRoute | None:
        return self.websocket.get(path)

    # ---------------------------------------------------------------- listeners
    def listener(self, only: str | None = None) -> Callable:
        """A listener protocol factory serving this table (`only`: just that WebSocket route, at any path)."""
        def factory(transport, listener, now: float):
            if self.server_factory is None:
                raise RuntimeError("no HTTP server in this process (the runtime provides it)")
            return self.server_factory(self, transport, listener, now, only=only)
        return factory
