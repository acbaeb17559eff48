"""The http listener's handler (h11 + wsproto) driven from bytes: handshakes, framings, every split point,
protocol errors, bad requests, limits, timeouts, hostile input. Real servers: test_http_live.py."""

from __future__ import annotations

import os
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.config import ConfigError, parse
from relay.core.http_routes import (ANY_LINES, BINARY_LINES, BINARY_STREAM, TEXT_LINES, HttpResponse, HttpRoutes)
from relay.core.timers import TimerQueue
from relay.runtime.http import HttpServer

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3's example
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ---------------------------------------------------------------------- in-process harness

class FakeTransport:
    """What Connection gives a handler; writes after close are dropped, as Connection does."""

    def __init__(self):
        self.out = bytearray()
        self.closed: str | None = None
        self.aborted: str | None = None
        self.peer_host, self.peer_port, self.tls, self.proto = "127.0.0.1", 5555, False, "http"
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
    cfg = parse({"http": {"request_timeout": 10.0, **http_limits}})
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


def test_expect_100_continue_is_answered_before_the_body():
    h = make_conn()
    h.conn.data_received(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", 0.0)
    assert h.t.take().startswith(b"HTTP/1.1 100 ")
    h.conn.data_received(b"ok", 0.0)
    assert h.t.take().startswith(b"HTTP/1.1 200 ") and h.requests[-1].body == b"ok"


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


# ---------------------------------------------------------------------- config

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


# ---------------------------------------------------------------------- whole messages, answers given later

class Messages:
    """A handler of the TEXT_MESSAGES framing: each data_received call is kept apart."""

    def __init__(self, t, log):
        self.t, self.calls = t, []
        log.append(self)

    def data_received(self, data: bytes, now: float) -> None:
        self.calls.append(data)

    def connection_lost(self, reason: str, now: float) -> None:
        pass


def test_text_messages_are_whole_at_every_split():
    from relay.core.http_routes import TEXT_MESSAGES
    one, two = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".encode(), "<iq>é</iq>".encode()
    wire = frame(one, opcode=1) + frame(two[:5], opcode=1, fin=False) + frame(b"", opcode=9) \
        + frame(two[5:], opcode=0)
    for cut in range(1, len(wire)):
        h = make_conn()
        log: list = []
        h.routes.add_websocket("/xmpp-websocket", {"xmpp": TEXT_MESSAGES}, lambda t, l, now: Messages(t, log),
                               owner="test")
        h.conn.data_received(upgrade("/xmpp-websocket", "xmpp"), 0.0)
        h.t.take()
        h.conn.data_received(wire[:cut], 0.0)
        h.conn.data_received(wire[cut:], 0.0)
        assert log[0].calls == [one, two], cut
        log[0].t.write(b"<close/>")                                  # each write is one text message
        assert server_frames(h.t.take())[-1] == (1, b"<close/>")


def test_a_deferred_response_is_sent_when_resolved_and_the_next_request_waits_for_it():
    from relay.core.http_routes import DeferredResponse
    h = make_conn()
    held: list = []
    lost: list = []

    def later(req, now):
        d = DeferredResponse(on_lost=lambda: lost.append(req.path))
        held.append(d)
        return d
    h.routes.add_http("/later", later, owner="test")
    h.conn.data_received(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                         b"GET /api/next HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    assert h.t.take() == b"" and len(held) == 1
    h.server.sweep(100.0)                                           # no request timeout while it is held
    assert h.t.closed is None
    held[0].resolve(HttpResponse(200, body=b"at last"))
    out = h.t.take()
    assert out.startswith(b"HTTP/1.1 200 ") and b"at last" in out
    assert b"GET /api/next" in out                                  # the pipelined one, answered after it
    held[0].resolve(HttpResponse(500))                               # once only
    assert h.t.take() == b""
    h.conn.data_received(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0.0)
    h.conn.connection_lost("gone", 0.0)
    assert lost == ["/later"] and held[1].done
