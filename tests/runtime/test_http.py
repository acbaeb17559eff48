"""The http listener: h11/wsproto handler driven from bytes (every split, hostile input), then real servers
with real clients: IRC over WebSocket (websocket-client, both IRCv3 subprotocols) talking to plain TCP IRC,
bad HTTP, a module's HTTP/WebSocket routes, UDP echo and dial, and what unloading it undoes."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from types import SimpleNamespace

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import RawClient, Server, free_port, server_config, wait_for

from relay.core.config import ConfigError, parse
from relay.core.http_routes import (ANY_LINES, BINARY_LINES, BINARY_STREAM, TEXT_LINES, HttpResponse, HttpRoutes)
from relay.core.timers import TimerQueue
from relay.runtime.http import HttpServer

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3's example
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------- in-process harness

class FakeTransport:
    """What Connection gives a handler; writes after close are dropped, as Connection does."""

    def __init__(self):
        self.out = bytearray()
        self.closed: str | None = None
        self.aborted: str | None = None
        self.peer_host, self.peer_port, self.tls = "127.0.0.1", 5555, False
        self.backlog, self.congested = 0, False

    def write(self, data: bytes) -> None:
        if self.closed is None:
            self.out += data

    def close(self, reason: str = "") -> None:
        if self.closed is None:
            self.closed = reason

    def abort(self, reason: str) -> None:
        self.aborted = reason
        self.close(reason)

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class Recorder:
    """A protocol handler behind a WebSocket route: records bytes, writes what the test says."""

    def __init__(self, t, log):
        self.t, self.data, self.lost = t, bytearray(), None
        log.append(self)

    def data_received(self, data: bytes, now: float) -> None:
        self.data += data

    def connection_lost(self, reason: str, now: float) -> None:
        self.lost = reason


def make_conn(only: str | None = None, **http_limits):
    cfg = parse({"http": http_limits, "irc": {"registration_timeout": 10.0}})
    core = SimpleNamespace(config=cfg, timers=TimerQueue(), http=HttpRoutes(), now=lambda: 0.0)
    server = HttpServer(core)
    handlers: list[Recorder] = []
    routes = core.http
    routes.add_websocket("/mqtt", {"mqtt": BINARY_STREAM, None: BINARY_STREAM},
                         lambda t, l, now: Recorder(t, handlers), owner="test")
    routes.add_websocket("/irc", {"binary.ircv3.net": BINARY_LINES, "text.ircv3.net": TEXT_LINES, None: ANY_LINES},
                         lambda t, l, now: Recorder(t, handlers), owner="test")
    routes.add_websocket("/strict", {"only.test": BINARY_STREAM}, lambda t, l, now: Recorder(t, handlers),
                         owner="test")
    requests = []

    def hello(req, now):
        requests.append(req)
        if req.path == "/api/boom":
            raise RuntimeError("boom")
        return HttpResponse(200, [("X-Route", "api")], f"{req.method} {req.path} {req.query} {req.body!r}".encode())

    routes.add_http("/api", hello, owner="test")
    routes.add_http("/api/v2", lambda req, now: HttpResponse(201, body=b"v2"), owner="test")
    t = FakeTransport()
    conn = server.connection(routes, t, None, 0.0, only=only)
    return SimpleNamespace(conn=conn, t=t, handlers=handlers, requests=requests, server=server, routes=routes)


def upgrade(path: str = "/mqtt", protocol: str | None = "mqtt", key: str = RFC_KEY, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "")
            + f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def frame(payload: bytes, opcode: int = 2, fin: bool = True, mask: bytes | None = None) -> bytes:
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each (unmasked) server frame."""
    out, i = [], 0
    while i < len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack_from("!H", data, i)[0], i + 2
        elif n == 127:
            n, i = struct.unpack_from("!Q", data, i)[0], i + 8
        out.append((op, data[i:i + n]))
        i += n
    return out


