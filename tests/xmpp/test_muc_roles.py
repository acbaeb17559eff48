"""MUC roles, affiliations and configuration in memory: each is a channel status, list entry or mode,
so IRC and XMPP see the same room."""

from __future__ import annotations

import pytest
from lxml import etree

from support_net import Wire
from test_muc_rooms import ROOM, join, muc_wire, stanzas
from test_xmpp_routing import Xmpp

ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"


@pytest.fixture
def wire(tmp_path):
    return muc_wire(tmp_path)


def admin(c: Xmpp, item: str, typ: str = "set") -> bytes:
    c.feed(f"<iq type='{typ}' id='ad' to='{ROOM}'><query xmlns='{ADMIN}'>{item}</query></iq>")
    return c.take()


def channel(wire, core="a"):
    return wire.cores[core].net.find_channel("#room")


def test_roles_are_statuses(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    alice.take()
    bob_user = wire.cores["a"].net.find_nick("bob")
    assert b"type=\"result\"" in admin(alice, "<item nick='bob' role='moderator'/>")
    assert "o" in channel(wire).members[bob_user]
    assert any("MODE #room +o bob" in l for l in irc.t.lines())
    assert b'role="moderator"' in bob.take()
    admin(alice, "<item nick='bob' role='participant'/>")
    assert channel(wire).members[bob_user] == ""
    wire.cores["a"].net.apply_modes("a.test", channel(wire), [("+", "m", None)], wire.now)   # bob: a visitor
    out = bob.take()
    assert b'role="visitor"' in out and b'code="104"' in out
    bob.feed(f"<message type='groupchat' to='{ROOM}'><body>can I speak?</body></message>")
    assert b"<forbidden" in bob.take()
    admin(alice, "<item nick='bob' role='participant'/>")   # voice under +m: +v
    assert channel(wire).members[bob_user] == "v"
    irc.t.out.clear()
    bob.feed(f"<message type='groupchat' to='{ROOM}'><body>now I can</body></message>")
    assert any("now I can" in l for l in irc.t.lines())
    # a participant may not change roles
    assert b"<forbidden" in admin(bob, "<item nick='alice' role='none'/>")


def test_kick_and_ban_both_ways(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    alice.take()
    admin(alice, "<item nick='dave' role='none'><reason>out</reason></item>")
    assert any("KICK #room dave out" in l for l in irc.t.lines())
    assert b'code="307"' in bob.take()
    # outcast = +b $a:account, kicked with 301; IRC cannot join with that account either
    admin(alice, "<item jid='bob@localhost' affiliation='outcast'/>")
    assert [b.mask for b in channel(wire).lists["b"]] == ["$a:bob"]
    out = bob.take()
    assert b'code="301"' in out and b'code="110"' in out
    assert b"<forbidden" in join(bob, "bob")
    out = admin(alice, "<item affiliation='outcast'/>", "get")
    assert b'jid="bob@localhost"' in out
    irc_bob = wire.client("a", "ircbob")
    irc_bob.send("AUTHENTICATE PLAIN")   # not logged in: the ban is by account
    irc.send("JOIN #room")
    wire.cores["a"].net.find_nick("ircbob").account = "bob"
    irc_bob.send("JOIN #room")
    assert any(" 474 " in l for l in irc_bob.t.lines())
    # an IRC op's ban by account keeps the XMPP account out too
    admin(alice, "<item jid='bob@localhost' affiliation='none'/>")
    assert channel(wire).lists["b"] == []
    join(bob, "bob")
    wire.cores["a"].net.apply_modes("a.test", channel(wire), [("+", "o", "dave")], wire.now)
    irc.send("MODE #room +b $a:bob", "KICK #room bob :bye")
    assert b'code="301"' in bob.take()
    assert b"<forbidden" in join(bob, "bob")


def test_members_only_room_takes_members_from_the_invite_list(wire):
    alice, bob, carol = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r"), Xmpp(wire, "a", "carol", "r")
    join(alice, "alice")
    alice.feed(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
               "<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>")
    assert b'type="result"' in alice.take() and "i" in channel(wire).modes
    assert b"<registration-required" in join(bob, "bob")
    admin(alice, "<item jid='bob@localhost' affiliation='member'/>")
    assert [b.mask for b in channel(wire).lists["I"]] == ["$a:bob"]
    assert b'affiliation="member"' in join(bob, "bob")
    assert b"<registration-required" in join(carol, "carol")
    # a mediated invitation is an INVITE: carol may join once
    alice.feed(f"<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>"
               "<invite to='carol@localhost'/></x></message>")
    out = carol.take()
    assert b"<invite" in out and b'from="room@conference.localhost"' in out
    assert b'code="110"' in join(carol, "carol")


def test_config_form_is_the_channel_modes(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    alice.feed(f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    form = alice.take()
    assert b"muc#roomconfig_persistentroom" in form and b"muc#roomconfig_roomsecret" in form
    # XEP-0045's registry types (aioxmpp refuses a form whose field types differ from it)
    fields = {f.get("var"): f for f in etree.fromstring(b"<r xmlns='jabber:client'>" + form + b"</r>")
              .iter("{jabber:x:data}field")}
    maxusers = fields["muc#roomconfig_maxusers"]
    assert maxusers.get("type") == "list-single" and maxusers.findtext("{jabber:x:data}value") == "none"
    assert [o.findtext("{jabber:x:data}value") for o in maxusers.iter("{jabber:x:data}option")][-1] == "none"
    assert fields["muc#roomconfig_whois"].find("{jabber:x:data}option") is not None
    alice.feed(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
               "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>"
               "<field var='muc#roomconfig_roomsecret'><value>pw</value></field>"
               "<field var='muc#roomconfig_maxusers'><value>5</value></field>"
               "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"
               "<field var='muc#roomconfig_publicroom'><value>0</value></field>"
               "<field var='muc#roomconfig_changesubject'><value>1</value></field>"
               "<field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>")
    assert b'type="result"' in alice.take()
    ch = channel(wire)
    assert ch.key == "pw" and ch.limit == 5 and {"m", "s"} <= ch.modes and "t" not in ch.modes
    alice.feed(f"<iq type='get' id='f2' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert b'<option label="5"><value>5</value></option>' in alice.take()
    alice.feed(f"<iq type='set' id='c2' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
               "<field var='muc#roomconfig_maxusers'><value>none</value></field></x></query></iq>")
    assert b'type="result"' in alice.take() and not channel(wire).limit
    assert ch.key_name in wire.cores["a"].services["muc"].store.rooms
    bob = Xmpp(wire, "a", "bob", "r")
    bob.feed(f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert b"<not-acceptable" in bob.take()                  # not an occupant


def test_voice_request_reaches_moderators_and_their_answer_voices(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    wire.cores["a"].net.apply_modes("a.test", channel(wire), [("+", "m", None)], wire.now)
    join(bob, "bob")
    alice.take()
    form = ("<x xmlns='jabber:x:data' type='{t}'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#request</value></field><field var='muc#role'><value>participant"
            "</value></field>{extra}</x>")
    bob.feed(f"<message to='{ROOM}'>{form.format(t='submit', extra='')}</message>")
    out = alice.take()
    assert b"muc#request" in out and b"<value>bob</value>" in out
    alice.feed(f"<message to='{ROOM}'>" + form.format(t="submit", extra=(
        "<field var='muc#roomnick'><value>bob</value></field>"
        "<field var='muc#request_allow'><value>true</value></field>")) + "</message>")
    assert channel(wire).members[wire.cores["a"].net.find_nick("bob")] == "v"


def test_owner_affiliation_persists_by_account(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    admin(alice, "<item jid='bob@localhost' affiliation='admin'/>")
    assert "o" in channel(wire).members[wire.cores["a"].net.find_nick("bob")]
    bob.feed(f"<presence type='unavailable' to='{ROOM}/bob'/>")
    out = join(bob, "bob")
    assert b'affiliation="admin"' in out and b'role="moderator"' in out
    out = admin(alice, "<item affiliation='owner'/>", "get")
    assert b'jid="alice@localhost"' in out
    assert b"<conflict" in admin(alice, "<item jid='alice@localhost' affiliation='none'/>")


def test_an_irc_ban_by_account_beats_a_stored_membership(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    admin(alice, "<item jid='bob@localhost' affiliation='member'/>")
    wire.cores["a"].net.apply_modes("a.test", channel(wire), [("+", "b", "$a:bob")], wire.now)
    assert b"<forbidden" in join(bob, "bob")


def test_affiliations_cross_the_tree_and_no_one_gains_one_by_riding_a_split(tmp_path):
    wire = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": ""}, "muc": {}}, split_hold=2)
    for core in wire.cores.values():
        for name in ("alice", "bob", "carol"):
            core.register_account(name, "secret", wire.now)
    wire.link("a", "b")
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    admin(alice, "<item jid='bob@localhost' affiliation='admin'/>")
    mb = wire.cores["b"].services["muc"]
    assert mb.store.affiliation("#room", "alice") == "owner" and mb.store.affiliation("#room", "bob") == "admin"
    # b has no member of #room: during a split carol makes it anew there and owns that one
    wire.tick(1)
    wire.unlink("a", "b")
    wire.tick(3)                                            # past the hold: alice is gone from b's #room
    assert channel(wire, "b") is None
    carol = Xmpp(wire, "b", "carol", "r")
    out = stanzas(join(carol, "carol"))
    assert b'code="201"' in out[0] and b'affiliation="owner"' in out[0]
    wire.tick(1)
    wire.link("a", "b")
    ch_a, ch_b = channel(wire, "a"), channel(wire, "b")
    assert ch_a.ts == ch_b.ts                               # the older channel won the netjoin
    for core in ("a", "b"):
        m = wire.cores[core].services["muc"]
        ch = channel(wire, core)
        carol_user = wire.cores[core].net.find_nick("carol")
        assert m.affiliation(ch, carol_user) == "none", core
        assert m.store.affiliation("#room", "alice", ch.ts) == "owner"
