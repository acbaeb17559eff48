"""STUN (RFC 5389) as far as SIP outbound keepalives need it (RFC 5626 §4.4.2 and §8.4): a Binding
request that arrives on a SIP UDP port is answered with a Binding success carrying XOR-MAPPED-ADDRESS
(the source the request came from), so the user agent knows its flow (and its NAT binding) is alive.
Sans-IO: bytes in, bytes out, no sockets.

Which datagram is STUN (RFC 7983 §7): its first byte is 0..3; a SIP message starts with a letter.
Malformed messages raise StunError (the caller drops them unanswered); a request with attributes we
must understand but do not (0x0000-0x7FFF) gets the 420 error response with UNKNOWN-ATTRIBUTES.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
BINDING = 0x001
CLASS_REQUEST, CLASS_SUCCESS, CLASS_ERROR = 0b00, 0b10, 0b11
XOR_MAPPED_ADDRESS = 0x0020
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
MAX_ATTRIBUTES = 32


class StunError(ValueError):
    """Not a well-formed STUN message (the reason says why); dropped unanswered."""


@dataclass(frozen=True, slots=True)
class StunMessage:
    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    fingerprint: bool               # it carried a (valid) FINGERPRINT


def is_stun(data: bytes) -> bool:
    return len(data) > 0 and data[0] < 4


def _split_type(t: int) -> tuple[int, int]:
    """The 14-bit method and 2-bit class interleaved in the message type (RFC 5389 §6)."""
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t & 0x0010) >> 4) | ((t & 0x0100) >> 7)
    return method, cls


def _join_type(method: int, cls: int) -> int:
    return ((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) |
            ((cls & 1) << 4) | ((cls & 2) << 7))


def _fingerprint(data: bytes) -> int:
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def parse(data: bytes) -> StunMessage:
    if len(data) < HEADER.size:
        raise StunError("shorter than a STUN header")
    t, length, cookie, tid = HEADER.unpack_from(data)
    if t & 0xC000:
        raise StunError("the two top bits of the type are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("no magic cookie (RFC 3489 clients are not served)")
    if length % 4 or HEADER.size + length != len(data):
        raise StunError("the length is not the rest of the datagram in whole words")
    method, cls = _split_type(t)
    attrs: list[tuple[int, bytes]] = []
    fingerprint = False
    pos = HEADER.size
    while pos < len(data):
        if fingerprint:
            raise StunError("an attribute after FINGERPRINT")
        if len(attrs) >= MAX_ATTRIBUTES:
            raise StunError("too many attributes")
        if pos + 4 > len(data):
            raise StunError("a truncated attribute header")
        a_type, a_len = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + a_len
        if end > len(data):
            raise StunError("an attribute longer than the message")
        value = data[pos + 4:end]
        if a_type == FINGERPRINT:
            if a_len != 4:
                raise StunError("FINGERPRINT is not 4 bytes")
            # The CRC covers the message up to the attribute, with the length as sent (which includes it).
            if struct.unpack("!I", value)[0] != _fingerprint(data[:pos]):
                raise StunError("FINGERPRINT does not match")
            fingerprint = True
        else:
            attrs.append((a_type, value))
        pos = end + (-a_len % 4)
        if pos > len(data):
            raise StunError("an attribute's padding is missing")
    return StunMessage(method, cls, tid, tuple(attrs), fingerprint)


def _attribute(a_type: int, value: bytes) -> bytes:
    return struct.pack("!HH", a_type, len(value)) + value + b"\0" * (-len(value) % 4)


def _xor_address(host: str, port: int, tid: bytes) -> bytes:
    ip = ipaddress.ip_address(host.strip("[]"))
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        return struct.pack("!BBHI", 0, 1, xport, int(ip) ^ MAGIC_COOKIE)
    mask = int.from_bytes(struct.pack("!I", MAGIC_COOKIE) + tid, "big")
    return struct.pack("!BBH", 0, 2, xport) + (int(ip) ^ mask).to_bytes(16, "big")


def _message(method: int, cls: int, tid: bytes, attrs: list[bytes], fingerprint: bool) -> bytes:
    body = b"".join(attrs)
    if not fingerprint:
        return HEADER.pack(_join_type(method, cls), len(body), MAGIC_COOKIE, tid) + body
    head = HEADER.pack(_join_type(method, cls), len(body) + 8, MAGIC_COOKIE, tid) + body
    return head + _attribute(FINGERPRINT, struct.pack("!I", _fingerprint(head)))


def binding_success(request: StunMessage, host: str, port: int) -> bytes:
    """The Binding success for `request` that came from (host, port); FINGERPRINT if the request had it."""
    return _message(BINDING, CLASS_SUCCESS, request.transaction_id,
                    [_attribute(XOR_MAPPED_ADDRESS, _xor_address(host, port, request.transaction_id))],
                    request.fingerprint)


def error_response(request: StunMessage, code: int, reason: str, unknown: tuple[int, ...] = ()) -> bytes:
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
    attrs = [_attribute(ERROR_CODE, value)]
    if unknown:
        attrs.append(_attribute(UNKNOWN_ATTRIBUTES, b"".join(struct.pack("!H", a) for a in unknown)))
    return _message(request.method, CLASS_ERROR, request.transaction_id, attrs, request.fingerprint)


def answer(data: bytes, source: tuple[str, int]) -> bytes | None:
    """What to send back for the datagram `data` from `source`: a Binding success, a 420 for attributes we
    must understand and do not, None for anything else (indications, responses, other methods: §7.3)."""
    msg = parse(data)
    if msg.cls != CLASS_REQUEST or msg.method != BINDING:
        return None
    unknown = tuple(dict.fromkeys(a for a, _ in msg.attributes if a < 0x8000))
    if unknown:
        return error_response(msg, 420, "Unknown Attribute", unknown[:16])
    return binding_success(msg, source[0], source[1])
