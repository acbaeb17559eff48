"""XEP-0012 last activity in memory from bytes: the server's uptime, an account's idle time and last
logout told to subscribers only; and XEP-0092 version of the server."""

from __future__ import annotations

import pytest
from xmpp_ext_support import Xmpp, error_of, wire

L = "jabber:iq:last"


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path, accounts=("alice", "bob", "carol"))


def _last(c, to: str):
    return c.iq(f"<iq type='get' id='l' to='{to}'><query xmlns='{L}'/></iq>")


def _subscribe(watcher, owner):
    """`watcher` subscribes to `owner`'s presence, and `owner` approves."""
    watcher.feed(f"<presence type='subscribe' to='{owner.jid.split('/')[0]}'/>")
    owner.feed(f"<presence type='subscribed' to='{watcher.jid.split('/')[0]}'/>")


def test_uptime_of_the_server(w):
    alice = Xmpp(w).login("alice")
    w.tick(42)
    got = _last(alice, "localhost")
    assert got.get("type") == "result" and got.get("from") == "localhost"
    assert int(got[0].get("seconds")) >= 42


def test_idle_and_last_logout_to_subscribers_only(w):
    alice = Xmpp(w).login("alice")
    bob = Xmpp(w).login("bob")
    carol = Xmpp(w).login("carol")
    _subscribe(bob, alice)
    alice.feed("<presence/>")
    w.tick(30)
    idle = _last(bob, "alice@localhost")
    assert idle.get("type") == "result" and 30 <= int(idle[0].get("seconds")) < 40
    assert error_of(_last(carol, "alice@localhost")) == "forbidden"
    alice.feed("<presence type='unavailable'><status>off to lunch</status></presence>")
    alice.s.connection_lost("gone", w.now)
    w.tick(100)
    gone = _last(bob, "alice@localhost")
    assert gone[0].text == "off to lunch" and 100 <= int(gone[0].get("seconds")) < 110
    assert error_of(_last(carol, "alice@localhost")) == "forbidden"
    # One's own is always told; no such account is service-unavailable.
    assert _last(carol, "carol@localhost").get("type") == "result"
    assert error_of(_last(bob, "nobody@localhost")) == "service-unavailable"


def test_a_never_seen_account_is_item_not_found(w):
    alice = Xmpp(w).login("alice")
    bob = Xmpp(w).login("bob")
    _subscribe(alice, bob)
    bob.s.connection_lost("gone", w.now)
    assert _last(alice, "bob@localhost")[0].get("seconds") == "0"
    w.cores["a"].register_account("dave", "secret", w.now)
    dave_roster = w.cores["a"].services["xmpp"].roster
    dave_roster.put("dave", "alice@localhost", w.now, subscription="from")
    assert error_of(_last(alice, "dave@localhost")) == "item-not-found"


def test_version_of_the_server(w):
    alice = Xmpp(w).login("alice")
    got = alice.iq("<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    assert got.get("type") == "result"
    assert got.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "relaynet"
    assert got.findtext("{jabber:iq:version}query/{jabber:iq:version}version")


def test_the_last_logout_is_known_on_every_server(tmp_path):
    w = wire(tmp_path, names=("a", "b", "c"))
    w.link("a", "b")
    alice = Xmpp(w, "a").login("alice")
    alice.feed("<presence type='unavailable'><status>bye</status></presence>")
    alice.s.connection_lost("gone", w.now)
    w.cores["b"].services["xmpp"].roster.put("alice", "bob@localhost", w.now, subscription="from")
    w.tick(10)
    gone = _last(Xmpp(w, "b").login("bob"), "alice@localhost")
    assert gone[0].text == "bye" and int(gone[0].get("seconds")) >= 10
    w.link("c", "b")                                     # joins later: the link-up brings them
    w.cores["c"].services["xmpp"].roster.put("alice", "bob@localhost", w.now, subscription="from")
    assert _last(Xmpp(w, "c").login("bob", resource="c"), "alice@localhost")[0].text == "bye"
