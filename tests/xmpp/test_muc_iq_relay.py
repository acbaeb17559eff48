"""IQs to occupants (XEP-0045 §17.3), in memory (cores of tests/support_net.py): an iq to
room/nick reaches one of the occupant's sessions from the asker's room JID and the answer comes
back from the target's room JID with the asker's id, on one server and across a link; neither
side sees the other's real JID in it; answers from anyone else are not taken."""

from __future__ import annotations

import re

import pytest

from test_muc_rooms import ROOM, join, muc_wire
from test_xmpp_routing import Xmpp

VERSION = "<query xmlns='jabber:iq:version'/>"


@pytest.fixture
def wire(tmp_path):
    return muc_wire(tmp_path, linked=True)


def relayed(c: Xmpp) -> tuple[str, bytes]:
    out = c.take()
    m = re.search(rb'<iq [^>]*id="(muc-iq-[^"]+)"', out)
    assert m, out
    return m.group(1).decode(), out


@pytest.mark.parametrize("bob_on", ["a", "b"])
def test_an_iq_to_an_occupant_and_its_answer(wire, bob_on):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, bob_on, "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    alice.take()
    alice.feed(f"<iq type='get' id='v1' to='{ROOM}/bob'>{VERSION}</iq>")
    rid, out = relayed(bob)
    assert f'from="{ROOM}/alice"'.encode() in out and b'to="bob@localhost/r"' in out
    assert b"jabber:iq:version" in out and b"alice@localhost" not in out
    bob.feed(f"<iq type='result' id='{rid}' to='{ROOM}/alice'><query xmlns='jabber:iq:version'>"
             "<name>bobclient</name></query></iq>")
    out = alice.take()
    assert b'type="result"' in out and b'id="v1"' in out and f'from="{ROOM}/bob"'.encode() in out
    assert b"<name>bobclient</name>" in out and b"bob@localhost" not in out
    # an error answer comes back as an error; a second answer to the same id is not taken
    alice.feed(f"<iq type='set' id='v2' to='{ROOM}/bob'><query xmlns='urn:example:x'/></iq>")
    rid2, _ = relayed(bob)
    bob.feed(f"<iq type='error' id='{rid2}' to='{ROOM}/alice'><error type='cancel'>"
             "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    out = alice.take()
    assert b'type="error"' in out and b'id="v2"' in out and b"feature-not-implemented" in out
    bob.feed(f"<iq type='result' id='{rid2}' to='{ROOM}/alice'/>")
    assert alice.take() == b""


def test_pings_to_others_are_relayed_self_pings_answered(wire):
    alice, bob = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "b", "bob", "r")
    join(alice, "alice")
    join(bob, "bob")
    alice.take()
    alice.feed(f"<iq type='get' id='p0' to='{ROOM}/alice'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b'type="result"' in alice.take() and bob.take() == b""
    alice.feed(f"<iq type='get' id='p1' to='{ROOM}/bob'><ping xmlns='urn:xmpp:ping'/></iq>")
    rid, out = relayed(bob)
    assert b"urn:xmpp:ping" in out and alice.take() == b""
    bob.feed(f"<iq type='result' id='{rid}' to='{ROOM}/alice'/>")
    assert b'id="p1"' in alice.take()


def test_what_is_refused(wire):
    alice, bob, carol = Xmpp(wire, "a", "alice", "r"), Xmpp(wire, "b", "bob", "r"), Xmpp(wire, "a", "carol", "r")
    join(alice, "alice")
    join(bob, "bob")
    dave = wire.client("b", "dave")
    dave.send("JOIN #room")
    alice.take()
    bob.take()
    alice.feed(f"<iq type='get' id='x1' to='{ROOM}/dave'>{VERSION}</iq>")
    assert b"service-unavailable" in alice.take()                  # an IRC member has no iq
    alice.feed(f"<iq type='get' id='x2' to='{ROOM}/nobody'>{VERSION}</iq>")
    assert b"item-not-found" in alice.take()
    carol.feed(f"<iq type='get' id='x3' to='{ROOM}/bob'>{VERSION}</iq>")
    assert b"not-acceptable" in carol.take() and bob.take() == b""    # carol is not in the room
    # someone else answering the relay's id is not the answer
    alice.feed(f"<iq type='get' id='x4' to='{ROOM}/bob'>{VERSION}</iq>")
    rid, _ = relayed(bob)
    join(carol, "carol")
    alice.take()
    carol.feed(f"<iq type='result' id='{rid}' to='{ROOM}/alice'/>")
    assert b'id="x4"' not in alice.take()
    bob.feed(f"<iq type='result' id='{rid}' to='{ROOM}/alice'/>")
    assert b'id="x4"' in alice.take()


def test_bad_iq_frames_are_dropped(wire):
    muc = wire.cores["a"].services["muc"]
    for p in (None, {"id": "x"}, {"id": "x", "xml": "<nope"}, {"id": "x", "xml": "<message xmlns='jabber:client'/>"},
              {"kind": "answer", "id": "x", "xml": "<iq xmlns='jabber:client' type='get'/>"},
              {"kind": "ask", "id": "x", "xml": "<iq xmlns='jabber:client' type='get'/>", "room": "#room",
               "from_nick": "z", "to": "nobody"}):
        assert muc.link_extension("MUC_IQ", "002", p, None) is True
