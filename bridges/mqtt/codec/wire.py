"""MQTT wire basics: packet types, reason codes, errors, and the primitive readers and writers."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Callable



MAX_REMAINING_LENGTH = 268_435_455   # largest 4-byte Variable Byte Integer (1.5.5)


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes (2.4).  Some values have several names per packet type."""
    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ReturnCode311(IntEnum):
    """MQTT 3.1.1 CONNACK return codes (3.2.2.3); SUBACK failure is 0x80."""
    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


# Which reason codes each 5.0 packet may carry (3.x.2.1 tables).  An unknown code from
# the peer is a Protocol Error rather than something to pass on to the broker.
_RC_CONNACK = frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                         0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F})
_RC_PUBACK = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})  # and PUBREC
_RC_PUBREL = frozenset({0x00, 0x92})                                            # and PUBCOMP
_RC_SUBACK = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
_RC_UNSUBACK = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_RC_DISCONNECT = frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
                            0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B,
                            0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2})
_RC_AUTH = frozenset({0x00, 0x18, 0x19})
_RC_CONNACK_311 = frozenset(range(6))
_RC_SUBACK_311 = frozenset({0x00, 0x01, 0x02, 0x80})

# 5.0 CONNACK code -> nearest 3.1.1 return code, so a broker can refuse any client
# with one code; anything unlisted becomes "server unavailable".
_CONNACK_5_TO_311 = {0x84: 1, 0x85: 2, 0x88: 3, 0x89: 3, 0x86: 4, 0x8C: 4, 0x87: 5, 0x8A: 5}


class MqttError(Exception):
    """A protocol violation; `reason_code` is the MQTT 5.0 reason code to report.

    `packets` holds the packets decoded by the same receive_data() call before the
    error, in case the caller wants to act on them before closing.
    """

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(reason_code, message)
        self.reason_code = reason_code
        self.message = message
        self.packets: list = []  # of packets (codec.packets)

    def __str__(self) -> str:
        return f"{self.message} (reason code 0x{self.reason_code:02X})"


class MalformedPacket(MqttError):
    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.MALFORMED_PACKET, message)


class ProtocolError(MqttError):
    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.PROTOCOL_ERROR, message)



# Value encodings of properties (2.2.2.2), and the readers and writers for each.
_BYTE, _U16, _U32, _VARINT, _BIN, _UTF8, _PAIR = range(7)

# -- primitive readers: (buf, pos, end) -> (value, new_pos) ------------------------------


def _read_u8(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise MalformedPacket("packet truncated")
    return buf[pos], pos + 1


def _read_u16(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("packet truncated")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def _read_u32(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 4 > end:
        raise MalformedPacket("packet truncated")
    return int.from_bytes(buf[pos:pos + 4], "big"), pos + 4


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= end:
            raise MalformedPacket("packet truncated in a variable byte integer")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift:
                raise MalformedPacket("variable byte integer not minimally encoded")  # MQTT-1.5.5-1
            return value, pos
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def _read_bin(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    n, pos = _read_u16(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise MalformedPacket("length-prefixed field runs past the packet")
    return bytes(buf[pos:stop]), stop


def _read_utf8(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    # _read_bin inlined: strings are the bulk of every packet.
    if pos + 2 > end:
        raise MalformedPacket("packet truncated")
    start = pos + 2
    stop = start + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("length-prefixed field runs past the packet")
    try:
        s = str(buf[start:stop], "utf-8")   # strict: no surrogates, no overlongs (MQTT-1.5.4-1)
    except UnicodeDecodeError:
        raise MalformedPacket("ill-formed UTF-8 string") from None
    if "\x00" in s:
        raise MalformedPacket("UTF-8 string contains U+0000")   # MQTT-1.5.4-2
    return s, stop


def _read_pair(buf: bytes, pos: int, end: int) -> tuple[tuple[str, str], int]:
    k, pos = _read_utf8(buf, pos, end)
    v, pos = _read_utf8(buf, pos, end)
    return (k, v), pos


_READERS: dict[int, Callable[[bytes, int, int], tuple[Any, int]]] = {
    _BYTE: _read_u8, _U16: _read_u16, _U32: _read_u32, _VARINT: _read_varint,
    _BIN: _read_bin, _UTF8: _read_utf8, _PAIR: _read_pair,
}


# -- primitive writers ------------------------------------------------------------------

_SMALL_VARINTS = [bytes((i,)) for i in range(128)]


def encode_varint(n: int) -> bytes:
    """A Variable Byte Integer (1.5.5)."""
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {n}")
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(value, position after it); raises MalformedPacket."""
    return _read_varint(data, pos, len(data))


def _u16(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise ValueError(f"two byte integer out of range: {n}")
    return n.to_bytes(2, "big")


def _u32(n: int) -> bytes:
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"four byte integer out of range: {n}")
    return n.to_bytes(4, "big")


def _u8(n: int) -> bytes:
    if not 0 <= n <= 0xFF:
        raise ValueError(f"byte out of range: {n}")
    return _SMALL_VARINTS[n] if n < 128 else bytes((n,))


def _bin(b: bytes | bytearray | memoryview) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + bytes(b)


def _utf8(s: str) -> bytes:
    if "\x00" in s:
        raise ValueError("UTF-8 strings must not contain U+0000")
    return _bin(s.encode("utf-8"))   # UnicodeEncodeError (a ValueError) on lone surrogates


def _pair(kv: tuple[str, str]) -> bytes:
    k, v = kv
    return _utf8(k) + _utf8(v)


_WRITERS: dict[int, Callable[[Any], bytes]] = {
    _BYTE: _u8, _U16: _u16, _U32: _u32, _VARINT: encode_varint,
    _BIN: _bin, _UTF8: _utf8, _PAIR: _pair,
}
