"""Every RFC 4475 torture message sent to a running server's sip module over UDP and over TCP, each
graded against what the RFC says an element does with it: a valid request gets an answer that is not
400 (a registrar may refuse unksm2's isbn: To with 400), an invalid one the code the RFC expects, a
response (valid or not) is dropped without a word. Skipped when the messages are not there."""

from __future__ import annotations

import os
import socket

import pytest
from sipsupport import RFC4475_DIR, load_rfc4475, stream_events
from support import Server, free_port, server_config
from test_sip_rfc4475 import EXPECT, NAMES, Answered, Dropped, Parsed, Refused, _statuses

from bridges.sip.codec import RequestReceived, ResponseReceived, parse_datagram
from bridges.sip.transaction import server_key

ALIASES = ["example.com", "example.org", "example.net", "registrar.example.com", "company.com",
           "chair-dnrc.example.com"]
# An INVITE to a user: the server is its proxy, which challenges the caller (407) before anything is
# forwarded; the 415 / 406 the RFC expects comes from the user agent that would answer it.
PROXIED = {"invut", "sdp01"}
pytestmark = pytest.mark.skipif(RFC4475_DIR is None, reason="RFC 4475 messages not found")


def _slots() -> dict[str, int]:
    """Which server each message goes to: some messages share a branch, sent-by and method (cparam01
    and cparam02...), so to a server they are retransmissions of one transaction, answered where the
    first came from. Each goes to a server that has not seen its transaction yet (and UDP and TCP have
    servers of their own)."""
    seen: dict[tuple, int] = {}
    out = {}
    for name in NAMES:
        event = parse_datagram(load_rfc4475(name)) if RFC4475_DIR else None
        if not isinstance(event, RequestReceived):
            out[name] = 0
            continue
        key = server_key(event.request)
        out[name] = seen[key] = seen.get(key, -1) + 1
    return out


SLOT = _slots() if RFC4475_DIR else {}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    out = {}
    for i in [(t, n) for t in ("UDP", "TCP") for n in range(max(SLOT.values(), default=0) + 1)]:
        sip = free_port()
        # force_rport: the messages' Vias name example.com hosts without rport; the answers come back to
        # the socket that sent them. The messages' domains are aliases, so the server is the element they
        # are for (the UAS / registrar the RFC grades), not a proxy that refuses to relay. No rate limit
        # gets in the way of 49 messages from one address.
        cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                                    {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"},
                                    {"proto": "sip", "host": "127.0.0.1", "port": sip}],
                            modules={"sip": {"force_rport": True, "aliases": ALIASES, "request_burst": 10000,
                                             "auth_failures_burst": 1000, "amplification_limit": 10}})
        s = Server(tmp_path_factory.mktemp(f"sip4475-{i[0]}{i[1]}"), cfg).start()
        s.sip_port = sip
        out[i] = s
    yield out
    for s in out.values():
        s.stop()
        assert "Traceback" not in s.log(), s.log()[-3000:]


def probe(port: int, transport: str) -> bytes:
    """An OPTIONS to the server; a new branch each time (a retransmission would be answered where the
    first one came from)."""
    branch = os.urandom(6).hex()
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def grade(name: str, statuses: list[int]) -> None:
    """`statuses`: the final answers (a 100 Trying to an INVITE says nothing either way)."""
    statuses = [s for s in statuses if s >= 200]
    expect = EXPECT[name]
    data = load_rfc4475(name)
    if isinstance(expect, Dropped) or isinstance(parse_datagram(data), ResponseReceived):
        assert statuses == [], (name, statuses)                 # stray or broken response: silence
    elif isinstance(expect, (Refused, Answered)):
        if name in PROXIED:
            assert statuses in ([expect.status], [407]), (name, statuses)
        else:
            assert statuses == [expect.status], (name, statuses)
    else:
        assert isinstance(expect, Parsed)
        allowed_400 = expect.roles.get("uas") == 400
        assert len(statuses) == 1 and (statuses[0] != 400 or allowed_400), (name, statuses)


def udp_statuses(port: int, data: bytes) -> list[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # one socket each: no retransmission
        s.settimeout(30)                                           # of an earlier answer is counted
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        s.sendto(probe(port, "UDP"), ("127.0.0.1", port))
        got = []
        while True:                  # answers come in order; the probe's 200 closes this message's
            reply = s.recv(65535)
            if b"\r\nCall-ID: probe\r\n" in reply:
                return got
            got += _statuses(reply)


@pytest.mark.parametrize("name", NAMES)
def test_over_udp(servers, name):
    grade(name, udp_statuses(servers["UDP", SLOT[name]].sip_port, load_rfc4475(name)))


@pytest.mark.parametrize("name", NAMES)
def test_over_tcp(servers, name):
    data = load_rfc4475(name)
    with socket.create_connection(("127.0.0.1", servers["TCP", SLOT[name]].sip_port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    statuses = _statuses(received)
    statuses = [s for s in statuses if s >= 200]
    if name == "dblreq":            # on a stream: the REGISTER, the INVITE after it, then 5 stray bytes
        assert len(statuses) >= 2 and 400 not in statuses[:2], statuses
        return
    if name == "inv2543":           # no Content-Length: fine in a datagram, unframeable on a stream
        assert statuses == [400], statuses
        return
    if not stream_events([data], eof=False):
        # clerr, baddn: on a stream the message is not over until the connection is (RFC 4475 §3.1.2.2:
        # the element waits for the rest); once it is, there is no one to answer.
        assert statuses == [], (name, statuses)
        return
    grade(name, statuses)
