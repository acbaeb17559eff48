"""The xmpp module in memory (cores from tests/support_net.py, transports without sockets): the
routing table's names, hooks on stanzas, filter_packet on chats, unknown iq, IRC <-> XMPP direct
messages, and two XMPP accounts on two linked servers."""

from __future__ import annotations

import base64

import pytest

from relay.core.hooks import Stop
from support_net import Wire
from xmpp_ext_support import HEADER, Transport, bind, sasl_plain  # the in-memory stream and login the XMPP tests share

from bridges.xmpp.routing import ROUTES, Router
from lxml import etree


class Xmpp:
    """A client logged in with PLAIN and bound, feeding bytes to the session."""

    def __init__(self, wire: Wire, core: str, account: str, resource: str):
        self.wire, self.core = wire, wire.cores[core]
        self.t = Transport()
        self.s = self.core.services["xmpp"].new_session(self.t, None, wire.now)
        self.feed(HEADER)
        sasl_plain(self, account)
        self.jid = bind(self, resource)

    def feed(self, data) -> None:
        self.s.data_received(data.encode() if isinstance(data, str) else data, self.wire.now)
        self.wire.pump()

    def take(self) -> bytes:
        data = b"".join(self.t.out)
        self.t.out.clear()
        return data


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": ""}})
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    return w


