"""Hostile input: the codec never raises anything but SipParseError (and parse_datagram and the stream
never raise at all), whatever the bytes and however a stream is cut; huge input costs bounded memory."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipsupport import RFC4475_DIR, load_rfc4475, rfc4475_names

from bridges.sip.codec import (
    KeepalivePing, MessageRejected, RequestReceived, ResponseReceived, SipStreamConnection, parse_datagram, serialise,
    validate_request,
)
from bridges.sip.digest import parse_credentials
from bridges.sip.errors import SipParseError
from bridges.sip.transaction import response_destination, server_key

SEEDS = [load_rfc4475(n) for n in rfc4475_names()] if RFC4475_DIR else [
    b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
    b"To: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"]
# SIP_FUZZ_EXAMPLES=5000 for a longer run by hand.
FUZZ = settings(max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the grammar, so mutations hit the interesting places.
_ALPHABET = st.sampled_from(list(b'\r\n :;,<>"\\@=%/?&[]\t*0123456789abcSIP') + [0, 0x7f, 0xc3, 0xff])


def exercise(event) -> None:
    """Touch everything a server would read; only SipParseError may come out."""
    assert isinstance(event, (RequestReceived, ResponseReceived, MessageRejected, KeepalivePing))
    if isinstance(event, KeepalivePing):
        return
    if isinstance(event, MessageRejected):
        if event.response is not None:
            out = serialise(event.response)  # no body: every CR and LF is a CRLF line end
            assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
        return
    message = event.request if isinstance(event, RequestReceived) else event.response
    for attribute in ("vias", "cseq", "call_id", "from_", "to", "contacts", "content_type", "expires"):
        try:
            getattr(message, attribute)
        except SipParseError:
            pass
    try:
        for credentials in message.headers.values("Authorization"):
            parse_credentials(credentials)
    except SipParseError:
        pass
    if isinstance(event, RequestReceived):
        for for_us in (True, False):
            response = validate_request(message, for_us)  # never raises: a fault is a response
            if response is not None:
                serialise(response)
        server_key(message)
        response_destination(message.top_via, ("192.0.2.1", 5060))
    again = parse_datagram(serialise(message))
    assert isinstance(again, (RequestReceived, ResponseReceived, MessageRejected))


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    exercise(parse_datagram(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 8), _ALPHABET),
                                        min_size=1, max_size=12))
def test_mutated_torture_messages(seed, edits):
    data = bytearray(seed)
    for position, delete, byte in edits:
        position %= len(data) + 1
        data[position:position + delete] = bytes([byte])
    exercise(parse_datagram(bytes(data)))
    conn = SipStreamConnection()
    for event in conn.receive_data(bytes(data)) + conn.receive_eof():
        exercise(event)


@FUZZ
@given(st.lists(st.sampled_from(SEEDS + [b"\r\n", b"\r\n\r\n", b"garbage\r\n\r\n"]), max_size=6),
       st.lists(st.integers(1, 300), max_size=40))
def test_stream_of_messages_cut_anywhere_matches_one_read(messages, cuts):
    data = b"".join(messages)
    whole = SipStreamConnection()
    expected = whole.receive_data(data) + whole.receive_eof()
    conn, events, position = SipStreamConnection(), [], 0
    for cut in cuts:
        events += conn.receive_data(data[position:position + cut])
        position += cut
    events += conn.receive_data(data[position:]) + conn.receive_eof()
    assert [type(e) for e in events] == [type(e) for e in expected]
    for event in events:
        exercise(event)


def test_huge_input_has_bounded_memory():
    conn = SipStreamConnection()
    chunk = b"A" * 65536
    events = []
    for _ in range(200):  # 13 MB with no end of headers
        events += conn.receive_data(chunk)
        assert len(conn._buffer) <= conn.max_size + len(chunk)
    assert len(events) == 1 and events[0].framing_lost
    head = b"OPTIONS sip:b@example.com SIP/2.0\r\nX: " + b"x" * 10_000_000 + b"\r\n\r\n"
    assert isinstance(parse_datagram(head), MessageRejected)
    assert isinstance(parse_datagram(head, max_size=len(head)), MessageRejected)  # still no From, To...


@pytest.mark.parametrize("value", ["<" * 5000, '"' * 5001, ";" * 5000, "sip:" + "a;" * 5000 + "@h",
                                   'Digest ' + 'a="\\' * 3000, "<sip:a@h>" + ";x=" * 3000])
def test_pathological_header_values_fail_fast(value):
    data = (f"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: {value}\r\n"
            f"To: {value}\r\nContact: {value}\r\nAuthorization: {value}\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()
    exercise(parse_datagram(data))


@FUZZ
@given(st.text(alphabet=st.sampled_from(list('Digest username=realm,nonce"\\ \tqop=auth,nc=0001 ü')), max_size=300))
def test_credentials_parser_raises_only_its_error(text):
    from bridges.sip.digest import DigestVerifier

    try:
        creds = parse_credentials(text)
    except SipParseError:
        return
    if creds is not None:
        result = DigestVerifier(b"s", "r").verify(creds, "REGISTER", lambda u, a: "0" * 32, 1000.0)
        assert not result.ok


_STEP = st.one_of(
    st.tuples(st.just("receive"), st.sampled_from([100, 180, 200, 302, 486, 503])),
    st.tuples(st.just("retransmit"), st.just(0)),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("send"), st.sampled_from([100, 180, 200, 404, 500])),
    st.tuples(st.just("wait"), st.floats(0, 40)),
)


@FUZZ
@given(st.sampled_from(["INVITE", "OPTIONS"]), st.sampled_from(["UDP", "TCP"]), st.lists(_STEP, max_size=25))
def test_transactions_take_any_sequence_and_always_end(method, transport, steps):
    """Whatever arrives in whatever order, a transaction never raises (but for the TU sending in a state
    that forbids it) and, once the TU has answered, ends within its longest timer."""
    from bridges.sip.message import make_response
    from bridges.sip.transaction import (
        Destination, TransactionTerminated, client_transaction_for, make_ack, server_transaction_for,
    )

    data = (f"{method} sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/{transport} 192.0.2.1;branch=z9hG4bKf\r\n"
            f"From: <sip:a@x>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: fz\r\nCSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()
    request = parse_datagram(data).request
    destination = Destination(transport, "192.0.2.9", 5060)
    client, server = client_transaction_for(request, destination), server_transaction_for(request, destination)
    now = 0.0
    effects = client.start(now) + server.start(now)
    answered = False
    for kind, value in steps:
        if kind == "wait":
            now += value
            effects += client.timeout(now) + server.timeout(now)
        elif kind == "receive":
            effects += client.receive(make_response(request, value, to_tag="t"), now)
        elif kind == "retransmit":
            effects += server.receive(request, now)
        elif kind == "ack":
            effects += server.receive(make_ack(request, make_response(request, 486, to_tag="t")), now)
        else:
            try:
                effects += server.send(make_response(request, value, to_tag="t"), now)
                answered = answered or value >= 200
            except ValueError:
                assert server.state not in ("trying", "proceeding")
    end = now + 64 * 0.5 + 32.0 + 1  # past every timer (B, D, F, H, J, K, L, M, I)
    effects += client.timeout(end) + server.timeout(end)
    if method == "INVITE" and client.state == "proceeding":
        assert client.next_deadline() is None  # waits for a final response or the TU's CANCEL
    else:
        assert client.terminated and client.next_deadline() is None, (client.state, steps)
    if answered:
        assert server.terminated and server.next_deadline() is None, (server.state, steps)
    else:
        assert server.state in ("trying", "proceeding") and server.next_deadline() is None  # waits for its TU
    assert sum(isinstance(e, TransactionTerminated) and e.key == client.key for e in effects) <= 1
