"""The SIP codec on hand-written messages: header forms, URIs, Via, Contact, framing, keepalives, limits,
and faithful re-serialisation."""

from __future__ import annotations

import pytest
from sipsupport import stream_events, summary

from bridges.sip.codec import (
    PING, PONG, KeepalivePing, KeepalivePong, MessageRejected, RequestReceived, ResponseReceived,
    SipStreamConnection, parse_datagram, serialise, validate_request,
)
from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers, parse_name_addr, parse_via, split_commas
from bridges.sip.message import Request, make_response
from bridges.sip.uri import AbsoluteUri, SipUri, TelUri, parse_uri


def msg(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


REGISTER = msg(
    "REGISTER sip:example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKabc;rport",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=a1",
    "To: <sip:alice@example.com>",
    "Call-ID: reg-1@192.0.2.1",
    "CSeq: 1 REGISTER",
    'Contact: <sip:alice@192.0.2.1:5062;transport=udp>;expires=600;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1',
    "X-Unknown: keep me, as is",
    "Content-Length: 0",
)


def request_of(data: bytes) -> Request:
    event = parse_datagram(data)
    assert isinstance(event, RequestReceived), summary(event)
    return event.request


def test_register_fields():
    r = request_of(REGISTER)
    assert (r.method, r.uri_text, r.call_id, r.max_forwards) == ("REGISTER", "sip:example.com", "reg-1@192.0.2.1", 70)
    assert r.top_via.sent_by == ("192.0.2.1", 5062) and r.top_via.has_param("rport") and r.top_via.rport is None
    (c,) = r.contacts
    assert (c.expires, c.reg_id, c.instance) == (600, 1, "urn:uuid:00000000-0000-0000-0000-000000000001")
    assert c.uri.param("transport") == "udp" and r.from_.tag == "a1" and r.to.tag is None
    assert validate_request(r, for_us=True) is None


def test_compact_forms_read_back_by_canonical_name():
    data = msg("OPTIONS sip:b@example.com SIP/2.0", "v: SIP/2.0/UDP h;branch=z9hG4bK1", "f: <sip:a@x>;tag=1",
               "t: sip:b@example.com", "i: c1", "CSeq: 2 OPTIONS", "m: <sip:a@h>", "k: path, outbound",
               "s: hi", "c: text/plain", "e: gzip", "l: 0")
    r = request_of(data)
    assert [n for n, _ in r.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported",
                                         "Subject", "Content-Type", "Content-Encoding", "Content-Length"]
    assert r.headers.get("call-id") == "c1" and r.headers.get("I") == "c1"
    assert r.headers.values("Supported") == ["path", "outbound"] and r.content_type == "text/plain"


def test_folded_header_is_one_value():
    data = msg("OPTIONS sip:b@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@x>",
               "\t;tag=1", "To: <sip:b@example.com>", "Call-ID: c1", "CSeq: 2", "   OPTIONS", "Subject: one",
               "  two", "Content-Length: 0")
    r = request_of(data)
    assert r.from_.tag == "1" and r.cseq.number == 2 and r.headers.get("Subject") == "one two"


def test_list_headers_split_outside_quotes_and_angle_brackets_only():
    assert split_commas('"Doe, John" <sip:j@x;a=b,c>, <sip:k@y>') == ['"Doe, John" <sip:j@x;a=b,c>', "<sip:k@y>"]
    h = Headers([("Contact", '"Doe, John" <sip:j@x>, <sip:k@y>'), ("Contact", "<sip:l@z>"),
                 ("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("X-Other", "a, b")])
    assert h.values("Contact") == ['"Doe, John" <sip:j@x>', "<sip:k@y>", "<sip:l@z>"]
    assert h.values("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert h.values("X-Other") == ["a, b"]


def test_quoted_display_names_with_escapes():
    na = parse_name_addr(r'"A \"quoted\" \\ name" <sip:a@example.com>;tag=x', "From")
    assert na.display == 'A "quoted" \\ name' and na.tag == "x"
    with pytest.raises(SipParseError, match="unterminated"):
        parse_name_addr('"open <sip:a@example.com>', "To")


def test_addr_spec_params_belong_to_the_header_and_name_addr_params_to_the_uri():
    spec = parse_name_addr("sip:a@example.com;transport=tcp;tag=1", "To")
    assert spec.uri.params == [] and spec.param("transport") == "tcp" and spec.tag == "1"
    named = parse_name_addr("<sip:a@example.com;transport=tcp>;tag=1", "To")
    assert named.uri.param("transport") == "tcp" and named.tag == "1" and not named.has_param("transport")


def test_uris():
    u = parse_uri("sips:bob:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi%20there&priority=urgent")
    assert isinstance(u, SipUri) and u.scheme == "sips" and (u.user, u.password) == ("bob", "secret")
    assert (u.host, u.port) == ("[2001:db8::1]", 5061) and u.has_param("lr") and u.param("transport") == "tcp"
    assert u.header_values == {"subject": "hi there", "priority": "urgent"}
    assert str(u) == "sips:bob:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi%20there&priority=urgent"
    assert parse_uri("sip:Alice@EXAMPLE.com").aor == "sip:Alice@example.com"
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, TelUri) and tel.number == "+1-201-555-0123"
    other = parse_uri("urn:service:sos")
    assert isinstance(other, AbsoluteUri) and other.scheme == "urn" and other.opaque == "service:sos"
    for bad in ("sip:", "sip:a@", "sip:a@host:99999", "sip:a@ho st", "sip:@host", "1sip:a", "nocolon",
                "sip:a@host;;x", "sip:a@[::1"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_via_with_lws_received_and_rport():
    v = parse_via("SIP / 2.0 / udp  192.0.2.7 : 5070 ;branch=z9hG4bKx ;received=10.0.0.1;rport=40000;maddr=[::1]")
    assert (v.transport, v.host, v.port, v.branch, v.received, v.rport) == \
        ("UDP", "192.0.2.7", 5070, "z9hG4bKx", "10.0.0.1", 40000)
    assert v.param("maddr") == "[::1]"
    edited = v.with_param("received", "10.0.0.2")
    assert edited.received == "10.0.0.2" and str(edited).startswith("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKx")
    for bad in ("SIP/2.0/UDP", "SIP/2.0 UDP h", "SIP/3.0/UDP h", "SIP/2.0/UDP h;received=not a host",
                "SIP/2.0/UDP h;rport=70000", "SIP/2.0/UDP h;;branch=x"):
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_contact_star():
    star = msg("REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
               "To: <sip:a@x>", "Call-ID: c", "CSeq: 3 REGISTER", "Contact: *", "Expires: 0", "Content-Length: 0")
    r = request_of(star)
    assert r.contacts[0].is_star and r.expires == 0 and validate_request(r, True) is None
    mixed = star.replace(b"Contact: *", b"Contact: *, <sip:a@h>")
    response = validate_request(request_of(mixed), True)
    assert response.status == 400 and "Contact * must be alone" in response.reason


def test_content_length_frames_a_datagram():
    base = msg("MESSAGE sip:b@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
               "To: <sip:b@example.com>", "Call-ID: c", "CSeq: 1 MESSAGE", "Content-Type: text/plain",
               "Content-Length: 5", body=b"hello, and junk after")
    r = request_of(base)
    assert r.body == b"hello" and validate_request(r, True) is None
    no_length = base.replace(b"Content-Length: 5\r\n", b"")
    assert request_of(no_length).body == b"hello, and junk after"
    too_long = base.replace(b"Content-Length: 5", b"Content-Length: 500")
    event = parse_datagram(too_long)
    assert isinstance(event, MessageRejected) and event.response.status == 400
    assert event.response.reason == "Bad Request: Content-Length larger than message"


def test_error_responses_are_addressed_from_the_request():
    data = msg("OPTIONS sip:b@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "Via: SIP/2.0/UDP g",
               "From: <sip:a@x>;tag=1", "To: <sip:b@example.com>", "CSeq: 1 OPTIONS", "Content-Length: 0")
    event = parse_datagram(data)
    assert event.reason == "Bad Request: missing Call-ID"
    response = event.response
    assert response.headers.values("Via") == ["SIP/2.0/UDP h;branch=z9hG4bK1", "SIP/2.0/UDP g"]
    assert response.to.tag and response.from_.tag == "1" and response.cseq.number == 1
    assert serialise(response).startswith(b"SIP/2.0 400 Bad Request: missing Call-ID\r\nVia: SIP/2.0/UDP h")
    # The To tag is a function of the request: a retransmission gets the same response.
    assert parse_datagram(data).response.to.tag == response.to.tag


def test_no_response_to_an_ack_a_response_or_a_request_without_via():
    ack = msg("ACK sip:b@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
              "To: <sip:b@example.com>", "CSeq: 1 ACK", "Content-Length: 0")
    assert parse_datagram(ack).response is None
    no_via = msg("OPTIONS sip:b@example.com SIP/2.0", "From: <sip:a@x>;tag=1", "To: <sip:b@example.com>",
                 "Call-ID: c", "CSeq: 1 OPTIONS")
    event = parse_datagram(no_via)
    assert event.reason == "Bad Request: missing Via" and event.response is None
    bad_response = msg("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
                       "To: <sip:b@example.com>", "CSeq: 1 OPTIONS")
    event = parse_datagram(bad_response)
    assert isinstance(event, MessageRejected) and event.response is None and "missing Call-ID" in event.reason


def test_bare_line_feed_inside_a_header_is_refused_and_not_echoed():
    data = REGISTER.replace(b"X-Unknown: keep me", b"X-Unknown: keep\nInjected: me")
    event = parse_datagram(data)
    assert isinstance(event, MessageRejected) and event.response.status == 400
    assert "bare CR or LF" in event.reason
    data = REGISTER.replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com>\nInjected: yes\r")
    response = serialise(parse_datagram(data).response)
    assert b"\nInjected" not in response and response.count(b"\n") == response.count(b"\r\n")


def test_reserialised_message_keeps_every_header_in_order():
    r = request_of(REGISTER)
    r.headers.insert(0, "Via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKproxy")
    r.invalidate()
    again = request_of(serialise(r))
    assert again.top_via.host == "proxy.example.net" and len(again.vias) == 2
    assert again.headers.get("X-Unknown") == "keep me, as is"
    assert [n for n, _ in again.headers] == ["Via", "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                                              "Contact", "X-Unknown", "Content-Length"]
    r.body = b"new"
    assert serialise(r).endswith(b"Content-Length: 3\r\n\r\nnew")


def test_make_response_tags_to_except_for_100():
    r = request_of(REGISTER)
    assert make_response(r, 100).to.tag is None
    ok = make_response(r, 200, extra=[("Contact", "<sip:alice@192.0.2.1:5062>;expires=600")])
    assert ok.to.tag and ok.reason == "OK" and ok.headers.get("Contact").endswith("expires=600")
    assert make_response(r, 200, to_tag="t9").to.tag == "t9"


def test_validate_request_416_420_415_483():
    base = request_of(REGISTER)
    assert validate_request(base, False) is None
    req = request_of(REGISTER.replace(b"REGISTER sip:example.com", b"REGISTER mailto:a@example.com"))
    assert validate_request(req, True).status == 416
    req = request_of(REGISTER.replace(b"Max-Forwards: 70", b"Max-Forwards: 0\r\nRequire: path, foo"))
    assert validate_request(req, False).status == 483
    resp = validate_request(req, True, supported={"path"})
    assert (resp.status, resp.headers.get("Unsupported")) == (420, "foo")
    assert validate_request(req, True, supported={"path", "foo"}) is None
    msg_body = REGISTER.replace(b"REGISTER sip:example.com", b"MESSAGE sip:b@example.com").replace(
        b"1 REGISTER", b"1 MESSAGE").replace(b"Content-Length: 0", b"Content-Type: image/png\r\nContent-Length: 2")
    resp = validate_request(request_of(msg_body + b"xx"), True)
    assert resp.status == 415 and resp.headers.get("Accept") == "text/plain, message/cpim"


# --- streams ---------------------------------------------------------------------------------------------

OPTIONS = msg("OPTIONS sip:b@example.com SIP/2.0", "Via: SIP/2.0/TCP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
              "To: <sip:b@example.com>", "Call-ID: c", "CSeq: 1 OPTIONS", "Content-Length: 4", body=b"abcd")


def test_stream_pipelined_messages_and_keepalives():
    events = stream_events([OPTIONS + PING + OPTIONS + OPTIONS], eof=False)
    assert [type(e) for e in events] == [RequestReceived, KeepalivePing, RequestReceived, RequestReceived]
    assert all(e.request.body == b"abcd" for e in events if isinstance(e, RequestReceived))


def test_stream_pong_answers_our_ping_and_stray_crlf_is_ignored():
    conn = SipStreamConnection()
    assert conn.receive_data(b"\r\n") == []  # could be the start of a ping
    assert [type(e) for e in conn.receive_data(b"\r\n")] == [KeepalivePing]
    assert conn.send_ping() == PING and conn.awaiting_pong
    assert [type(e) for e in conn.receive_data(PONG)] == [KeepalivePong] and not conn.awaiting_pong
    assert [type(e) for e in conn.receive_data(b"\r\n" + OPTIONS)] == [RequestReceived]


def test_stream_without_content_length_loses_framing_and_stops():
    conn = SipStreamConnection()
    events = conn.receive_data(OPTIONS.replace(b"Content-Length: 4\r\n", b"") + OPTIONS)
    assert len(events) == 1 and events[0].framing_lost and events[0].response.status == 400
    assert events[0].reason == "Bad Request: missing Content-Length"
    assert conn.closed and conn.receive_data(OPTIONS) == [] and conn.receive_eof() == []


def test_stream_refuses_a_bad_message_but_keeps_reading_when_framing_holds():
    bad = OPTIONS.replace(b"Call-ID: c\r\n", b"")
    events = stream_events([bad + OPTIONS], eof=False)
    assert isinstance(events[0], MessageRejected) and not events[0].framing_lost
    assert isinstance(events[1], RequestReceived)


def test_stream_maximum_size():
    conn = SipStreamConnection(max_size=1000)
    events = []
    for _ in range(100):
        events += conn.receive_data(b"X-Filler: " + b"a" * 90 + b"\r\n")
    assert len(events) == 1 and events[0].framing_lost and events[0].reason.startswith("Message Too Large")
    assert len(conn._buffer) == 0
    conn = SipStreamConnection(max_size=1000)
    (event,) = conn.receive_data(OPTIONS.replace(b"Content-Length: 4", b"Content-Length: 5000"))
    assert event.framing_lost and event.response.status == 513
    assert isinstance(parse_datagram(OPTIONS + b"x" * 70000), MessageRejected)


def test_stream_response():
    response = msg("SIP/2.0 180 Ringing", "Via: SIP/2.0/TCP h;branch=z9hG4bK1", "From: <sip:a@x>;tag=1",
                   "To: <sip:b@example.com>;tag=2", "Call-ID: c", "CSeq: 1 INVITE", "Content-Length: 0")
    (event,) = stream_events([response], eof=False)
    assert isinstance(event, ResponseReceived) and (event.response.status, event.response.reason) == (180, "Ringing")


def test_datagram_of_crlf_is_a_keepalive_and_unbracketed_ipv6_received_is_accepted():
    assert isinstance(parse_datagram(b"\r\n\r\n"), KeepalivePing)
    assert isinstance(parse_datagram(b"\r\n"), MessageRejected) and parse_datagram(b"\r\n").response is None
    v = parse_via("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::9")
    assert v.received == "2001:db8::9" and v.host == "[2001:db8::9]"


def test_pop_first_value_takes_one_via_off_a_line_of_several():
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"), ("To", "<sip:x@y>"),
                 ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3")])
    assert h.pop_first_value("v") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.values("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"]
    assert h.pop_first_value("Via") == "SIP/2.0/UDP b;branch=z9hG4bK2"
    assert list(h) == [("To", "<sip:x@y>"), ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3")]
    assert h.pop_first_value("Route") is None
    h.set("To", "<sip:z@y>")
    h.remove("via")
    assert list(h) == [("To", "<sip:z@y>")] and "Via" not in h
