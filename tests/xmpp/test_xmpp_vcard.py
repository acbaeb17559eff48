"""XEP-0054 vCard-temp and XEP-0153 avatar hashes, in memory from bytes: set and get one's own,
get another account's, the size limit, the photo hash on presence and its re-broadcast."""

from __future__ import annotations

import base64
import hashlib

import pytest
from xmpp_ext_support import Xmpp, error_of, stanzas, wire

PHOTO = b"\x89PNG not really"
SHA1 = hashlib.sha1(PHOTO).hexdigest()


def _vcard(fn: str, photo: bytes | None = None, pad: int = 0) -> str:
    p = (f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{base64.b64encode(photo).decode()}</BINVAL></PHOTO>"
         if photo else "")
    return f"<vCard xmlns='vcard-temp'><FN>{fn}</FN>{p}<DESC>{'x' * pad}</DESC></vCard>"


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path, vcard_max_bytes=4096)


def test_set_then_get_own_and_another_accounts_vcard(w):
    alice = Xmpp(w).login("alice")
    bob = Xmpp(w).login("bob")
    empty = alice.iq("<iq type='get' id='g0'><vCard xmlns='vcard-temp'/></iq>")
    assert empty.get("type") == "result" and len(empty[0]) == 0
    ok = alice.iq(f"<iq type='set' id='s1'>{_vcard('Alice A.')}</iq>")
    assert ok.get("type") == "result" and ok.get("id") == "s1"
    own = alice.iq("<iq type='get' id='g1'><vCard xmlns='vcard-temp'/></iq>")
    assert own.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice A."
    other = bob.iq("<iq type='get' id='g2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert other.get("from") == "alice@localhost"
    assert other.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice A."
    # Bob has none: an empty vCard; no such account: service-unavailable.
    none = alice.iq("<iq type='get' id='g3' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert none.get("type") == "result" and len(none[0]) == 0
    nobody = alice.iq("<iq type='get' id='g4' to='carol@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert error_of(nobody) == "service-unavailable"
    # Setting another account's vCard is not this table's: refused.
    other_set = bob.iq(f"<iq type='set' id='s2' to='alice@localhost'>{_vcard('evil')}</iq>")
    assert other_set.get("type") == "error"
    assert alice.iq("<iq type='get' id='g5'><vCard xmlns='vcard-temp'/></iq>").findtext(
        "{vcard-temp}vCard/{vcard-temp}FN") == "Alice A."


def test_a_vcard_over_the_limit_is_refused_and_the_old_one_kept(w):
    alice = Xmpp(w).login("alice")
    alice.iq(f"<iq type='set' id='s1'>{_vcard('small')}</iq>")
    big = alice.iq(f"<iq type='set' id='s2'>{_vcard('big', pad=5000)}</iq>")
    assert error_of(big) == "not-acceptable"
    got = alice.iq("<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "small"
    assert alice.s.established                     # the stream goes on


def test_the_photo_hash_is_on_presence_and_a_new_photo_is_announced(w):
    alice = Xmpp(w).login("alice")
    bob = Xmpp(w).login("bob")
    # Mutual subscription, so bob gets alice's presence.
    for me, other in ((alice, "bob"), (bob, "alice")):
        me.feed(f"<presence type='subscribe' to='{other}@localhost'/>")
    for me, other in ((bob, "alice"), (alice, "bob")):
        me.feed(f"<presence type='subscribed' to='{other}@localhost'/>")
    bob.feed("<presence/>")
    bob.take()
    alice.feed("<presence><x xmlns='vcard-temp:x:update'><photo>bogus</photo></x></presence>")
    # No vCard stored: the client's own element is left as it is.
    seen = [p for p in stanzas(bob.take()) if p.tag == "{jabber:client}presence"]
    assert seen and seen[-1].findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") == "bogus"
    alice.iq(f"<iq type='set' id='s'>{_vcard('Alice', PHOTO)}</iq>")
    pushed = [p for p in stanzas(bob.take()) if p.tag == "{jabber:client}presence"]
    assert [p.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") for p in pushed] == [SHA1]
    alice.feed("<presence><show>away</show><x xmlns='vcard-temp:x:update'><photo>bogus</photo></x></presence>")
    p = [p for p in stanzas(bob.take()) if p.tag == "{jabber:client}presence"][-1]
    assert p.findall("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")[0].text == SHA1
    assert len(p.findall("{vcard-temp:x:update}x")) == 1
    # A vCard without a photo: the empty <photo/> says "no avatar".
    alice.iq(f"<iq type='set' id='s2'>{_vcard('Alice')}</iq>")
    p = [p for p in stanzas(bob.take()) if p.tag == "{jabber:client}presence"][-1]
    photo = p.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    assert photo is not None and not photo.text


def test_disco_lists_vcard_temp(w):
    alice = Xmpp(w).login("alice")
    info = alice.iq("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert "vcard-temp" in [f.get("var") for f in info[0]]


def test_an_account_removed_loses_its_vcard(w):
    alice = Xmpp(w).login("alice")
    alice.iq(f"<iq type='set' id='s'>{_vcard('Alice', PHOTO)}</iq>")
    svc = w.cores["a"].services["xmpp"]
    assert svc.vcards.has("alice")
    w.cores["a"].unregister_account("alice", w.now)
    assert not svc.vcards.has("alice")


def test_a_vcard_is_the_same_on_every_server(tmp_path):
    w = wire(tmp_path, names=("a", "b"), vcard_max_bytes=4096)
    w.link("a", "b")
    alice = Xmpp(w, "a").login("alice")
    alice.iq(f"<iq type='set' id='s1'>{_vcard('Alice on a', PHOTO)}</iq>")
    bob = Xmpp(w, "b").login("bob")
    got = bob.iq("<iq type='get' id='g' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice on a"
    assert w.cores["b"].services["xmpp"].vcards.hashes["alice"] == SHA1
    # Set while split: it comes over when the link is back (replayed, or through the index), the newer wins.
    w.unlink("a", "b")
    w.tick(1)
    alice.iq(f"<iq type='set' id='s2'>{_vcard('Alice, newer')}</iq>")
    w.tick(1)
    alice_b = Xmpp(w, "b").login("alice", resource="b")
    assert alice_b.iq("<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>").findtext(
        "{vcard-temp}vCard/{vcard-temp}FN") == "Alice on a"
    w.tick(1)
    w.link("a", "b")
    w.tick(1)
    got = bob.iq("<iq type='get' id='g2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice, newer"
    got = Xmpp(w, "a").login("bob", resource="x").iq(
        "<iq type='get' id='g3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice, newer"


def test_a_server_that_joins_later_gets_the_vcards_through_the_index(tmp_path):
    w = wire(tmp_path, names=("a", "b", "c"), vcard_max_bytes=4096)
    w.link("a", "b")
    Xmpp(w, "a").login("alice").iq(f"<iq type='set' id='s1'>{_vcard('Alice', PHOTO)}</iq>")
    assert "alice" not in w.cores["c"].services["xmpp"].vcards.hashes
    w.link("c", "b")
    w.tick(1)
    assert w.cores["c"].services["xmpp"].vcards.hashes.get("alice") == SHA1
    got = Xmpp(w, "c").login("bob").iq("<iq type='get' id='g' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert got.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice"
