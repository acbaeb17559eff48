"""Shared bits of the XMPP codec tests: a client's stream header and events in a comparable form."""

from __future__ import annotations

from bridges.xmpp.stanza import serialise
from bridges.xmpp.stream import (StanzaReceived, StreamClosed, StreamErrorOccurred, StreamErrorReceived,
                                 StreamOpened, XmppStream)

DOMAIN = "localhost"


def header(to: str = DOMAIN, version: str = "1.0", extra: str = "", default_ns: str = "jabber:client",
           prefix: str = "stream", streams_ns: str = "http://etherx.jabber.org/streams") -> bytes:
    version_attr = f" version='{version}'" if version is not None else ""
    return (f"<?xml version='1.0'?><{prefix}:stream to='{to}'{version_attr} xml:lang='en' "
            f"xmlns='{default_ns}' xmlns:{prefix}='{streams_ns}'{extra}>").encode()


def server_stream(**kw) -> XmppStream:
    kw.setdefault("host_ok", lambda to: to == DOMAIN)
    return XmppStream(**kw)


def comparable(events) -> list:
    """Events as plain values: stanzas by their serialisation."""
    out = []
    for ev in events:
        if isinstance(ev, StanzaReceived):
            out.append(("stanza", serialise(ev.element, websocket=True)))
        elif isinstance(ev, StreamOpened):
            out.append(("opened", tuple(sorted(ev.attrs.items()))))
        elif isinstance(ev, (StreamErrorOccurred, StreamErrorReceived)):
            out.append((type(ev).__name__, ev.condition))
        elif isinstance(ev, StreamClosed):
            out.append(("closed",))
        else:
            raise AssertionError(ev)
    return out


def feed_chunks(stream: XmppStream, chunks) -> list:
    events = []
    for chunk in chunks:
        events.extend(stream.receive_data(chunk))
    return events


def feed(data: bytes, *cuts: int, **kw) -> list:
    """Events of a fresh server stream fed `data` cut at `cuts`."""
    stream = server_stream(**kw)
    bounds = [0, *cuts, len(data)]
    return comparable(feed_chunks(stream, [data[a:b] for a, b in zip(bounds, bounds[1:])]))


def error_of(data: bytes, chunk: int = 0, **kw):
    """The condition a fresh server stream gives `data` (fed whole, or in pieces of `chunk` bytes)."""
    stream = server_stream(**kw)
    pieces = [data] if not chunk else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        for ev in stream.receive_data(piece):
            if isinstance(ev, StreamErrorOccurred):
                assert stream.receive_data(b"<message/>") == []       # dead from now on
                return ev.condition
    return None


# -- negotiation helpers ---------------------------------------------------------------------------

from bridges.xmpp.negotiation import C2sPolicy, SaslFailure, SaslSuccess  # noqa: E402

ACCOUNTS = {"alice": "secret", "bob": "hunter2"}


class PlainTestMechanism:
    """SASL PLAIN (RFC 4616) against ACCOUNTS: the trivial mechanism the negotiation tests run on."""

    def step(self, data: bytes):
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except ValueError:
            return SaslFailure("malformed-request")
        if authzid and authzid not in (authcid, f"{authcid}@{DOMAIN}"):
            return SaslFailure("invalid-authzid")
        if ACCOUNTS.get(authcid) != password:
            return SaslFailure("not-authorized")
        return SaslSuccess(authcid)


def test_policy(**kw) -> C2sPolicy:
    counter = iter(range(1, 10_000))
    kw.setdefault("domain_ok", lambda domain: domain == DOMAIN)
    kw.setdefault("sasl_mechanisms", lambda secure: {"PLAIN": PlainTestMechanism} if secure else {})
    kw.setdefault("new_id", lambda: f"id{next(counter)}")
    kw.setdefault("new_resource", lambda: "generated")
    return C2sPolicy(**kw)


test_policy.__test__ = False     # not a test, despite its name
