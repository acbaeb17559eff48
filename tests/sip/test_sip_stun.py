"""STUN Binding (RFC 5389) for RFC 5626 keepalives, sans-IO: RFC 5769's test vectors, our answers read
back, malformed and hostile input refused, fuzzed; and over the real SIP UDP port of a server."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipua import UA
from support import Server, free_port, server_config

from bridges.sip import stun


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1 (a Binding request with ICE attributes, MESSAGE-INTEGRITY and FINGERPRINT) and §2.2.
SAMPLE_REQUEST = hexbytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 10 53 54 55 4e 20 74 65 73
    74 20 63 6c 69 65 6e 74 00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36 00 06 00 09
    65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49
    c1 b5 71 a2 80 28 00 04 e5 7a 3b cf""")
TID = hexbytes("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")


def keepalive(tid: bytes = TID, fingerprint: bool = False) -> bytes:
    """What an RFC 5626 user agent sends: a bare Binding request (optionally with FINGERPRINT)."""
    msg = stun.StunMessage(stun.BINDING, stun.CLASS_REQUEST, tid, (), fingerprint)
    return stun._message(msg.method, msg.cls, tid, [], fingerprint)


def mapped(response: bytes) -> tuple[str, int]:
    msg = stun.parse(response)
    assert (msg.method, msg.cls) == (stun.BINDING, stun.CLASS_SUCCESS)
    [value] = [v for a, v in msg.attributes if a == stun.XOR_MAPPED_ADDRESS]
    family, xport = struct.unpack_from("!xBH", value)
    port = xport ^ (stun.MAGIC_COOKIE >> 16)
    if family == 1:
        return socket.inet_ntoa(struct.pack("!I", struct.unpack_from("!I", value, 4)[0] ^ stun.MAGIC_COOKIE)), port
    mask = struct.pack("!I", stun.MAGIC_COOKIE) + msg.transaction_id
    return socket.inet_ntop(socket.AF_INET6, bytes(a ^ b for a, b in zip(value[4:], mask))), port


def test_the_rfc5769_request_parses_with_its_fingerprint_checked():
    msg = stun.parse(SAMPLE_REQUEST)
    assert (msg.method, msg.cls, msg.transaction_id, msg.fingerprint) == (stun.BINDING, 0, TID, True)
    assert [a for a, _ in msg.attributes] == [0x8022, 0x0024, 0x8029, 0x0006, 0x0008]
    assert dict(msg.attributes)[0x8022] == b"STUN test client"
    broken = SAMPLE_REQUEST[:-1] + bytes([SAMPLE_REQUEST[-1] ^ 1])
    with pytest.raises(stun.StunError, match="FINGERPRINT"):
        stun.parse(broken)


def test_xor_mapped_address_is_the_rfc5769_encoding():
    # §2.2: 192.0.2.1 port 32853 -> 00 01 a1 47 e1 12 a6 43; §2.3 the same port over IPv6.
    assert stun._xor_address("192.0.2.1", 32853, TID) == hexbytes("00 01 a1 47 e1 12 a6 43")
    assert stun._xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, TID) == hexbytes(
        "00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9")


@pytest.mark.parametrize("source", [("127.0.0.1", 5060), ("203.0.113.9", 65535), ("::1", 1), ("2001:db8::7", 40000)])
@pytest.mark.parametrize("fingerprint", [False, True])
def test_a_keepalive_is_answered_with_the_source_it_came_from(source, fingerprint):
    out = stun.answer(keepalive(fingerprint=fingerprint), source)
    assert stun.parse(out).transaction_id == TID and stun.parse(out).fingerprint == fingerprint
    assert mapped(out) == (socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, source[0]))
                           if ":" in source[0] else source[0], source[1])


