"""One XMPP network across linked cores in memory (tests/support_net.py `Wire`): rosters on every
server, stanzas (not bodies) to exactly the servers with the resources, presence once per server,
probes answered across servers, the split-hold, the netjoin, and the hooks on stanzas."""

from __future__ import annotations

import pytest
from lxml import etree
from test_xmpp_routing import Xmpp

from relay.core.hooks import Stop
from support_net import Wire

from bridges.xmpp.federation import STANZA

NS = "{jabber:client}"


def stanzas(c: Xmpp) -> list[etree._Element]:
    data = c.take()
    return list(etree.fromstring(b"<r xmlns='jabber:client'>" + data + b"</r>"))


def of(els, tag: str, **attrs) -> list[etree._Element]:
    return [e for e in els if e.tag == NS + tag and all(e.get(k.rstrip("_")) == v for k, v in attrs.items())]


def fed(wire: Wire, core: str):
    return wire.cores[core].services["xmpp"].federation


def stanzas_in(wire: Wire, core: str) -> int:
    return fed(wire, core).stats["stanzas_in"]


def online(wire, core, account, resource, priority=None) -> Xmpp:
    c = Xmpp(wire, core, account, resource)
    prio = f"<priority>{priority}</priority>" if priority is not None else ""
    c.feed(f"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence>{prio}</presence>")
    c.take()
    return c


def befriend(wire: Wire, a: Xmpp, b: Xmpp) -> None:
    """A mutual subscription between two accounts (wherever they are)."""
    ja, jb = a.jid.split("/")[0], b.jid.split("/")[0]
    for x, y, jx, jy in ((a, b, ja, jb), (b, a, jb, ja)):
        x.feed(f"<presence type='subscribe' to='{jy}'/>")
        y.feed(f"<presence type='subscribed' to='{jx}'/>")
    a.take(), b.take()


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"], modules={"xmpp": {"roster_file": ""}})
    for core in w.cores.values():
        for name in ("alice", "bob", "carol"):
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    w.link("b", "c")
    return w