def head_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------------- WebSocket, from bytes

def test_handshake_byte_by_byte_then_frames_in_pieces():
    h = make_conn()
    req = upgrade(protocol="mqttv3.1, mqtt")
    for i in range(len(req)):
        h.conn.data_received(req[i:i + 1], 0.0)
    resp = h.t.take()
    assert resp.startswith(b"HTTP/1.1 101 ") and RFC_ACCEPT in resp
    assert b"Sec-WebSocket-Protocol: mqtt\r\n" in resp and len(h.handlers) == 1
    payload = bytes(range(256)) * 300                       # 64-bit length form
    wire = frame(payload) + frame(b"", opcode=9) + frame(b"\x03\xe8bye", opcode=8)
    for i in range(0, len(wire), 7):
        h.conn.data_received(wire[i:i + 7], 0.0)
    assert bytes(h.handlers[0].data) == payload
    assert server_frames(h.t.take()) == [(0xA, b""), (0x8, b"\x03\xe8bye")]   # pong, then the close echoed
    assert h.t.closed == "WebSocket closed (1000)"
    h.conn.connection_lost(h.t.closed, 0.0)
    assert h.handlers[0].lost == "WebSocket closed (1000)" and not h.routes.websocket["/mqtt"].live


def test_every_split_point_gives_the_same_result():
    mask = b"\x01\x02\x03\x04"
    wire = (upgrade(path="/irc", protocol="text.ircv3.net") + frame(b"NICK a", 1, mask=mask)
            + frame(b"USER a 0 *", 1, fin=False, mask=mask) + frame(b" :r", 0, mask=mask)
            + frame(b"p", 9, mask=mask))
    whole = make_conn()
    whole.conn.data_received(wire, 0.0)
    expected_out, expected_in = whole.t.take(), bytes(whole.handlers[0].data)
    assert expected_in == b"NICK a\r\nUSER a 0 * :r\r\n" and expected_out.endswith(b"\x8a\x01p")
    for i in range(1, len(wire)):
        h = make_conn()
        h.conn.data_received(wire[:i], 0.0)
        h.conn.data_received(wire[i:], 0.0)
        assert (h.t.take(), bytes(h.handlers[0].data)) == (expected_out, expected_in), i


@pytest.mark.parametrize("bad,code", [
    (b"\x82\x02ab", 1002),                                  # unmasked
    (b"\xc2\x80abcd", 1002),                                # RSV1 set
    (b"\x89\xfe\x00\x80" + b"m" * 4, 1002),                 # control frame over 125 bytes
    (b"\x80\x80mask", 1002),                                # continuation without a message
    (b"\x83\x80mask", 1002),                                # reserved opcode
    (frame(b"text", 1, mask=b"abcd"), 1003),                # a text frame on MQTT's binary route
    (frame(b"\xff\xfe", 1, mask=b"abcd"), 1007),            # text that is not UTF-8
])
def test_protocol_errors_close_with_their_code(bad, code):
    h = make_conn()
    h.conn.data_received(upgrade(), 0.0)
    h.t.take()
    h.conn.data_received(bad, 0.0)
    assert server_frames(h.t.take()) == [(0x8, struct.pack("!H", code))]
    assert h.t.closed
    h.conn.data_received(frame(b"more"), 0.0)
    assert h.t.take() == b"" and bytes(h.handlers[0].data) == b""


