"""The xmpp module on a real server, with slixmpp as the real client: STARTTLS and direct TLS,
SCRAM-SHA-256 and -PLUS, binding conflicts, roster and presence between two accounts, chat,
ping/disco/version, unknown iq, and an IRC client and an XMPP client exchanging direct messages."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online, xmpp_server

from support import RawClient

slixmpp = pytest.importorskip("slixmpp")


@pytest.fixture
def srv(tmp_path):
    s = xmpp_server(tmp_path / "x")
    yield s
    s.stop()


def _mech(client) -> str:
    return client.plugin["feature_mechanisms"].mech.name


def _whois(irc, me: str, nick: str) -> str:
    irc.send(f"WHOIS {nick}")
    start = len(irc.lines)
    irc.read_until(lambda t: " 318 " in t)
    return "\n".join(irc.lines[start:])


def test_starttls_scram_sha_256_login_and_a_chat_between_two_accounts(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/phone", "secret", srv, mech="SCRAM-SHA-256"), srv)
        bob = await online(make_client(slixmpp, "bob@localhost/desk", "secret", srv), srv)
        assert _mech(alice) == "SCRAM-SHA-256"
        got = Inbox(bob, "message")
        alice.send_message(mto="bob@localhost", mbody="hi bob \u00e9 & <3", mtype="chat")
        msg = await got.wait(lambda m: m["body"], "chat to bob")
        assert msg["body"] == "hi bob \u00e9 & <3" and str(msg["from"]) == "alice@localhost/phone"
        # An element the server knows nothing of (a receipt request) passes through untouched.
        m = alice.make_message(mto="bob@localhost/desk", mbody="with receipt", mtype="chat")
        m.append(__import__("slixmpp").xmlstream.ET.fromstring("<request xmlns='urn:xmpp:receipts'/>"))
        m.send()
        msg = await got.wait(lambda m: m["body"] == "with receipt", "the receipt request")
        assert "urn:xmpp:receipts" in str(msg)
        await offline(alice, bob)
    asyncio.run(main())


def test_direct_tls_and_scram_sha_256_plus_over_tls_1_2(srv):
    async def main():
        c = await online(make_client(slixmpp, "alice@localhost/tls", "secret", srv, direct_tls=True, tls12=True), srv,
                         direct_tls=True)
        assert _mech(c) == "SCRAM-SHA-256-PLUS"      # tls-unique: slixmpp's binding
        await offline(c)
    asyncio.run(main())


def test_a_wrong_password_is_refused_and_the_server_goes_on(srv):
    async def main():
        bad = make_client(slixmpp, "alice@localhost/x", "wrong", srv)
        loop = asyncio.get_running_loop()
        failed = loop.create_future()
        bad.add_event_handler("failed_auth", lambda _: failed.done() or failed.set_result(True))
        bad.connect("127.0.0.1", srv.ports["c2s"])
        await asyncio.wait_for(failed, WAIT)
        bad.disconnect()
        ok = await online(make_client(slixmpp, "alice@localhost/y", "secret", srv), srv)
        await offline(ok)
    asyncio.run(main())


def test_a_resource_already_bound_gets_another(srv):
    async def main():
        one = await online(make_client(slixmpp, "alice@localhost/same", "secret", srv), srv)
        two = await online(make_client(slixmpp, "alice@localhost/same", "secret", srv), srv)
        assert str(one.boundjid) == "alice@localhost/same"
        assert two.boundjid.bare == "alice@localhost" and two.boundjid.resource.startswith("same-")
        await offline(one, two)
    asyncio.run(main())


def test_ping_disco_version_and_unknown_iq(srv):
    async def main():
        c = await online(make_client(slixmpp, "alice@localhost/q", "secret", srv), srv)
        await c.plugin["xep_0199"].ping("localhost", timeout=WAIT)
        info = await c.plugin["xep_0030"].get_info(jid="localhost", timeout=WAIT)
        feats = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in feats and "jabber:iq:roster" in feats
        assert ("server", "im", None, "relaynet") in info["disco_info"]["identities"]
        v = await c.plugin["xep_0092"].get_version("localhost", timeout=WAIT)
        assert v["software_version"]["name"] == "relaynet"
        iq = c.make_iq_get(queryxmlns="urn:example:nothing", ito="localhost")
        with pytest.raises(slixmpp.exceptions.IqError) as e:
            await iq.send(timeout=WAIT)
        assert e.value.condition == "service-unavailable"
        await offline(c)
    asyncio.run(main())


def test_roster_subscription_and_presence_between_two_accounts(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv), srv)
        bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv), srv)
        bob.auto_authorize = True           # bob approves alice's request
        bob.auto_subscribe = False
        alice_presence = Inbox(alice, "presence_available")
        bob_gone = Inbox(alice, "presence_unavailable")
        alice.send_presence(pto="bob@localhost", ptype="subscribe")
        await alice_presence.wait(lambda p: p["from"].bare == "bob@localhost", "bob's presence after approval")

        async def sub_is(client, contact, want):
            for _ in range(200):
                if client.client_roster[contact]["subscription"] == want:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{client.boundjid} roster {contact}: {client.client_roster[contact]['subscription']}")
        await sub_is(alice, "bob@localhost", "to")
        await sub_is(bob, "alice@localhost", "from")
        alice.client_roster.version = ""     # no cached roster (rosterver is advertised): the whole roster
        roster = await alice.get_roster(timeout=WAIT)
        assert "bob@localhost" in roster["roster"]["items"]
        # Away maps onto the network user; unavailable goes out on disconnect.
        bob.send_presence(pshow="away", pstatus="lunch")
        away = Inbox(alice, "changed_status")
        await away.wait(lambda p: p["from"].bare == "bob@localhost" and p["show"] == "away", "bob away")
        irc = RawClient(srv.ports["irc"]).register("watcher")
        text = _whois(irc, "watcher", "bob")
        assert " 301 watcher bob lunch" in text and "is connected through XMPP" in text, text
        irc.close()
        await offline(bob)
        await bob_gone.wait(lambda p: p["from"].bare == "bob@localhost", "bob unavailable")
        await offline(alice)
    asyncio.run(main())


def test_irc_and_xmpp_exchange_direct_messages_and_whois_shows_xmpp(srv):
    async def main():
        alice = await online(make_client(slixmpp, "alice@localhost/chat", "secret", srv), srv)
        irc = RawClient(srv.ports["irc"]).register("carol")
        text = _whois(irc, "carol", "alice")
        assert "is connected through XMPP" in text and " 330 carol alice alice " in text
        got = Inbox(alice, "message")
        irc.send("PRIVMSG alice :hello from irc \x02bold\x02")
        msg = await got.wait(lambda m: m["body"], "irc's direct message")
        assert str(msg["from"].bare) == "carol@localhost" and msg["body"] == "hello from irc bold"
        assert msg["type"] == "chat"
        alice.send_message(mto="carol@localhost", mbody="hello from xmpp", mtype="chat")
        line = await asyncio.to_thread(irc.read_until, lambda t: "hello from xmpp" in t)   # the loop sends meanwhile
        assert ":alice!alice@xmpp." in line and "PRIVMSG carol :hello from xmpp" in line
        # To nobody: an error, not silence.
        errors = Inbox(alice, "message_error")
        alice.send_message(mto="nobody@localhost", mbody="?", mtype="chat")
        err = await errors.wait(lambda m: True, "the error for nobody")
        assert err["error"]["condition"] == "service-unavailable"
        irc.close()
        await offline(alice)
    asyncio.run(main())


def test_the_xmpp_section_sets_the_domain_and_starttls_is_required(tmp_path):
    import socket
    s = xmpp_server(tmp_path / "d", accounts=(), xmpp={"domain": "Chat.Example"})
    try:
        def opening(to: str) -> bytes:
            with socket.create_connection(("127.0.0.1", s.ports["c2s"]), timeout=WAIT) as c:
                c.sendall(f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='jabber:client' "
                          "xmlns:stream='http://etherx.jabber.org/streams'>".encode())
                data = b""
                while b"</stream:features>" not in data and b"</stream:stream>" not in data:
                    got = c.recv(65536)
                    if not got:
                        break
                    data += got
                return data
        served = opening("chat.example")
        assert b"from='chat.example'" in served or b'from="chat.example"' in served
        assert b"<required/>" in served and b"<mechanisms" not in served   # nothing before STARTTLS
        assert b"<host-unknown" in opening("localhost")
    finally:
        s.stop()


def test_a_component_and_a_client_exchange_messages(tmp_path):
    from support import free_port
    port = free_port()
    s = xmpp_server(tmp_path / "c", xmpp={"components": {"bot.localhost": "s3cret"}})
    s.stop()
    s.config["listen"].append({"proto": "xmpp-component", "host": "127.0.0.1", "port": port})
    s.path.write_text(__import__("yaml").safe_dump(s.config))
    s.start()
    try:
        async def main():
            loop = asyncio.get_running_loop()
            bot = slixmpp.ComponentXMPP("bot.localhost", "s3cret", "127.0.0.1", port)
            ready = loop.create_future()
            bot.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(True))
            asked = Inbox(bot, "message")
            bot.add_event_handler("message", lambda m: m.reply(f"bot got: {m['body']}").send())
            bot.connect("127.0.0.1", port)
            await asyncio.wait_for(ready, WAIT)
            alice = await online(make_client(slixmpp, "alice@localhost/c", "secret", s), s)
            got = Inbox(alice, "message")
            alice.send_message(mto="echo@bot.localhost", mbody="hello <bot> & co", mtype="chat")
            q = await asked.wait(lambda m: m["body"], "the client's message at the component")
            assert str(q["from"]) == "alice@localhost/c" and str(q["to"]) == "echo@bot.localhost"
            reply = await got.wait(lambda m: m["body"], "the component's reply")
            assert reply["body"] == "bot got: hello <bot> & co" and str(reply["from"]) == "echo@bot.localhost"
            await offline(alice, bot)
        asyncio.run(main())
    finally:
        s.stop()
