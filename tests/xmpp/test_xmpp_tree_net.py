"""One XMPP network over configs/tree-3 (three real server processes, slixmpp clients): a roster
subscription between accounts on the two ends, their presence, a chat with a receipt request passed
through untouched, an iq ping from full JID to full JID, a short split during which a chat is sent
(delivered exactly once, and nobody seen unavailable), and a login on another server with the same
roster."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import TreeNetwork, wait_for

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

RECEIPTS = "urn:xmpp:receipts"


async def until(pred, what: str):
    for _ in range(WAIT * 10):
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {what}")


def subscription(client, jid: str) -> str:
    roster = client.client_roster
    return roster[jid]["subscription"] if jid in roster else "none"


def test_two_xmpp_accounts_on_the_ends_of_a_tree_are_one_network(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}}).start()
    try:
        a, b, c = net["a"], net["b"], net["c"]
        for srv in (a, b, c):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a.ctl("register", "alice", "secret")
        c.ctl("register", "bob", "secret")
        wait_for(lambda: "alice" in c.ctl("accounts").stdout and "bob" in a.ctl("accounts").stdout,
                 timeout=WAIT, what="accounts on every server")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False), a)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", c, verify=False), c)
            to_bob = Inbox(bob, "message")
            # slixmpp's "message" event is for messages with a body; a receipt has none.
            alice.register_handler(Callback("receipt", MatchXPath(f"{{jabber:client}}message/{{{RECEIPTS}}}received"),
                                            lambda st: alice.event("receipt_received", st)))
            receipts = Inbox(alice, "receipt_received")
            alice_sees = Inbox(alice, "presence")
            await until(lambda: any(u[4] == "bob@localhost" and u[5] == "003" for u in a.call("dump-state")["users"]),
                        "bob's network user on a")

            # The subscription: slixmpp answers subscribe with subscribed (and subscribes back).
            alice.send_presence(pto="bob@localhost", ptype="subscribe")
            await until(lambda: subscription(alice, "bob@localhost") == "both"
                        and subscription(bob, "alice@localhost") == "both", "a mutual subscription")
            await alice_sees.wait(lambda p: p["from"] == "bob@localhost/b" and p["type"] == "available",
                                  "bob's presence")
            bob.send_presence(pstatus="on c")
            await alice_sees.wait(lambda p: p["from"] == "bob@localhost/b" and p["status"] == "on c",
                                  "bob's new status")

            # A chat with a receipt request, passed through untouched; the receipt comes back.
            msg = alice.make_message(mto="bob@localhost", mbody="hello across the tree", mtype="chat")
            msg["id"] = "m1"
            msg.xml.append(ET.Element(f"{{{RECEIPTS}}}request"))
            msg.send()
            got = await to_bob.wait(lambda m: m["body"] == "hello across the tree", "alice's chat")
            assert got["from"] == "alice@localhost/a" and got.xml.find(f"{{{RECEIPTS}}}request") is not None
            receipt = bob.make_message(mto=got["from"], mtype="chat")
            ET.SubElement(receipt.xml, f"{{{RECEIPTS}}}received", id="m1")
            receipt.send()
            back = await receipts.wait(lambda m: m["from"] == "bob@localhost/b", "the receipt")
            assert back.xml.find(f"{{{RECEIPTS}}}received").get("id") == "m1"

            # An iq ping from full JID to full JID, and its result.
            await alice.plugin["xep_0199"].ping(jid="bob@localhost/b", timeout=WAIT)

            # A short split: c leaves and comes back within the hold; the chat sent meanwhile arrives once.
            mark = len(alice_sees.items)
            await asyncio.to_thread(c.ctl, "unlink", "b.relay.test")
            await asyncio.to_thread(wait_for, lambda: net.server_count("c") == 1, WAIT, 0.1, "the split")
            alice.send_message(mto="bob@localhost", mbody="during the split", mtype="chat")
            await asyncio.to_thread(c.ctl, "link", "b.relay.test")
            await asyncio.to_thread(net.wait_linked)
            await to_bob.wait(lambda m: m["body"] == "during the split", "the chat sent during the split")
            alice.send_message(mto="bob@localhost", mbody="after the split", mtype="chat")
            await to_bob.wait(lambda m: m["body"] == "after the split", "the chat after the split")
            assert [m["body"] for m in to_bob.items].count("during the split") == 1
            assert not [p for p in alice_sees.items[mark:] if p["from"].bare == "bob@localhost"
                        and p["type"] == "unavailable"], "bob was seen leaving during a short split"

            # alice on another server: the same JID, the same roster.
            other = await online(make_client(slixmpp, "alice@localhost/other", "secret", b, verify=False), b)
            assert subscription(other, "bob@localhost") == "both"
            to_other = Inbox(other, "message")
            bob.send_message(mto="alice@localhost/other", mbody="to the other resource", mtype="chat")
            await to_other.wait(lambda m: m["body"] == "to the other resource", "a chat to the new resource")
            await offline(alice, bob, other)
        asyncio.run(main())
    finally:
        net.stop()

