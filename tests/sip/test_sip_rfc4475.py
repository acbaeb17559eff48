"""Every RFC 4475 torture message, graded against what the RFC says an element does with it.

Each entry says which layer decides (module docstring of bridges.sip.codec): `Parsed` (accepted, with
checks of the fields the RFC points at, and for requests validate_request's verdict for the element
role the RFC section talks about), `Refused` (the codec refuses it with that response), `Answered` (well
formed, validate_request answers it) or `Dropped` (a response refused: nothing is sent).
The same messages go through the stream codec whole, then split at every byte boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
from sipsupport import RFC4475_DIR, load_rfc4475, rfc4475_names, stream_events, summary

from bridges.sip.codec import (
    MessageRejected, RequestReceived, ResponseReceived, parse_datagram, serialise, validate_request,
)
from bridges.sip.digest import parse_credentials
from bridges.sip.transaction import response_destination, server_key
from bridges.sip.uri import AbsoluteUri, SipUri


@dataclass
class Parsed:
    check: Callable = lambda m: None
    roles: dict = field(default_factory=lambda: {"uas": None})  # role -> expected validate status


@dataclass
class Refused:
    status: int
    fault: str


@dataclass
class Answered:
    status: int
    role: str = "uas"
    headers: dict = field(default_factory=dict)
    also: dict = field(default_factory=dict)  # other role -> status


@dataclass
class Dropped:
    fault: str


def _wsinv(m):
    assert m.method == "INVITE" and m.uri_text == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.to.tag == "1918181833n" and str(m.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert m.from_.display == 'J Rosenberg \\"' and m.from_.tag == "98asjd8"
    assert m.max_forwards == 68 and (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"), ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    (contact,) = m.contacts
    assert contact.display == 'Quoted string ""' and str(contact.uri) == "sip:jdrosen@example.com"
    assert contact.param("newparam") == "newvalue" and contact.has_param("secondparam") and contact.q == 0.33
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.headers.get("Subject") == ""
    assert m.headers.get("Route") == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    assert m.content_type == "application/sdp" and len(m.body) == 150


def _intmeth(m):
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~" == m.cseq.method
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)" and m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-" and m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~" and m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def _esc01(m):
    assert m.uri.user == "sips:user@example.com" and m.uri.host == "example.net"
    assert m.to.uri.user == "user" and m.from_.uri.user == "I have spaces"
    (contact,) = m.contacts
    assert contact.uri.user == "caller" and contact.uri.params == [("%6C%72", None), ("n%61me", "v%61lue%25%34%31")]


def _esc02(m):
    assert m.method == "RE%47IST%45R"  # not REGISTER: escapes mean nothing in a method
    assert m.to.display == "%Z%45" and m.top_via.branch == "z9hG4bK209%fzsnel234"
    assert [c.uri.host for c in m.contacts] == ["host1.example.com", "host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"  # an extension header


def _escnull(m):
    assert m.to.uri.user == "null-\x00-null" and [c.uri.user for c in m.contacts] == ["\x00", "\x00\x00"]


def _longreq(m):
    assert m.to.display.startswith("I have a user name of extreme") and m.to.uri.port == 6000
    assert len(m.from_.tag) == 155 and len(m.vias) == 34 and m.vias[-1].received == "192.0.2.5"
    name, value = m.to.uri.params[-1]
    assert name.startswith("verylonglong") and name.endswith("ParameterNameWithNoValue") and value is None
    assert m.to.uri.params[1] == ("longparam" + "name" * 25, "shortvalue")


def _dblreq(m):
    assert m.method == "REGISTER" and m.body == b"" and m.call_id.startswith("dblreq.0ha0isndaksdj99")


def _semiuri(m):
    assert m.uri.user == "user;par=u@example.net" and m.uri.host == "example.com" and not m.uri.params
    assert m.headers.values("Accept") == ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                                          "multipart/signed", "message/sip", "message/sipfrag"]


def _badbranch(m):
    assert m.top_via.branch == "z9hG4bK" and server_key(m)[0] == "2543"


def _bcast(m):
    assert m.status == 200 and m.vias[1].host == "255.255.255.255"
    assert response_destination(m.vias[1], ("255.255.255.255", 5060)) is None


def _cparam01(m):
    (c,) = m.contacts
    assert c.has_param("unknownparam") and not c.uri.params


def _cparam02(m):
    (c,) = m.contacts
    assert c.uri.has_param("unknownparam") and not c.params


def _inv2543(m):
    assert m.top_via.branch is None and server_key(m)[0] == "2543" and m.max_forwards is None
    assert m.to.tag is None and m.from_.uri.param("user") == "phone" and m.body.startswith(b"v=0")


EXPECT = {
    # 3.1.1 valid messages
    "wsinv": Parsed(_wsinv),
    "intmeth": Parsed(_intmeth),
    "esc01": Parsed(_esc01),
    "escnull": Parsed(_escnull),
    "esc02": Parsed(_esc02),
    "lwsdisp": Parsed(lambda m: m.from_.display == "caller" or pytest.fail(m.from_.display)),
    "longreq": Parsed(_longreq),
    "dblreq": Parsed(_dblreq),
    "semiuri": Parsed(_semiuri),
    "transports": Parsed(lambda m: [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
                         or pytest.fail(str(m.vias))),
    # A MESSAGE with a multipart body a proxy forwards as it is (RFC 4475 §3.1.1.11 is about parsing).
    "mpart01": Parsed(lambda m: (m.content_type, len(m.body), m.top_via.rport) == ("multipart/mixed", 553, None)
                      or pytest.fail(), roles={"proxy": None}),
    "unreason": Parsed(lambda m: (m.status, m.reason.endswith("простое"), len(m.body)) == (200, True, 154)
                       or pytest.fail(m.reason)),
    "noreason": Parsed(lambda m: (m.status, m.reason) == (100, "") or pytest.fail(m.reason)),
    # 3.1.2 invalid messages
    "badinv01": Refused(400, "empty parameter in Via"),
    "clerr": Refused(400, "Content-Length larger than message"),
    "ncl": Refused(400, "bad Content-Length"),
    "scalar02": Refused(400, "CSeq number too large"),
    "scalarlg": Dropped("CSeq number too large"),
    "quotbal": Refused(400, "unterminated quoted string"),
    "ltgtruri": Refused(400, "Request-URI enclosed in <>"),
    "lwsruri": Refused(400, "malformed Request-Line"),
    "lwsstart": Refused(400, "malformed Request-Line"),
    "trws": Refused(400, "malformed Request-Line"),
    "escruri": Answered(400),
    # §3.1.2.12: rejecting is allowed only if the Date matters; it does not here.
    "baddate": Parsed(lambda m: m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST" or pytest.fail()),
    "regbadct": Answered(400),
    "badaspec": Refused(400, "whitespace inside <URI> in To"),
    "baddn": Refused(400, "bad display name in From"),
    "badvers": Refused(505, "Version Not Supported"),
    "mismatch01": Refused(400, "CSeq method does not match"),
    "mismatch02": Refused(400, "CSeq method does not match"),
    "bigcode": Dropped("malformed Status-Line"),
    # 3.2 transaction layer: a bare magic cookie falls back to RFC 2543 matching
    "badbranch": Parsed(_badbranch),
    # 3.3 application layer
    "insuf": Refused(400, "missing From, To, Call-ID"),
    "unkscm": Answered(416, also={"proxy": 416}),
    "novelsc": Answered(416, also={"proxy": 416}),
    "unksm2": Parsed(lambda m: isinstance(m.to.uri, AbsoluteUri) and m.to.uri.scheme == "isbn"
                     or pytest.fail(), roles={"uas": 400, "proxy": None}),  # a registrar refuses it
    "bext01": Answered(420, headers={"Unsupported": "nothingSupportsThis, nothingSupportsThisEither"},
                       also={"proxy": 420}),
    "invut": Answered(415, headers={"Accept": "application/sdp"}),
    "regaut01": Parsed(lambda m: parse_credentials(m.headers.get("Authorization")) is None or pytest.fail()),
    "multi01": Refused(400, "multiple"),
    "mcl01": Refused(400, "multiple Content-Length headers"),
    "bcast": Parsed(_bcast),
    "zeromf": Parsed(lambda m: m.max_forwards == 0 or pytest.fail(), roles={"uas": None, "proxy": 483}),
    "cparam01": Parsed(_cparam01),
    "cparam02": Parsed(_cparam02),
    "regescrt": Parsed(lambda m: m.contacts[0].uri.header_values == {"Route": "<sip:sip.example.com>"}
                       or pytest.fail()),
    "sdp01": Answered(406),
    # 3.4 backward compatibility
    "inv2543": Parsed(_inv2543),
}

NAMES = rfc4475_names() or sorted(EXPECT)


def test_the_table_covers_every_message():
    if RFC4475_DIR is None:
        pytest.skip("RFC 4475 messages not found")
    assert sorted(EXPECT) == rfc4475_names()
    assert len(EXPECT) == 49


def _check_request_roles(request, roles):
    for role, status in roles.items():
        response = validate_request(request, for_us=role == "uas")
        assert (response and response.status) == status, (role, response and response.reason)


@pytest.mark.parametrize("name", NAMES)
def test_datagram(name):
    expect = EXPECT[name]
    event = parse_datagram(load_rfc4475(name))
    if isinstance(expect, Parsed):
        assert isinstance(event, (RequestReceived, ResponseReceived)), summary(event)
        message = event.request if isinstance(event, RequestReceived) else event.response
        expect.check(message)
        if isinstance(event, RequestReceived):
            _check_request_roles(message, expect.roles)
        # What a proxy forwards re-parses to the same message, unknown headers and all.
        again = parse_datagram(serialise(message))
        assert type(again) is type(event)
        re_message = again.request if isinstance(again, RequestReceived) else again.response
        assert [(n, v) for n, v in re_message.headers if n != "Content-Length"] == \
               [(n, v) for n, v in message.headers if n != "Content-Length"]
        assert re_message.body == message.body and re_message.start_line() == message.start_line()
    elif isinstance(expect, Refused):
        assert isinstance(event, MessageRejected), summary(event)
        assert expect.fault in event.reason
        assert event.response is not None and event.response.status == expect.status
        assert event.response.reason == event.reason
        assert not event.response.reason.startswith("Bad Request") or expect.fault in event.response.reason
        # The error response goes back along the request's Via, with From, To (tagged), Call-ID, CSeq.
        assert event.response.headers.get("Call-ID") is None or \
            event.response.headers.get("Call-ID") in load_rfc4475(name).decode("utf-8", "replace")
    elif isinstance(expect, Answered):
        assert isinstance(event, RequestReceived), summary(event)
        response = validate_request(event.request, for_us=expect.role == "uas")
        assert response is not None and response.status == expect.status
        for header, value in expect.headers.items():
            assert response.headers.get(header) == value
        assert response.to.tag and response.call_id == event.request.call_id
        assert response.cseq == event.request.cseq and response.headers.values("Via") == \
            event.request.headers.values("Via")
        for role, status in expect.also.items():
            assert validate_request(event.request, for_us=role == "uas").status == status
    else:
        assert isinstance(event, MessageRejected) and event.response is None, summary(event)
        assert expect.fault in event.reason


def test_bext01_proxy_lists_the_proxy_require_options():
    event = parse_datagram(load_rfc4475("bext01"))
    response = validate_request(event.request, for_us=False)
    assert response.headers.get("Unsupported") == "noProxiesSupportThis, norDoAnyProxiesSupportThis"


def test_zeromf_is_answered_by_its_destination_and_not_forwarded():
    request = parse_datagram(load_rfc4475("zeromf")).request
    assert validate_request(request, for_us=True) is None
    assert validate_request(request, for_us=False).reason == "Too Many Hops"


def _stream_expectation(name: str, datagram_event) -> list:
    """What the stream codec yields for a whole file followed by end of stream."""
    if name == "dblreq":  # on a stream the "trailing octets" are a second request, then 5 stray bytes
        return ["request", "request", "rejected"]
    if name == "inv2543":  # no Content-Length: fine in a datagram, unframeable in a stream
        return ["rejected"]
    return [summary(datagram_event)[0]]


@pytest.mark.parametrize("name", NAMES)
def test_stream_whole(name):
    data = load_rfc4475(name)
    events = stream_events([data])
    datagram = parse_datagram(data)
    assert [summary(e)[0] for e in events] == _stream_expectation(name, datagram)
    if name == "inv2543":
        assert "missing Content-Length" in events[0].reason and events[0].framing_lost
        assert events[0].response.status == 400
    elif name == "dblreq":
        assert events[0].request.method == "REGISTER" and events[1].request.method == "INVITE"
        assert len(events[1].request.body) == 150
    elif isinstance(datagram, MessageRejected):
        # The same fault, found on the stream (some only at end of stream: clerr, baddn).
        assert events[0].reason == datagram.reason
    else:
        assert summary(events[0]) == summary(datagram)


@pytest.mark.parametrize("name", NAMES)
def test_stream_split_at_every_byte(name):
    data = load_rfc4475(name)
    whole = [summary(e) for e in stream_events([data])]
    for cut in range(1, len(data)):
        assert [summary(e) for e in stream_events([data[:cut], data[cut:]])] == whole, cut
    assert [summary(e) for e in stream_events([data[i:i + 1] for i in range(len(data))])] == whole


# --- through real sockets -----------------------------------------------------------------------------------

PROBE = (b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe;rport\r\n"
         b"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: probe\r\n"
         b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def _expected_statuses(responder, events) -> list[int]:
    """What the responder answers for these codec events (the same code on both sides of the socket)."""
    out = []
    for event in events:
        if isinstance(event, RequestReceived):
            out.append(responder._answer(event.request, 0.0).status)
        elif isinstance(event, MessageRejected) and event.response is not None:
            out.append(event.response.status)
    return out


def _statuses(data: bytes) -> list[int]:
    """Status codes of the responses in a byte stream, read from their status lines only: a response
    to a malformed request repeats its malformed To, so it need not parse as a whole."""
    import re

    statuses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"SIP/2.0 "), data[:80]
        statuses.append(int(head.split(b" ", 2)[1]))
        length = re.search(rb"\r\nContent-Length: ([0-9]+)", head)
        data = rest[int(length.group(1)) if length else 0:]
    return statuses


def test_every_message_over_udp_through_a_real_socket():
    import socket

    from sipsupport import DigestResponder

    if RFC4475_DIR is None:
        pytest.skip("RFC 4475 messages not found")
    # The messages' Vias name hosts of example.com without rport: answering to the source port instead
    # of their Via ports (force_rport) brings every response back to this test's socket.
    with DigestResponder({"alice": "pw"}, force_rport=True) as responder, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(30)
        s.bind(("127.0.0.1", 0))
        for name in NAMES:
            data = load_rfc4475(name)
            expected = _expected_statuses(responder, [parse_datagram(data)])
            if isinstance(EXPECT[name], (Refused, Answered)):
                assert expected == [EXPECT[name].status], name
            if isinstance(EXPECT[name], Dropped) or isinstance(parse_datagram(data), ResponseReceived):
                assert expected == [], name
            s.sendto(data, ("127.0.0.1", responder.port))
            s.sendto(PROBE, ("127.0.0.1", responder.port))
            got = []
            while True:  # replies come in order; the probe's 200 closes this message's replies
                reply = s.recv(65535)
                if b"\r\nCall-ID: probe\r\n" in reply:
                    break
                got += _statuses(reply)
            assert got == expected, name


def test_every_message_over_tcp_through_a_real_socket():
    import socket

    from sipsupport import DigestResponder

    if RFC4475_DIR is None:
        pytest.skip("RFC 4475 messages not found")
    with DigestResponder({"alice": "pw"}) as responder:
        for name in NAMES:
            data = load_rfc4475(name)
            expected = _expected_statuses(responder, stream_events([data]))
            with socket.create_connection(("127.0.0.1", responder.port), timeout=30) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := s.recv(65536):  # the responder closes after end of stream
                    received += chunk
            assert _statuses(received) == expected, name