@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: " + RFC_KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", 400),
    (upgrade(key="short"), 400),
    (upgrade().replace(b"Sec-WebSocket-Key: " + RFC_KEY.encode() + b"\r\n", b""), 400),   # no key at all
    (upgrade().replace(b"Version: 13", b"Version: 8"), 426),
    (upgrade().replace(b"keep-alive, Upgrade", b"keep-alive"), 400),                      # Connection lacks upgrade
    (upgrade(protocol="chat"), 400),                        # only subprotocols this route does not speak
    (upgrade(path="/strict", protocol=None), 400),          # a route that needs a subprotocol
    (upgrade(path="/nowhere"), 404),
    (upgrade(path="/api/x"), 400),                          # an upgrade on a plain HTTP route
    (b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 426),        # plain request on a WebSocket-only path
    (b"G" * 20000, 431),                                    # no end of headers in sight
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 20000 + b"\r\n\r\n", 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),   # a TLS ClientHello on a plain port
    (b"GET /api HTTP/1.1\r\n\r\n", 400),                    # HTTP/1.1 without Host
])
def test_bad_handshakes_get_an_http_error_and_a_close(request_bytes, status):
    h = make_conn()
    h.conn.data_received(request_bytes, 0.0)
    out = h.t.take()
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:80]
    assert b"Connection: close" in head_of(out) and h.t.closed and not h.handlers
    if status == 426:
        assert b"Upgrade: websocket" in out or b"Sec-WebSocket-Version: 13" in out


def test_no_subprotocol_offered_is_accepted_where_the_route_allows():
    h = make_conn()
    h.conn.data_received(upgrade(protocol=None), 0.0)
    out = h.t.take()
    assert out.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol" not in out and len(h.handlers) == 1


@pytest.mark.parametrize("offered,chosen", [("binary.ircv3.net, text.ircv3.net", b"binary.ircv3.net"),
                                            ("text.ircv3.net, binary.ircv3.net", b"text.ircv3.net"),
                                            ("foo, text.ircv3.net", b"text.ircv3.net")])
def test_subprotocol_follows_the_clients_preference(offered, chosen):
    h = make_conn()
    h.conn.data_received(upgrade(path="/irc", protocol=offered), 0.0)
    assert b"Sec-WebSocket-Protocol: " + chosen + b"\r\n" in h.t.take()


def test_irc_text_lines_in_and_out():
    h = make_conn()
    h.conn.data_received(upgrade(path="/irc", protocol="text.ircv3.net")
                         + frame("PRIVMSG #a :héllo".encode(), 1) + frame(b"PING x", 1), 0.0)
    h.t.take()
    irc = h.handlers[0]
    assert bytes(irc.data) == "PRIVMSG #a :héllo\r\nPING x\r\n".encode()
    irc.t.write(b":s 001 a :hi\r\n:s NOTICE a :\xff bad\r\n:s PONG")   # a line left open
    assert server_frames(h.t.take()) == [(1, b":s 001 a :hi"), (1, ":s NOTICE a :\ufffd bad".encode())]
    irc.t.write(b" s :x\r\n")
    assert server_frames(h.t.take()) == [(1, b":s PONG s :x")]
    h.conn.data_received(frame(b"NICK b", 2), 0.0)                        # binary on text.ircv3.net
    assert server_frames(h.t.take()) == [(8, b"\x03\xeb")] and h.t.closed


def test_irc_binary_lines_keep_bytes_and_no_subprotocol_takes_both():
    h = make_conn()
    h.conn.data_received(upgrade(path="/irc", protocol="binary.ircv3.net") + frame(b"NICK \xff", 2), 0.0)
    h.t.take()
    irc = h.handlers[0]
    assert bytes(irc.data) == b"NICK \xff\r\n"
    irc.t.write(b"ERROR :\xff\r\n")
    assert server_frames(h.t.take()) == [(2, b"ERROR :\xff")]
    legacy = make_conn()
    legacy.conn.data_received(upgrade(path="/irc", protocol=None) + frame(b"NICK a", 1) + frame(b"USER b", 2), 0.0)
    legacy.t.take()
    assert bytes(legacy.handlers[0].data) == b"NICK a\r\nUSER b\r\n"
    legacy.handlers[0].t.write(b"PING :x\r\n")
    assert server_frames(legacy.t.take()) == [(1, b"PING :x")]           # text out, like other servers


