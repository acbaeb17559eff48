"""XEP-0077 in-band registration in memory from bytes: the stream feature and the account made only
where the access rule `register` allows, a taken name, a bad name, one account per stream, the new
account logging in; after auth a password change and the account's removal."""

from __future__ import annotations

import base64

from xmpp_ext_support import HEADER, Xmpp, error_of, stanzas, wire

R = "jabber:iq:register"
FEATURE = b"http://jabber.org/features/iq-register"
ALLOW_LOOPBACK = {"acl": {"local": {"ip": ["127.0.0.0/8"]}}, "access_rules": {"register": [{"allow": "local"}]}}
NO_RULE = {"access_rules": {"oper": [{"allow": "all"}]}}      # no `register` rule: denied


def _set(c, user: str, password: str):
    return c.iq(f"<iq type='set' id='r'><query xmlns='{R}'><username>{user}</username>"
                f"<password>{password}</password></query></iq>")


def _plain_ok(w, user: str, password: str) -> bool:
    c = Xmpp(w)
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    c.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
    return b"<success" in c.take()


def test_registration_is_refused_without_a_rule_that_allows_it(tmp_path):
    w = wire(tmp_path, config=NO_RULE)
    c = Xmpp(w)
    assert FEATURE not in c.features
    got = c.iq(f"<iq type='get' id='g'><query xmlns='{R}'/></iq>")
    assert error_of(got) == "not-allowed"
    assert error_of(_set(c, "mallory", "pw")) == "not-allowed"
    assert w.cores["a"].accounts.get("mallory") is None
    assert not c.t.closing                        # a refusal, not the end of the stream


def test_the_access_rule_decides_by_address(tmp_path):
    w = wire(tmp_path, config=ALLOW_LOOPBACK)
    far = Xmpp(w, peer_host="192.0.2.7")
    assert FEATURE not in far.features
    assert error_of(_set(far, "far", "pw")) == "not-allowed"
    near = Xmpp(w)
    assert FEATURE in near.features
    form = near.iq(f"<iq type='get' id='g'><query xmlns='{R}'/></iq>")
    assert form.get("type") == "result"
    assert {etree_local(x) for x in form[0]} >= {"username", "password"}
    assert _set(near, "Newbie", "pw1").get("type") == "result"
    assert w.cores["a"].accounts.get("newbie") is not None
    assert error_of(_set(near, "other", "pw")) == "not-allowed"      # one account per stream
    again = Xmpp(w)
    assert error_of(_set(again, "newbie", "x")) == "conflict"
    assert error_of(_set(again, "bad name", "x")) in ("jid-malformed", "not-acceptable")
    assert error_of(again.iq(f"<iq type='set' id='r'><query xmlns='{R}'><username>u</username></query></iq>")) \
        == "not-acceptable"
    # Another iq before authentication is still refused with a stream error.
    again.feed("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"not-authorized" in again.take() and again.t.closing
    assert _plain_ok(w, "newbie", "pw1")


def test_password_change_and_cancel_after_auth(tmp_path):
    w = wire(tmp_path)
    alice = Xmpp(w).login("alice")
    other = Xmpp(w).login("alice", resource="two")
    info = alice.iq(f"<iq type='get' id='g'><query xmlns='{R}'/></iq>")
    assert info[0].find(f"{{{R}}}registered") is not None
    assert error_of(_set(alice, "bob", "stolen")) == "bad-request"
    assert _set(alice, "alice", "new-secret").get("type") == "result"
    assert _plain_ok(w, "alice", "new-secret") and not _plain_ok(w, "alice", "secret")
    other.take()
    alice.feed(f"<iq type='set' id='c'><query xmlns='{R}'><remove/></query></iq>")
    out = alice.take()
    assert stanzas(out.split(b"<stream:error")[0])[0].get("type") == "result"
    assert b"not-authorized" in out and alice.t.closing
    assert b"not-authorized" in other.take() and other.t.closing
    assert w.cores["a"].accounts.get("alice") is None


def test_registration_needs_a_secure_stream(tmp_path):
    w = wire(tmp_path, config=ALLOW_LOOPBACK)
    c = Xmpp(w)
    c.t.tls = False
    c.s = w.cores["a"].services["xmpp"].new_session(c.t, None, w.now)
    c.take()
    c.feed(HEADER)
    assert FEATURE not in c.take()
    assert error_of(_set(c, "plain", "pw")) == "not-allowed"
    assert w.cores["a"].accounts.get("plain") is None


def etree_local(el) -> str:
    from lxml import etree
    return etree.QName(el).localname
