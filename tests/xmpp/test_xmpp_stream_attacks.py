"""Hostile and malformed input: each is refused with the right RFC 6120 §4.9.3 stream error, before
anything is expanded or the limits are passed, however the bytes are cut."""

from __future__ import annotations

import pytest
from xmppcodec_support import error_of, header, server_stream

from bridges.xmpp.stream import Limits, SendStreamError, StreamErrorReceived, XmppStream

H = header()

BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b"]>" + H[len(b"<?xml version='1.0'?>"):] + b"<message><body>&lol9;</body></message>")
XXE = (b'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       + H[len(b"<?xml version='1.0'?>"):] + b"<message><body>&xxe;</body></message>")

SMALL_CASES = [
    ("billion laughs", BILLION_LAUGHS, "restricted-xml"),
    ("external entity (XXE)", XXE, "restricted-xml"),
    ("entity reference without a DTD", H + b"<message><body>&xxe;</body></message>", "restricted-xml"),
    ("entity reference in an attribute", H + b"<message to='&xxe;'/>", "restricted-xml"),
    ("DTD inside the stream", H + b"<!DOCTYPE message [<!ELEMENT message ANY>]><message/>", "restricted-xml"),
    ("entity declaration inside the stream", H + b'<!ENTITY x "y">', "restricted-xml"),
    ("processing instruction", H + b"<message><?php echo 1 ?></message>", "restricted-xml"),
    ("processing instruction before the header", b"<?foo bar?>" + H[len(b"<?xml version='1.0'?>"):],
     "restricted-xml"),
    ("second XML declaration", H + b"<?xml version='1.0'?>", "restricted-xml"),
    ("comment", H + b"<message><!-- hello --></message>", "restricted-xml"),
    ("comment before the header", b"<!-- x -->" + H[len(b"<?xml version='1.0'?>"):], "restricted-xml"),
    ("invalid UTF-8 in text", H + b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
    ("invalid UTF-8 in a name", H + b"<mess\xc3age/>", "not-well-formed"),
    ("overlong UTF-8", H + b"<message><body>\xc0\xaf</body></message>", "not-well-formed"),
    ("Latin-1 encoding declaration", b"<?xml version='1.0' encoding='ISO-8859-1'?>" + H[21:], "unsupported-encoding"),
    ("UTF-16 byte order mark", b"\xff\xfe<\x00s\x00", "unsupported-encoding"),
    ("mismatched end tag", H + b"<message></presence>", "not-well-formed"),
    ("character reference to U+0000", H + b"<message><body>&#0;</body></message>", "not-well-formed"),
    ("wrong stream namespace", header(streams_ns="http://example.com/streams"), "invalid-namespace"),
    ("wrong content namespace", header(default_ns="jabber:server"), "invalid-namespace"),
    ("no content namespace", H.replace(b"xmlns='jabber:client' ", b""), "invalid-namespace"),
    ("stanza in the wrong namespace", H + b"<message xmlns='jabber:server'/>", "invalid-namespace"),
    ("stanza in no namespace", H + b"<message xmlns=''/>", "invalid-namespace"),
    ("root is not a stream", b"<message xmlns='jabber:client'/>", "invalid-namespace"),
    ("bad stream prefix", header(prefix="foobar"), "bad-namespace-prefix"),
    ("version 0.9", header(version="0.9"), "unsupported-version"),
    ("no version", header(version=None), "unsupported-version"),
    ("version not a number", header(version="one"), "unsupported-version"),
    ("unknown host", header(to="example.org"), "host-unknown"),
    ("text at stream level", H + b"hello<presence/>", "bad-format"),
    ("too many attributes before authentication",
     H + b"<message " + b" ".join(b"a%d='1'" % i for i in range(17)) + b"/>", "policy-violation"),
    ("65 levels deep", H + b"<a>" * 64, "policy-violation"),
    ("oversized header", header(extra=" x='" + "y" * 5000 + "'"), "policy-violation"),
]


@pytest.mark.parametrize("name,data,condition", SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_refused_whole_and_byte_by_byte(name, data, condition):
    assert error_of(data) == condition
    assert error_of(data, chunk=1) == condition
    assert error_of(data, chunk=7) == condition


def test_version_2_is_answered_with_1_0():
    assert error_of(header(version="2.0")) is None


def test_cdata_is_not_mistaken_for_markup():
    assert error_of(H + b"<message><body><![CDATA[<!-- &foo; <?x?> <!DOCTYPE ]]></body></message>", chunk=1) is None


def test_ten_megabyte_attribute():
    data = H + b"<message to='" + b"a" * 10_000_000 + b"'/>"
    stream = server_stream()
    stream.authenticated = True                   # even the larger limit stops it
    stream.receive_data(H)
    events = stream.receive_data(data[len(H):])
    assert [e.condition for e in events] == ["policy-violation"]
    assert stream._pending <= stream.limits.max_stanza_bytes + 4096     # stopped within one slice


def test_ten_megabyte_attribute_of_angle_brackets():
    # `>` inside an attribute value must not look like the end of a stanza.
    assert error_of(H + b"<message to='" + b">" * 1_000_000 + b"'/>", chunk=65536) == "policy-violation"


def test_ten_thousand_deep_nesting():
    assert error_of(H + b"<a>" * 10_000, chunk=65536) == "policy-violation"
    assert error_of(H + b"<message>" + b"<a>" * 10_000) == "policy-violation"


def test_stanza_over_the_preauth_limit():
    stanza = b"<message><body>" + b"x" * (17 * 1024) + b"</body></message>"
    assert error_of(H + stanza) == "policy-violation"
    assert error_of(H + stanza, chunk=1000) == "policy-violation"
    assert error_of(H + stanza.replace(b"x" * (17 * 1024), b"x" * (10 * 1024))) is None


def test_stanza_over_the_configured_limit_after_authentication():
    stream = server_stream(limits=Limits(max_stanza_bytes=64 * 1024))
    stream.receive_data(H)
    stream.authenticated = True
    assert stream.receive_data(b"<message><body>" + b"x" * 50_000 + b"</body></message>")[0].element is not None
    events = stream.receive_data(b"<message><body>" + b"x" * 80_000 + b"</body></message>")
    assert [e.condition for e in events] == ["policy-violation"]


def test_many_small_stanzas_in_one_read_do_not_add_up():
    stream = server_stream()
    stream.receive_data(H)
    events = stream.receive_data(b"<presence/>" * 20_000)     # 220 KB in one read, before authentication
    assert len(events) == 20_000


@pytest.mark.parametrize("name,data,condition", SMALL_CASES[:6], ids=[c[0] for c in SMALL_CASES[:6]])
def test_error_answer_carries_header_error_and_close(name, data, condition):
    stream = server_stream()
    (ev,) = [e for e in stream.receive_data(data) if hasattr(e, "condition")]
    answer = stream.send(SendStreamError(ev.condition, ev.text))
    assert answer.endswith(b"</stream:stream>")
    events = XmppStream(server_side=False).receive_data(answer)
    assert [e for e in events if isinstance(e, StreamErrorReceived)] == [StreamErrorReceived(condition, ev.text)]
