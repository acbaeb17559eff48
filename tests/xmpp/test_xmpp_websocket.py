"""XMPP over WebSocket (RFC 7395): the session from messages in memory (open, SASL, restart, bind, a
chat with a TCP client, errors followed by <close/>), and on a real server through the HTTP listener
with websocket-client logging in and exchanging messages with a slixmpp client."""

from __future__ import annotations

import asyncio
import base64

import pytest
from xmpp_ext_support import Transport, Xmpp, stanzas, wire

from bridges.xmpp.websocket import WebSocketC2s

F = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{F}' to='localhost' version='1.0'/>"


class WsClient:
    """One message per feed, one message per write (what the runtime's TEXT_MESSAGES framing does)."""

    def __init__(self, w, secure=True, peer_host="127.0.0.1"):
        self.w, self.t = w, Transport(peer_host)
        self.t.tls = secure
        self.s = WebSocketC2s(w.cores["a"].services["xmpp"], self.t, None, w.now)

    def feed(self, text: str) -> list[bytes]:
        self.s.data_received(text.encode(), self.w.now)
        self.w.pump()
        out, self.t.out = self.t.out, []
        return out

    def login(self, account="alice", resource="web"):
        got = self.feed(OPEN)
        assert got[0].startswith(f'<open xmlns="{F}"'.encode()) and b"PLAIN" in got[1]
        plain = base64.b64encode(f"\0{account}\0secret".encode()).decode()
        got = self.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        assert b"<success" in got[0]
        got = self.feed(OPEN)
        assert b"urn:ietf:params:xml:ns:xmpp-bind" in got[1]
        got = self.feed(f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        f"<resource>{resource}</resource></bind></iq>")
        assert len(got) == 1 and b"</jid>" in got[0] and b'xmlns="jabber:client"' in got[0]
        return self


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path)


def test_a_websocket_session_chats_with_a_tcp_one(w):
    ws = WsClient(w).login()
    bob = Xmpp(w).login("bob")
    bob.feed("<message type='chat' to='alice@localhost' id='m1'><body>hi web</body></message>")
    ws.feed("<presence xmlns='jabber:client'/>")
    bob.feed("<message type='chat' to='alice@localhost/web' id='m2'><body>hi again</body></message>")
    ws.feed("<message xmlns='jabber:client' type='chat' to='bob@localhost' id='m3'><body>from the web</body>"
            "</message>")
    assert b"from the web" in bob.take()
    ws.t.out.clear()
    bob.feed("<message type='chat' to='alice@localhost' id='m4'><body>each one a message</body></message>")
    out, ws.t.out = ws.t.out, []
    assert len(out) == 1 and out[0].startswith(b"<message") and b'xmlns="jabber:client"' in out[0]
    assert b"each one a message" in out[0]
    # The client closes: <close/> back, and the session is gone.
    got = ws.feed(f"<close xmlns='{F}'/>")
    assert got == [f'<close xmlns="{F}"/>'.encode()] and ws.t.closing


def test_errors_are_followed_by_close(w):
    ws = WsClient(w)
    ws.feed(OPEN)
    got = ws.feed("<message xmlns='jabber:client'><body>")        # a message must be a whole document
    assert b"not-well-formed" in got[-2] and got[-1] == f'<close xmlns="{F}"/>'.encode() and ws.t.closing
    other = WsClient(w)
    got = other.feed("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                     "to='localhost' version='1.0'>")
    assert any(b"stream:error" in g for g in got) and got[-1] == f'<close xmlns="{F}"/>'.encode()


def test_plain_ws_offers_no_sasl_unless_local_or_declared_secure(tmp_path):
    w = wire(tmp_path)
    got = WsClient(w, secure=False, peer_host="192.0.2.8").feed(OPEN)
    assert b"mechanism" not in got[1] and b"starttls" not in got[1]
    assert b"PLAIN" in WsClient(w, secure=False, peer_host="::ffff:127.0.0.1").feed(OPEN)[1]
    w2 = wire(tmp_path / "2", http_secure=True)
    assert b"PLAIN" in WsClient(w2, secure=False, peer_host="192.0.2.8").feed(OPEN)[1]


# ---------------------------------------------------------------- live

websocket = pytest.importorskip("websocket")       # websocket-client
slixmpp = pytest.importorskip("slixmpp")


def test_websocket_client_and_slixmpp_exchange_messages(tmp_path):
    from xmpp_ext_support import ext_server
    from xmpp_live import WAIT, Inbox, make_client, offline, online

    srv = ext_server(tmp_path / "x")           # plain ws from loopback: secure enough for SASL
    http = srv.ports["http"]
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{http}/xmpp-websocket", subprotocols=["xmpp"],
                                         timeout=WAIT)
        assert ws.getsubprotocol() == "xmpp"

        def recv() -> bytes:
            return ws.recv().encode()

        ws.send(OPEN)
        assert recv().startswith(f'<open xmlns="{F}"'.encode())
        assert b"SCRAM-SHA-256" in recv()
        plain = base64.b64encode(b"\0alice\0secret").decode()
        ws.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        assert b"<success" in recv()
        ws.send(OPEN)
        recv()
        assert b"bind" in recv()
        ws.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>ws</resource></bind></iq>")
        assert b"alice@localhost/ws" in recv()
        ws.send("<presence xmlns='jabber:client'/>")

        async def main():
            bob = await online(make_client(slixmpp, "bob@localhost/desk", "secret", srv), srv)
            got = Inbox(bob, "message")
            # One message in two frames: the runtime hands the session the whole message.
            ABNF = websocket.ABNF
            first = ABNF.create_frame("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>hello ",
                                      ABNF.OPCODE_TEXT, 0)
            await asyncio.to_thread(ws.send_frame, first)
            await asyncio.to_thread(ws.send_frame, ABNF.create_frame("from a websocket</body></message>",
                                                                     ABNF.OPCODE_CONT, 1))
            msg = await got.wait(lambda m: m["body"] == "hello from a websocket", "the WebSocket's message")
            assert str(msg["from"]) == "alice@localhost/ws"
            bob.send_message(mto="alice@localhost/ws", mbody="hello back", mtype="chat")

            def until_body():
                while True:
                    data = recv()
                    if b"hello back" in data:
                        return data
            data = await asyncio.to_thread(until_body)
            assert stanzas(data)[0].get("from") == "bob@localhost/desk"
            await offline(bob)
        asyncio.run(main())
        ws.send(f"<close xmlns='{F}'/>")
        assert recv() == f'<close xmlns="{F}"/>'.encode()
        ws.close()
    finally:
        srv.stop()
