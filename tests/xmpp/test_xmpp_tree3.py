"""XMPP across configs/tree-3: two slixmpp clients on the two ends of the tree exchange chats,
and an IRC client in the middle sees the XMPP user in WHOIS and messages it."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import Inbox, make_client, offline, online

from support import RawClient, TreeNetwork

slixmpp = pytest.importorskip("slixmpp")


def test_two_xmpp_clients_on_different_servers_of_a_tree(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}}).start()
    try:
        names = list(net.servers)
        first, last, middle = net[names[0]], net[names[-1]], net[names[1]]
        for srv in (first, last):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        first.ctl("register", "alice", "secret")
        last.ctl("register", "bob", "secret")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", first, verify=False), first)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", last, verify=False), last)
            to_bob, to_alice = Inbox(bob, "message"), Inbox(alice, "message")
            irc = RawClient(net.port(middle.dir.name, "irc")).register("dave")

            def whois_alice() -> str:
                irc.send("WHOIS alice")
                start = len(irc.lines)
                irc.read_until(lambda t: " 318 " in t)
                return "\n".join(irc.lines[start:])
            for _ in range(100):                        # alice's introduction crosses the link
                text = await asyncio.to_thread(whois_alice)
                if " 311 " in text:
                    break
                await asyncio.sleep(0.1)
            assert "is connected through XMPP" in text
            alice.send_message(mto="bob@localhost", mbody="from one end", mtype="chat")
            msg = await to_bob.wait(lambda m: m["body"] == "from one end", "alice's chat on the far server")
            assert msg["from"].bare == "alice@localhost"
            bob.send_message(mto="alice@localhost", mbody="to the other", mtype="chat")
            await to_alice.wait(lambda m: m["body"] == "to the other", "bob's answer")
            irc.send("PRIVMSG bob :from the middle")
            msg = await to_bob.wait(lambda m: m["body"] == "from the middle", "the IRC user's message")
            assert msg["from"].bare == "dave@localhost"
            irc.close()
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()
