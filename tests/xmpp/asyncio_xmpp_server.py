"""A test-only asyncio XMPP server built from the codec and the negotiation, to drive real clients against.

Not the product's server (that is relay/runtime + the module, later): it only proves that what
bridges/xmpp negotiates and serialises is what slixmpp expects.  Messages are routed between the
bound clients and XEP-0114 components by `to` (bare JIDs to any resource of theirs), each
re-serialised for the recipient's stream through stanza.Outgoing; an unknown iq gets an error.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from bridges.xmpp.negotiation import (Authenticated, Bound, C2sNegotiation, CloseStream, ComponentNegotiation,
                                      SendBytes, StartTls)
from bridges.xmpp.stanza import Outgoing, element
from bridges.xmpp.stream import SendStanza, StanzaReceived


def self_signed_cert(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TestServer:
    __test__ = False

    def __init__(self, policy_factory, cert: Path, key: Path, component_secrets: dict | None = None):
        self.policy_factory = policy_factory
        self.component_secrets = component_secrets or {}
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert, key)
        self.log: list = []            # (connection number, effect or stanza tag) in order
        self.connections = 0
        self.routes: dict = {}         # full JID or component domain -> connection
        self.servers: list = []

    async def start(self) -> tuple[int, int]:
        """Listen for clients and for components; their ports."""
        loop = asyncio.get_running_loop()
        for component in (False, True):
            self.servers.append(await loop.create_server(lambda c=component: _Connection(self, c), "127.0.0.1", 0))
        return tuple(server.sockets[0].getsockname()[1] for server in self.servers)

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()

    def route(self, el: etree._Element) -> None:
        """To a full JID or a component's domain as it is, to a bare JID at any of its resources."""
        to = el.get("to", "")
        bare = to.partition("/")[0]
        target = self.routes.get(to) or self.routes.get(bare.rpartition("@")[2]) or next(
            (c for jid, c in self.routes.items() if jid.partition("/")[0] == bare), None)
        if target is not None:
            target.transport.write(Outgoing(el).bytes_to(to, target.neg.stream.content_ns))


class _Connection(asyncio.Protocol):
    def __init__(self, server: TestServer, component: bool):
        self.server = server
        server.connections += 1
        self.number = server.connections
        self.component = component
        if component:
            self.neg = ComponentNegotiation(server.component_secrets.get)
        else:
            self.neg = C2sNegotiation(server.policy_factory())
        self.transport = None
        self.in_tls = False
        self.address = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.in_tls:
            return
        self._apply(self.neg.receive_data(data))

    def _apply(self, effects) -> None:
        for effect in effects:
            if isinstance(effect, SendBytes):
                self.transport.write(effect.data)
                continue
            self.server.log.append((self.number, effect.element.tag if isinstance(effect, StanzaReceived)
                                    else effect))
            if isinstance(effect, StartTls):
                self.in_tls = True
                asyncio.ensure_future(self._start_tls())
            elif isinstance(effect, CloseStream):
                self.transport.close()
            elif isinstance(effect, Bound) or (isinstance(effect, Authenticated) and self.component):
                self.address = str(effect.full_jid if isinstance(effect, Bound) else effect.jid)
                self.server.routes[self.address] = self
            elif isinstance(effect, StanzaReceived):
                self._stanza(effect.element)

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(self.transport, self, self.server.tls, server_side=True)
        self.in_tls = False
        self.neg.tls_started()

    def _stanza(self, el: etree._Element) -> None:
        tag = etree.QName(el).localname
        if not self.component:
            el.set("from", self.address)          # stamped by the server (RFC 6120 §8.1.2.1)
        if tag == "message":
            self.server.route(el)
        elif tag == "iq" and el.get("type") in ("get", "set"):
            reply = element("iq", {"type": "error", "id": el.get("id"), "to": el.get("from")},
                            self.neg.stream.content_ns)
            error = etree.SubElement(reply, "{%s}error" % self.neg.stream.content_ns, type="cancel")
            etree.SubElement(error, "{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable",
                             nsmap={None: "urn:ietf:params:xml:ns:xmpp-stanzas"})
            self.transport.write(self.neg.stream.send(SendStanza(reply)))

    def connection_lost(self, exc):
        self.server.log.append((self.number, "lost"))
        if self.server.routes.get(self.address) is self:
            del self.server.routes[self.address]
