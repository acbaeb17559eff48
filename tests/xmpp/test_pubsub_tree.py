"""PubSub across real server processes, with slixmpp: items a server never got (nobody there
subscribed) are fetched from the others when a client there asks (configs/tree-3); a retract and a
purge made during a real netsplit stay after the netjoin."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import Server, TreeNetwork, free_port, server_config, wait_for

slixmpp = pytest.importorskip("slixmpp")

SVC = "pubsub.localhost"
PLUGINS = ("xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0199")
SECRET = "pubsub-split-test-secret"


def entry(text: str) -> ET.Element:
    el = ET.Element("{urn:example:e}entry")
    el.text = text
    return el


def ids(result) -> list[str]:
    return [i["id"] for i in result["pubsub"]["items"]]


def test_items_published_on_a_reach_c_when_a_client_there_asks(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "pubsub": {}}).start()
    try:
        first, last = net["a"], net["c"]
        for srv in (first, last):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        first.ctl("register", "alice", "secret")
        last.ctl("register", "bob", "secret")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", first, verify=False,
                                             plugins=PLUGINS), first)
            a = alice.plugin["xep_0060"]
            await a.create_node(SVC, "far/news", timeout=WAIT)
            for n in range(3):
                await a.publish(SVC, "far/news", id=f"n{n}", payload=entry(str(n)), timeout=WAIT)
            await a.create_node(SVC, "far/last", timeout=WAIT)
            await a.publish(SVC, "far/last", id="l1", payload=entry("the last one"), timeout=WAIT)
            # nobody on c subscribes: the items stay on a (c holds the nodes, not their items)
            await asyncio.to_thread(wait_for, lambda: last.call("pubsub", "stats")["nodes"] == 2, WAIT, 0.05,
                                    "the nodes on c")
            assert last.call("pubsub", "stats")["items"] == 0
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", last, verify=False,
                                           plugins=PLUGINS), last)
            b = bob.plugin["xep_0060"]
            assert ids(await b.get_items(SVC, "far/news", timeout=WAIT)) == ["n2", "n1", "n0"]
            got = await b.get_items(SVC, "far/news", item_ids=["n1"], timeout=WAIT)
            assert ids(got) == ["n1"] and got["pubsub"]["items"]["item"]["payload"].text == "1"
            # a subscriber on c gets the node's last item, fetched from a
            events = Inbox(bob, "pubsub_publish")
            await b.subscribe(SVC, "far/last", timeout=WAIT)
            ev = await events.wait(lambda m: m["pubsub_event"]["items"]["node"] == "far/last", "the last item")
            assert ev["pubsub_event"]["items"]["item"]["id"] == "l1"
            assert last.call("pubsub", "stats")["frames"]["fetches"] >= 2
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()


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
                            modules={"xmpp": {}, "pubsub": {}}, split_hold=1,
                            linking={"ping_interval": 0.5, "timeout": 2.0, "retry_min": 0.2, "retry_max": 1.0})
        srv = Server(tmp_path / me, cfg).start()
        srv.ports = {"c2s": c2s}
        servers.append(srv)
    return servers[0], servers[1]


def servers_seen(srv: Server) -> int:
    return len(srv.call("dump-state")["servers"])


def test_a_retract_and_a_purge_during_a_real_split_stay_after_the_netjoin(tmp_path):
    a, b = pair(tmp_path)
    try:
        wait_for(lambda: servers_seen(a) == 2 and servers_seen(b) == 2, timeout=WAIT, what="the link")
        a.ctl("register", "alice", "secret")
        wait_for(lambda: "alice" in b.ctl("accounts").stdout, timeout=WAIT, what="alice's account on b")

        async def main():
            on_a = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False,
                                            plugins=PLUGINS), a)
            on_b = await online(make_client(slixmpp, "alice@localhost/b", "secret", b, verify=False,
                                            plugins=PLUGINS), b)
            pa, pb = on_a.plugin["xep_0060"], on_b.plugin["xep_0060"]
            for name in ("split/keep", "split/purged"):
                await pa.create_node(SVC, name, timeout=WAIT)
                for i in ("x", "y"):
                    await pa.publish(SVC, name, id=i, payload=entry(i), timeout=WAIT)
            for name in ("split/keep", "split/purged"):     # b holds them too (it fetches them)
                assert ids(await pb.get_items(SVC, name, timeout=WAIT)) == ["y", "x"]

            await asyncio.to_thread(b.ctl, "unlink", "a.relay.test")
            await asyncio.to_thread(wait_for, lambda: servers_seen(a) == 1 and servers_seen(b) == 1, WAIT, 0.05,
                                    "the split past the hold")
            await pb.retract(SVC, "split/keep", "x", timeout=WAIT)
            await pa.purge(SVC, "split/purged", timeout=WAIT)
            await pb.publish(SVC, "split/purged", id="z", payload=entry("after the purge"), timeout=WAIT)
            await pa.publish(SVC, "split/keep", id="w", payload=entry("during the split"), timeout=WAIT)

            await asyncio.to_thread(b.ctl, "link", "a.relay.test")
            await asyncio.to_thread(wait_for, lambda: servers_seen(a) == 2 and servers_seen(b) == 2, WAIT, 0.05,
                                    "the netjoin")
            for ps, side in ((pa, "a"), (pb, "b")):
                keep = ids(await ps.get_items(SVC, "split/keep", timeout=WAIT))
                assert sorted(keep) == ["w", "y"], f"{side}: {keep}"      # x stays retracted
                purged = ids(await ps.get_items(SVC, "split/purged", timeout=WAIT))
                assert purged == ["z"], f"{side}: {purged}"               # the purge stays; z came after
            await offline(on_a, on_b)
        asyncio.run(main())
    finally:
        a.stop()
        b.stop()
