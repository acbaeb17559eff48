"""The bridge kit on real servers with real clients: IRC over WebSocket (websocket-client, both IRCv3
subprotocols, ws and wss) talking to plain TCP IRC, bad HTTP, a module's HTTP/WebSocket routes, UDP echo and
an outbound dial, and what unloading the module undoes; UDP reads bounded per wake-up."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from types import SimpleNamespace

import pytest
import websocket
from support import RawClient, Server, free_port, server_config, wait_for

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert f"udp-echo/udp@127.0.0.1:{srv.udp_port}" in srv.ctl("status").stdout

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


# ---------------------------------------------------------------------- UDP

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