def test_a_subscription_across_servers_changes_both_rosters_everywhere(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    alice.feed("<presence type='subscribe' to='bob@localhost' id='s1'/>")
    got = stanzas(bob)
    sub = of(got, "presence", type="subscribe")
    assert len(sub) == 1 and sub[0].get("from") == "alice@localhost" and sub[0].get("to") == "bob@localhost/r"
    bob.feed("<presence type='subscribed' to='alice@localhost'/>")
    got = stanzas(alice)
    push = [e for e in of(got, "iq", type="set") if e.find("{jabber:iq:roster}query") is not None]
    assert push[-1][0][0].get("subscription") == "to" and push[-1][0][0].get("jid") == "bob@localhost"
    assert [p.get("from") for p in of(got, "presence") if p.get("type") is None] == ["bob@localhost/r"]
    # Every server has both rosters, at the same version.
    for name in ("alice", "bob"):
        versions = {core: wire.cores[core].services["xmpp"].roster.version(name) for core in "abc"}
        assert len(set(versions.values())) == 1 and versions["a"] != "0", versions
    assert wire.cores["b"].services["xmpp"].roster.item("bob", "alice@localhost")["subscription"] == "from"


def test_presence_crosses_once_per_server_and_reaches_every_resource_there(wire):
    alice = online(wire, "a", "alice", "r")
    bob1, bob2, carol = online(wire, "c", "bob", "one"), online(wire, "c", "bob", "two"), online(wire, "c", "carol", "r")
    befriend(wire, alice, bob1)
    befriend(wire, alice, carol)
    bob2.take()
    before_b, before_c = stanzas_in(wire, "b"), stanzas_in(wire, "c")
    alice.feed("<presence><show>away</show><status>lunch</status></presence>")
    assert stanzas_in(wire, "c") - before_c == 1 and stanzas_in(wire, "b") == before_b   # b only passes it on
    for c in (bob1, bob2, carol):
        p = of(stanzas(c), "presence")
        assert len(p) == 1 and p[0].get("from") == "alice@localhost/r" and p[0].findtext(NS + "status") == "lunch"
        assert p[0].get("to") == c.jid
    alice.s.connection_lost("gone", wire.now)
    wire.pump()
    for c in (bob1, bob2, carol):
        assert [p.get("type") for p in of(stanzas(c), "presence")] == ["unavailable"]


def test_a_probe_is_answered_by_the_servers_that_have_the_contacts_resources(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    befriend(wire, alice, bob)
    bob.feed("<presence><status>here</status></presence>")
    alice.take()
    late = Xmpp(wire, "b", "alice", "late")          # a second resource of alice, on the middle server
    late.feed("<presence/>")
    got = of(stanzas(late), "presence")
    assert sorted((p.get("from"), p.findtext(NS + "status")) for p in got) == \
        [("alice@localhost/r", None), ("bob@localhost/r", "here")]
    # A stranger's probe is not answered.
    carol = online(wire, "a", "carol", "r")
    carol.feed("<presence type='probe' to='bob@localhost'/>")
    assert of(stanzas(carol), "presence") == []


def test_messages_go_to_the_highest_priority_resources_wherever_they_are(wire):
    carol = online(wire, "a", "carol", "r")
    low, high = online(wire, "a", "bob", "low", priority=1), online(wire, "c", "bob", "high", priority=5)
    before = stanzas_in(wire, "c")
    carol.feed("<message type='chat' to='bob@localhost' id='m1'><body>to the top</body>"
               "<request xmlns='urn:xmpp:receipts'/></message>")
    assert of(stanzas(low), "message") == []
    msg = of(stanzas(high), "message")
    assert len(msg) == 1 and msg[0].get("from") == "carol@localhost/r" and msg[0].get("to") == "bob@localhost/high"
    assert msg[0].find("{urn:xmpp:receipts}request") is not None and stanzas_in(wire, "c") == before + 1
    high.feed("<presence><priority>0</priority></presence>")
    carol.feed("<message type='chat' to='bob@localhost' id='m2'><body>now low</body></message>")
    assert of(stanzas(high), "message") == [] and len(of(stanzas(low), "message")) == 1


def test_iq_between_full_jids_on_different_servers_and_its_result(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    alice.feed("<iq type='get' id='ping1' to='bob@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>")
    iq = of(stanzas(bob), "iq", id="ping1")
    assert iq and iq[0].get("from") == "alice@localhost/r" and iq[0].find("{urn:xmpp:ping}ping") is not None
    bob.feed("<iq type='result' id='ping1' to='alice@localhost/r'/>")
    assert of(stanzas(alice), "iq", id="ping1", type="result")[0].get("from") == "bob@localhost/r"
    alice.feed("<iq type='get' id='ping2' to='bob@localhost/nobody'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert of(stanzas(alice), "iq", id="ping2", type="error")


def test_a_full_jid_whose_resource_left_falls_back_to_the_bare_jid(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    bob2 = online(wire, "c", "bob", "other")
    bob.s.connection_lost("gone", wire.now)
    wire.pump()
    # A chat to bob/r that was on its way when it left: bob's server gives it to the bare JID.
    fed(wire, "c").deliver_here(etree.fromstring(
        "<message xmlns='jabber:client' type='chat' from='alice@localhost/r' to='bob@localhost/r'>"
        "<body>late</body></message>"), None, wire.now)
    alice.feed("<message type='chat' to='bob@localhost/other'><body>direct</body></message>")
    assert [m.findtext(NS + "body") for m in of(stanzas(bob2), "message")] == ["late", "direct"]
    # An iq to a resource that left comes back as an error; so does a chat nobody there can take.
    fed(wire, "c").deliver_here(etree.fromstring(
        "<iq xmlns='jabber:client' type='get' id='q1' from='alice@localhost/r' to='bob@localhost/r'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>"), None, wire.now)
    fed(wire, "c").deliver_here(etree.fromstring(
        "<message xmlns='jabber:client' type='chat' id='q2' from='alice@localhost/r' to='carol@localhost'>"
        "<body>nobody</body></message>"), None, wire.now)
    wire.pump()
    got = stanzas(alice)
    errors = of(got, "iq", id="q1", type="error") + of(got, "message", id="q2", type="error")
    assert len(errors) == 2 and all(e.get("from") in ("bob@localhost/r", "carol@localhost") for e in errors)
    assert all(e.find(NS + "error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
               for e in errors)


def test_a_resource_bound_on_another_server_is_a_conflict(wire):
    online(wire, "a", "alice", "same")
    other = Xmpp(wire, "c", "alice", "same")
    assert other.s.jid.resource != "same" and other.s.jid.resource.startswith("same-")


def test_a_client_on_another_server_sees_the_same_roster_and_versioning_works(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    befriend(wire, alice, bob)
    alice.feed("<iq type='set' id='n'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bobby'>"
               "<group>Friends</group></item></query></iq>")
    alice.feed("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
    mine = of(stanzas(alice), "iq", id="g")[0][0]
    there = Xmpp(wire, "c", "alice", "there")
    there.feed("<iq type='get' id='g2'><query xmlns='jabber:iq:roster'/></iq>")
    theirs = of(stanzas(there), "iq", id="g2")[0][0]
    assert etree.tostring(theirs) == etree.tostring(mine) and theirs[0].get("name") == "Bobby"
    there.feed(f"<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='{mine.get('ver')}'/></iq>")
    same = of(stanzas(there), "iq", id="g3")[0]
    assert same.get("type") == "result" and len(same) == 0          # XEP-0237: unchanged, nothing sent
    # A change on a is pushed to the resource on c that asked for the roster, with the new version.
    alice.feed("<iq type='set' id='n2'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/>"
               "</query></iq>")
    push = [e for e in of(stanzas(there), "iq", type="set")]
    assert push and push[0][0][0].get("jid") == "carol@localhost" and push[0][0].get("ver") != mine.get("ver")


def test_a_short_split_holds_presence_and_delivers_what_was_sent_exactly_once(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    befriend(wire, alice, bob)
    bob.take()
    wire.unlink("c", "b")
    alice.feed("<message type='chat' to='bob@localhost' id='during'><body>during the split</body></message>")
    assert of(stanzas(alice), "message", type="error") == []       # held, not refused
    assert of(stanzas(alice), "presence") == []                     # bob is held, not gone
    wire.tick(5)
    wire.link("c", "b")
    got = of(stanzas(bob), "message")
    assert [m.findtext(NS + "body") for m in got] == ["during the split"]
    assert got[0].get("from") == "alice@localhost/r"
    # after the netjoin presence is restored both ways (nothing was lost, so it is the same presence)
    assert "bob@localhost/r" in [p.get("from") for p in of(stanzas(alice), "presence") if p.get("type") is None]
    alice.feed("<message type='chat' to='bob@localhost' id='after'><body>after</body></message>")
    assert [m.findtext(NS + "body") for m in of(stanzas(bob), "message")] == ["after"]


def test_after_the_split_hold_the_far_resources_are_unavailable_and_the_netjoin_restores_them(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    befriend(wire, alice, bob)
    bob.feed("<presence><status>on c</status></presence>")
    alice.take()
    wire.unlink("c", "b")
    wire.tick(10)
    assert of(stanzas(alice), "presence") == []
    wire.tick(25)                                                   # past split_hold (30 s)
    gone = of(stanzas(alice), "presence")
    assert [(p.get("from"), p.get("type")) for p in gone] == [("bob@localhost/r", "unavailable")]
    assert [(p.get("from"), p.get("type")) for p in of(stanzas(bob), "presence")] == \
        [("alice@localhost/r", "unavailable")]
    wire.link("c", "b")
    back = [p for p in of(stanzas(alice), "presence") if p.get("type") is None]
    assert [(p.get("from"), p.findtext(NS + "status")) for p in back] == [("bob@localhost/r", "on c")]
    assert "alice@localhost/r" in [p.get("from") for p in of(stanzas(bob), "presence") if p.get("type") is None]


def test_roster_changes_made_on_both_sides_of_a_split_converge(wire):
    alice, carol = online(wire, "a", "alice", "r"), online(wire, "c", "carol", "r")
    alice.feed("<iq type='set' id='1'><query xmlns='jabber:iq:roster'><item jid='x@localhost' name='first'/>"
               "</query></iq>")
    wire.unlink("c", "b")
    wire.tick(1)
    alice.feed("<iq type='set' id='2'><query xmlns='jabber:iq:roster'><item jid='x@localhost' name='older'/>"
               "</query></iq>")
    wire.tick(1)
    there = Xmpp(wire, "c", "alice", "c")
    there.feed("<iq type='set' id='3'><query xmlns='jabber:iq:roster'><item jid='x@localhost' name='newer'/>"
               "</query></iq><iq type='set' id='4'><query xmlns='jabber:iq:roster'><item jid='y@localhost'/>"
               "</query></iq>")
    carol.feed("<iq type='set' id='5'><query xmlns='jabber:iq:roster'><item jid='z@localhost'/></query></iq>")
    wire.tick(1)
    alice.feed("<iq type='set' id='6'><query xmlns='jabber:iq:roster'><item jid='y@localhost' "
               "subscription='remove'/></query></iq>")                 # y exists only on c's side
    wire.tick(40)                                                   # past the hold: a full netjoin
    wire.link("c", "b")
    stores = {k: wire.cores[k].services["xmpp"].roster for k in "abc"}
    for account in ("alice", "carol"):
        assert len({s.version(account) for s in stores.values()}) == 1, account
    assert {c: i.get("name") for c, i in stores["a"].items("alice").items()} == {"x@localhost": "newer",
                                                                                   "y@localhost": None}
    assert "z@localhost" in stores["a"].items("carol")


def test_a_malformed_stanza_frame_is_refused_and_the_server_keeps_serving(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    links = wire.cores["a"].net.router
    for xml in ("<!DOCTYPE x [<!ENTITY e 'boom'>]><message xmlns='jabber:client' to='bob@localhost/r'>&e;</message>",
                "<unknown xmlns='jabber:client' to='bob@localhost/r'/>", "not xml", "<message"):
        links.send_extension(STANZA, {"xml": xml}, {"003"})
    links.send_extension(STANZA, {"xml": 5, "to": "x"}, {"003"})
    wire.pump()
    assert fed(wire, "c").stats["stanzas_refused"] == 5 and b"boom" not in bob.take()
    alice.feed("<message type='chat' to='bob@localhost'><body>still here</body></message>")
    assert b"still here" in bob.take()


def test_stanza_hooks_run_on_each_side_and_filter_packet_once(wire):
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "r")
    seen = []
    wire.cores["a"].hooks.add("user_send_packet", lambda el, s: seen.append(("a send", el.get("id"))))
    wire.cores["c"].hooks.add("user_receive_packet", lambda el, s: seen.append(("c receive", el.get("id"))))
    for k in "abc":
        wire.cores[k].hooks.add("filter_packet", lambda ev, k=k: seen.append((k + " filter", ev.text)) or (
            Stop(None) if "spam" in ev.text else None))
    alice.feed("<message type='chat' to='bob@localhost' id='ok'><body>fine</body></message>")
    alice.feed("<message type='chat' to='bob@localhost/r' id='spam'><body>spam</body></message>")
    out = bob.take()
    assert b">fine<" in out and b"spam" not in out
    assert ("a send", "ok") in seen and ("c receive", "ok") in seen and ("c receive", "spam") not in seen
    assert [x for x in seen if x[0].endswith("filter")] == [("a filter", "fine"), ("a filter", "spam")]


def test_the_filter_module_filters_xmpp_chats_across_servers(tmp_path):
    rules = [{"pattern": "(?i)badword", "action": "rewrite", "replacement": "***", "direct": True},
             {"pattern": "(?i)buy cheap", "direct": True}]
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": ""}, "filter": {"rules": rules}})
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    alice, bob = online(w, "a", "alice", "r"), online(w, "b", "bob", "r")
    irc = w.client("a", "dave")
    alice.feed("<message type='chat' to='bob@localhost'><body>a badword here</body></message>")
    alice.feed("<message type='chat' to='bob@localhost'><body>buy cheap pills</body></message>")
    irc.send("PRIVMSG bob :buy cheap watches", "PRIVMSG bob :another badword")
    bodies = [m.findtext(NS + "body") for m in of(stanzas(bob), "message")]
    assert bodies == ["a *** here", "another ***"]


def test_directed_presence_to_bare_and_full_jids_on_another_server(wire):
    alice, bob1, bob2 = online(wire, "a", "alice", "r"), online(wire, "c", "bob", "one"), online(wire, "c", "bob", "two")
    bob1.take()                                     # bob's other resource's presence
    alice.feed("<presence to='bob@localhost'><status>to all of bob</status></presence>")
    for b in (bob1, bob2):
        assert [p.findtext(NS + "status") for p in of(stanzas(b), "presence")] == ["to all of bob"]
    alice.feed("<presence to='bob@localhost/two' type='unavailable'/>")
    assert of(stanzas(bob1), "presence") == []
    assert [(p.get("from"), p.get("type")) for p in of(stanzas(bob2), "presence")] == \
        [("alice@localhost/r", "unavailable")]


def test_an_explicit_probe_on_one_server_is_answered_from_the_contacts_roster(wire):
    # The roster is keyed by account (the localpart): the probe used to look it up by the bare JID.
    alice, bob = online(wire, "a", "alice", "r"), online(wire, "a", "bob", "r")
    befriend(wire, alice, bob)
    alice.feed("<presence><status>here</status></presence>")
    bob.take()
    bob.feed("<presence type='probe' to='alice@localhost'/>")
    assert [(p.get("from"), p.findtext(NS + "status")) for p in of(stanzas(bob), "presence")] == \
        [("alice@localhost/r", "here")]
