"""A XEP-0114 component across configs/tree-3 (three real server processes): a slixmpp component on c
and a slixmpp client on a exchange messages and iqs both ways, a second component for the domain on
a is refused with `conflict`, and the domain is gone everywhere once the component disconnects."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import TreeNetwork, wait_for

slixmpp = pytest.importorskip("slixmpp")

SECRET = "s3cret"


async def until(pred, what: str):
    for _ in range(WAIT * 10):
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {what}")


async def raw_component(port: int, domain: str, secret: str) -> bytes:
    """A component's handshake by hand; what the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
                 f"to='{domain}'>".encode())
    head = b""
    while not re.search(rb"id=['\"]([^'\"]+)['\"]", head):
        chunk = await asyncio.wait_for(reader.read(4096), WAIT)
        assert chunk, head
        head += chunk
    sid = re.search(rb"id=['\"]([^'\"]+)['\"]", head).group(1)
    writer.write(b"<handshake>%s</handshake>" % hashlib.sha1(sid + secret.encode()).hexdigest().encode())
    rest = b""
    while chunk := await asyncio.wait_for(reader.read(4096), WAIT):
        rest += chunk
    writer.close()
    return rest


def test_a_component_on_one_end_of_the_tree_and_a_client_on_the_other(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp", "xmpp-component"), modules={"xmpp": {}},
                      xmpp={"components": {"bot.localhost": SECRET}}).start()
    try:
        a, c = net["a"], net["c"]
        a.ports = {"c2s": net.port("a", "xmpp")}
        a.ctl("register", "alice", "secret")
        wait_for(lambda: "alice" in a.ctl("accounts").stdout, timeout=WAIT, what="the account")

        async def main():
            loop = asyncio.get_running_loop()
            bot = slixmpp.ComponentXMPP("bot.localhost", SECRET, "127.0.0.1", net.port("c", "xmpp-component"))
            for p in ("xep_0030", "xep_0199"):
                bot.register_plugin(p)
            ready = loop.create_future()
            bot.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(True))
            asked = Inbox(bot, "message")
            bot.add_event_handler("message", lambda m: m.reply(f"bot got: {m['body']}").send())
            bot.connect("127.0.0.1", net.port("c", "xmpp-component"))
            await asyncio.wait_for(ready, WAIT)
            await until(lambda: a.call("xmpp", "stats")["remote_components"] == {"bot.localhost": "003"},
                        "the component's domain known on a")

            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False), a)
            got = Inbox(alice, "message")
            alice.send_message(mto="echo@bot.localhost", mbody="hello <bot> & co", mtype="chat")
            q = await asked.wait(lambda m: m["body"], "the client's message at the component")
            assert str(q["from"]) == "alice@localhost/a" and str(q["to"]) == "echo@bot.localhost"
            reply = await got.wait(lambda m: m["body"], "the component's reply")
            assert reply["body"] == "bot got: hello <bot> & co" and str(reply["from"]) == "echo@bot.localhost"

            # iqs both ways: the client asks the component's disco#info, the component pings the client.
            info = await alice.plugin["xep_0030"].get_info(jid="bot.localhost", timeout=WAIT)
            assert str(info["from"]) == "bot.localhost" and info["disco_info"]["identities"]
            await bot.plugin["xep_0199"].ping(jid="alice@localhost/a", ifrom="bot.localhost", timeout=WAIT)

            # A second component for the domain, on the other end: refused, the first keeps it.
            refused = await raw_component(net.port("a", "xmpp-component"), "bot.localhost", SECRET)
            assert b"<conflict" in refused, refused
            alice.send_message(mto="echo@bot.localhost", mbody="still you?", mtype="chat")
            await got.wait(lambda m: m["body"] == "bot got: still you?", "the first component's answer")

            # The component leaves: its domain is gone on every server.
            await offline(bot)
            for srv in net.servers.values():
                await until(lambda srv=srv: srv.call("xmpp", "stats")["remote_components"] == {}
                            and srv.call("xmpp", "stats")["components"] == [], "the domain withdrawn")
            errors = Inbox(alice, "message_error")
            alice.send_message(mto="echo@bot.localhost", mbody="anyone?", mtype="chat")
            err = await errors.wait(lambda m: True, "the error for a domain nobody holds")
            assert err["error"]["condition"] == "remote-server-not-found"
            await offline(alice)
        asyncio.run(main())
    finally:
        net.stop()
