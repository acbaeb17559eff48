"""MUC in memory (cores of tests/support_net.py, sessions fed bytes): names, joins in the XEP-0045
order, messages both ways with IRC members, private messages, subject, nick changes, kicks, leave
and disconnect."""

from __future__ import annotations

import pytest
from lxml import etree

from support_net import Wire
from test_xmpp_routing import Xmpp

ROOM = "room@conference.localhost"


def muc_wire(tmp_path, accounts=("alice", "bob", "carol"), linked: bool = False) -> Wire:
    """Servers a and b in memory with xmpp and muc, and the accounts on both (the MUC tests' wire)."""
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": ""}, "muc": {}})
    for core in w.cores.values():
        for name in accounts:
            core.register_account(name, "secret", w.now)
    if linked:
        w.link("a", "b")
    return w


@pytest.fixture
def wire(tmp_path):
    return muc_wire(tmp_path)


def join(c: Xmpp, nick: str, room: str = ROOM, extra: str = "") -> bytes:
    c.feed(f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>")
    return c.take()


def stanzas(data: bytes) -> list[bytes]:
    """The stanzas in a run of stream bytes, each re-serialised (double quotes)."""
    root = etree.fromstring(b"<r xmlns='jabber:client'>" + data + b"</r>")
    return [etree.tostring(el) for el in root]


def test_join_order_self_presence_and_subject(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    out = join(alice, "alice")
    got = stanzas(out)
    assert b'code="110"' in got[0] and b'code="201"' in got[0] and b'role="moderator"' in got[0]
    assert b'affiliation="owner"' in got[0]
    assert b"<subject" in got[-1]
    ch = wire.cores["a"].net.find_channel("#room")
    assert ch is not None and [u.nick for u in ch.members] == ["alice"]
    out = stanzas(join(bob, "bob"))
    assert b'from="room@conference.localhost/alice"' in out[0] and b"110" not in out[0]
    assert b'from="room@conference.localhost/bob"' in out[1] and b'code="110"' in out[1]
    assert b"201" not in out[1] and b'role="participant"' in out[1]
    assert b"<subject" in out[-1]
    assert b'from="room@conference.localhost/bob"' in alice.take()


def test_groupchat_both_ways_with_irc_and_reflection(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    assert b'from="room@conference.localhost/dave"' in alice.take()
    irc.t.out.clear()
    alice.feed(f"<message type='groupchat' to='{ROOM}' id='m1'><body>hello irc</body></message>")
    out = alice.take()
    assert b'id="m1"' in out and b"<body>hello irc</body>" in out       # reflected, with the client's id
    assert ":alice!alice@xmpp.a.test PRIVMSG #room :hello irc" in irc.t.lines()
    irc.send("PRIVMSG #room :hello xmpp")
    out = alice.take()
    assert b'from="room@conference.localhost/dave"' in out and b'type="groupchat"' in out
    assert b"<body>hello xmpp</body>" in out and b"stanza-id" in out


def test_history_on_join_with_limits(wire):
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    for i in range(5):
        wire.now += 10
        irc.send(f"PRIVMSG #room :line {i}")
    alice = Xmpp(wire, "a", "alice", "r")
    out = join(alice, "alice", extra="<history maxstanzas='2'/>")
    assert b"line 2" not in out and b"line 3" in out and b"line 4" in out and b"urn:xmpp:delay" in out
    assert out.index(b"line 4") < out.index(b"<subject")
    bob = Xmpp(wire, "a", "bob", "r")
    out = join(bob, "bob", extra="<history seconds='15'/>")
    assert b"line 2" not in out and b"line 3" in out
    carol = Xmpp(wire, "a", "carol", "r")
    out = join(carol, "carol", extra="<history maxchars='0'/>")
    assert b"line" not in out


def test_history_names_the_sender_as_it_was_when_it_spoke(wire):
    """History is recorded raw and made into stanzas when a join reads it: a nick change between
    the two must not rename the message's sender."""
    irc = wire.client("a", "dave")
    irc.send("JOIN #room", "PRIVMSG #room :before", "NICK david", "PRIVMSG #room :after")
    alice = Xmpp(wire, "a", "alice", "r")
    out = join(alice, "alice")
    said = {m.findtext("{jabber:client}body"): m.get("from") for m in map(etree.fromstring, stanzas(out))
            if m.tag == "{jabber:client}message" and m.findtext("{jabber:client}body")}
    assert said == {"before": "room@conference.localhost/dave", "after": "room@conference.localhost/david"}



def test_xmpp_unloaded_and_loaded_again_leaves_muc_one_history_hook(wire):
    """MUC hooks channel_message while it is attached to the xmpp service: detached when xmpp goes,
    attached again when it comes back, with one handler (and one record of it in the module)."""
    core = wire.cores["a"]
    mod = core.modules.loaded["muc"]

    def history_hooks():
        return [h for h in core.hooks.handlers("channel_message") if h.owner == "muc"]

    assert len(history_hooks()) == 1
    core.modules.unload("xmpp")
    assert history_hooks() == []
    core.modules.load("xmpp", {"roster_file": ""})
    assert len(history_hooks()) == 1
    assert [h for h in mod._hooks if h.hook == "channel_message"] == history_hooks()
    irc = wire.client("a", "dave")
    irc.send("JOIN #room", "PRIVMSG #room :still kept")
    out = join(Xmpp(wire, "a", "alice", "r"), "alice")
    assert b"still kept" in out

def test_password_members_only_and_bans_through_the_channel_policy(wire):
    irc = wire.client("a", "dave")
    irc.send("JOIN #room", "MODE #room +k sesame")
    alice = Xmpp(wire, "a", "alice", "r")
    assert b"<not-authorized" in join(alice, "alice")
    assert b'code="110"' in join(alice, "alice", extra="<password>sesame</password>")
    irc.send("MODE #room -k", "MODE #room +i")
    bob = Xmpp(wire, "a", "bob", "r")
    assert b"<registration-required" in join(bob, "bob")
    irc.send("MODE #room -i", "MODE #room +b $a:bob")
    assert b"<forbidden" in join(bob, "bob")


def test_nick_rules_change_conflict_and_303(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    assert b"<conflict" in join(bob, "dave")
    out = join(bob, "robert")
    assert wire.cores["a"].net.find_nick("robert").account == "bob"
    assert b'from="room@conference.localhost/robert"' in out
    assert b'from="room@conference.localhost/robert"' in alice.take()
    irc.send("NICK david")
    out = alice.take()
    assert b'code="303"' in out and b'nick="david"' in out and b'from="room@conference.localhost/dave"' in out
    assert b'from="room@conference.localhost/david"' in out
    # a nick IRC cannot have: the network nick stays, and 210 says so
    carol = Xmpp(wire, "a", "carol", "r")
    out = join(carol, "carol with spaces")
    assert b'code="210"' in out and b'from="room@conference.localhost/carol"' in out


def test_room_names_fold_and_refuse(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    out = join(alice, "alice", room="a[1]@conference.localhost")
    assert b"<jid-malformed" in out and b"a{1}" in out
    out = join(alice, "alice", room="a,b@conference.localhost")
    assert b"<jid-malformed" in out and b"cannot have" in out
    assert b'code="110"' in join(alice, "alice", room="a{1}@conference.localhost")
    irc = wire.client("a", "dave")
    irc.send("JOIN #A[1]")                          # the same channel, folded
    assert b'from="a{1}@conference.localhost/dave"' in alice.take()
    assert len(wire.cores["a"].net.channels) == 1


def test_private_messages_and_groupchat_to_a_nick(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    irc.t.out.clear()
    alice.feed(f"<message type='chat' to='{ROOM}/dave'><body>psst</body></message>")
    assert ":alice!alice@xmpp.a.test PRIVMSG dave psst" in irc.t.lines()
    alice.take()
    alice.feed(f"<message type='groupchat' to='{ROOM}/dave'><body>no</body></message>")
    assert b"<bad-request" in alice.take()
    alice.feed(f"<message type='chat' to='{ROOM}/nobody'><body>x</body></message>")
    assert b"<item-not-found" in alice.take()


def test_private_messages_between_occupants_come_from_the_occupant_jid(wire):
    """XEP-0045 §7.5: from room/nick, never the sender's real JID, on one server and across the tree;
    the answer to room/nick comes back the same way."""
    wire.link("a", "b")
    wire.pump()
    alice, bob, carol = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r"), Xmpp(wire, "b", "carol", "r")
    for c, nick in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        join(c, nick)
    for c in (alice, bob, carol):
        c.take()
    for sender, receiver, to, frm in ((alice, bob, "bob", "alice"), (bob, alice, "alice", "bob"),
                                      (alice, carol, "carol", "alice")):
        sender.feed(f"<message type='chat' to='{ROOM}/{to}'><body>psst {to}</body></message>")
        got = stanzas(receiver.take())
        assert len(got) == 1 and f'from="{ROOM}/{frm}"'.encode() in got[0], got
        assert b'type="chat"' in got[0] and f"<body>psst {to}</body>".encode() in got[0]
        assert b"http://jabber.org/protocol/muc#user" in got[0] and f"{frm}@localhost".encode() not in got[0]
        assert sender.take() == b""


def test_subject_both_ways_and_plus_t(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    alice.take()
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    alice.feed(f"<message type='groupchat' to='{ROOM}'><subject>new topic</subject></message>")
    assert b"<subject>new topic</subject>" in alice.take()
    assert b"<subject>new topic</subject>" in bob.take()
    assert any("TOPIC #room :new topic" in l for l in irc.t.lines())
    bob.feed(f"<message type='groupchat' to='{ROOM}'><subject>mine</subject></message>")
    assert b"<forbidden" in bob.take()
    irc.send("TOPIC #room :from irc")   # dave is not @: refused by +t
    assert b"from irc" not in alice.take()


def test_kick_leave_and_disconnect(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    alice.take()
    wire.cores["a"].net.apply_modes("a.test", wire.cores["a"].net.find_channel("#room"),
                                    [("+", "o", "dave")], wire.now)
    irc.send("KICK #room bob :behave")
    out = bob.take()
    assert b'code="307"' in out and b'code="110"' in out and b"behave" in out
    assert b'code="307"' in alice.take()
    bob.feed(f"<message type='groupchat' to='{ROOM}'><body>still here?</body></message>")
    assert b"<not-acceptable" in bob.take()
    irc.t.out.clear()
    alice.feed(f"<presence type='unavailable' to='{ROOM}/alice'/>")
    assert b'type="unavailable"' in alice.take()
    assert any("PART #room" in l for l in irc.t.lines())
    join(alice, "alice")
    irc.t.out.clear()
    alice.s.connection_lost("gone", wire.now)
    assert any("QUIT" in l for l in irc.t.lines())


def test_two_resources_are_one_occupant(wire):
    r1, r2 = Xmpp(wire, "a", "alice", "one"), Xmpp(wire, "a", "alice", "two")
    join(r1, "alice")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    irc.t.out.clear()
    assert b'code="110"' in join(r2, "alice")
    ch = wire.cores["a"].net.find_channel("#room")
    assert len(ch.members) == 2
    irc.send("PRIVMSG #room :both")
    assert b"both" in r1.take() and b"both" in r2.take()
    r1.feed(f"<presence type='unavailable' to='{ROOM}/alice'/>")
    assert not any("PART" in l for l in irc.t.lines())
    r2.s.connection_lost("gone", wire.now)          # the last resource in the room (one is still online)
    assert any("PART #room" in l for l in irc.t.lines()) and not any("QUIT" in l for l in irc.t.lines())


def test_room_across_two_servers(wire):
    wire.link("a", "b")
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "b", "bob", "r")
    join(alice, "alice")
    out = join(bob, "bob")
    assert b'from="room@conference.localhost/alice"' in out
    assert b'from="room@conference.localhost/bob"' in alice.take()
    alice.feed(f"<message type='groupchat' to='{ROOM}' id='x'><body>over the link</body></message>")
    assert bob.take().count(b"over the link") == 1


def test_a_netsplit_is_333_only_once_the_hold_expires(tmp_path):
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": ""}, "muc": {}}, split_hold=10)
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    alice, bob = Xmpp(w, "a", "alice", "r"), Xmpp(w, "b", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    alice.take()
    w.unlink("a", "b")
    w.tick(5)
    assert b"unavailable" not in alice.take()            # held: nothing yet
    w.link("a", "b")
    w.tick(1)
    assert b"unavailable" not in alice.take()            # back in time: nothing at all
    w.unlink("a", "b")
    w.tick(11)
    out = alice.take()
    assert b'from="room@conference.localhost/bob"' in out and b'code="333"' in out