def test_attributes_we_must_understand_get_420_with_unknown_attributes():
    out = stun.answer(SAMPLE_REQUEST, ("127.0.0.1", 1))
    msg = stun.parse(out)
    assert (msg.method, msg.cls) == (stun.BINDING, stun.CLASS_ERROR) and msg.fingerprint
    attrs = dict(msg.attributes)
    assert attrs[stun.ERROR_CODE][2:4] == bytes([4, 20])
    assert attrs[stun.UNKNOWN_ATTRIBUTES] == struct.pack("!HHH", 0x0024, 0x0006, 0x0008)


def test_indications_responses_and_other_methods_get_no_answer():
    indication = stun._message(stun.BINDING, 0b01, TID, [], False)
    success = stun._message(stun.BINDING, stun.CLASS_SUCCESS, TID, [], False)
    allocate = stun._message(0x003, stun.CLASS_REQUEST, TID, [], False)
    assert [stun.answer(m, ("127.0.0.1", 1)) for m in (indication, success, allocate)] == [None, None, None]


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter"),
    (keepalive()[:19], "shorter"),
    (b"\xc0" + keepalive()[1:], "top bits"),
    (keepalive()[:4] + b"\0\0\0\0" + keepalive()[8:], "magic cookie"),
    (keepalive()[:2] + b"\x00\x04" + keepalive()[4:], "length"),              # says 4, carries 0
    (keepalive()[:2] + b"\x00\x03" + keepalive()[4:] + b"abc", "length"),      # not whole words
    (keepalive()[:2] + b"\x00\x04" + keepalive()[4:] + b"\x80\x22\x00\x09", "longer than"),
    (keepalive()[:2] + b"\x00\x10" + keepalive()[4:] + b"\x80\x28\x00\x04" + b"\0" * 4 + b"\x80\x22\x00\x00" + b"\0" * 4,
     "FINGERPRINT"),
])
def test_malformed_stun_is_refused(data, reason):
    with pytest.raises(stun.StunError, match=reason):
        stun.parse(data)


def test_too_many_attributes_are_refused():
    body = b"\x80\x22\x00\x00" * (stun.MAX_ATTRIBUTES + 1)
    data = struct.pack("!HHI12s", 1, len(body), stun.MAGIC_COOKIE, TID) + body
    with pytest.raises(stun.StunError, match="too many"):
        stun.parse(data)


def test_only_bytes_0_to_3_first_are_stun():
    assert stun.is_stun(keepalive()) and not stun.is_stun(b"OPTIONS sip:x SIP/2.0\r\n") and not stun.is_stun(b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_stun_error(data):
    try:
        stun.answer(data, ("127.0.0.1", 5060))
    except stun.StunError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_requests_raise_only_stun_error(data):
    seed = bytearray(data.draw(st.sampled_from([SAMPLE_REQUEST, keepalive(), keepalive(fingerprint=True)])))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(seed) - 1))
        seed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(seed)))
    try:
        out = stun.answer(bytes(seed[:cut]), ("::1", 5060))
    except stun.StunError:
        return
    if out is not None:
        stun.parse(out)        # what we send is itself well-formed


def test_a_server_answers_stun_keepalives_on_its_sip_udp_port(tmp_path):
    sip = free_port()
    cfg = server_config(listen=[{"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {}})
    srv = Server(tmp_path / "stun", cfg).start()
    try:
        srv.ctl("register", "alice", "alice-pw")
        u = UA(sip, "alice", "alice-pw")
        assert u.register(600).status == 200
        for fingerprint in (False, True):
            u.sock.sendto(keepalive(tid=bytes(range(12)), fingerprint=fingerprint), ("127.0.0.1", sip))
            out, _ = u.sock.recvfrom(2048)
            assert stun.parse(out).transaction_id == bytes(range(12))
            assert mapped(out) == u.sock.getsockname()
        u.sock.sendto(b"\x00\x01\x00\x00garbage", ("127.0.0.1", sip))        # malformed: no answer
        r = u.transact(u.request("OPTIONS", f"sip:127.0.0.1:{sip}"), auth=False)
        assert r.status == 200                    # the next thing we hear is the SIP answer
        stats = srv.call("sip", "stats")
        assert stats["stun"] == 2 and stats["stun_refused"] == 1
        u.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-3000:]
