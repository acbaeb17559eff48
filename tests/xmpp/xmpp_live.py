"""Helpers for the live XMPP tests: a relaynet server with XMPP listeners, and slixmpp clients."""

from __future__ import annotations

import asyncio
import logging
import ssl

from support import Server, free_port, server_config

WAIT = 60          # a bound on waiting for the client under load, not a speed assertion


def xmpp_server(directory, accounts=(("alice", "secret"), ("bob", "secret")), **overrides) -> Server:
    ports = {"irc": free_port(), "c2s": free_port(), "tls": free_port()}
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": ports["irc"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True}],
                        modules={"xmpp": {}}, **overrides)
    srv = Server(directory, cfg).start()
    srv.ports = ports
    for name, password in accounts:
        srv.ctl("register", name, password)
    return srv


def make_client(slixmpp, jid: str, password: str, srv: Server, *, direct_tls: bool = False,
                tls12: bool = False, mech: str | None = None, verify: bool = True, plugins=("xep_0199", "xep_0030", "xep_0092")):
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    client = slixmpp.ClientXMPP(jid, password)
    for p in plugins:
        client.register_plugin(p)
    if verify:
        ctx = ssl.create_default_context(cafile=str(srv.data_dir / "tls" / "cert.pem"))
    else:  # the certificate is made at the first STARTTLS of a server without a TLS listener
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client.ssl_context = ctx
    client.enable_plaintext = False
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    if mech:
        client.plugin["feature_mechanisms"].use_mech = mech
    return client


async def online(client, srv: Server, direct_tls: bool = False, presence: bool = True):
    """Connect and wait for session_start (then send initial presence and get the roster)."""
    loop = asyncio.get_running_loop()
    started, failed = loop.create_future(), loop.create_future()
    client.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    client.add_event_handler("failed_auth", lambda _: failed.done() or failed.set_result("failed_auth"))
    client.add_event_handler("connection_failed", lambda e: failed.done() or failed.set_result(f"failed {e}"))
    client.connect("127.0.0.1", srv.ports["tls" if direct_tls else "c2s"])
    done, _ = await asyncio.wait([started, failed], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert started in done, f"no session: {failed.result() if failed.done() else 'timeout'}\n{srv.log()[-3000:]}"
    if presence:
        await client.get_roster(timeout=WAIT)
        client.send_presence()
    return client


async def offline(*clients):
    # slixmpp replaces `disconnected` with a new future once it is done: take them before.
    done = [c.disconnected for c in clients]
    for c in clients:
        c.disconnect()
    # The server answers </stream:stream> at once (tests/xmpp/test_xmpp_stream_close.py): a client
    # still not disconnected after WAIT is a failure, not something to wait out.
    await asyncio.wait_for(asyncio.gather(*done), WAIT)


class Inbox:
    """Stanzas of one kind a client got, awaited by predicate."""

    def __init__(self, client, event: str):
        self.items: list = []
        self.changed = asyncio.Event()
        client.add_event_handler(event, self._got)

    def _got(self, stanza):
        self.items.append(stanza)
        self.changed.set()

    async def wait(self, pred, what: str = "stanza"):
        async def until():
            while True:
                for s in self.items:
                    if pred(s):
                        return s
                self.changed.clear()
                await self.changed.wait()
        try:
            return await asyncio.wait_for(until(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what}; got {[str(s) for s in self.items]}") from None