def test_a_line_message_past_the_limit_closes_1009_but_a_stream_has_none():
    h = make_conn(max_message_bytes=1024)
    h.conn.data_received(upgrade(path="/irc", protocol="binary.ircv3.net"), 0.0)
    h.t.take()
    h.conn.data_received(frame(b"x" * 600, 2, fin=False) + frame(b"y" * 600, 0), 0.0)
    assert server_frames(h.t.take()) == [(8, b"\x03\xf1")] and h.t.closed
    s = make_conn(max_message_bytes=1024)
    s.conn.data_received(upgrade() + frame(b"z" * 5000), 0.0)
    assert bytes(s.handlers[0].data) == b"z" * 5000 and not s.t.closed


def test_handler_close_sends_a_close_frame_and_queue_overflow_aborts():
    h = make_conn()
    h.conn.data_received(upgrade(), 0.0)
    h.t.take()
    inner = h.handlers[0]
    inner.t.write(b"\x20\x02\x00\x00")
    inner.t.close("bye")
    inner.t.write(b"late")
    assert server_frames(h.t.take()) == [(2, b"\x20\x02\x00\x00"), (8, b"\x03\xe8")] and h.t.closed == "bye"
    o = make_conn()
    o.conn.data_received(upgrade(), 0.0)
    o.conn.send_queue_full(0.0)                      # Recorder has no send_queue_full of its own
    assert o.t.aborted == "SendQ exceeded"


def test_removing_a_route_closes_its_connections_going_away():
    h = make_conn()
    h.conn.data_received(upgrade(), 0.0)
    h.t.take()
    route = h.routes.websocket["/mqtt"]
    h.routes.remove(route, owner="test")
    assert server_frames(h.t.take()) == [(8, b"\x03\xe9")] and h.t.closed == "Route removed"
    again = make_conn()
    again.routes.remove(again.routes.websocket["/mqtt"], owner="test")
    again.conn.data_received(upgrade(), 0.0)
    assert again.t.take().startswith(b"HTTP/1.1 404 ")


def test_alias_listener_serves_one_route_at_any_path():
    h = make_conn(only="/mqtt")
    h.conn.data_received(upgrade(path="/whatever/path"), 0.0)
    assert h.t.take().startswith(b"HTTP/1.1 101 ") and len(h.handlers) == 1
    p = make_conn(only="/mqtt")
    p.conn.data_received(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)   # no HTTP routes on an alias
    assert p.t.take().startswith(b"HTTP/1.1 426 ")


# ---------------------------------------------------------------------- plain HTTP, from bytes

def test_http_routes_keep_alive_and_pipelining():
    h = make_conn()
    reqs = (b"GET /api/items?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /api/v2/thing HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /api HTTP/1.1\r\nHost: x\r\n\r\n")
    for i in range(0, len(reqs), 3):
        h.conn.data_received(reqs[i:i + 3], 0.0)
    out = h.t.take()
    parts = out.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"201", b"200"]
    assert parts[0].endswith(b"GET /api/items x=1 b''") and b"X-Route: api" in parts[0]
    assert parts[1].endswith(b"POST /api  b'hello'") and parts[2].endswith(b"v2")
    assert parts[3].endswith(b"\r\n\r\n")                                  # HEAD: headers only
    assert [r.header("host") for r in h.requests] == ["x", "x", "x"] and h.t.closed is None


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /apix HTTP/1.1\r\nHost: x\r\n\r\n", 404),        # a prefix matches whole path segments
    (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 413),
    (b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
     + b"400\r\n" + b"a" * 1024 + b"\r\n", 413),
    (b"\x00\x01garbage\r\n\r\n", 400),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
])
def test_http_errors(request_bytes, status):
    h = make_conn(max_body_bytes=1500)
    h.conn.data_received(request_bytes, 0.0)
    assert h.t.take().startswith(f"HTTP/1.1 {status} ".encode()) and h.t.closed


