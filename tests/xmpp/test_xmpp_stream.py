"""The sans-IO stream codec from bytes: split invariance, restarts, framing, the send side."""

from __future__ import annotations

import pytest
from lxml import etree
from xmppcodec_support import DOMAIN, comparable, feed, feed_chunks, header, server_stream

from bridges.xmpp import namespaces as ns
from bridges.xmpp.stream import (EndStream, Limits, OpenStream, SendKeepalive, SendStanza, SendStreamError,
                                 StanzaReceived, StreamClosed, StreamErrorReceived, StreamOpened, XmppStream)

STANZAS = [
    b"<presence/>",
    b"<message to='bob@localhost/phone' type='chat' id='m1'><body>hi &amp; &lt;3 &#x1F600; \xc3\xa9</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    b"<iq type='get' id='q'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    b"<message><body><![CDATA[<not> & markup ]]]></body></message>",
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r\xe2\x98\x83</resource>"
    b"</bind></iq>",
    b"<r xmlns='urn:xmpp:sm:3'/>",
]
TRANSCRIPT = header() + b"\n" + b"\n ".join(STANZAS) + b"  \n</stream:stream>"


def test_transcript_events():
    events = feed(TRANSCRIPT)
    assert events[0] == ("opened", (("to", DOMAIN), ("version", "1.0"), ("xml:lang", "en")))
    assert [e[0] for e in events] == ["opened"] + ["stanza"] * len(STANZAS) + ["closed"]
    assert events[2][1] == (b'<message xmlns="jabber:client" to="bob@localhost/phone" type="chat" id="m1">'
                            b'<body>hi &amp; &lt;3 \xf0\x9f\x98\x80 \xc3\xa9</body>'
                            b'<active xmlns="http://jabber.org/protocol/chatstates"/></message>')
    assert events[4][1] == (b'<message xmlns="jabber:client"><body>&lt;not&gt; &amp; markup ]</body></message>')


def test_every_split_gives_the_same_events():
    whole = feed(TRANSCRIPT)
    for cut in range(1, len(TRANSCRIPT)):
        assert feed(TRANSCRIPT, cut) == whole, cut


def test_byte_by_byte_gives_the_same_events_and_each_stanza_on_its_end_tag():
    stream = server_stream()
    seen = []
    for i in range(len(TRANSCRIPT)):
        events = stream.receive_data(TRANSCRIPT[i:i + 1])
        seen.extend(events)
        for ev in events:
            if isinstance(ev, StanzaReceived):
                assert TRANSCRIPT[:i + 1].endswith((b">",)), i
    assert comparable(seen) == feed(TRANSCRIPT)


def test_every_stanza_split_at_every_byte_boundary_twice():
    # Two cuts inside one stanza: every pair of boundaries of the message with the CDATA section.
    stanza = STANZAS[3]
    base = len(header()) + 1
    data = header() + b"\n" + stanza
    whole = feed(data)
    for a in range(base, base + len(stanza)):
        for b in range(a + 1, base + len(stanza), 3):
            assert feed(data, a, b) == whole, (a, b)


def test_stanza_is_detached_and_the_root_stays_empty():
    stream = server_stream()
    feed_chunks(stream, [header()])
    for _ in range(3):
        (ev,) = stream.receive_data(b"<message><body>x</body></message>  ")
        assert ev.element.getparent() is None
        assert ev.element.nsmap[None] == ns.CLIENT and ev.element.tail is None
    assert len(stream._root) == 0 and stream._root.text is None


def test_restart_after_starttls_takes_a_new_header():
    stream = server_stream()
    events = feed_chunks(stream, [header(), b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"])
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]
    stream.restart()
    events = feed_chunks(stream, [header()[:7], header()[7:], b"<presence/>"])
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]


def test_peer_stream_error_is_an_event():
    stream = XmppStream(server_side=False)
    events = stream.receive_data(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        b"from='localhost' id='x' version='1.0'><stream:error><host-unknown "
        b"xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
        b"no</text></stream:error></stream:stream>")
    assert events[1:] == [StreamErrorReceived("host-unknown", "no")]


def test_send_side_round_trips_through_a_client_stream():
    server = server_stream()
    client = XmppStream(server_side=False)
    out = server.send(OpenStream(from_=DOMAIN, id="abc"))
    msg = etree.fromstring(b"<message xmlns='jabber:client' to='a@localhost'><body>\xc3\xa9 &amp;</body></message>")
    out += server.send(SendStanza(msg)) + server.send(SendKeepalive()) + server.send(EndStream())
    assert b'<message to="a@localhost">' in out
    events = client.receive_data(out)
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived, StreamClosed]
    assert events[0].attrs["id"] == "abc" and server.stream_id == "abc"
    assert events[1].element.findtext("{jabber:client}body") == "\xe9 &"


def test_stream_error_without_header_sends_header_first():
    server = server_stream()
    data = server.send(SendStreamError("host-unknown", "not here"))
    assert data.startswith(b"<?xml version='1.0'?><stream:stream ")
    assert data.endswith(b"</stream:error></stream:stream>")
    events = XmppStream(server_side=False).receive_data(data)
    assert events[1:] == [StreamErrorReceived("host-unknown", "not here")]
    with pytest.raises(ValueError):
        server.send(SendStreamError("no-such-condition"))
    server = server_stream()
    server.receive_data(header())                 # the peer's header came, ours did not yet
    assert server.send(SendStreamError("policy-violation")).startswith(
        b"<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\" "
        b"xmlns:stream=\"http://etherx.jabber.org/streams\" from=\"localhost\"")


