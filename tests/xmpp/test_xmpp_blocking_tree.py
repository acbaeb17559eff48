"""XEP-0191 blocklists across configs/tree-3 (three real server processes, slixmpp with xep_0191): bob
blocks mallory on a; bob's resource on c is pushed the block and has it in its list; with bob only on
c, mallory's chat (from b) is dropped while alice's arrives, and what bob sends to mallory is refused;
an unblock on c is the list bob finds when he logs in on a again."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import TreeNetwork, wait_for

slixmpp = pytest.importorskip("slixmpp")
PLUGINS = ("xep_0199", "xep_0030", "xep_0191")


def test_a_block_made_on_one_server_holds_on_another(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}}).start()
    try:
        for srv in net.servers.values():
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a, b, c = net["a"], net["b"], net["c"]
        for name in ("alice", "bob", "mallory"):
            a.ctl("register", name, "secret")
        wait_for(lambda: all(n in c.ctl("accounts").stdout for n in ("alice", "bob", "mallory")),
                 timeout=WAIT, what="accounts on every server")

        async def main():
            here = await online(make_client(slixmpp, "bob@localhost/here", "secret", a, verify=False,
                                            plugins=PLUGINS), a)
            there = await online(make_client(slixmpp, "bob@localhost/there", "secret", c, verify=False,
                                             plugins=PLUGINS), c)
            assert await there.plugin["xep_0191"].get_blocked_jids() == set()
            pushed = Inbox(there, "blocked")
            await here.plugin["xep_0191"].block(["mallory@localhost"], timeout=WAIT)
            await pushed.wait(lambda iq: True, "the block pushed to bob on c")
            assert {str(j) for j in await there.plugin["xep_0191"].get_blocked_jids()} == {"mallory@localhost"}
            await offline(here)

            mallory = await online(make_client(slixmpp, "mallory@localhost/m", "secret", b, verify=False), b)
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", b, verify=False), b)
            got = Inbox(there, "message")
            mallory.send_message(mto="bob@localhost", mbody="let me in", mtype="chat")
            alice.send_message(mto="bob@localhost", mbody="after mallory", mtype="chat")
            await got.wait(lambda m: m["body"] == "after mallory", "alice's message")
            assert not any(m["body"] == "let me in" for m in got.items)
            errors = Inbox(there, "message_error")
            there.send_message(mto="mallory@localhost", mbody="go away", mtype="chat")
            e = await errors.wait(lambda m: True, "the blocked error")
            assert e["error"]["condition"] == "not-acceptable"

            # Unblocked on c: bob logging in on a again finds the list empty.
            await there.plugin["xep_0191"].unblock(["mallory@localhost"], timeout=WAIT)
            back = make_client(slixmpp, "bob@localhost/back", "secret", a, verify=False, plugins=PLUGINS)
            back = await online(back, a)
            for _ in range(WAIT * 10):
                if await back.plugin["xep_0191"].get_blocked_jids() == set():
                    break
                await asyncio.sleep(0.1)
            assert await back.plugin["xep_0191"].get_blocked_jids() == set()
            await offline(there, back, mallory, alice)
        asyncio.run(main())
    finally:
        net.stop()