def test_a_failing_route_is_a_500_and_the_connection_goes_on():
    h = make_conn()
    h.conn.data_received(b"GET /api/boom HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    parts = h.t.take().split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"500", b"200"] and h.t.closed is None


def test_request_and_idle_timeouts():
    h = make_conn()
    h.conn.data_received(b"GET /api HTTP/1.1\r\nHost: x\r\n", 0.0)        # slowloris: never ends
    h.server.sweep(9.0)
    assert h.t.closed is None
    h.server.sweep(10.5)
    assert h.t.take().startswith(b"HTTP/1.1 408 ") and h.t.closed
    idle = make_conn()
    idle.conn.data_received(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n", 5.0)
    idle.t.take()
    idle.server.sweep(14.0)
    assert idle.t.closed is None                                          # the wait restarted at the response
    idle.server.sweep(15.5)
    assert idle.t.take() == b"" and idle.t.closed == "Idle timeout"
    ws = make_conn()
    ws.conn.data_received(upgrade(), 0.0)
    ws.server.sweep(100.0)
    assert ws.t.closed is None and not ws.server.waiting                 # an open WebSocket is not swept


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from([b"", upgrade(), upgrade("/irc", None)]))
def test_hostile_bytes_never_raise(chunks, prefix):
    h = make_conn(max_header_bytes=1024)
    h.conn.data_received(prefix, 0.0) if prefix else None
    for c in chunks:
        h.conn.data_received(c, 0.0)
    out = h.t.take()
    assert not out or out.startswith(b"HTTP/1.1 ") or prefix


# ---------------------------------------------------------------------- UDP, config

def test_udp_reads_are_bounded_per_wakeup():
    import gevent

    from relay.runtime.udp import DatagramEndpoint, make_udp_socket
    got = []
    rt = SimpleNamespace(hub=gevent.get_hub(), now=time.time)
    sock = make_udp_socket("127.0.0.1", 0)
    ep = DatagramEndpoint(rt, sock, "t", lambda e, l, now: SimpleNamespace(
        datagram_received=lambda d, a, n: got.append(d)), None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        for i in range(150):
            c.sendto(b"%d" % i, ("127.0.0.1", ep.port))
        wait_for(lambda: (ep._on_readable(), len(got))[1] >= DatagramEndpoint.BATCH, what="first batch")
        assert len(got) == DatagramEndpoint.BATCH       # one wake-up reads one batch, the rest waits its turn
        wait_for(lambda: (ep._on_readable(), len(got))[1] == 150, what="the rest")
    assert got == [b"%d" % i for i in range(150)]
    ep.close()


def test_listen_config_udp_and_http_section():
    cfg = parse({"listen": [{"proto": "sip", "port": 5060, "transport": "udp"}, {"proto": "sip", "port": 5060}]})
    assert [l.transport for l in cfg.listen] == ["udp", "tcp"]
    assert cfg.http.max_header_bytes == 16384
    for data, msg in [({"listen": [{"proto": "x", "port": 1, "transport": "udp", "tls": True}]},
                       "listen[0]: tls: a udp listener cannot use TLS"),
                      ({"listen": [{"proto": "x", "port": 1, "transport": "sctp"}]}, "listen[0].transport"),
                      ({"http": {"max_header_bytes": 10}}, "http.max_header_bytes")]:
        with pytest.raises(ConfigError) as e:
            parse(data)
        assert any(m.startswith(msg) for m in e.value.errors), e.value.errors


# ---------------------------------------------------------------------- real servers, real clients

@pytest.fixture
def web_server(tmp_path, monkeypatch):
    """A server with irc and http listeners, the web_sample test module and its UDP echo listener; the
    module dials a test listener (`srv.dialled`)."""
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    dialled = socket.socket()
    dialled.bind(("127.0.0.1", 0))
    dialled.listen(4)
    http_port, https_port, udp_port = free_port(), free_port(), free_port()
    cfg = server_config(modules={"mods.web_sample": {"dial_port": dialled.getsockname()[1]}})
    cfg["listen"] += [{"proto": "http", "host": "127.0.0.1", "port": http_port},
                      {"proto": "http", "host": "127.0.0.1", "port": https_port, "tls": True},
                      {"proto": "udp-echo", "host": "127.0.0.1", "port": udp_port, "transport": "udp"}]
    srv = Server(tmp_path / "web", cfg).start()
    srv.http_port, srv.https_port, srv.udp_port, srv.dialled = http_port, https_port, udp_port, dialled
    yield srv
    srv.stop()
    dialled.close()


def _ws(port: int, path: str = "/irc", subprotocols=None) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", subprotocols=subprotocols, timeout=10)


def _ws_read_until(ws: websocket.WebSocket, needle: str) -> str:
    seen = []
    while True:
        op, data = ws.recv_data()
        line = data.decode("utf-8", "replace")
        assert op in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY), (op, seen[-5:])
        assert "\n" not in line, "one IRC line per message, without CRLF"
        seen.append((op, line))
        if needle in line:
            return op, line


@pytest.mark.parametrize("subprotocol,opcode", [("text.ircv3.net", 1), ("binary.ircv3.net", 2)])
def test_irc_over_websocket_talks_to_a_tcp_client(web_server, subprotocol, opcode):
    ws = _ws(web_server.http_port, subprotocols=[subprotocol])
    assert ws.getsubprotocol() == subprotocol
    send = ws.send if opcode == 1 else (lambda s: ws.send_binary(s.encode()))
    nick = "wst" if opcode == 1 else "wsb"
    send(f"NICK {nick}")
    send(f"USER {nick} 0 * :web user")
    assert _ws_read_until(ws, " 376 ")[0] == opcode
    tcp = RawClient(web_server.irc_port).register("tcpu")
    send("JOIN #web")
    _ws_read_until(ws, " 366 ")
    tcp.send("JOIN #web")
    tcp.read_until(" 366 ")
    send("PRIVMSG #web :héllo from the browser")
    assert tcp.read_until("PRIVMSG #web").endswith(":héllo from the browser")
    tcp.send("PRIVMSG #web :and back")
    op, line = _ws_read_until(ws, "PRIVMSG #web")
    assert op == opcode and line.endswith(":and back") and line.startswith(":tcpu!")
    tcp.send(f"PRIVMSG {nick} :direct words")
    assert _ws_read_until(ws, f"PRIVMSG {nick}")[1].endswith(" :direct words")
    send("QUIT :done")
    assert tcp.read_until(" QUIT ").endswith(":Quit: done")
    tcp.close()
    ws.close()


def test_wss_and_https_on_a_tls_http_listener(web_server):
    import ssl
    ws = websocket.create_connection(f"wss://127.0.0.1:{web_server.https_port}/irc", subprotocols=["text.ircv3.net"],
                                     sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False}, timeout=10)
    ws.send("NICK secure")
    ws.send("USER secure 0 * :s")
    _ws_read_until(ws, " 376 ")
    ws.send("WHOIS secure")
    assert "is using a secure connection" in _ws_read_until(ws, " 671 ")[1]     # the Transport says tls
    ws.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", web_server.https_port), timeout=10)) as s:
        s.sendall(b"GET /hello/tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while (d := s.recv(65536)):
            out += d
    assert out.startswith(b"HTTP/1.1 200 ") and b"hello GET /hello/tls" in out


def test_bad_http_on_a_live_server(web_server):
    port = web_server.http_port

    def exchange(data: bytes, chunk: int | None = None) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                for i in range(0, len(data), chunk or len(data) or 1):
                    s.sendall(data[i:i + (chunk or len(data))])
            except (BrokenPipeError, ConnectionResetError):
                pass                                   # the server may close before we finish: that is the point
            out = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        return out                      # and it closed the connection
                    out += d
            except ConnectionResetError:
                return out

    assert exchange(b"\x00garbage\xff\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert exchange(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    key = base64.b64encode(os.urandom(16)).decode()
    assert exchange(b"GET /irc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n").startswith(b"HTTP/1.1 400 ")   # no key
    assert exchange(f"GET /hello HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                    ).startswith(b"HTTP/1.1 400 ")                                       # not a WebSocket route
    # Slowloris bounded by bytes: headers that never end are cut at max_header_bytes.
    slow = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 60) for i in range(400))
    assert exchange(slow, chunk=500).startswith(b"HTTP/1.1 431 ")
    # The server is fine: IRC still works, and so does HTTP.
    RawClient(web_server.irc_port).register("still").close()
    assert b"hello GET /hello/x q=a=1" in exchange(b"GET /hello/x?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def test_module_routes_udp_and_dial_then_unload_removes_them(web_server):
    srv, port = web_server, web_server.http_port
    # HTTP route, and a failing one (500, the server goes on).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /hello/there?x=y HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /hello/boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while (d := s.recv(65536)):
            out += d
    assert b"HTTP/1.1 200 " in out and b"hello POST /hello/there q=x=y body=abc" in out and b"X-Sample: yes" in out
    assert b"HTTP/1.1 500 " in out
    # WebSocket route: an echo.
    echo = _ws(port, "/echo", ["echo.test"])
    echo.send_binary(b"ping me")
    assert echo.recv() == b"ping me"
    # UDP echo.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(10)
        u.sendto(b"dgram", ("127.0.0.1", srv.udp_port))
        data, addr = u.recvfrom(100)
        assert data == b"echo:dgram" and addr == ("127.0.0.1", srv.udp_port)
    # The module's dial reached our listener and speaks through the same Transport as any connection.
    srv.dialled.settimeout(10)
    peer, _ = srv.dialled.accept()
    peer.settimeout(10)
    assert peer.recv(100) == b"hello from 127.0.0.1\n"
    peer.sendall(b"shout\n")
    assert peer.recv(100) == b"SHOUT\n"
    assert srv.call("web_sample", "status")["dial"] == "connected"
    listeners = {(l["proto"], l["port"]) for l in srv.status()["listeners"]}
    assert ("udp-echo", srv.udp_port) in listeners

    srv.ctl("module", "unload", "mods.web_sample")
    # Routes gone (404), its WebSocket closed going away, its dial closed, its UDP listener closed.
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        _ws(port, "/echo", ["echo.test"])
    assert e.value.status_code == 404
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404 ")
    op, data = echo.recv_data(control_frame=True)
    assert op == websocket.ABNF.OPCODE_CLOSE and data[:2] == struct.pack("!H", 1001)
    assert peer.recv(100) == b""
    peer.close()
    wait_for(lambda: ("udp-echo", srv.udp_port) not in {(l["proto"], l["port"]) for l in srv.status()["listeners"]},
             what="the udp listener closed")
    # Loaded again, everything is back.
    srv.ctl("module", "load", "mods.web_sample")
    wait_for(lambda: ("udp-echo", srv.udp_port) in {(l["proto"], l["port"]) for l in srv.status()["listeners"]},
             what="the udp listener reopened")
    again = _ws(port, "/echo")
    again.send_binary(b"back")
    assert again.recv() == b"back"
    again.close()


def test_a_failed_dial_is_reported_to_the_module(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    closed_port = free_port()                            # nobody listens there
    srv = Server(tmp_path / "dialfail", server_config(modules={"mods.web_sample": {"dial_port": closed_port}}))
    srv.start()
    try:
        got = wait_for(lambda: (srv.call("web_sample", "status")["dial"] or "").startswith("failed")
                       and srv.call("web_sample", "status")["dial"], what="the dial to fail")
        assert "refused" in got.lower()
    finally:
        srv.stop()
