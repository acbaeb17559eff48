"""One history across the tree, in memory (cores of tests/support_net.py): a server that had no
members of a room asks the servers that had for their recent history before a join's history
(catchup.py); each message once, the join order kept, a server that never answers costs a timer."""

from __future__ import annotations

import pytest

from support_net import Wire
from test_muc_rooms import ROOM, join, stanzas
from test_xmpp_routing import Xmpp


def make(tmp_path, names=("a", "b"), muc=None, **kw):
    w = Wire(tmp_path, list(names), modules={"xmpp": {"roster_file": ""}, "muc": muc or {}}, **kw)
    for core in w.cores.values():
        for name in ("alice", "bob", "carol"):
            core.register_account(name, "secret", w.now)
    return w


@pytest.fixture
def wire(tmp_path):
    w = make(tmp_path)
    w.link("a", "b")
    return w


def said(w, irc, *lines):
    for line in lines:
        w.now += 10
        irc.send(f"PRIVMSG #room :{line}")


def test_a_join_on_a_server_that_had_no_members_gets_the_rooms_history_once(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    dave = wire.client("a", "dave")
    dave.send("JOIN #room")
    alice.feed(f"<message type='groupchat' to='{ROOM}' id='x'><body>from xmpp on a</body></message>")
    said(wire, dave, "one", "two", "three")
    bob = Xmpp(wire, "b", "bob", "r")
    out = join(bob, "bob")
    got = stanzas(out)
    bodies = [g for g in got if b"<body>" in g]
    assert [b.count(b"<body>") for b in bodies] == [1, 1, 1, 1]
    assert b"from xmpp on a" in bodies[0] and b"three" in bodies[-1]
    assert all(b"urn:xmpp:delay" in b for b in bodies)
    # the XEP-0045 order: presences, self-presence, history, subject
    self_at = next(i for i, g in enumerate(got) if b'code="110"' in g)
    assert self_at < got.index(bodies[0]) and b"<subject" in got[-1]
    # a second join on b (carol) is served from b's own history now: no second question
    asked = wire.frames("b", "a", "ENCAP")
    carol = Xmpp(wire, "b", "carol", "r")
    out = join(carol, "carol")
    assert out.count(b"<body>three</body>") == 1 and out.count(b"<body>one</body>") == 1
    assert wire.frames("b", "a", "ENCAP") == asked


def test_history_limits_apply_to_the_merged_history(wire):
    dave = wire.client("a", "dave")
    dave.send("JOIN #room")
    said(wire, dave, "l0", "l1", "l2", "l3")
    bob = Xmpp(wire, "b", "bob", "r")
    out = join(bob, "bob", extra="<history maxstanzas='2'/>")
    assert b"l1" not in out and b"l2" in out and b"l3" in out
    carol = Xmpp(wire, "b", "carol", "r")
    out = join(carol, "carol", extra="<history seconds='5'/>")
    assert b"l2" not in out and b"l3" in out


def test_messages_said_while_the_answer_is_on_its_way_come_once_in_order(tmp_path):
    w = make(tmp_path)
    w.link("a", "b")
    dave = w.client("a", "dave")
    dave.send("JOIN #room")
    said(w, dave, "before")
    bob = Xmpp(w, "b", "bob", "r")
    real_pump = w.pump
    w.pump = lambda: None                          # hold the link: the question is out, no answer yet
    bob.feed(f"<presence to='{ROOM}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    assert b'code="110"' not in bob.take()          # the join waits for the history
    w.pump = real_pump
    said(w, dave, "meanwhile")                    # reaches b before a's answer (one queue, in order)
    w.pump()
    out = bob.take()
    got = stanzas(out)
    assert out.count(b"<body>before</body>") == 1 and out.count(b"<body>meanwhile</body>") == 1
    assert out.index(b"before") < out.index(b"meanwhile") < out.index(b"<subject")
    # bob's self-presence (matched by its from, not by "110", which a random occupant-id may hold)
    assert any(g.startswith(b"<presence") and f'from="{ROOM}/bob"'.encode() in g and b'code="110"' in g for g in got)
    bob.feed(f"<message type='groupchat' to='{ROOM}' id='y'><body>now in</body></message>")
    assert any("now in" in line for line in dave.t.lines())


def test_a_late_irc_member_does_not_make_the_history_whole(wire):
    dave = wire.client("a", "dave")
    dave.send("JOIN #room")
    said(wire, dave, "early")
    erin = wire.client("b", "erin")               # b starts seeing the room only now
    erin.send("JOIN #room")
    said(wire, dave, "late")
    bob = Xmpp(wire, "b", "bob", "r")
    out = join(bob, "bob")
    assert out.count(b"<body>early</body>") == 1 and out.count(b"<body>late</body>") == 1
    assert out.index(b"early") < out.index(b"late")


def test_the_last_local_member_leaving_opens_a_hole_that_the_next_join_fills(wire):
    dave = wire.client("a", "dave")
    dave.send("JOIN #room")
    bob = Xmpp(wire, "b", "bob", "r")
    join(bob, "bob")
    bob.feed(f"<presence type='unavailable' to='{ROOM}/bob'/>")
    said(wire, dave, "while b had no one")
    out = join(bob, "bob")
    assert out.count(b"while b had no one") == 1


def test_a_server_that_never_answers_costs_the_timer_only(tmp_path):
    w = make(tmp_path, muc={"catchup_wait": 2})
    w.link("a", "b")
    w.cores["a"].services["muc"].catchup._answer_history = lambda *a: None    # as a server without MUC
    dave = w.client("a", "dave")
    dave.send("JOIN #room")
    said(w, dave, "unheard")
    bob = Xmpp(w, "b", "bob", "r")
    assert b'code="110"' not in join(bob, "bob")
    w.tick(1)
    assert b'code="110"' not in bob.take()
    w.tick(1.5)
    out = bob.take()
    assert b'code="110"' in out and b"<subject" in out and b"unheard" not in out
    # the timer went once: the next join does not wait again
    carol = Xmpp(w, "b", "carol", "r")
    assert b'code="110"' in join(carol, "carol")


def test_a_resource_that_leaves_while_waiting_parts_the_channel(tmp_path):
    w = make(tmp_path, muc={"catchup_wait": 2})
    w.link("a", "b")
    w.cores["a"].services["muc"].catchup._answer_history = lambda *a: None    # as a server without MUC
    dave = w.client("a", "dave")
    dave.send("JOIN #room")
    carol = Xmpp(w, "b", "carol", "r")
    assert b'code="110"' not in join(carol, "carol")
    assert "carol" in [u.nick for u in w.cores["a"].net.find_channel("#room").members]
    carol.feed(f"<presence type='unavailable' to='{ROOM}/carol'/>")
    assert "carol" not in [u.nick for u in w.cores["a"].net.find_channel("#room").members]
    w.tick(3)
    assert b'code="110"' not in carol.take()


def test_bad_catchup_frames_are_dropped(wire):
    muc = wire.cores["b"].services["muc"]
    for p in (None, [], {"room": 1, "ask": "x"}, {"room": "#room"}, {"room": "#room", "ask": "nope", "entries": 5}):
        for ftype in ("MUC_HIST_ASK", "MUC_HIST", "MUC_MAM_ASK", "MUC_MAM_ROWS"):
            assert muc.link_extension(ftype, "001", p, None) is True
    dave = wire.client("a", "dave")
    dave.send("JOIN #room")
    bob = Xmpp(wire, "b", "bob", "r")
    assert b'code="110"' in join(bob, "bob")
