"""Two real servers, a slixmpp client on each: a split longer than the split-hold makes each see the
other unavailable, and the netjoin restores both presences (the servers re-broadcast them)."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import Server, free_port, server_config, wait_for

slixmpp = pytest.importorskip("slixmpp")
SECRET = "xmpp-split-test-secret"


def pair(tmp_path) -> tuple[Server, Server]:
    link = {"a": free_port(), "b": free_port()}
    servers = []
    for me, other, sid, oid in (("a", "b", "001", "002"), ("b", "a", "002", "001")):
        c2s = free_port()
        cfg = server_config(server={"id": sid, "name": f"{me}.relay.test"},
                            listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                                    {"proto": "xmpp", "host": "127.0.0.1", "port": c2s},
                                    {"proto": "link", "host": "127.0.0.1", "port": link[me]}],
                            links=[{"name": f"{other}.relay.test", "id": oid, "host": "127.0.0.1", "port": link[other],
                                    "secret": SECRET, "autoconnect": me == "b"}],
                            modules={"xmpp": {}}, split_hold=2,
                            linking={"ping_interval": 0.5, "timeout": 2.0, "retry_min": 0.2, "retry_max": 1.0})
        srv = Server(tmp_path / me, cfg).start()
        srv.ports = {"c2s": c2s}
        servers.append(srv)
    return servers[0], servers[1]


def linked(srv: Server) -> bool:
    return len(srv.call("dump-state")["servers"]) == 2


def test_a_split_past_the_hold_and_the_netjoin(tmp_path):
    a, b = pair(tmp_path)
    try:
        wait_for(lambda: linked(a) and linked(b), timeout=WAIT, what="the link")
        a.ctl("register", "alice", "secret")
        b.ctl("register", "bob", "secret")
        wait_for(lambda: "bob" in a.ctl("accounts").stdout and "alice" in b.ctl("accounts").stdout,
                 timeout=WAIT, what="accounts on both servers")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False), a)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", b, verify=False), b)
            alice_sees, bob_sees = Inbox(alice, "presence"), Inbox(bob, "presence")
            for _ in range(WAIT * 10):                  # bob's resource reaches a
                if any(u[4] == "bob@localhost" for u in a.call("dump-state")["users"]):
                    break
                await asyncio.sleep(0.1)
            alice.send_presence(pto="bob@localhost", ptype="subscribe")
            await alice_sees.wait(lambda p: p["from"] == "bob@localhost/b" and p["type"] == "available", "bob")
            await bob_sees.wait(lambda p: p["from"] == "alice@localhost/a" and p["type"] == "available", "alice")

            mark_a, mark_b = len(alice_sees.items), len(bob_sees.items)
            await asyncio.to_thread(b.ctl, "unlink", "a.relay.test")
            await alice_sees.wait(lambda p: p in alice_sees.items[mark_a:] and p["from"] == "bob@localhost/b"
                                  and p["type"] == "unavailable", "bob unavailable after the hold")
            await bob_sees.wait(lambda p: p in bob_sees.items[mark_b:] and p["from"] == "alice@localhost/a"
                                and p["type"] == "unavailable", "alice unavailable after the hold")

            mark_a, mark_b = len(alice_sees.items), len(bob_sees.items)
            await asyncio.to_thread(b.ctl, "link", "a.relay.test")
            await alice_sees.wait(lambda p: p in alice_sees.items[mark_a:] and p["from"] == "bob@localhost/b"
                                  and p["type"] == "available", "bob's presence restored after the netjoin")
            await bob_sees.wait(lambda p: p in bob_sees.items[mark_b:] and p["from"] == "alice@localhost/a"
                                and p["type"] == "available", "alice's presence restored after the netjoin")
            to_bob = Inbox(bob, "message")
            alice.send_message(mto="bob@localhost", mbody="after the netjoin", mtype="chat")
            await to_bob.wait(lambda m: m["body"] == "after the netjoin", "a chat after the netjoin")
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        a.stop()
        b.stop()
