"""The IM extensions on a real server with slixmpp and its plugins: stream resumption after the TCP
connection is cut under the client (xep_0198), carbons with two resources (xep_0280), offline
delivery after login (xep_0160/0203), a MAM query with RSM paging (xep_0313/0059), blocking
(xep_0191) and CSI (xep_0352)."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online, xmpp_server

from support import RawClient

slixmpp = pytest.importorskip("slixmpp")
BASE = ("xep_0199", "xep_0030", "xep_0092")


@pytest.fixture
def srv(tmp_path):
    s = xmpp_server(tmp_path / "x", accounts=(("alice", "secret"), ("bob", "secret"), ("mallory", "secret")))
    yield s
    s.stop()


async def until(pred, what: str):
    """Poll a condition (the server's state through its control socket), bounded by WAIT."""
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _event(client, name: str) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    client.add_event_handler(name, lambda ev: fut.done() or fut.set_result(ev))
    return fut


def test_stream_resumption_after_the_tcp_connection_is_cut(srv):
    irc = RawClient(srv.ports["irc"]).register("carol")

    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        bob = make_client(slixmpp, "bob@localhost/phone", "secret", srv, plugins=(*BASE, "xep_0198"))
        enabled = _event(bob, "sm_enabled")
        await online(bob, srv)
        await asyncio.wait_for(enabled, WAIT)
        got = Inbox(bob, "message")
        alice.send_message(mto="bob@localhost", mbody="before the cut", mtype="chat")
        await got.wait(lambda m: m["body"] == "before the cut", "the first message")
        bob.transport.abort()                    # the TCP connection is gone under the client
        await until(lambda: srv.call("xmpp", "stats")["sm_held"] == 1, "the server to hold bob's session")
        irc.send("WHOIS bob")                    # still a network member: nobody saw a QUIT
        start = len(irc.lines)
        irc.read_until(lambda t: " 318 " in t)
        assert " 311 carol bob " in "\n".join(irc.lines[start:])
        alice.send_message(mto="bob@localhost", mbody="while cut", mtype="chat")
        resumed = _event(bob, "session_resumed")
        bob.connect("127.0.0.1", srv.ports["c2s"])
        await asyncio.wait_for(resumed, WAIT)
        await got.wait(lambda m: m["body"] == "while cut", "the message sent while the connection was cut")
        assert str(bob.boundjid) == "bob@localhost/phone"
        bob.send_message(mto="alice@localhost", mbody="back", mtype="chat")
        await Inbox(alice, "message").wait(lambda m: m["body"] == "back", "bob's answer after resuming")
        stats = srv.call("xmpp", "stats")
        assert stats["sm_resumed"] == 1 and stats["sm_held"] == 0
        await offline(alice, bob)
    asyncio.run(main())
    assert not any(" QUIT " in line and "bob" in line for line in irc.lines)


def test_carbons_with_two_resources(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        phone = await online(make_client(slixmpp, "bob@localhost/phone", "secret", srv, plugins=(*BASE, "xep_0280")),
                             srv)
        laptop = await online(make_client(slixmpp, "bob@localhost/laptop", "secret", srv,
                                          plugins=(*BASE, "xep_0280")), srv)
        for c in (phone, laptop):
            await c.plugin["xep_0280"].enable()
        received, sent = Inbox(laptop, "carbon_received"), Inbox(phone, "carbon_sent")
        alice.send_message(mto="bob@localhost/phone", mbody="to the phone", mtype="chat")
        m = await received.wait(lambda m: m["carbon_received"]["body"] == "to the phone", "a received carbon")
        assert str(m["carbon_received"]["from"]) == "alice@localhost/a"
        laptop.send_message(mto="alice@localhost", mbody="from the laptop", mtype="chat")
        m = await sent.wait(lambda m: m["carbon_sent"]["body"] == "from the laptop", "a sent carbon")
        assert str(m["carbon_sent"]["to"]) == "alice@localhost"
        await offline(alice, phone, laptop)
    asyncio.run(main())


def test_offline_delivery_after_login(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        alice.send_message(mto="bob@localhost", mbody="while you were away", mtype="chat")
        await until(lambda: srv.call("xmpp", "stats")["offline_kept"] == 1, "the message to be stored")
        bob = make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=(*BASE, "xep_0203"))
        got = Inbox(bob, "message")
        await online(bob, srv)
        m = await got.wait(lambda m: m["body"] == "while you were away", "the offline message")
        assert m["delay"]["stamp"] is not None and str(m["from"]) == "alice@localhost/a"
        await offline(alice, bob)
    asyncio.run(main())


def test_mam_query_with_paging(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv,
                                       plugins=(*BASE, "xep_0059", "xep_0313")), srv)
        got = Inbox(bob, "message")
        for i in range(5):
            alice.send_message(mto="bob@localhost", mbody=f"m{i}", mtype="chat")
        await got.wait(lambda m: m["body"] == "m4", "the last message")
        mam = bob.plugin["xep_0313"]
        page = await mam.retrieve(with_jid=slixmpp.JID("alice@localhost"), rsm={"max": 2})
        bodies = [r["mam_result"]["forwarded"]["stanza"]["body"] for r in page["mam"]["results"]]
        fin = page["mam_fin"]
        assert bodies == ["m0", "m1"] and int(fin["rsm"]["count"]) == 5 and fin["complete"] in (False, "false", "")
        page = await mam.retrieve(with_jid=slixmpp.JID("alice@localhost"), rsm={"max": 2, "after": fin["rsm"]["last"]})
        assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in page["mam"]["results"]] == ["m2", "m3"]
        everything = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in mam.iterate(rsm={"max": 2})]
        assert everything == ["m0", "m1", "m2", "m3", "m4"]
        await offline(alice, bob)
    asyncio.run(main())


def test_blocking_and_csi(srv):
    async def main():
        bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv,
                                       plugins=(*BASE, "xep_0191", "xep_0352")), srv)
        mallory = await online(make_client(slixmpp, "mallory@localhost/m", "secret", srv), srv)
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        await bob.plugin["xep_0191"].block(["mallory@localhost"])
        assert {str(j) for j in await bob.plugin["xep_0191"].get_blocked_jids()} == {"mallory@localhost"}
        got = Inbox(bob, "message")
        mallory.send_message(mto="bob@localhost", mbody="let me in", mtype="chat")
        alice.send_message(mto="bob@localhost", mbody="after mallory", mtype="chat")
        await got.wait(lambda m: m["body"] == "after mallory", "alice's message")
        assert not any(m["body"] == "let me in" for m in got.items)
        errors = Inbox(bob, "message_error")
        bob.send_message(mto="mallory@localhost", mbody="go away", mtype="chat")
        e = await errors.wait(lambda m: True, "the blocked error")
        assert e["error"]["condition"] == "not-acceptable"
        bob.plugin["xep_0352"].send_inactive()
        presences = Inbox(bob, "presence")
        alice.send_presence(pto="bob@localhost", pshow="away")
        alice.send_message(mto="bob@localhost", mbody="wake up", mtype="chat")
        await got.wait(lambda m: m["body"] == "wake up", "the message that flushes")
        assert any(p["show"] == "away" for p in presences.items)   # the held presence came first
        await offline(alice, bob, mallory)
    asyncio.run(main())
