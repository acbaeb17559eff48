"""XEP-0313 across configs/tree-3 (three real server processes, slixmpp with xep_0313/0059): bob's
messages are archived on a and c (where his resources are); logged in again on c only, a paged query
finds every message once, including the one only a archived."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import TreeNetwork, wait_for

slixmpp = pytest.importorskip("slixmpp")
PLUGINS = ("xep_0199", "xep_0030", "xep_0059", "xep_0313")


def test_a_mam_query_on_one_server_finds_what_the_account_archived_on_another(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}}).start()
    try:
        for srv in net.servers.values():
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a, b, c = net["a"], net["b"], net["c"]
        for name in ("alice", "bob"):
            a.ctl("register", name, "secret")
        wait_for(lambda: all(n in c.ctl("accounts").stdout for n in ("alice", "bob")),
                 timeout=WAIT, what="accounts on every server")

        async def main():
            on_a = await online(make_client(slixmpp, "bob@localhost/a", "secret", a, verify=False), a)
            on_c = await online(make_client(slixmpp, "bob@localhost/c", "secret", c, verify=False), c)
            alice = await online(make_client(slixmpp, "alice@localhost/r", "secret", b, verify=False), b)
            got_a, got_c = Inbox(on_a, "message"), Inbox(on_c, "message")
            for i in range(5):
                alice.send_message(mto="bob@localhost", mbody=f"m{i}", mtype="chat")
            await got_a.wait(lambda m: m["body"] == "m4", "the last message on a")
            await got_c.wait(lambda m: m["body"] == "m4", "the last message on c")
            await offline(on_c)
            alice.send_message(mto="bob@localhost", mbody="m5 only on a", mtype="chat")
            await got_a.wait(lambda m: m["body"] == "m5 only on a", "the message only a archives")

            later = await online(make_client(slixmpp, "bob@localhost/later", "secret", c, verify=False,
                                             plugins=PLUGINS), c)
            mam = later.plugin["xep_0313"]
            page = await mam.retrieve(rsm={"max": 2})
            bodies = [r["mam_result"]["forwarded"]["stanza"]["body"] for r in page["mam"]["results"]]
            assert bodies == ["m0", "m1"] and page["mam_fin"]["complete"] in (False, "false", "")
            everything = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in mam.iterate(rsm={"max": 2})]
            assert everything == ["m0", "m1", "m2", "m3", "m4", "m5 only on a"]
            await offline(on_a, later, alice)
        asyncio.run(main())
    finally:
        net.stop()
