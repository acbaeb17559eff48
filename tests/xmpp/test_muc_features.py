"""MUC features in memory: disco, self-ping, occupant-id, moderation, direct invitations, MAM with
RSM over a real SQLite store, and a persistent room's configuration and affiliations across a restart."""

from __future__ import annotations

import pytest
from lxml import etree

from relay.core.config import parse
from relay.core.server import Core
from relay.core.storage import Storage
from relay.storage.sqlite import SqliteDatabase
from test_muc_rooms import ROOM, join, muc_wire, stanzas
from test_xmpp_routing import Xmpp

MAM = "urn:xmpp:mam:2"


@pytest.fixture
def wire(tmp_path):
    return muc_wire(tmp_path)


def test_disco_of_service_room_and_occupants(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    alice.feed("<iq type='get' id='d' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/>"
               "</iq>")
    out = alice.take()
    assert b'category="conference"' in out and b'var="http://jabber.org/protocol/muc"' in out
    alice.feed("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert b'jid="conference.localhost"' in alice.take()
    alice.feed(f"<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert b"<item-not-found" in alice.take()
    join(alice, "alice")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room", "JOIN #secret", "MODE #secret +s", "JOIN #b&d")
    alice.take()
    alice.feed(f"<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    out = alice.take()
    assert b'var="muc_temporary"' in out and b'var="muc_open"' in out and b"<value>2</value>" in out
    alice.feed("<iq type='get' id='d' to='conference.localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    out = alice.take()
    assert b'jid="room@conference.localhost"' in out and b"secret" not in out and b"b&amp;d" not in out
    alice.feed(f"<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    out = alice.take()
    assert b'jid="room@conference.localhost/dave"' in out and b'jid="room@conference.localhost/alice"' in out


def test_self_ping(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    ping = f"<iq type='get' id='p' to='{ROOM}/alice'><ping xmlns='urn:xmpp:ping'/></iq>"
    alice.feed(ping)
    assert b"<not-acceptable" in alice.take()
    join(alice, "alice")
    alice.feed(ping)
    assert b'type="result"' in alice.take()
    alice.feed(f"<presence type='unavailable' to='{ROOM}/alice'/>")
    alice.take()
    alice.feed(ping)
    assert b"<not-acceptable" in alice.take()


def test_occupant_id_is_stable_per_account_and_replaces_the_clients(wire):
    alice, bob = Xmpp(wire, "a", "alice", "one"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    alice.take()
    bob.feed(f"<message type='groupchat' to='{ROOM}'><body>hi</body>"
             "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>")
    out = alice.take()
    assert b"forged" not in out and b"occupant-id" in out
    oid = etree.fromstring(stanzas(out)[0]).find("{urn:xmpp:occupant-id:0}occupant-id").get("id")
    alice2 = Xmpp(wire, "a", "alice", "two")
    out = join(alice2, "alice")
    bob_presence = next(p for p in stanzas(out) if b"/bob" in p)
    assert oid.encode() in bob_presence and len(oid) == 32


def test_moderation_retracts_for_everyone(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "a", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    irc = wire.client("a", "dave")
    irc.send("JOIN #room")
    alice.take()
    bob.feed(f"<message type='groupchat' to='{ROOM}' id='b1'><body>something bad</body></message>")
    out = stanzas(alice.take())[0]
    sid = etree.fromstring(out).find("{urn:xmpp:sid:0}stanza-id").get("id")
    bob.take()
    irc.t.out.clear()
    bob.feed(f"<iq type='set' id='m' to='{ROOM}'><moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
             "<retract xmlns='urn:xmpp:message-retract:1'/></moderate></iq>")
    assert b"<forbidden" in bob.take()
    alice.feed(f"<iq type='set' id='m' to='{ROOM}'><moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
               "<retract xmlns='urn:xmpp:message-retract:1'/><reason>spam</reason></moderate></iq>")
    for c in (alice, bob):
        out = c.take()
        assert f'<retract xmlns="urn:xmpp:message-retract:1" id="{sid}"'.encode() in out
        assert b'by="room@conference.localhost/alice"' in out
    assert any("NOTICE #room" in l and "retracted a message from bob: spam" in l for l in irc.t.lines())
    carol = Xmpp(wire, "a", "carol", "r")
    assert b"something bad" not in join(carol, "carol")          # gone from the history


def test_direct_invitation_to_irc_is_an_invite(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    irc = wire.client("a", "dave")
    alice.feed(f"<message to='dave@localhost'><x xmlns='jabber:x:conference' jid='{ROOM}'/></message>")
    assert any("INVITE dave #room" in l for l in irc.t.lines())


def _storage_core(tmp_path, name="a"):
    """One core with a real SQLite store; reads commit the queued writes first (as the runtime does)."""
    db = SqliteDatabase(str(tmp_path / f"{name}.db"))
    st = Storage(db, server_id="001")

    def reader(sql, args, done):
        units = list(st.queue.units)
        for u in units:
            db.execute(u.ops)
        st.queue.done(len(units))
        done(db.query(sql, args))
    st.reader = reader
    cfg = parse({"server": {"id": "001", "name": f"{name}.test"}, "data_dir": str(tmp_path / name),
                 "shapers": {}, "shaper_rules": [], "modules": {"xmpp": {"roster_file": ""}, "muc": {}}})
    return db, st, cfg


class OneCore:
    def __init__(self, core, now):
        self.cores = {"a": core}
        self.now = now

    def pump(self):
        pass


def test_mam_with_paging_and_a_restart_keeping_the_persistent_room(tmp_path):
    now = 1_000_000.0
    db, st, cfg = _storage_core(tmp_path)
    core = Core(cfg, now, st)
    core.start(now)
    w = OneCore(core, now)
    for name in ("alice", "bob"):
        core.register_account(name, "secret", now)
    alice = Xmpp(w, "a", "alice", "r")
    join(alice, "alice")
    alice.feed(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
               "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value>"
               "</field><field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>")
    alice.feed(f"<iq type='set' id='a' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
               "<item jid='bob@localhost' affiliation='member'/></query></iq>")
    for i in range(7):
        w.now += 1
        alice.feed(f"<message type='groupchat' to='{ROOM}'><body>msg {i}</body></message>")
    alice.take()
    alice.feed(f"<iq type='set' id='q1' to='{ROOM}'><query xmlns='{MAM}' queryid='Q'>"
               "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set></query></iq>")
    out = alice.take()
    assert out.count(b"<result") == 3 and b"msg 0" in out and b"msg 2" in out and b"msg 3" not in out
    assert b'complete="false"' in out
    last = etree.fromstring(stanzas(out)[-1]).findtext(".//{http://jabber.org/protocol/rsm}last")
    alice.feed(f"<iq type='set' id='q2' to='{ROOM}'><query xmlns='{MAM}'><set xmlns='http://jabber.org/protocol/rsm'>"
               f"<max>10</max><after>{last}</after></set></query></iq>")
    out = alice.take()
    assert out.count(b"<result") == 4 and b"msg 3" in out and b"msg 6" in out and b'complete="true"' in out
    alice.feed(f"<iq type='set' id='q3' to='{ROOM}'><query xmlns='{MAM}'><set xmlns='http://jabber.org/protocol/rsm'>"
               "<max>2</max><before/></set></query></iq>")
    out = alice.take()
    assert out.count(b"<result") == 2 and b"msg 5" in out and b"msg 6" in out
    # everyone leaves; the server stops and starts again
    alice.s.connection_lost("gone", w.now)
    assert core.net.find_channel("#room") is None
    core.stop(w.now)
    for u in list(st.queue.units):
        db.execute(u.ops)
    st.queue.done(len(st.queue.units))
    db.close()
    db, st, cfg = _storage_core(tmp_path)
    core = Core(cfg, w.now, st)
    core.start(w.now)
    w.cores["a"] = core                              # the accounts came back from the store too
    bob = Xmpp(w, "a", "bob", "r")
    # bob is an offline member: he reads the archive before joining, then joins the members-only room
    bob.feed(f"<iq type='set' id='q4' to='{ROOM}'><query xmlns='{MAM}'/></iq>")
    out = bob.take()
    assert out.count(b"<result") == 7
    out = join(bob, "bob")
    assert b'affiliation="member"' in out and b'role="participant"' in out
    ch = core.net.find_channel("#room")
    assert "i" in ch.modes and "o" not in ch.members[core.net.find_nick("bob")]
    alice = Xmpp(w, "a", "alice", "r")
    out = join(alice, "alice", extra="<history maxstanzas='3'/>")
    assert b'affiliation="owner"' in out and b'role="moderator"' in out
    assert b"msg 3" not in out and b"msg 4" in out and b"msg 6" in out     # the history came back too