def test_component_stream_namespace():
    stream = server_stream(content_ns=ns.COMPONENT, host_ok=None)
    events = feed_chunks(stream, [header(default_ns=ns.COMPONENT), b"<message to='a@localhost'/>"])
    assert events[1].element.tag == "{jabber:component:accept}message"
    assert server_stream().receive_data(header(default_ns=ns.COMPONENT))[0].condition == "invalid-namespace"


def test_preauth_limit_is_lifted_after_authentication():
    big = b"<message><body>" + b"x" * 20_000 + b"</body></message>"
    stream = server_stream()
    feed_chunks(stream, [header()])
    stream.authenticated = True
    assert [type(e) for e in stream.receive_data(big)] == [StanzaReceived]


def test_whitespace_keepalives_do_not_count_or_pile_up():
    stream = server_stream(limits=Limits(max_stanza_bytes_preauth=1000))
    feed_chunks(stream, [header()])
    for _ in range(500):
        assert stream.receive_data(b"    ") == []
    assert stream._root.text is None
    assert [type(e) for e in stream.receive_data(b"<presence/>")] == [StanzaReceived]


# -- RFC 7395 WebSocket framing ----------------------------------------------------------------

OPEN = b'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>'


def test_websocket_messages():
    stream = server_stream(framing="websocket")
    events = []
    for message in (OPEN, b'<message xmlns="jabber:client" to="b@localhost"><body>x</body></message>',
                    b'<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>'):
        events.extend(stream.receive_data(message))
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived, StreamClosed]
    assert events[0].attrs["to"] == DOMAIN


def test_websocket_send_side():
    stream = server_stream(framing="websocket")
    assert stream.send(OpenStream(from_=DOMAIN, id="i")) == (
        b'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" from="localhost" id="i" version="1.0" xml:lang="en"/>')
    msg = etree.fromstring(b"<message xmlns='jabber:client'><body>x</body></message>")
    assert stream.send(SendStanza(msg)) == b'<message xmlns="jabber:client"><body>x</body></message>'
    assert stream.send(EndStream()) == b'<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>'
    error = stream.send(SendStreamError("not-well-formed"))
    assert etree.fromstring(error).tag == "{http://etherx.jabber.org/streams}error"


@pytest.mark.parametrize("messages,condition", [
    ([b'<message xmlns="jabber:client"/>'], "not-well-formed"),                         # before <open/>
    ([OPEN, b'<message xmlns="jabber:client">'], "not-well-formed"),                   # not a whole document
    ([OPEN, b'<message xmlns="jabber:server"/>'], "invalid-namespace"),
    ([OPEN, b'<message/>'], "invalid-namespace"),
    ([OPEN, b'<!DOCTYPE x><message xmlns="jabber:client"/>'], "restricted-xml"),
    ([OPEN, b'<message xmlns="jabber:client"><!-- c --></message>'], "restricted-xml"),
    ([OPEN.replace(b'"1.0"', b'"0.9"')], "unsupported-version"),
    ([OPEN.replace(b"localhost", b"elsewhere")], "host-unknown"),
    ([OPEN, b'<message xmlns="jabber:client"><body>' + b"x" * 17000 + b"</body></message>"], "policy-violation"),
    ([OPEN, OPEN + b"<x/>"], "not-well-formed"),                                         # two documents,
])
def test_websocket_errors(messages, condition):
    stream = server_stream(framing="websocket")
    events = []
    for message in messages:
        events.extend(stream.receive_data(message))
    assert events[-1].condition == condition


# -- hibernate(): an idle stream without its parser ------------------------------------------------

def test_hibernated_stream_parses_on_as_before():
    data = [header(extra=" xmlns:x='urn:example:x'"), b"<presence/>", b"<message><x:y a='1'/></message>",
            b" <iq type='get' id='1'/>", b"</stream:stream>"]
    plain = comparable(feed_chunks(server_stream(), data))
    stream = server_stream()
    events = []
    for chunk in data[:-1]:
        events.extend(stream.receive_data(chunk))
        assert stream.hibernate() and stream._parser is None
    events.extend(stream.receive_data(data[-1]))
    assert comparable(events) == plain
    (message,) = [e.element for e in events if isinstance(e, StanzaReceived) and e.element.tag.endswith("message")]
    assert message[0].tag == "{urn:example:x}y"


def test_hibernate_only_between_stanzas():
    stream = server_stream()
    assert not stream.hibernate()                          # no header yet
    stream.receive_data(header())
    stream.receive_data(b"<message><bo")
    assert not stream.hibernate()                          # inside a stanza
    stream.receive_data(b"dy>x</body></message>")
    assert stream.hibernate()
    assert [e.condition for e in stream.receive_data(b"<!-- hi -->")] == ["restricted-xml"]
    assert not stream.hibernate()                          # dead


def test_hibernated_streams_are_small():
    import gc

    import psutil
    process = psutil.Process()

    def idle(count: int, hibernate: bool) -> float:
        gc.collect()
        before = process.memory_info().rss
        streams = []
        for _ in range(count):
            stream = server_stream()
            stream.receive_data(header())
            stream.receive_data(STANZAS[1])
            if hibernate:
                assert stream.hibernate()
            streams.append(stream)
        gc.collect()
        return (process.memory_info().rss - before) / count

    idle(300, True)                                         # warm up the allocator
    awake, asleep = idle(3000, False), idle(3000, True)
    assert asleep < awake / 3, (awake, asleep)
