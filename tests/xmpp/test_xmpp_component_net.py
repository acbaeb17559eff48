"""XEP-0114 components across the tree, on linked cores in memory (tests/support_net.py `Wire`): a
component on one end reached from a client on the other (messages and iqs both ways), its domain
refused to a second component anywhere (`conflict`), gone when it disconnects, held through a short
split and gone after the split-hold, two claims made apart settled at the netjoin, hostile sets."""

from __future__ import annotations

import re

import pytest
from lxml import etree
from test_xmpp_federation import NS, of, online, stanzas

from support_net import Wire

from bridges.xmpp.component_net import FRAME
from bridges.xmpp.negotiation import handshake_digest
from xmpp_ext_support import Transport

SECRET = "s3cret"


class Component:
    """A XEP-0114 component connected to one core, fed bytes."""

    def __init__(self, wire: Wire, core: str, domain: str = "bot.localhost", secret: str = SECRET):
        self.wire, self.core, self.domain = wire, wire.cores[core], domain
        self.t = Transport()
        self.s = self.core.services["xmpp"].new_component(self.t, None, wire.now)
        self.feed(f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
                  f"to='{domain}'>")
        stream_id = re.search(rb"id=['\"]([^'\"]+)", self.take()).group(1).decode()
        self.feed(f"<handshake>{handshake_digest(stream_id, secret)}</handshake>")

    def feed(self, data: str) -> None:
        self.s.data_received(data.encode(), self.wire.now)
        self.wire.pump()

    def take(self) -> bytes:
        data = b"".join(self.t.out)
        self.t.out.clear()
        return data

    def stanzas(self) -> list[etree._Element]:
        data = self.take()
        return list(etree.fromstring(b"<r xmlns='jabber:component:accept'>" + data + b"</r>"))

    def lost(self) -> None:
        self.s.connection_lost("gone", self.wire.now)
        self.wire.pump()


CN = "{jabber:component:accept}"


def domains(wire: Wire, core: str):
    return wire.cores[core].services["xmpp"].component_domains


@pytest.fixture
def wire(tmp_path):
    xmpp = {"roster_file": "", "components": {"bot.localhost": SECRET}}
    w = Wire(tmp_path, ["a", "b", "c"], modules={"xmpp": xmpp})
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    w.link("b", "c")
    return w


def test_a_component_on_one_end_and_a_client_on_the_other_exchange_messages_and_iqs(wire):
    bot = Component(wire, "c")
    assert b"<handshake" in bot.take()
    assert domains(wire, "a").server_of("bot.localhost") == "003"
    assert domains(wire, "b").server_of("bot.localhost") == "003"
    alice = online(wire, "a", "alice", "r")
    alice.feed("<iq type='get' id='q1' to='bot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/>"
               "</iq>")
    els = bot.stanzas()
    assert [(e.tag, e.get("id"), e.get("from")) for e in els] == [(CN + "iq", "q1", "alice@localhost/r")]
    bot.feed("<iq type='result' id='q1' from='bot.localhost' to='alice@localhost/r'>"
             "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='component' type='generic'/>"
             "</query></iq>")
    res = of(stanzas(alice), "iq", id="q1", type="result")
    assert res and res[0].get("from") == "bot.localhost" \
        and res[0].find("{http://jabber.org/protocol/disco#info}query/{http://jabber.org/protocol/disco#info}identity") \
        is not None
    # The component asks the client (an iq to a full JID) and messages its bare JID.
    bot.feed("<iq type='get' id='p1' from='bot.localhost' to='alice@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>"
             "<message type='chat' from='echo@bot.localhost' to='alice@localhost'><body>hi &amp; bye</body></message>")
    got = stanzas(alice)
    assert of(got, "iq", id="p1", type="get")[0].get("from") == "bot.localhost"
    assert [m.findtext(NS + "body") for m in of(got, "message", **{"from": "echo@bot.localhost"})] == ["hi & bye"]
    # the client's answer to the component's iq goes back over the tree (a ping answered by the server itself
    # would come from the domain: this one is the client's own result).
    alice.feed("<iq type='result' id='p1' to='bot.localhost'/>")
    assert [(e.get("id"), e.get("type")) for e in bot.stanzas()] == [("p1", "result")]


