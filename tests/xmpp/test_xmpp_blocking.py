"""XEP-0191 blocking in memory: the list, block/unblock with pushes, what a blocked JID sends dropped
(iq answered service-unavailable), what goes to one refused with not-acceptable + blocked, the
account's presence kept from it, and the list in the store across a restart."""

from __future__ import annotations

import pytest
from imsupport import Client, stored_wire

BLOCKING = "urn:xmpp:blocking"


@pytest.fixture
def wire(tmp_path):
    return stored_wire(tmp_path, {"xmpp": {"roster_file": ""}}, ("alice", "bob", "mallory"))


def _block(c, op: str, *jids: str) -> bytes:
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    c.feed(f"<iq type='set' id='{op}'><{op} xmlns='{BLOCKING}'>{items}</{op}></iq>")
    return c.take()


def test_block_unblock_the_list_and_pushes(wire):
    bob, other = Client(wire, "a", "bob"), Client(wire, "a", "bob", "other")
    other.feed(f"<iq type='get' id='l'><blocklist xmlns='{BLOCKING}'/></iq>")
    assert b"<blocklist xmlns=\"urn:xmpp:blocking\"/>" in other.take()
    assert b'type="result"' in _block(bob, "block", "mallory@localhost", "spam.example")
    push = other.take()
    assert b'type="set"' in push and b'<item jid="mallory@localhost"/>' in push and b"<block " in push
    bob.feed(f"<iq type='get' id='l'><blocklist xmlns='{BLOCKING}'/></iq>")
    out = bob.take()
    assert b'jid="mallory@localhost"' in out and b'jid="spam.example"' in out
    assert b"bad-request" in _block(bob, "block")
    assert b"jid-malformed" in _block(bob, "block", "a@b@c")
    assert b'type="result"' in _block(bob, "unblock", "spam.example")
    assert b"<unblock " in other.take()
    assert b'type="result"' in _block(bob, "unblock")             # no item: everything
    bob.feed(f"<iq type='get' id='l'><blocklist xmlns='{BLOCKING}'/></iq>")
    assert b"<blocklist xmlns=\"urn:xmpp:blocking\"/>" in bob.take()


def test_what_a_blocked_jid_sends_is_dropped_and_what_goes_to_it_refused(wire):
    alice, bob, mallory = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "mallory")
    for c in (alice, bob, mallory):
        c.feed("<presence/>")
        c.take()
    _block(bob, "block", "mallory@localhost")
    mallory.chat("bob@localhost", "let me in")
    mallory.feed("<presence to='bob@localhost'><show>chat</show></presence>")
    mallory.feed(f"<iq type='get' id='v' to='{bob.jid}'><query xmlns='jabber:iq:version'/></iq>")
    assert b"let me in" not in bob.take()
    out = mallory.take()
    assert b'id="v"' in out and b"service-unavailable" in out
    alice.chat("bob@localhost", "still welcome")
    assert b"still welcome" in bob.take()
    bob.chat("mallory@localhost", "go away")
    out = bob.take()
    assert b"not-acceptable" in out and b'<blocked xmlns="urn:xmpp:blocking:errors"/>' in out
    assert b"go away" not in mallory.take()
    bob.feed("<presence to='mallory@localhost'/>")
    bob.feed("<presence><show>away</show></presence>")
    assert mallory.take() == b""                                  # directed and broadcast presence kept back
    _block(bob, "unblock", "mallory@localhost")
    mallory.chat("bob@localhost", "hello again")
    assert b"hello again" in bob.take()


def test_a_domain_blocks_every_jid_in_it_and_the_list_is_stored(wire, tmp_path):
    bob, mallory = Client(wire, "a", "bob"), Client(wire, "a", "mallory")
    _block(bob, "block", "localhost/evil")
    mallory.chat("bob@localhost", "from r")
    assert b"from r" in bob.take()                               # localhost/evil is not mallory@localhost/r
    _block(bob, "block", "localhost")
    alice = Client(wire, "a", "alice")
    alice.chat("bob@localhost", "from anyone")
    bob.feed("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    out = bob.take()
    assert b"from anyone" not in out and b'type="result"' in out  # the server itself still answers
    wire.flush()
    from bridges.xmpp.blocking import Blocklists
    again = Blocklists(wire.cores["a"].services["xmpp"])
    assert again.lists == {"bob": {"localhost/evil", "localhost"}}
