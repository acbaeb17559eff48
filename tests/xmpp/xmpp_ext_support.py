"""In-memory XMPP clients for the extension tests (vCard, private, last, register, ad-hoc, upload):
cores of tests/support_net.py, a transport without sockets, bytes in and out."""

from __future__ import annotations

import base64
import re

from lxml import etree
from support_net import Wire

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")


class Transport:
    """What the runtime's connection offers a protocol handler, already TLS (direct TLS)."""

    def __init__(self, peer_host: str = "127.0.0.1"):
        self.peer_host, self.peer_port, self.tls, self.proto = peer_host, 0, True, "xmpp"
        self.out: list[bytes] = []
        self.closing = False
        self.backlog = 0

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.out.append(data)

    def close(self, reason: str = "") -> None:
        self.closing = True

    def abort(self, reason: str) -> None:
        self.closing = True

    def channel_bindings(self) -> dict:
        return {}

    def start_tls(self, on_done) -> None:
        on_done(False, "not here")



def sasl_plain(c, account: str, password: str = "secret") -> None:
    """SASL PLAIN for an in-memory test client `c` (its `feed` and transport `t`), then the header of
    the restarted stream; the features that follow are left for `c` to read."""
    plain = base64.b64encode(f"\0{account}\0{password}".encode()).decode()
    c.feed(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
    out = _taken(c.t)
    assert b"<success" in out, out
    c.feed(HEADER)


def bind(c, resource: str) -> str:
    """Resource binding for an in-memory test client: the full JID the server bound."""
    c.feed(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}"
           "</resource></bind></iq>")
    out = _taken(c.t)
    assert b"</jid>" in out, out
    return re.search(rb"<jid>([^<]+)</jid>", out).group(1).decode()


def _taken(t) -> bytes:
    data = b"".join(t.out)
    t.out.clear()
    return data


class Xmpp:
    """A client stream; `login()` authenticates with PLAIN and binds."""

    def __init__(self, wire: Wire, core: str = "a", peer_host: str = "127.0.0.1"):
        self.wire, self.core = wire, wire.cores[core]
        self.t = Transport(peer_host)
        self.s = self.core.services["xmpp"].new_session(self.t, None, wire.now)
        self.feed(HEADER)
        self.features = self.take()

    def login(self, account: str, password: str = "secret", resource: str = "r") -> "Xmpp":
        sasl_plain(self, account, password)
        self.jid = bind(self, resource)
        return self

    def feed(self, data) -> None:
        self.s.data_received(data.encode() if isinstance(data, str) else data, self.wire.now)
        self.wire.pump()

    def take(self) -> bytes:
        data = b"".join(self.t.out)
        self.t.out.clear()
        return data

    def iq(self, text: str) -> etree._Element:
        """Send one iq, return the one stanza that came back (parsed in a jabber:client wrapper)."""
        self.take()
        self.feed(text)
        got = stanzas(self.take())
        assert len(got) == 1, got
        return got[0]


def stanzas(data: bytes) -> list[etree._Element]:
    root = etree.fromstring(b"<r xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" + data
                            + b"</r>")
    return list(root)


def error_of(el: etree._Element) -> str | None:
    err = el.find("{jabber:client}error")
    if err is None:
        return None
    return etree.QName(err[0]).localname


def wire(tmp_path, names=("a",), accounts=("alice", "bob"), config: dict | None = None, **xmpp) -> Wire:
    """Cores with the xmpp module (options `xmpp`), the top-level `config` and the accounts registered."""
    w = Wire(tmp_path, list(names), modules={"xmpp": {"roster_file": "", **xmpp}}, **(config or {}))
    for core in w.cores.values():
        for name in accounts:
            core.register_account(name, "secret", w.now)
    return w


def ext_server(directory, accounts=(("alice", "secret"), ("bob", "secret")), xmpp: dict | None = None, **overrides):
    """A real server with c2s, direct TLS and an http listener (WebSocket, upload); ports in `.ports`."""
    from support import Server, free_port, server_config
    ports = {"irc": free_port(), "c2s": free_port(), "tls": free_port(), "http": free_port()}
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": ports["irc"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True},
                                {"proto": "http", "host": "127.0.0.1", "port": ports["http"]}],
                        modules={"xmpp": xmpp or {}}, **overrides)
    srv = Server(directory, cfg).start()
    srv.ports = ports
    for name, password in accounts:
        srv.ctl("register", name, password)
    return srv
