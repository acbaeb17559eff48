"""XEP-0191 blocklists network-wide, on linked cores in memory (tests/support_net.py `Wire`): a block
made on one server holds for the account's resources on another (and is pushed to them), an unblock
anywhere lifts it everywhere, changes made on both sides of a netsplit converge at the netjoin
(tombstones win over older copies), and hostile frames are ignored (a version-1 store merged into one
list: tests/storage/test_xmpp_im_stores.py)."""

from __future__ import annotations

from test_xmpp_federation import NS, of, online, stanzas

import pytest

from support_net import Wire

from bridges.xmpp.blocking import CHANGE, ENTRIES

BLOCKING = "urn:xmpp:blocking"


def lists(wire: Wire, core: str):
    return wire.cores[core].services["xmpp"].blocking


def block(c, op: str, *jids: str, id: str = "b") -> list:
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    c.feed(f"<iq type='set' id='{id}'><{op} xmlns='{BLOCKING}'>{items}</{op}></iq>")
    return stanzas(c)


def blocklist(c) -> list[str]:
    c.feed(f"<iq type='get' id='l'><blocklist xmlns='{BLOCKING}'/></iq>")
    got = of(stanzas(c), "iq", id="l")[0]
    return sorted(i.get("jid") for i in got[0])


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"], modules={"xmpp": {"roster_file": ""}})
    for core in w.cores.values():
        for name in ("alice", "bob", "mallory"):
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    w.link("b", "c")
    return w


def test_a_block_made_on_one_server_holds_for_the_account_on_another(wire):
    there = online(wire, "c", "bob", "there")
    assert blocklist(there) == []                                    # asks for the list: gets pushes
    here = online(wire, "a", "bob", "here")
    assert of(block(here, "block", "mallory@localhost"), "iq", id="b", type="result")
    push = [e for e in of(stanzas(there), "iq", type="set") if e.find(f"{{{BLOCKING}}}block") is not None]
    assert [i.get("jid") for i in push[0][0]] == ["mallory@localhost"]
    assert blocklist(there) == ["mallory@localhost"]
    here.s.connection_lost("gone", wire.now)
    wire.pump()
    mallory, alice = online(wire, "b", "mallory", "r"), online(wire, "b", "alice", "r")
    mallory.feed("<message type='chat' to='bob@localhost' id='m1'><body>let me in</body></message>")
    alice.feed("<message type='chat' to='bob@localhost' id='a1'><body>still welcome</body></message>")
    assert [m.findtext(NS + "body") for m in of(stanzas(there), "message")] == ["still welcome"]
    # What bob sends to mallory on c is refused there.
    there.feed("<message type='chat' to='mallory@localhost' id='out'><body>go away</body></message>")
    err = of(stanzas(there), "message", id="out", type="error")
    assert err and err[0].find(NS + "error/{urn:xmpp:blocking:errors}blocked") is not None
    assert b"go away" not in mallory.take()


def test_an_unblock_on_another_server_lifts_the_block_everywhere(wire):
    here = online(wire, "a", "bob", "here")
    block(here, "block", "mallory@localhost", "spam.example")
    assert blocklist(here) == ["mallory@localhost", "spam.example"]
    there = online(wire, "c", "bob", "there")
    block(there, "unblock", "mallory@localhost")
    push = [e for e in of(stanzas(here), "iq", type="set") if e.find(f"{{{BLOCKING}}}unblock") is not None]
    assert [i.get("jid") for i in push[0][0]] == ["mallory@localhost"]
    for k in "abc":
        assert lists(wire, k).lists == {"bob": {"spam.example"}}, k
    block(there, "unblock")                                          # no item: everything
    assert all("bob" not in lists(wire, k).lists for k in "abc")
    assert len({lists(wire, k).version("bob") for k in "abc"}) == 1


def test_changes_on_both_sides_of_a_netsplit_converge_at_the_netjoin(wire):
    here, there = online(wire, "a", "bob", "here"), online(wire, "c", "bob", "there")
    block(here, "block", "mallory@localhost", "old.example")
    wire.unlink("c", "b")
    wire.tick(1)
    block(here, "block", "a-side.example")
    block(there, "unblock", "mallory@localhost")                      # newer than the block made on a
    block(there, "block", "c-side.example")
    wire.tick(1)
    block(here, "unblock", "old.example")
    wire.tick(40)                                                     # past the hold: a full netjoin
    blocklist(there)
    wire.link("c", "b")
    want = {"a-side.example", "c-side.example"}
    for k in "abc":
        assert lists(wire, k).lists.get("bob") == want, k
    assert len({lists(wire, k).version("bob") for k in "abc"}) == 1
    assert blocklist(there) == sorted(want)


def test_hostile_block_frames_are_ignored(wire):
    links = wire.cores["a"].net.router
    for payload in ({"account": 5}, {"account": "bob", "jid": "a@b@c", "blocked": True, "stamp": [1, "001"]},
                    {"account": "bob", "jid": "x@y", "blocked": "yes", "stamp": [1, "001"]},
                    {"account": "bob", "jid": "x@y", "blocked": True, "stamp": "now"},
                    {"account": "", "jid": "x@y", "blocked": True, "stamp": [1, "001"]}):
        links.send_extension(CHANGE, payload)
    links.send_extension(ENTRIES, {"entries": [["bob"], "x", ["bob", "x@y", True, [True, "001"]]]})
    links.send_extension(CHANGE, "not a dict")
    wire.pump()
    assert all(lists(wire, k).lists == {} for k in "bc")
    bob = online(wire, "c", "bob", "r")
    assert blocklist(bob) == []
