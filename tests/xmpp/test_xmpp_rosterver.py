"""Roster versioning (RFC 6121 §2.6): the `rosterver` stream feature after authentication, and `ver`
on a roster get: unchanged -> an empty result, then pushes carrying the new version; stale or
unknown -> the whole roster with its version. From raw stanzas, and with slixmpp (which sends the
`ver` it has once it sees the feature)."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from lxml import etree
from test_xmpp_federation import of, online, stanzas
from test_xmpp_routing import Xmpp
from xmpp_ext_support import HEADER, Transport
from xmpp_live import WAIT, Inbox, make_client, offline, online as live, xmpp_server

from support_net import Wire

R = "{jabber:iq:roster}"


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": ""}})
    w.cores["a"].register_account("alice", "secret", w.now)
    return w


def test_the_rosterver_feature_is_offered_after_authentication_only(wire):
    t = Transport()
    s = wire.cores["a"].services["xmpp"].new_session(t, None, wire.now)
    s.data_received(HEADER, wire.now)
    before = b"".join(t.out)
    t.out.clear()
    assert b"urn:xmpp:features:rosterver" not in before
    plain = base64.b64encode(b"\0alice\0secret").decode()
    s.data_received(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>".encode(),
                    wire.now)
    s.data_received(HEADER, wire.now)
    after = b"".join(t.out)
    features = after[after.index(b"<stream:features"):]
    assert re.search(rb"<ver xmlns=['\"]urn:xmpp:features:rosterver['\"]/>", features) and b"<bind" in features


def test_a_roster_get_with_the_current_version_is_empty_and_pushes_follow(wire):
    one = online(wire, "a", "alice", "one")
    one.feed("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/>"
             "</query></iq>")
    one.feed("<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>")
    full = of(stanzas(one), "iq", id="g1")[0][0]
    ver = full.get("ver")
    assert ver and [i.get("jid") for i in full.findall(R + "item")] == ["bob@localhost"]

    two = Xmpp(wire, "a", "alice", "two")
    two.feed(f"<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
    same = of(stanzas(two), "iq", id="g2")
    assert same[0].get("type") == "result" and len(same[0]) == 0          # unchanged: nothing
    one.feed("<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>")
    push = [e for e in of(stanzas(two), "iq", type="set") if e.find(R + "query") is not None]
    assert len(push) == 1 and push[0][0][0].get("jid") == "carol@localhost"
    new = push[0][0].get("ver")
    assert new and new != ver

    # A stale version (and one the server never gave) gets the whole roster, at the current version.
    for stale in (ver, "not-a-version"):
        three = Xmpp(wire, "a", "alice", "three-" + stale[:3])
        three.feed(f"<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='{stale}'/></iq>")
        q = of(stanzas(three), "iq", id="g3")[0][0]
        assert q.get("ver") == new and sorted(i.get("jid") for i in q.findall(R + "item")) == \
            ["bob@localhost", "carol@localhost"]


def test_slixmpp_uses_roster_versioning(tmp_path):
    slixmpp = pytest.importorskip("slixmpp")
    srv = xmpp_server(tmp_path / "x")
    try:
        async def main():
            first = await live(make_client(slixmpp, "alice@localhost/one", "secret", srv), srv)
            assert "rosterver" in first.features
            await first.update_roster("bob@localhost", name="Bob", timeout=WAIT)
            await first.get_roster(timeout=WAIT)
            ver = first.client_roster.version
            assert ver and "bob@localhost" in first.client_roster

            # A second client that has the roster cached at that version: an empty result, then pushes.
            second = make_client(slixmpp, "alice@localhost/two", "secret", srv)
            await live(second, srv, presence=False)
            second.client_roster.version = ver
            pushes = Inbox(second, "roster_update")
            res = await second.get_roster(timeout=WAIT)
            # (slixmpp makes an empty <query/> on reading the result: no items is what the server sent)
            assert res["type"] == "result" and not res["roster"]["items"] and second.client_roster.version == ver
            await first.update_roster("carol@localhost", name="Carol", timeout=WAIT)
            await pushes.wait(lambda iq: iq["type"] == "set" and "carol@localhost" in iq["roster"]["items"],
                              "the push of the new item")
            assert second.client_roster.version not in ("", ver) and "carol@localhost" in second.client_roster
            await offline(first, second)
        asyncio.run(main())
    finally:
        srv.stop()