def test_a_chat_to_a_jid_under_the_components_domain_crosses_once(wire):
    bot = Component(wire, "c")
    bot.take()
    alice = online(wire, "a", "alice", "r")
    before = wire.cores["c"].services["xmpp"].federation.stats["stanzas_in"]
    alice.feed("<message type='chat' to='echo@bot.localhost' id='m1'><body>hello &lt;bot&gt;</body></message>")
    msg = bot.stanzas()
    assert [(e.tag, e.get("from"), e.get("to"), e.findtext(CN + "body")) for e in msg] == \
        [(CN + "message", "alice@localhost/r", "echo@bot.localhost", "hello <bot>")]
    assert wire.cores["c"].services["xmpp"].federation.stats["stanzas_in"] == before + 1


def test_a_second_component_for_a_domain_held_on_another_server_is_refused(wire):
    first = Component(wire, "c")
    first.take()
    second = Component(wire, "a")
    out = second.take()
    assert b"<conflict" in out and second.t.closing
    assert domains(wire, "a").server_of("bot.localhost") == "003" and "bot.localhost" not in \
        wire.cores["a"].services["xmpp"].components
    # The refused one did not take the domain away from the first.
    alice = online(wire, "a", "alice", "r")
    alice.feed("<message to='x@bot.localhost'><body>still the first</body></message>")
    assert [e.findtext(CN + "body") for e in first.stanzas()] == ["still the first"]


def test_the_domain_is_gone_everywhere_when_the_component_disconnects(wire):
    bot = Component(wire, "c")
    bot.take()
    alice = online(wire, "a", "alice", "r")
    bot.lost()
    assert all(domains(wire, k).server_of("bot.localhost") is None for k in "abc")
    alice.feed("<message type='chat' to='echo@bot.localhost' id='m2'><body>anyone?</body></message>")
    err = of(stanzas(alice), "message", id="m2", type="error")
    assert err and err[0].find(NS + "error/{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-not-found") is not None
    # And another server may take the domain now.
    again = Component(wire, "a")
    assert b"<handshake" in again.take() and domains(wire, "c").server_of("bot.localhost") == "001"


def test_a_short_split_holds_the_component_and_the_hold_expiring_withdraws_it(wire):
    bot = Component(wire, "c")
    bot.take()
    alice = online(wire, "a", "alice", "r")
    wire.unlink("c", "b")
    alice.feed("<message to='echo@bot.localhost' id='held'><body>during the split</body></message>")
    assert of(stanzas(alice), "message", type="error") == []         # held, not refused
    wire.tick(5)
    wire.link("c", "b")
    assert [e.findtext(CN + "body") for e in bot.stanzas()] == ["during the split"]
    wire.unlink("c", "b")
    wire.tick(40)                                                     # past split_hold (30 s)
    assert domains(wire, "a").server_of("bot.localhost") is None
    alice.feed("<message to='echo@bot.localhost' id='gone'><body>nobody</body></message>")
    assert of(stanzas(alice), "message", id="gone", type="error")
    wire.link("c", "b")                                               # the netjoin announces it again
    assert domains(wire, "a").server_of("bot.localhost") == "003"


def test_claims_made_on_both_sides_of_a_split_keep_the_older_one(wire):
    wire.unlink("c", "b")
    wire.tick(40)
    older = Component(wire, "c")
    older.take()
    wire.tick(1)
    newer = Component(wire, "a")
    assert b"<handshake" in newer.take()                              # a does not know of c's
    wire.link("c", "b")
    assert b"<conflict" in newer.take() and newer.t.closing
    assert not older.t.closing
    for k in "ab":
        assert domains(wire, k).server_of("bot.localhost") == "003"
    assert "bot.localhost" not in wire.cores["a"].services["xmpp"].components
    alice = online(wire, "a", "alice", "r")
    alice.feed("<message to='x@bot.localhost'><body>to the older</body></message>")
    assert [e.findtext(CN + "body") for e in older.stanzas()] == ["to the older"]


def test_hostile_component_sets_are_ignored_and_the_server_keeps_serving(wire):
    links = wire.cores["a"].net.router
    for payload in ({"server": 5}, {"server": "009", "ver": "x", "domains": {}},
                    {"server": "009", "ver": [1, 1], "domains": ["bot.localhost"]},
                    {"server": "009", "ver": [1, 1], "domains": {"bot.localhost": "yesterday", 3: [1, "x"]}},
                    {"server": "003", "ver": [True, 1], "domains": {"bot.localhost": [0, "003"]}}):
        links.send_extension(FRAME, payload)
    links.send_extension(FRAME, "not a dict")
    wire.pump()
    assert domains(wire, "c").server_of("bot.localhost") is None
    bot = Component(wire, "c")
    assert b"<handshake" in bot.take()
