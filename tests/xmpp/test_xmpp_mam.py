"""XEP-0313 MAM with XEP-0059 paging, in memory over a real SQLite store: both directions archived,
the stanza-id on what is delivered (a forged one removed), queries by with/start/end/after-id/
before-id, RSM max/after/before with first/last/count and complete, unknown ids, preferences."""

from __future__ import annotations

import pytest
from imsupport import Client, stored_wire

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "{urn:xmpp:sid:0}stanza-id"


@pytest.fixture
def wire(tmp_path):
    return stored_wire(tmp_path, {"xmpp": {"roster_file": "", "mam_max_page": 4}}, ("alice", "bob", "carol"))


def _form(**fields) -> str:
    if not fields:
        return ""
    f = "".join(f"<field var='{k.replace('_', '-')}'><value>{v}</value></field>" for k, v in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value>"
            f"</field>{f}</x>")


def query(c, rsm: str = "", **fields):
    """(bodies, fin) of a query, in the order the results came."""
    c.take()
    c.feed(f"<iq type='set' id='q'><query xmlns='{MAM}' queryid='Q1'>{_form(**fields)}"
           + (f"<set xmlns='{RSM}'>{rsm}</set>" if rsm else "") + "</query></iq>")
    got = c.stanzas()
    results = [el.find(f"{{{MAM}}}result") for el in got if el.find(f"{{{MAM}}}result") is not None]
    assert all(r.get("queryid") == "Q1" for r in results)
    bodies = [r.find("{urn:xmpp:forward:0}forwarded").find("{jabber:client}message").findtext("{jabber:client}body")
              for r in results]
    iq = got[-1]
    assert iq.tag == "{jabber:client}iq", got
    return bodies, iq


def _fin(iq):
    fin = iq.find(f"{{{MAM}}}fin")
    rset = fin.find(f"{{{RSM}}}set")
    first = rset.find(f"{{{RSM}}}first")
    return (fin.get("complete") == "true", first.text if first is not None else None,
            first.get("index") if first is not None else None, rset.findtext(f"{{{RSM}}}last"),
            int(rset.findtext(f"{{{RSM}}}count")))


def _conversation(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    ids = []
    for i in range(6):
        if i % 2 == 0:
            alice.chat("bob@localhost", f"m{i}")
        else:
            bob.chat("alice@localhost", f"m{i}")
        wire.tick(10)
    carol.chat("alice@localhost", "from carol")
    for el in alice.stanzas():
        if el.find(SID) is not None:
            ids.append(el.find(SID).get("id"))
    return alice, bob, carol, ids


def test_archive_both_ways_and_the_stanza_id_on_delivery(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.feed("<message type='chat' to='bob@localhost'><body>hi</body>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>")
    got = [el for el in bob.stanzas() if el.tag.endswith("message")]
    sids = got[0].findall(SID)
    assert len(sids) == 1 and sids[0].get("by") == "bob@localhost" and sids[0].get("id") != "forged"
    bodies, iq = query(alice)
    assert bodies == ["hi"] and _fin(iq)[0] and _fin(iq)[4] == 1    # alice's archive has what she sent
    bodies, iq = query(bob)
    assert bodies == ["hi"] and _fin(iq)[1] == sids[0].get("id")
    alice.feed("<message type='groupchat' to='bob@localhost'><body>x</body></message>")
    alice.feed("<message type='chat' to='bob@localhost'><composing xmlns='http://jabber.org/protocol/chatstates'/>"
               "</message>")
    assert query(bob)[0] == ["hi"]                                   # no body, or groupchat: not archived


def test_rsm_paging_forward_and_backward(wire):
    alice, bob, carol, ids = _conversation(wire)
    bodies, iq = query(alice, "<max>3</max>")
    complete, first, index, last, count = _fin(iq)
    assert bodies == ["m0", "m1", "m2"] and not complete and index == "0" and count == 7
    bodies, iq = query(alice, f"<max>3</max><after>{last}</after>")
    complete, _, index, last, count = _fin(iq)
    assert bodies == ["m3", "m4", "m5"] and not complete and index == "3" and count == 7
    bodies, iq = query(alice, f"<max>3</max><after>{last}</after>")
    assert bodies == ["from carol"] and _fin(iq)[0]
    bodies, iq = query(alice, "<max>2</max><before/>")              # the last page
    complete, first, index, _, _ = _fin(iq)
    assert bodies == ["m5", "from carol"] and not complete and index == "5"
    bodies, iq = query(alice, f"<max>3</max><before>{first}</before>")
    assert bodies == ["m2", "m3", "m4"] and not _fin(iq)[0]
    bodies, iq = query(alice, f"<max>3</max><before>{_fin(iq)[1]}</before>")
    assert bodies == ["m0", "m1"] and _fin(iq)[0]
    bodies, iq = query(alice)                                         # the server's page size
    assert len(bodies) == 4 and not _fin(iq)[0]
    bodies, iq = query(alice, "<max>0</max>")
    assert bodies == [] and _fin(iq)[4] == 7


def test_filters_with_start_end_and_ids(wire):
    alice, bob, carol, ids = _conversation(wire)
    bodies, _ = query(alice, **{"with": "carol@localhost"})
    assert bodies == ["from carol"]
    bodies, _ = query(alice, **{"with": "bob@localhost/r"})
    assert bodies == ["m1", "m3", "m5"]                               # a full JID: that resource
    from bridges.xmpp.offline import stamp_text
    t0 = 1_000_000.0
    bodies, _ = query(alice, start=stamp_text(t0 + 15), end=stamp_text(t0 + 35))
    assert bodies == ["m2", "m3"]
    bodies, _ = query(alice, after_id=ids[0], before_id=ids[2])
    assert bodies == ["m2", "m3", "m4"]                                # ids[] are of alice's received m1, m3, m5
    bodies, _ = query(alice, after_id=ids[0], before_id=ids[1])
    assert bodies == ["m2"]
    bob.take()
    bob.feed(f"<iq type='set' id='q'><query xmlns='{MAM}'>{_form(**{'with': 'a@b@c'})}</query></iq>")
    assert b"bad-request" in bob.take()
    bob.feed(f"<iq type='set' id='q'><query xmlns='{MAM}'>{_form(start='yesterday')}</query></iq>")
    assert b"bad-request" in bob.take()
    bob.feed(f"<iq type='set' id='q'><query xmlns='{MAM}'><set xmlns='{RSM}'><after>nope</after></set></query></iq>")
    assert b"item-not-found" in bob.take()


def test_prefs_default_always_and_never(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    bob.feed(f"<iq type='get' id='p'><prefs xmlns='{MAM}'/></iq>")
    assert b'default="always"' in bob.take()
    bob.feed(f"<iq type='set' id='p'><prefs xmlns='{MAM}' default='never'><always/><never/></prefs></iq>")
    assert b'default="never"' in bob.take()
    alice.chat("bob@localhost", "not for the archive")
    assert SID.split("}")[1].encode() not in bob.take()
    assert query(bob)[0] == [] and query(alice)[0] == ["not for the archive"]
    bob.feed(f"<iq type='set' id='p'><prefs xmlns='{MAM}' default='sometimes'/></iq>")
    assert b"bad-request" in bob.take()
    bob.feed(f"<iq type='get' id='f'><query xmlns='{MAM}'/></iq>")
    out = bob.take()
    assert b'var="with"' in out and b'var="before-id"' in out
    bob.feed("<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert b'var="urn:xmpp:mam:2"' in bob.take()
