"""slixmpp, a real client, logs in over loopback against the codec + negotiation (STARTTLS with a
self-signed certificate, SASL PLAIN over TLS, bind) and exchanges messages, with itself and with
a slixmpp XEP-0114 component; attackers on other connections are closed with the right stream
error while the server goes on serving."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asyncio_xmpp_server import TestServer, self_signed_cert
from xmppcodec_support import header, test_policy

from bridges.xmpp.jid import Jid
from bridges.xmpp.negotiation import Authenticated, Bound, CloseStream, StartTls

slixmpp = pytest.importorskip("slixmpp")
WAIT = 60          # a bound on waiting for the client under load, not a speed assertion


def _client(jid: str, password: str, cert, port: int):
    client = slixmpp.ClientXMPP(jid, password)
    client.enable_direct_tls = False
    client.enable_plaintext = False
    client.enable_starttls = True
    client.ca_certs = cert
    client.connect("127.0.0.1", port)
    return client


async def _attack(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), WAIT)    # until the server closes
    writer.close()
    return reply


def test_slixmpp_login_and_message_round_trip(tmp_path):
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    cert, key = self_signed_cert(tmp_path)

    async def main():
        server = TestServer(test_policy, cert, key)
        port, _ = await server.start()

        billion_laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                          b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>' + header()[21:] + b"<a>&lol2;</a>")
        reply = await _attack(port, billion_laughs)
        assert b"<restricted-xml" in reply and reply.endswith(b"</stream:stream>")

        client = _client("alice@localhost/phone", "secret", cert, port)
        got = asyncio.get_running_loop().create_future()
        client.add_event_handler("session_start", lambda _: client.send_message(
            mto="alice@localhost/phone", mbody="ping \u00e9 & <3", mtype="chat"))
        client.add_event_handler("message", lambda msg: got.done() or got.set_result(msg))
        failed = asyncio.get_running_loop().create_future()
        client.add_event_handler("failed_auth", lambda _: failed.done() or failed.set_result("failed_auth"))
        done, _ = await asyncio.wait([got, failed], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        assert got in done, f"no message back: {failed.result() if failed.done() else 'timeout'}; {server.log}"
        message = got.result()
        assert message["body"] == "ping \u00e9 & <3" and str(message["from"]) == "alice@localhost/phone"

        reply = await _attack(port, header() + b"<message>" + b"<a>" * 10_000)   # still serving others
        assert b"<policy-violation" in reply

        client.disconnect()
        await asyncio.wait_for(client.disconnected, WAIT)
        await server.stop()
        return server.log

    log = asyncio.run(main())
    slix = [effect for number, effect in log if number == 2]
    assert slix[:3] == [StartTls(), Authenticated(Jid("alice", "localhost")), Bound(Jid("alice", "localhost", "phone"))]
    assert "{jabber:client}message" in slix
    assert (1, CloseStream("restricted-xml")) in log and (3, CloseStream("policy-violation")) in log


def test_slixmpp_wrong_password_is_refused(tmp_path):
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    cert, key = self_signed_cert(tmp_path)

    async def main():
        server = TestServer(test_policy, cert, key)
        port, _ = await server.start()
        client = _client("alice@localhost/phone", "wrong", cert, port)
        failed = asyncio.get_running_loop().create_future()
        client.add_event_handler("failed_auth", lambda _: failed.done() or failed.set_result(True))
        await asyncio.wait_for(failed, WAIT)
        client.disconnect()
        await server.stop()
        return server.log

    log = asyncio.run(main())
    assert not any(isinstance(effect, Authenticated) for _, effect in log)


def test_slixmpp_component_and_client_exchange_messages(tmp_path):
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    cert, key = self_signed_cert(tmp_path)

    async def main():
        server = TestServer(test_policy, cert, key, component_secrets={"bot.localhost": "s3cret"})
        port, component_port = await server.start()
        loop = asyncio.get_running_loop()

        bot = slixmpp.ComponentXMPP("bot.localhost", "s3cret", "127.0.0.1", component_port)
        bot_ready, bot_got = loop.create_future(), loop.create_future()
        bot.add_event_handler("session_start", lambda _: bot_ready.done() or bot_ready.set_result(True))

        def bot_message(msg):
            if not bot_got.done():
                bot_got.set_result(msg)
            msg.reply(f"bot got: {msg['body']}").send()
        bot.add_event_handler("message", bot_message)
        bot.connect("127.0.0.1", component_port)
        await asyncio.wait_for(bot_ready, WAIT)

        alice = _client("alice@localhost/phone", "secret", cert, port)
        alice_got = loop.create_future()
        alice.add_event_handler("session_start", lambda _: alice.send_message(
            mto="echo@bot.localhost", mbody="hello <bot> & co", mtype="chat"))
        alice.add_event_handler("message", lambda msg: alice_got.done() or alice_got.set_result(msg))
        reply = await asyncio.wait_for(alice_got, WAIT)
        asked = bot_got.result()

        alice.disconnect()
        bot.disconnect()
        await asyncio.wait_for(asyncio.gather(alice.disconnected, bot.disconnected), WAIT)
        await server.stop()
        return asked, reply, server.log

    asked, reply, log = asyncio.run(main())
    assert str(asked["from"]) == "alice@localhost/phone" and str(asked["to"]) == "echo@bot.localhost"
    assert asked["body"] == "hello <bot> & co"
    assert reply["body"] == "bot got: hello <bot> & co" and str(reply["from"]) == "echo@bot.localhost"
    assert (1, Authenticated(Jid(None, "bot.localhost"))) in log
