"""A room's configuration across the tree, in memory (cores of tests/support_net.py): what the form
holds that is not a channel mode (persistent, name, description, history) is the same on every
server (MUC_ROOM), the newest stamp wins after a split, a room made temporary during a split stays
temporary, and a new link gets the burst."""

from __future__ import annotations

from lxml import etree

from support_net import Wire
from test_muc_rooms import ROOM, join
from test_xmpp_routing import Xmpp

OWNER = "http://jabber.org/protocol/muc#owner"
INFO = "http://jabber.org/protocol/disco#info"


def make(tmp_path, names=("a", "b")):
    w = Wire(tmp_path, list(names), modules={"xmpp": {"roster_file": ""}, "muc": {}}, split_hold=2)
    for core in w.cores.values():
        for name in ("alice", "bob", "carol"):
            core.register_account(name, "secret", w.now)
    return w


def configure(c: Xmpp, **fields) -> bytes:
    c.take()
    body = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    c.feed(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>{body}"
           "</x></query></iq>")
    return c.take()


def answer(c: Xmpp, iq: str) -> etree._Element:
    """The answer to `iq` (what came before it is dropped)."""
    c.take()
    c.feed(iq)
    return etree.fromstring(c.take())


def info(c: Xmpp) -> etree._Element:
    return answer(c, f"<iq type='get' id='i' to='{ROOM}'><query xmlns='{INFO}'/></iq>")


def fields(el) -> dict:
    return {f.get("var"): f.findtext("{jabber:x:data}value") for f in el.iter("{jabber:x:data}field")}


def store(w, core):
    return w.cores[core].services["muc"].store


