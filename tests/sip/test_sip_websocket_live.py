"""SIP over WebSocket (RFC 7118) at /sip on the HTTP listener, with websocket-client as the client's
WebSocket: REGISTER with digest, MESSAGE both ways with a UDP user agent and to an IRC user, and a
connection without the `sip` subprotocol refused."""

from __future__ import annotations

import pytest
from sipua import UA
from support import RawClient, Server, free_port, server_config, wait_for

websocket = pytest.importorskip("websocket")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    irc, sip, http = free_port(), free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"},
                                {"proto": "http", "host": "127.0.0.1", "port": http}],
                        modules={"sip": {}})
    s = Server(tmp_path_factory.mktemp("sipws"), cfg).start()
    s.sip_port, s.http_port = sip, http
    for name in ("alice", "bob"):
        s.ctl("register", name, f"{name}-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log(), s.log()[-3000:]


def test_register_and_message_over_websocket(srv):
    a = UA(srv.http_port, "alice", "alice-pw", transport="WS")
    b = UA(srv.sip_port, "bob", "bob-pw")
    try:
        assert a.sock.subprotocol == "sip"
        r = a.register(600)
        assert r.status == 200 and any(".invalid;transport=ws" in c for c in r.headers.values("Contact"))
        [binding] = [x for x in srv.call("sip", "bindings") if x["account"] == "alice"]
        assert binding["flow"][0] == "WS"
        assert b.register(600).status == 200
        req = b.request("MESSAGE", "sip:alice@localhost", body=b"to the browser")
        b.send(req)
        b.send(b.authorized(req, b.next_message()))
        got = a.wait_request("MESSAGE")                 # over the WebSocket, answered 200 over it
        assert got.body == b"to the browser" and got.top_via.transport == "WS"
        assert b.next_message().status == 200
        req = a.request("MESSAGE", "sip:bob@localhost", body=b"from the browser")
        a.send(req)      # no challenge: the WebSocket that registered alice authenticates her requests
        assert b.wait_request("MESSAGE").body == b"from the browser"
        assert a.next_message().status == 200
        irc = RawClient(srv.irc_port).register("ircweb")
        assert a.transact(a.request("MESSAGE", "sip:ircweb@localhost", body=b"hi irc")).status == 202
        assert irc.read_until("PRIVMSG ircweb").endswith(":hi irc")
        irc.close()
        assert a.register(0).status == 200
        b.register(0)
    finally:
        a.close()
        b.close()


def test_a_closed_websocket_takes_its_binding(srv):
    a = UA(srv.http_port, "alice", "alice-pw", transport="WS")
    assert a.register(600).status == 200
    a.close()
    wait_for(lambda: all(x["account"] != "alice" for x in srv.call("sip", "bindings")),
             what="the WebSocket flow's binding gone")


def test_websocket_without_the_sip_subprotocol_is_refused(srv):
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws://127.0.0.1:{srv.http_port}/sip", timeout=10)


def _without_content_length(data: bytes) -> bytes:
    head, body = data.split(b"\r\n\r\n", 1)
    lines = [l for l in head.split(b"\r\n") if not l.lower().startswith((b"content-length:", b"l:"))]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_a_websocket_message_without_content_length_has_the_rest_as_its_body(srv):
    """RFC 7118 §5: one SIP message per WebSocket message, so Content-Length is optional."""
    from bridges.sip.codec import serialise
    a = UA(srv.http_port, "alice", "alice-pw", transport="WS")
    irc = RawClient(srv.irc_port).register("wsnolen")
    try:
        req = a.request("REGISTER", "sip:localhost", to="sip:alice@localhost",
                        extra=[("Contact", f"<{a.contact}>"), ("Expires", "600")])
        a.send_bytes(_without_content_length(serialise(req)))
        challenge = a.next_message()
        assert challenge.status == 401
        a.send_bytes(_without_content_length(serialise(a.authorized(req, challenge))))
        assert a.next_message().status == 200
        # Over the connection that registered: no challenge (see service.registered_on_flow).
        req = a.request("MESSAGE", "sip:wsnolen@localhost", body=b"no length\r\nsecond line")
        a.send_bytes(_without_content_length(serialise(req)))
        assert a.next_message().status == 202
        assert irc.read_until("PRIVMSG wsnolen").endswith(":no length")
        assert irc.read_until("PRIVMSG wsnolen").endswith(":second line")
        a.send_bytes(serialise(a.request("MESSAGE", "sip:wsnolen@localhost", body=b"with a length")))
        assert a.next_message().status == 202
        assert irc.read_until("PRIVMSG wsnolen").endswith(":with a length")
        assert a.register(0).status == 200
    finally:
        a.close()
        irc.close()