def test_event_names_are_prosody_style():
    iq = etree.fromstring("<iq xmlns='jabber:client' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert Router.names("iq", iq, "host") == ["iq-get/host/urn:xmpp:ping:ping", "iq/host"]
    assert Router.names("message", etree.fromstring("<message xmlns='jabber:client'/>"), "bare") == ["message/bare"]
    assert "iq-get/host/urn:xmpp:ping:ping" in ROUTES and "presence/initial" in ROUTES


def test_ping_and_unknown_iq(wire):
    c = Xmpp(wire, "a", "alice", "r")
    c.feed("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"type=\"result\"" in c.take()
    for to in ("localhost", "alice@localhost", "bob@localhost"):
        c.feed(f"<iq type='get' id='u1' to='{to}'><query xmlns='urn:example:none'/></iq>")
        out = c.take()
        assert b'type="error"' in out and b"<service-unavailable" in out, (to, out)
    c.feed("<iq type='get' id='bad' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"<jid-malformed" in c.take()


def test_chat_between_two_accounts_keeps_unknown_elements_and_stamps_from(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    alice.feed("<message type='chat' to='bob@localhost' from='mallory@localhost' id='m1'><body>hi</body>"
               "<request xmlns='urn:xmpp:receipts'/><x:y xmlns:x='urn:example:x'>kept</x:y></message>")
    out = bob.take()
    assert b'from="alice@localhost/r"' in out and b'to="bob@localhost/r"' in out
    assert b"<request xmlns=\"urn:xmpp:receipts\"/>" in out and b">kept</x:y>" in out and b"mallory" not in out


def test_hooks_run_on_stanzas_and_filter_packet_on_chats(wire):
    core = wire.cores["a"]
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    seen = []
    core.hooks.add("user_send_packet", lambda el, s: seen.append(("send", el.get("id"))) or (
        Stop(None) if el.get("id") == "drop" else None))
    core.hooks.add("user_receive_packet", lambda el, s: seen.append(("receive", el.get("id"))))
    core.hooks.add("filter_packet", lambda ev: Stop(None) if "spam" in ev.text else
                   ev if "bad" not in ev.text else _rewritten(ev))
    alice.feed("<message type='chat' to='bob@localhost' id='drop'><body>x</body></message>")
    alice.feed("<message type='chat' to='bob@localhost' id='spam'><body>buy spam</body></message>")
    alice.feed("<message type='chat' to='bob@localhost' id='bad'><body>a bad word</body></message>")
    out = bob.take()
    assert b"buy spam" not in out and b">x<" not in out
    assert b"<body>a *** word</body>" in out
    assert ("send", "drop") in seen and ("receive", "bad") in seen and ("receive", "drop") not in seen


def _rewritten(ev):
    ev.text = ev.text.replace("bad", "***")
    return ev


def test_modules_extend_the_table_with_narrow_hooks_hosts_and_features(wire):
    from bridges.xmpp.routing import XmppHost
    core = wire.cores["a"]
    alice = Xmpp(wire, "a", "alice", "r")
    got = []

    def thing(ev):
        got.append(("thing", ev.session.jid, str(ev.to), ev.stanza.get("id")))
        ev.router.result(ev.session, ev.stanza)
        return True

    def host(s, el, to, now):
        got.append(("host", str(to)))
        reply = etree.Element("{jabber:client}message", {"from": str(to), "to": str(s.jid), "type": "chat"})
        etree.SubElement(reply, "{jabber:client}body").text = "hello from the room"
        assert core.services["xmpp"].router.deliver(reply, now)

    # (vcard-temp is served by vcard.py now: the example is a namespace nothing serves)
    h1 = core.hooks.add("iq-get/self/urn:example:thing:query", thing, owner="t")
    core.items.add("xmpp-host", XmppHost("conference.localhost", host, "Rooms", "conference", "text"), "t")
    core.items.add("xmpp-feature", "urn:example:feature", "t")
    alice.feed("<iq type='get' id='v1'><query xmlns='urn:example:thing'/></iq>")
    assert b"id=\"v1\"" in alice.take().replace(b"'", b'"') and got[0][0] == "thing"
    alice.feed("<message type='groupchat' to='room@conference.localhost'><body>hi</body></message>")
    assert ("host", "room@conference.localhost") in got
    assert b"hello from the room" in alice.take()
    alice.feed("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert b'jid="conference.localhost"' in alice.take()
    alice.feed("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert b'var="urn:example:feature"' in alice.take()
    core.hooks.remove(h1)
    alice.feed("<iq type='get' id='v2'><query xmlns='urn:example:thing'/></iq>")
    assert b"service-unavailable" in alice.take()


def test_irc_and_xmpp_direct_messages_in_memory(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    irc = wire.client("a", "carol")
    irc.send("PRIVMSG alice :hello \x02there\x02")
    out = alice.take()
    assert b'from="carol@localhost"' in out and b"<body>hello there</body>" in out and b'type="chat"' in out
    alice.feed("<message type='chat' to='carol@localhost'><body>back</body></message>")
    assert ":alice!alice@xmpp.a.test PRIVMSG carol back" in irc.t.lines()


def test_two_xmpp_accounts_on_two_linked_servers_chat(wire):
    wire.link("a", "b")
    alice, bob = Xmpp(wire, "a", "alice", "here"), Xmpp(wire, "b", "bob", "there")
    alice.feed("<message type='chat' to='bob@localhost'><body>across the tree</body></message>")
    out = bob.take()
    # A stanza now, not a direct message: the sender's full JID, as from a resource on this server.
    assert b"<body>across the tree</body>" in out and b'from="alice@localhost/here"' in out
    bob.feed("<message type='chat' to='alice@localhost'><body>and back</body></message>")
    assert b"<body>and back</body>" in alice.take()


def test_disconnect_quits_the_member_and_tells_presence_subscribers(wire):
    core = wire.cores["a"]
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    for c in (alice, bob):
        c.feed("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>")
    alice.feed("<presence type='subscribe' to='bob@localhost'/>")
    assert b'type="subscribe"' in bob.take()
    bob.feed("<presence type='subscribed' to='alice@localhost'/>")
    out = alice.take()
    assert b'subscription="to"' in out and b'from="bob@localhost/r"' in out     # push, then bob's presence
    assert core.net.find_nick("bob") is not None
    bob.s.connection_lost("gone", wire.now)
    assert b'type="unavailable"' in alice.take() and core.net.find_nick("bob") is None


def test_the_server_pings_a_silent_client_then_closes_it(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": "", "ping_interval": 10, "ping_timeout": 5}})
    w.cores["a"].register_account("alice", "secret", w.now)
    c = Xmpp(w, "a", "alice", "r")
    w.tick(6)
    assert b"urn:xmpp:ping" not in c.take()
    w.tick(6)
    ping = c.take()
    assert b'type="get"' in ping and b"<ping xmlns=\"urn:xmpp:ping\"/>" in ping
    c.feed("<iq type='result' id='x' to='localhost'/>")      # any answer counts
    w.tick(8)
    assert not c.t.closing
    for _ in range(4):
        w.tick(5)
    assert c.t.closing and b"<connection-timeout" in c.take()


def test_a_stream_not_bound_in_time_is_closed(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": "", "negotiation_timeout": 5}})
    t = Transport()
    w.cores["a"].services["xmpp"].new_session(t, None, w.now).data_received(HEADER, w.now)
    w.tick(3)
    assert not t.closing
    w.tick(3)
    assert t.closing and b"<connection-timeout" in b"".join(t.out)


def test_a_whole_session_fed_one_byte_at_a_time(wire):
    """Login, bind, presence and a chat, each byte in its own read: the same as whole reads."""
    bob = Xmpp(wire, "a", "bob", "r")
    t = Transport()
    s = wire.cores["a"].services["xmpp"].new_session(t, None, wire.now)
    plain = base64.b64encode(b"\0alice\0secret")
    steps = [HEADER, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + plain + b"</auth>",
             HEADER, b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
             "<presence/><message type='chat' to='bob@localhost'><body>byte \u00e9 by byte</body></message>"
             .encode()]
    for step in steps:
        for i in range(len(step)):
            s.data_received(step[i:i + 1], wire.now)
    out = b"".join(t.out)
    assert b"<success" in out and b"</jid>" in out and not t.closing
    assert "<body>byte \u00e9 by byte</body>".encode() in bob.take()