def test_the_configuration_is_the_same_on_every_server(tmp_path):
    w = make(tmp_path)
    w.link("a", "b")
    alice = Xmpp(w, "a", "alice", "r")
    join(alice, "alice")
    out = configure(alice, **{"muc#roomconfig_persistentroom": 1, "muc#roomconfig_roomname": "The Room",
                              "muc#roomconfig_roomdesc": "where we talk", "muc#maxhistoryfetch": 2})
    assert b'type="result"' in out
    assert store(w, "b").persistent("#room")
    assert store(w, "b").rooms["#room"]["description"] == "where we talk"
    bob = Xmpp(w, "b", "bob", "r")
    el = info(bob)
    assert el.find(f".//{{{INFO}}}identity").get("name") == "The Room"
    assert fields(el)["muc#roominfo_description"] == "where we talk"
    assert "muc_persistent" in [f.get("var") for f in el.iter(f"{{{INFO}}}feature")]
    for i in range(4):
        w.now += 1
        alice.feed(f"<message type='groupchat' to='{ROOM}'><body>m{i}</body></message>")
    out = join(bob, "bob")                       # no <history/>: the room's history length
    assert b"m1" not in out and b"m2" in out and b"m3" in out
    form = fields(answer(alice, f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{OWNER}'/></iq>"))
    assert form["muc#roomconfig_roomname"] == "The Room" and form["muc#maxhistoryfetch"] == "2"
    # the room stays listed on b once everyone has left (persistent there too)
    for c in (alice, bob):
        c.feed(f"<presence type='unavailable' to='{ROOM}/x'/>")
    assert w.cores["b"].net.find_channel("#room") is None
    assert "muc_persistent" in [f.get("var") for f in info(bob).iter(f"{{{INFO}}}feature")]


def test_the_newest_configuration_wins_after_a_split_and_a_new_link_gets_the_burst(tmp_path):
    w = make(tmp_path)
    w.link("a", "b")
    alice, bob = Xmpp(w, "a", "alice", "r"), Xmpp(w, "b", "bob", "r")
    join(alice, "alice")
    configure(alice, **{"muc#roomconfig_persistentroom": 1, "muc#roomconfig_roomdesc": "first"})
    w.cores["b"].services["muc"].grant(w.cores["b"].net.find_channel("#room"), "bob", "owner", w.now)
    join(bob, "bob")
    w.unlink("a", "b")
    w.tick(3)
    w.now += 1
    assert b'type="result"' in configure(bob, **{"muc#roomconfig_roomdesc": "on b, older"})
    w.now += 1
    assert b'type="result"' in configure(alice, **{"muc#roomconfig_roomdesc": "on a, newer"})
    w.link("a", "b")
    for core in ("a", "b"):
        assert store(w, core).rooms["#room"]["description"] == "on a, newer", core
    # a server linked later (c) gets every configuration in the link-up burst
    w3 = make(tmp_path / "three", ("a", "b", "c"))
    w3.link("a", "b")
    alice3 = Xmpp(w3, "a", "alice", "r")
    join(alice3, "alice")
    configure(alice3, **{"muc#roomconfig_persistentroom": 1, "muc#roomconfig_roomname": "Burst"})
    assert "#room" not in store(w3, "c").rooms
    w3.link("b", "c")
    assert store(w3, "c").rooms["#room"]["title"] == "Burst" and store(w3, "c").persistent("#room")


def test_a_room_made_temporary_during_a_split_stays_temporary(tmp_path):
    w = make(tmp_path)
    w.link("a", "b")
    alice = Xmpp(w, "a", "alice", "r")
    join(alice, "alice")
    configure(alice, **{"muc#roomconfig_persistentroom": 1})
    assert store(w, "b").persistent("#room")
    w.unlink("a", "b")
    w.tick(3)
    w.now += 1
    configure(alice, **{"muc#roomconfig_persistentroom": 0})
    alice.feed(f"<presence type='unavailable' to='{ROOM}/alice'/>")
    assert not store(w, "a").persistent("#room") and store(w, "b").persistent("#room")
    w.link("a", "b")                            # b's older "persistent" comes in the burst: a keeps its own
    for core in ("a", "b"):
        assert not store(w, core).persistent("#room"), core


def test_bad_room_frames_are_dropped(tmp_path):
    w = make(tmp_path)
    muc = w.cores["b"].services["muc"]
    good = {"persistent": True, "stamp": [1.0, "001"], "name": "#room"}
    for p in (None, {"room": "#room"}, {"room": "#room", "config": {"name": "#room"}},
              {"room": "#other", "config": good}, {"room": "#room", "config": {**good, "title": 5}}):
        assert muc.link_extension("MUC_ROOM", "001", p, None) is True
    assert muc.store.rooms == {}
    muc.link_extension("MUC_ROOM", "001", {"room": "#room", "config": good}, None)
    assert muc.store.persistent("#room")


def test_an_affiliation_removed_during_a_split_stays_removed(tmp_path):
    from test_muc_roles import admin
    w = make(tmp_path)
    w.link("a", "b")
    alice, bob = Xmpp(w, "a", "alice", "r"), Xmpp(w, "b", "bob", "r")
    join(alice, "alice")
    configure(alice, **{"muc#roomconfig_persistentroom": 1})
    admin(alice, "<item jid='bob@localhost' affiliation='admin'/>")
    admin(alice, "<item jid='carol@localhost' affiliation='member'/>")
    assert store(w, "b").affiliation("#room", "bob") == "admin"
    w.unlink("a", "b")
    w.tick(3)
    w.now += 1
    assert b'type="result"' in admin(alice, "<item jid='bob@localhost' affiliation='none'/>")
    w.now += 1                                   # on b, carol's membership goes too, a grant is newer
    store(w, "b").set_affiliation("#room", "carol", None, 0, (w.now, "002"))
    w.now += 1
    assert b'type="result"' in admin(alice, "<item jid='carol@localhost' affiliation='admin'/>")
    assert store(w, "b").affiliation("#room", "bob") == "admin"
    w.link("a", "b")                             # each side's burst: the newest change of each wins
    for core in ("a", "b"):
        s = store(w, core)
        assert s.affiliation("#room", "bob") is None, core
        assert s.affiliation("#room", "carol") == "admin", core
        assert s.affiliation("#room", "alice") == "owner", core
    out = join(bob, "bob")
    assert b'affiliation="none"' in out and b'role="participant"' in out
