"""XEP-0198 stream management in memory: the feature, enable, acks both ways, h wrapping at 2^32,
resumption after a cut (the member stays, the queue is resent), unknown ids, expiry to offline
storage, and an impossible h."""

from __future__ import annotations

import pytest
from imsupport import SM, Client
from support_net import Wire

MASK = 2 ** 32 - 1


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": "", "resume_timeout": 60, "ack_every": 3,
                                                     "ack_seconds": 10}})
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    return w


def test_sm_is_a_stream_feature_after_auth_and_enable_twice_fails(wire):
    c = Client(wire, "a", "alice", None)
    assert b"<sm xmlns=\"urn:xmpp:sm:3\"/>" in c.features and b"<csi xmlns=\"urn:xmpp:csi:0\"/>" in c.features
    c.feed(f"<enable xmlns='{SM}'/>")                     # before bind
    assert b"<failed" in c.take() and b"unexpected-request" in b"".join(c.t.out or [b"unexpected-request"])
    c.bind("r")
    assert c.enable_sm(resume=False) is None
    c.feed(f"<enable xmlns='{SM}'/>")
    assert b"<failed" in c.take()


def test_acks_both_ways_and_the_server_asks_after_n_stanzas_or_t_seconds(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    bob.enable_sm()
    for i in range(3):
        bob.feed(f"<iq type='get' id='p{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    bob.feed(f"<r xmlns='{SM}'/>")
    out = bob.take()
    assert out.count(b'type="result"') == 3 and b'<a xmlns="urn:xmpp:sm:3" h="3"/>' in out
    assert out.count(b"<r xmlns=\"urn:xmpp:sm:3\"/>") == 1        # asked once, after the third
    bob.feed(f"<a xmlns='{SM}' h='3'/>")
    assert not bob.s.sm.queue
    alice.chat("bob@localhost", "one")
    assert b"one" in bob.take() and len(bob.s.sm.queue) == 1
    wire.tick(5)
    assert b"<r " not in bob.take()
    wire.tick(6)
    assert b"<r xmlns=\"urn:xmpp:sm:3\"/>" in bob.take()          # the oldest unacked waited 10 s


def test_h_wraps_around_at_2_to_the_32(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    bob.enable_sm()
    sm = bob.s.sm
    sm.h_out = sm.acked = MASK - 1
    sm.h_in = MASK
    for i in range(2):
        alice.chat("bob@localhost", f"m{i}")
    assert sm.h_out == 0 and len(sm.queue) == 2
    bob.feed(f"<a xmlns='{SM}' h='{MASK}'/>")
    assert len(sm.queue) == 1
    bob.feed(f"<a xmlns='{SM}' h='0'/>")
    assert not sm.queue and sm.acked == 0
    bob.feed("<presence/>")                              # a stanza in: h_in wraps to 0
    bob.feed(f"<r xmlns='{SM}'/>")
    assert b'h="0"' in bob.take()


def test_an_h_beyond_what_was_sent_is_a_stream_error(wire):
    bob = Client(wire, "a", "bob")
    bob.enable_sm()
    bob.feed(f"<a xmlns='{SM}' h='5'/>")
    assert b"<undefined-condition" in bob.take() and bob.t.closing
    other = Client(wire, "a", "alice")
    other.enable_sm()
    other.feed(f"<a xmlns='{SM}' h='x'/>")
    assert b"<invalid-xml" in other.take()


def test_resumption_after_a_cut_keeps_the_member_and_resends_what_was_not_acked(wire):
    core = wire.cores["a"]
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    irc = wire.client("a", "carol")
    for c in (alice, bob):
        c.feed("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>")
    alice.feed("<presence type='subscribe' to='bob@localhost'/>")
    bob.feed("<presence type='subscribed' to='alice@localhost'/>")
    bob.feed("<presence type='subscribe' to='alice@localhost'/>")
    alice.feed("<presence type='subscribed' to='bob@localhost'/>")
    alice.take(), irc.t.take()
    sid = bob.enable_sm()
    alice.chat("bob@localhost", "before")
    bob.take()
    user = core.net.find_nick("bob")
    bob.cut()
    alice.chat("bob@localhost", "while away")
    assert b"unavailable" not in alice.take() and core.net.find_nick("bob") is user
    assert not any("QUIT" in line for line in irc.t.take())
    again = Client(wire, "a", "bob", None)
    again.feed(f"<resume xmlns='{SM}' previd='{sid}' h='0'/>")
    out = again.take()
    assert b"<resumed" in out and f'previd="{sid}"'.encode() in out
    assert out.index(b"before") < out.index(b"while away")              # both unacked: both again
    again.feed(f"<a xmlns='{SM}' h='2'/>")
    assert not again.s.sm.queue
    alice.chat("bob@localhost", "after")
    assert b"after" in again.take() and core.net.find_nick("bob") is user
    again.feed("<message type='chat' to='alice@localhost'><body>back</body></message>")
    assert b"back" in alice.take()
    assert core.services["xmpp"].sm.resumed == 1


def test_resume_of_an_unknown_or_foreign_id_fails_and_binding_still_works(wire):
    bob = Client(wire, "a", "bob")
    sid = bob.enable_sm()
    bob.cut()
    c = Client(wire, "a", "bob", None)
    c.feed(f"<resume xmlns='{SM}' previd='nope' h='0'/>")
    assert b"<failed" in c.take()
    mallory = Client(wire, "a", "alice", None)              # another account cannot take it
    mallory.feed(f"<resume xmlns='{SM}' previd='{sid}' h='0'/>")
    out = mallory.take()
    assert b"<failed" in out and b"item-not-found" in out
    c.bind("again")
    assert c.jid.startswith("bob@localhost/again")


def test_a_stream_close_is_not_held(wire):
    core = wire.cores["a"]
    bob = Client(wire, "a", "bob")
    bob.enable_sm()
    bob.feed("</stream:stream>")
    bob.s.connection_lost("closed", wire.now)
    assert core.net.find_nick("bob") is None


def test_resume_while_the_old_connection_is_still_open_closes_it(wire):
    bob = Client(wire, "a", "bob")
    sid = bob.enable_sm()
    again = Client(wire, "a", "bob", None)
    again.feed(f"<resume xmlns='{SM}' previd='{sid}' h='0'/>")
    assert b"<resumed" in again.take() and bob.t.closing
    bob.s.connection_lost("closed", wire.now)                # the old one's end changes nothing
    assert wire.cores["a"].net.find_nick("bob") is not None
def test_a_held_session_expires_its_unacked_message_goes_offline(wire):
    core = wire.cores["a"]
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    bob.feed("<presence/>")
    sid = bob.enable_sm()
    bob.cut()
    alice.chat("bob@localhost", "kept for later")
    wire.tick(30)
    assert core.net.find_nick("bob") is not None
    wire.tick(31)
    assert core.net.find_nick("bob") is None
    late = Client(wire, "a", "bob", None)
    late.feed(f"<resume xmlns='{SM}' previd='{sid}' h='0'/>")
    assert b"item-not-found" in late.take()
    late.bind("r")
    late.feed("<presence/>")
    out = late.take()
    assert b"kept for later" in out and b"urn:xmpp:delay" in out




def test_on_expiry_an_unacked_message_with_no_room_offline_bounces(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": "", "resume_timeout": 5, "offline_max": 0}})
    for name in ("alice", "bob"):
        w.cores["a"].register_account(name, "secret", w.now)
    alice, bob = Client(w, "a", "alice"), Client(w, "a", "bob")
    bob.feed("<presence/>")
    bob.enable_sm()
    alice.take()
    alice.chat("bob@localhost", "never acked", id="lost1")
    bob.cut()
    w.tick(6)
    out = alice.take()
    assert b'type="error"' in out and b'id="lost1"' in out and b"<recipient-unavailable" in out


def test_nonzas_split_at_every_byte(wire):
    bob = Client(wire, "a", "bob")
    data = (f"<enable xmlns='{SM}' resume='true'/><iq type='get' id='p' to='localhost'>"
            f"<ping xmlns='urn:xmpp:ping'/></iq><r xmlns='{SM}'/>").encode()
    for i in range(len(data)):
        bob.s.data_received(data[i:i + 1], wire.now)
    out = bob.take()
    assert b"<enabled" in out and b'type="result"' in out and b'<a xmlns="urn:xmpp:sm:3" h="1"/>' in out
