"""What the aioxmpp scenarios share: logging in over STARTTLS against the server's own certificate, an
inbox of the stanzas a client got, bounded waits, and the SASL mechanism each login used."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import aiosasl
import aiosasl.channel_binding
import aioxmpp
import aioxmpp.connector
import aioxmpp.sasl
import aioxmpp.security_layer as sl
import OpenSSL.SSL
from cryptography.hazmat.primitives import hashes

WAIT = 60            # a bound on waiting under load, not a speed assertion
SCENARIOS: dict = {}
logging.basicConfig(level=int(os.environ.get("AIOX_LOG", logging.CRITICAL)))   # AIOX_LOG=10: debug


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def jid(text: str) -> aioxmpp.JID:
    return aioxmpp.JID.fromstr(text)


# aioxmpp's SASL provider only records its choice inside the mechanism: keep what each login ran.
MECHANISMS: list[str] = []
_execute = sl.SASLProvider._execute


async def _recording_execute(self, intf, mechanism, token):
    MECHANISMS.append(token[0] if isinstance(token, tuple) else type(mechanism).__name__)
    return await _execute(self, intf, mechanism, token)

sl.SASLProvider._execute = _recording_execute


class ServerEndPoint(aiosasl.channel_binding.ChannelBindingProvider):
    """tls-server-end-point (RFC 5929). aiosasl's own takes the hash from the name of the signature
    algorithm and breaks on ECDSA certificates ("ecdsa-with-SHA256" gives "ecdsa-")."""

    def __init__(self, conn):
        super().__init__()
        self.conn = conn

    @property
    def cb_name(self) -> bytes:
        return b"tls-server-end-point"

    def extract_cb_data(self) -> bytes:
        cert = self.conn.get_peer_certificate().to_cryptography()
        algo = cert.signature_hash_algorithm
        if algo is None or algo.name in ("md5", "sha1"):
            algo = hashes.SHA256()
        return cert.fingerprint(algo)


class Exporter(aiosasl.channel_binding.ChannelBindingProvider):
    """tls-exporter (RFC 9266), which aiosasl does not have for pyOpenSSL connections."""

    def __init__(self, conn):
        super().__init__()
        self.conn = conn

    @property
    def cb_name(self) -> bytes:
        return b"tls-exporter"

    def extract_cb_data(self) -> bytes:
        return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)


class PlusProvider(sl.PasswordSASLProvider):
    """SCRAM-*-PLUS, which aioxmpp's provider never offers (it only runs SCRAM and PLAIN)."""

    def __init__(self, password: str, binding):
        async def provide(_jid, attempt):
            return password if attempt == 0 else None
        super().__init__(provide)
        self.binding = binding

    async def execute(self, client_jid, features, xmlstream, tls_transport):
        mechanisms = features[sl.SASLMechanisms].get_mechanism_list()
        token = aiosasl.SCRAMPLUS.any_supported(mechanisms)
        if token is None:
            return False
        cb = self.binding(tls_transport.get_extra_info("ssl_object"))

        async def credentials():
            return client_jid.localpart, await self._password_provider(client_jid, 0)
        return await self._execute(aioxmpp.sasl.SASLXMPPInterface(xmlstream),
                                   aiosasl.SCRAMPLUS(credentials, cb), token)


class Inbox:
    """The messages or presences a client got (through the stream's inbound filter), awaited by predicate;
    `early` sees messages before aioxmpp's services (which take some, such as PubSub events)."""

    def __init__(self, client, kind: str = "message", early: bool = False):
        self.items: list = []
        self.changed = asyncio.Event()
        if early:
            client.stream.service_inbound_message_filter.register(self._got, -(10 ** 6))
        else:
            flt = client.stream.app_inbound_message_filter if kind == "message" else \
                client.stream.app_inbound_presence_filter
            flt.register(self._got, 0)

    def _got(self, stanza):
        self.items.append(stanza)
        self.changed.set()
        return stanza

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
            raise AssertionError(f"no {what}; got {[repr(s) for s in self.items]}") from None

    def bodies(self) -> list[str]:
        return [body_of(m) for m in self.items if body_of(m) is not None]


def body_of(msg) -> str | None:
    return msg.body.any() if msg.body else None


async def until(pred, what: str):
    """Poll a client-side condition, bounded by WAIT."""
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def signal(sig, what: str, pred=lambda *a, **kw: True):
    """Start listening for the next emission of an aioxmpp signal matching pred; returns a coroutine
    to await later, giving (args, kwargs)."""
    fut = asyncio.get_running_loop().create_future()

    def fire(*args, **kwargs):
        if not fut.done() and pred(*args, **kwargs):
            fut.set_result((args, kwargs))
        return fut.done()          # True disconnects the handler
    sig.connect(fire)

    async def wait():
        try:
            return await asyncio.wait_for(fut, WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what}") from None
    return wait()


def error_condition(exc) -> str:
    """The defined condition of an XMPP error, as its element name ("item-not-found")."""
    cond = exc.condition
    return cond.value[1] if hasattr(cond, "value") else cond[1]


class Env:
    """The server's address and certificate; clients it connects are disconnected when the scenario ends."""

    def __init__(self, port: int, ca: str):
        self.port, self.ca = port, ca
        self.stack = contextlib.AsyncExitStack()
        self.tls12 = False          # tls-unique is only defined up to TLS 1.2

    def _ssl_context(self):
        ctx = sl.default_ssl_context()
        ctx.load_verify_locations(self.ca)
        if self.tls12:
            ctx.set_max_proto_version(OpenSSL.SSL.TLS1_2_VERSION)
        return ctx

    def client(self, address: str, password: str = "secret", binding=None) -> aioxmpp.Client:
        security = sl.make(password, ssl_context_factory=self._ssl_context)
        if binding is not None:
            security = security._replace(sasl_providers=(PlusProvider(password, binding),))
        return aioxmpp.Client(jid(address), security, max_initial_attempts=1,
                              override_peer=[("127.0.0.1", self.port, aioxmpp.connector.STARTTLSConnector())])

    async def online(self, address: str, *services, password: str = "secret", presence: bool = True,
                     binding=None, before=None):
        """A connected client with `services` summoned before the stream starts (the roster is fetched
        at stream start); `before(client)` runs then too (to register inboxes and signals)."""
        c = self.client(address, password, binding)
        for s in services:
            c.summon(s)
        if before:
            before(c)
        state = aioxmpp.PresenceState(True) if presence else aioxmpp.PresenceState(False)
        await asyncio.wait_for(self.stack.enter_async_context(c.connected(presence=state)), WAIT)
        return c

    async def run(self, fn, args: dict):
        async with self.stack:
            return await fn(self, **args)


async def befriend(a, b):
    """Mutual presence subscription between two clients that summoned aioxmpp.RosterClient (each approves
    the other's request), waited for on both rosters."""
    ra, rb = a.summon(aioxmpp.RosterClient), b.summon(aioxmpp.RosterClient)
    ja, jb = a.local_jid.bare(), b.local_jid.bare()
    rb.on_subscribe.connect(lambda st: rb.approve(st.from_.bare()) or rb.subscribe(st.from_.bare()))
    ra.on_subscribe.connect(lambda st: ra.approve(st.from_.bare()))
    ra.subscribe(jb)

    def both(r, who):
        item = r.items.get(who)
        return item is not None and item.subscription == "both"
    await until(lambda: both(ra, jb) and both(rb, ja), "mutual subscription")
