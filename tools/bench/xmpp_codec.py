"""Microbenchmark of the XMPP stream codec (not a test): stanzas parsed and serialised per second.

    .venv/bin/python -m tools.bench.xmpp_codec [--stanzas 100000]

For a typical ~200-byte one-to-one chat message:
- parse: XmppStream.receive_data, one stanza per read and ~4 KiB reads (many stanzas a read);
  beside it, the same stream parsed with lxml's other incremental mode, `XMLParser(target=...)`
  with a Python target building each stanza through a TreeBuilder (the road not taken);
- serialise: stanza.serialise per stanza, and for fan-out to N full JIDs Outgoing.bytes_to (one
  serialisation, `to` spliced per recipient) against setting `to` and serialising per recipient;
- memory: what one idle stream (header and a stanza parsed) costs, RSS over 5,000 of them,
  awake and after hibernate() (the codec's share of the 16 KiB per idle TLS connection target;
  TLS not included).

Rates are per second of this process's CPU time (time.process_time): the machine is shared, and
wall-clock rates there say more about the neighbours than about the codec.
"""

from __future__ import annotations

import argparse
import time

from lxml import etree

from bridges.xmpp.stanza import Outgoing, serialise
from bridges.xmpp.stream import StanzaReceived, XmppStream

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns:stream='http://etherx.jabber.org/streams' "
          b"xmlns='jabber:client' xml:lang='en' version='1.0'>")
CHAT = (b"<message to='bob@localhost/phone' from='alice@localhost/laptop' type='chat' id='3f2a9c1e'>"
        b"<body>Hey, are we still on for lunch tomorrow at noon?</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}/s"


def parse_codec(n: int, per_read: int, hibernate: bool = False) -> float:
    stream = XmppStream(host_ok=lambda to: True)
    stream.receive_data(HEADER)
    stream.authenticated = True
    read = CHAT * per_read
    reads = n // per_read
    got = 0
    start = time.process_time()
    for _ in range(reads):
        for ev in stream.receive_data(read):
            got += 1
        if hibernate:
            stream.hibernate()
    elapsed = time.process_time() - start
    assert got == reads * per_read and isinstance(ev, StanzaReceived)
    return elapsed


def parse_floor(n: int) -> float:
    """lxml alone: the pull parser fed and its events read, each stanza unlinked; no checks, no copy."""
    parser = etree.XMLPullParser(events=("start", "end"))
    parser.feed(HEADER)
    root = next(parser.read_events())[1]
    start = time.process_time()
    for _ in range(n):
        parser.feed(CHAT)
        for action, el in parser.read_events():
            pass
        root.remove(el)
    return time.process_time() - start


class _StanzaTarget:
    """lxml target-parser mode: Python callbacks, each stanza built by a TreeBuilder."""

    def __init__(self):
        self.depth = 0
        self.builder = None
        self.stanzas = []

    def start(self, tag, attrib, nsmap):
        self.depth += 1
        nsmap = {(prefix or None): uri for prefix, uri in nsmap.items()}
        if self.depth == 2:
            self.builder = etree.TreeBuilder()
            nsmap = {None: "jabber:client", **nsmap}
        if self.depth >= 2:
            self.builder.start(tag, attrib, nsmap)

    def end(self, tag):
        if self.depth >= 2:
            self.builder.end(tag)
        if self.depth == 2:
            self.stanzas.append(self.builder.close())
        self.depth -= 1

    def data(self, text):
        if self.depth >= 2:
            self.builder.data(text)

    def close(self):
        return None


def parse_target(n: int, per_read: int) -> float:
    target = _StanzaTarget()
    parser = etree.XMLParser(target=target, resolve_entities=False, no_network=True, huge_tree=False,
                             load_dtd=False)
    parser.feed(HEADER)
    read = CHAT * per_read
    reads = n // per_read
    start = time.process_time()
    for _ in range(reads):
        parser.feed(read)
        target.stanzas.clear()
    return time.process_time() - start


def serialise_each(n: int) -> float:
    el = etree.fromstring(CHAT)
    start = time.process_time()
    for _ in range(n):
        serialise(el)
    return time.process_time() - start


def fanout(n: int, recipients: int, splice: bool) -> float:
    el = etree.fromstring(CHAT)
    tos = [f"bob@localhost/r{i}" for i in range(recipients)]
    start = time.process_time()
    for _ in range(n // recipients):
        if splice:
            out = Outgoing(el)
            for to in tos:
                out.bytes_to(to)
        else:
            for to in tos:
                el.set("to", to)
                serialise(el)
    return time.process_time() - start


def idle_stream_bytes(hibernate: bool, count: int = 5000) -> float:
    import gc

    import psutil
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    streams = []
    for _ in range(count):
        stream = XmppStream(host_ok=lambda to: True)
        stream.receive_data(HEADER)
        stream.receive_data(CHAT)
        if hibernate:
            stream.hibernate()
        streams.append(stream)
    gc.collect()
    return (process.memory_info().rss - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanzas", type=int, default=100_000)
    n = parser.parse_args().stanzas
    print(f"chat message: {len(CHAT)} bytes, {n:,} stanzas per measurement")
    print(f"parse, XmppStream, 1 stanza a read     {_rate(n, parse_codec(n, 1))}")
    print(f"parse, XmppStream, 20 stanzas a read   {_rate(n, parse_codec(n, 20))}")
    print(f"parse, lxml floor, 1 stanza a read     {_rate(n, parse_floor(n))}  (feed + events + unlink only)")
    print(f"parse, target parser, 1 stanza a read  {_rate(n, parse_target(n, 1))}  (lxml target mode, for comparison)")
    print(f"parse, target parser, 20 a read        {_rate(n, parse_target(n, 20))}")
    print(f"serialise, one per stanza              {_rate(n, serialise_each(n))}")
    for recipients in (2, 10):
        per = fanout(n, recipients, False)
        spliced = fanout(n, recipients, True)
        print(f"fan-out to {recipients:>2} full JIDs: serialise each  {_rate(n, per)}, "
              f"`to` spliced {_rate(n, spliced)}  ({per / spliced:.1f}x)")
    print(f"parse, hibernating after every stanza  {_rate(n, parse_codec(n, 1, True))}  (worst case of hibernate())")
    print(f"memory of one idle stream              {idle_stream_bytes(False):>12,.0f} bytes")
    print(f"memory of one idle stream, hibernated  {idle_stream_bytes(True):>12,.0f} bytes")


if __name__ == "__main__":
    main()
