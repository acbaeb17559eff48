"""Sans-IO MQTT codec for 3.1.1 (protocol level 4) and 5.0 (level 5).

Bytes in, packets out; packets in, bytes out.  No sockets, clock or logging, like
h11/wsproto.  References are to the OASIS standards "MQTT Version 5.0" and
"MQTT Version 3.1.1"; [MQTT-x.y.z-n] tags are the normative statements.

    conn = MqttConnection(server_side=True)
    for packet in conn.receive_data(data):      # raises MqttError on a bad peer
        ...
    sock.sendall(conn.send(Connack(reason_code=0)))

Protocol violations by the peer raise `MqttError(reason_code, message)` with the
MQTT 5.0 reason code a broker would put in its CONNACK/DISCONNECT (for 3.1.1 peers
there is no reason code on the wire; the code still says what went wrong).  The
connection is then dead: every later receive_data() raises the same error.

Misuse by the local side (a send() the protocol does not allow, values out of range)
raises ValueError: it is a bug in the caller, not something to tell the peer.

Fan-out uses `encode_publish` / `encode_publish_parts`, which build a PUBLISH once per
(version, qos) and patch only the packet identifier per subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Iterable, Union

from .topics import parse_shared, valid_topic_filter

__all__ = [
    "MAX_REMAINING_LENGTH", "PacketType", "ReasonCode", "ReturnCode311", "PROPERTY_IDS",
    "MqttError", "MalformedPacket", "ProtocolError",
    "SubscriptionOptions", "Will",
    "Connect", "Connack", "Publish", "Puback", "Pubrec", "Pubrel", "Pubcomp",
    "Subscribe", "Suback", "Unsubscribe", "Unsuback", "Pingreq", "Pingresp",
    "Disconnect", "Auth", "Packet",
    "MqttConnection", "PublishTemplate", "encode_publish", "encode_publish_parts",
    "encode_properties", "decode_properties", "encode_varint", "decode_varint",
]

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
        self.packets: list[Packet] = []

    def __str__(self) -> str:
        return f"{self.message} (reason code 0x{self.reason_code:02X})"


class MalformedPacket(MqttError):
    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.MALFORMED_PACKET, message)


class ProtocolError(MqttError):
    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.PROTOCOL_ERROR, message)


# -- properties (2.2.2.2) ---------------------------------------------------------------
#
# A packet's properties are a dict keyed by property name, in wire order.  Values are
# int / str / bytes by type; "user_property" is always a list of (key, value) pairs and
# "subscription_identifier" is a list of ints in PUBLISH (it may repeat there) but a
# single int in SUBSCRIBE.  An inbound PUBLISH keeps its "topic_alias" property (the
# topic is already resolved); strip it, and any subscription identifiers, before
# forwarding.

_BYTE, _U16, _U32, _VARINT, _BIN, _UTF8, _PAIR = range(7)

_PROPERTIES: dict[int, tuple[str, int]] = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _U32),
    0x03: ("content_type", _UTF8),
    0x08: ("response_topic", _UTF8),
    0x09: ("correlation_data", _BIN),
    0x0B: ("subscription_identifier", _VARINT),
    0x11: ("session_expiry_interval", _U32),
    0x12: ("assigned_client_identifier", _UTF8),
    0x13: ("server_keep_alive", _U16),
    0x15: ("authentication_method", _UTF8),
    0x16: ("authentication_data", _BIN),
    0x17: ("request_problem_information", _BYTE),
    0x18: ("will_delay_interval", _U32),
    0x19: ("request_response_information", _BYTE),
    0x1A: ("response_information", _UTF8),
    0x1C: ("server_reference", _UTF8),
    0x1F: ("reason_string", _UTF8),
    0x21: ("receive_maximum", _U16),
    0x22: ("topic_alias_maximum", _U16),
    0x23: ("topic_alias", _U16),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BYTE),
    0x26: ("user_property", _PAIR),
    0x27: ("maximum_packet_size", _U32),
    0x28: ("wildcard_subscription_available", _BYTE),
    0x29: ("subscription_identifier_available", _BYTE),
    0x2A: ("shared_subscription_available", _BYTE),
}
PROPERTY_IDS: dict[str, int] = {name: pid for pid, (name, _) in _PROPERTIES.items()}

# Property sets per packet type; 0 (a reserved packet type) stands for the Will
# Properties in the CONNECT payload.
_WILL = 0
_USER = 0x26
_SUBID = 0x0B
_ALLOWED: dict[int, frozenset[int]] = {
    PacketType.CONNECT: frozenset({0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27}),
    PacketType.CONNACK: frozenset({0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22,
                                   0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A}),
    PacketType.PUBLISH: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26}),
    PacketType.PUBACK: frozenset({0x1F, 0x26}),
    PacketType.PUBREC: frozenset({0x1F, 0x26}),
    PacketType.PUBREL: frozenset({0x1F, 0x26}),
    PacketType.PUBCOMP: frozenset({0x1F, 0x26}),
    PacketType.SUBSCRIBE: frozenset({0x0B, 0x26}),
    PacketType.SUBACK: frozenset({0x1F, 0x26}),
    PacketType.UNSUBSCRIBE: frozenset({0x26}),
    PacketType.UNSUBACK: frozenset({0x1F, 0x26}),
    PacketType.DISCONNECT: frozenset({0x11, 0x1C, 0x1F, 0x26}),
    PacketType.AUTH: frozenset({0x15, 0x16, 0x1F, 0x26}),
    _WILL: frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26}),
}
# Properties whose value is 0 or 1 only; anything else is a Protocol Error.
_FLAG_PROPS = frozenset({"payload_format_indicator", "request_problem_information",
                         "request_response_information", "maximum_qos", "retain_available",
                         "wildcard_subscription_available", "subscription_identifier_available",
                         "shared_subscription_available"})


def _multi(pid: int, ctx: int) -> bool:
    # User Property may repeat anywhere; Subscription Identifier only in PUBLISH (3.3.2.3.8).
    return pid == _USER or (pid == _SUBID and ctx == PacketType.PUBLISH)


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


def _encode_props_body(props: dict[str, Any] | None, ctx: int) -> bytes:
    """Properties without the Property Length prefix, in dict order."""
    if not props:
        return b""
    allowed = _ALLOWED[ctx]
    out = []
    for name, value in props.items():
        pid = PROPERTY_IDS.get(name)
        if pid is None:
            raise ValueError(f"unknown property {name!r}")
        if pid not in allowed:
            raise ValueError(f"property {name!r} is not allowed in {_ctx_name(ctx)}")
        write = _WRITERS[_PROPERTIES[pid][1]]
        head = _SMALL_VARINTS[pid]   # every identifier fits one varint byte
        if _multi(pid, ctx):
            if pid == _SUBID and isinstance(value, int):
                value = (value,)
            for v in value:
                if pid == _SUBID and not 1 <= v <= MAX_REMAINING_LENGTH:
                    raise ValueError(f"subscription identifier out of range: {v}")
                out.append(head + write(v))
        else:
            if pid == _SUBID and not 1 <= value <= MAX_REMAINING_LENGTH:
                raise ValueError(f"subscription identifier out of range: {value}")
            out.append(head + write(value))
    return b"".join(out)


def encode_properties(props: dict[str, Any] | None, packet_type: int) -> bytes:
    """Property Length + properties for `packet_type` (0 for Will Properties)."""
    body = _encode_props_body(props, packet_type)
    return encode_varint(len(body)) + body


def _ctx_name(ctx: int) -> str:
    return "Will Properties" if ctx == _WILL else PacketType(ctx).name


def _decode_props(buf: bytes, pos: int, end: int, ctx: int) -> tuple[dict[str, Any], int]:
    plen, pos = _read_varint(buf, pos, end)
    if plen == 0:
        return {}, pos
    stop = pos + plen
    if stop > end:
        raise MalformedPacket("property length runs past the packet")
    allowed = _ALLOWED[ctx]
    props: dict[str, Any] = {}
    while pos < stop:
        pid, pos = _read_varint(buf, pos, stop)
        info = _PROPERTIES.get(pid)
        if info is None:
            raise MalformedPacket(f"unknown property identifier 0x{pid:02X}")
        if pid not in allowed:
            # 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
            raise MalformedPacket(f"property {info[0]} not allowed in {_ctx_name(ctx)}")
        name, kind = info
        value, pos = _READERS[kind](buf, pos, stop)
        if _multi(pid, ctx):
            props.setdefault(name, []).append(value)
        elif name in props:
            # Each property's own section: "It is a Protocol Error to include ... more than once".
            raise ProtocolError(f"duplicate property {name}")
        else:
            props[name] = value
    _check_props(props, ctx)
    return props, stop


def decode_properties(data: bytes, packet_type: int, pos: int = 0) -> tuple[dict[str, Any], int]:
    """Inverse of encode_properties: (properties, position after them)."""
    return _decode_props(data, pos, len(data), packet_type)


def _check_flag(name: str, value: Any, ctx: int) -> None:
    if value not in (0, 1):
        raise ProtocolError(f"{name} must be 0 or 1")


def _check_nonzero(name: str, value: Any, ctx: int) -> None:
    if value == 0:
        raise ProtocolError(f"{name} must not be 0")


def _check_alias(name: str, value: int, ctx: int) -> None:
    if value == 0:
        raise MqttError(ReasonCode.TOPIC_ALIAS_INVALID, "topic alias 0 is not permitted")  # MQTT-3.3.2-8


def _check_subid(name: str, value: Any, ctx: int) -> None:
    if value == 0 or (ctx == PacketType.PUBLISH and 0 in value):
        raise ProtocolError("subscription identifier 0")


def _check_response_topic(name: str, value: str, ctx: int) -> None:
    if not value or "+" in value or "#" in value:
        raise ProtocolError("response topic must be a topic name")    # MQTT-3.3.2-14


# Value constraints the property sections call Protocol Errors, by property name.
_CHECKS: dict[str, Callable[[str, Any, int], None]] = {
    **{name: _check_flag for name in _FLAG_PROPS},
    "receive_maximum": _check_nonzero,
    "maximum_packet_size": _check_nonzero,
    "topic_alias": _check_alias,
    "subscription_identifier": _check_subid,
    "response_topic": _check_response_topic,
}


def _check_props(props: dict[str, Any], ctx: int) -> None:
    for name, value in props.items():
        check = _CHECKS.get(name)
        if check is not None:
            check(name, value, ctx)
    if "authentication_data" in props and "authentication_method" not in props:
        raise ProtocolError("authentication data without authentication method")


# -- packets ------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SubscriptionOptions:
    qos: int = 0
    no_local: bool = False              # 5.0 only
    retain_as_published: bool = False   # 5.0 only
    retain_handling: int = 0            # 5.0 only: 0 send, 1 send if new, 2 don't send


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    client_id: str = ""
    clean_start: bool = True            # "Clean Session" in 3.1.1
    keepalive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    protocol_level: int = 5             # 3 (3.1, "MQIsdp"), 4 (3.1.1) or 5


@dataclass(slots=True)
class Connack:
    session_present: bool = False
    reason_code: int = 0                # 3.1.1: the return code (0-5)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: list[tuple[str, SubscriptionOptions]]
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list[int]             # 3.1.1: return codes 0, 1, 2 or 0x80
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)   # always empty in 3.1.1
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pingreq:
    pass


@dataclass(slots=True)
class Pingresp:
    pass


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Auth:
    reason_code: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


Packet = Union[Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
               Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth]

_ACK_CLASSES = {PacketType.PUBACK: Puback, PacketType.PUBREC: Pubrec,
                PacketType.PUBREL: Pubrel, PacketType.PUBCOMP: Pubcomp}
_ACK_TYPES = {cls: t for t, cls in _ACK_CLASSES.items()}

# Fixed header flags that are not PUBLISH's (2.1.3): 0b0010 for these, 0 for the rest.
_FLAGS_0010 = frozenset({PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE})
# Packets only a client sends / only a server sends.
_CLIENT_ONLY = frozenset({PacketType.CONNECT, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE,
                          PacketType.PINGREQ})
_SERVER_ONLY = frozenset({PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK,
                          PacketType.PINGRESP})


# -- PUBLISH fast path --------------------------------------------------------------------


class PublishTemplate:
    """A PUBLISH encoded once and re-used for many subscribers of one (version, qos).

    Wire layout: head (fixed header + topic) | packet id (QoS > 0) | tail (properties +
    payload), so `encode(packet_id)` is a single join and `buffers(packet_id)` hands the
    three pieces to a scatter-gather write without copying the payload at all.  A
    per-subscriber retain flag (Retain As Published) or Subscription Identifiers
    (5.0, 3.3.4) are applied by re-deriving the small head.
    """

    __slots__ = ("version", "qos", "retain", "dup", "size",
                 "_topic", "_props", "_payload", "_head", "_tail")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, version: int,
                 properties: dict[str, Any] | None = None, dup: bool = False) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos}")
        if dup and not qos:
            raise ValueError("DUP must be 0 for QoS 0")    # MQTT-3.3.1-2
        self.version = version
        self.qos = qos
        self.retain = bool(retain)
        self.dup = bool(dup)
        self._topic = _utf8(topic)
        self._payload = payload
        # 3.1.1 has no properties: a 5.0 publisher's properties are simply dropped.
        self._props = _encode_props_body(properties, PacketType.PUBLISH) if version == 5 else None
        self._head, self._tail = self._build(self.retain, self._props)
        self.size = len(self._head) + (2 if qos else 0) + len(self._tail)

    def _build(self, retain: bool, props: bytes | None) -> tuple[bytes, bytes]:
        tail = self._payload if props is None else (
            encode_varint(len(props)) + props + self._payload)
        remaining = len(self._topic) + (2 if self.qos else 0) + len(tail)
        if remaining > MAX_REMAINING_LENGTH:
            raise ValueError("PUBLISH larger than the protocol maximum")
        first = 0x30 | (self.dup << 3) | (self.qos << 1) | retain
        return _SMALL_VARINTS[first] + encode_varint(remaining) + self._topic, tail

    def buffers(self, packet_id: int | None = None, *, retain: bool | None = None,
                subscription_ids: Iterable[int] = ()) -> tuple[bytes, ...]:
        """The packet as 2 or 3 buffers (no payload copy) for writev/sendmsg."""
        head, tail = self._head, self._tail
        if subscription_ids and self.version == 5:
            props = (self._props or b"") + b"".join(
                b"\x0b" + encode_varint(i) for i in subscription_ids)
            head, tail = self._build(self.retain if retain is None else retain, props)
        elif retain is not None and retain != self.retain:
            head = _SMALL_VARINTS[head[0] ^ 0x01] + head[1:]
        if not self.qos:
            return head, tail
        if packet_id is None or not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"QoS {self.qos} PUBLISH needs a packet id 1..65535, not {packet_id}")
        return head, packet_id.to_bytes(2, "big"), tail

    def encode(self, packet_id: int | None = None, *, retain: bool | None = None,
               subscription_ids: Iterable[int] = ()) -> bytes:
        """The whole packet; for QoS 0 `packet_id` is ignored."""
        if self.qos and retain is None and not subscription_ids:
            # The hot path of fan-out: one join, no re-encoding.
            if packet_id is None or not 0 < packet_id <= 0xFFFF:
                raise ValueError(f"QoS {self.qos} PUBLISH needs a packet id 1..65535")
            return b"".join((self._head, packet_id.to_bytes(2, "big"), self._tail))
        return b"".join(self.buffers(packet_id, retain=retain, subscription_ids=subscription_ids))


def encode_publish_parts(topic: str, payload: bytes, qos: int, retain: bool, version: int,
                         properties: dict[str, Any] | None = None,
                         dup: bool = False) -> PublishTemplate:
    """Encode a PUBLISH once; call `.encode(packet_id)` per subscriber."""
    return PublishTemplate(topic, payload, qos, retain, version, properties, dup)


def encode_publish(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int | None,
                   version: int, properties: dict[str, Any] | None = None,
                   dup: bool = False) -> bytes:
    """One PUBLISH packet.  The topic is not validated: fan-out passes on a topic the
    codec already checked when it arrived."""
    return PublishTemplate(topic, payload, qos, retain, version, properties, dup).encode(packet_id)


# -- the connection -----------------------------------------------------------------------


class MqttConnection:
    """One end of an MQTT network connection.

    Server side: the version is learned from the first CONNECT and nothing but CONNECT
    is accepted before it.  Client side: the version is taken from the CONNECT passed to
    send(), and the first packet received must be CONNACK (or AUTH in 5.0).

    State kept here is only what decoding needs: the version, inbound topic aliases
    (MQTT 5.0 3.3.2.3.4) and the size limits each side announced.  Sessions, packet
    identifiers in flight and keep-alive belong to the broker.
    """

    def __init__(self, server_side: bool = True, max_packet_size: int = MAX_REMAINING_LENGTH) -> None:
        self.server_side = server_side
        self.max_packet_size = max_packet_size
        self.version: int | None = None
        # Learned from the peer's CONNECT / CONNACK (5.0); the caller must not send
        # bigger packets or more aliases than these.
        self.peer_max_packet_size: int | None = None
        self.peer_topic_alias_maximum = 0
        # The Topic Alias Maximum we announced: inbound aliases above it are invalid.
        self.topic_alias_maximum = 0
        self._aliases: dict[int, str] = {}
        self._buf = bytearray()
        self._error: MqttError | None = None
        self._connected = False         # server: CONNECT received; client: CONNECT sent
        self._connack = False           # client: CONNACK received
        self._disconnected = False      # DISCONNECT received
        self._zero_expiry = True        # server: CONNECT's Session Expiry Interval was 0

    # ---- receiving ----

    def receive_data(self, data: bytes) -> list[Packet]:
        """Feed bytes from the network; returns the packets they complete."""
        if self._error is not None:
            raise self._error
        if self._disconnected:
            return []
        buffered = bool(self._buf)
        if buffered:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        n = len(buf)
        pos = 0
        packets: list[Packet] = []
        # PUBACKs come by the hundred at QoS 1: a bare one (0x40 0x02 id id) is decoded inline,
        # once CONNECT is through (the full path judges everything else, and id 0).
        fast_ack = self._connected and self.server_side
        try:
            while pos < n:
                if fast_ack and buf[pos] == 0x40 and pos + 4 <= n and buf[pos + 1] == 2:
                    pid = (buf[pos + 2] << 8) | buf[pos + 3]
                    if pid:
                        packets.append(Puback(pid, 0, {}))
                        pos += 4
                        continue
                header = self._fixed_header(buf, pos, n)
                if header is None:
                    break
                ptype, flags, start, end = header
                if end > n:
                    break
                if buf is self._buf:
                    # Decode from an immutable copy, made only once a whole packet is in,
                    # so a large packet arriving in small pieces is not copied per piece.
                    buf = bytes(buf)
                packets.append(self._decode(ptype, flags, buf, start, end))
                pos = end
                if self._disconnected:
                    # The peer must close after DISCONNECT (MQTT-3.14.4-1); whatever it
                    # sent after it is dropped rather than turned into an error that
                    # could hide the DISCONNECT (and make the broker publish the Will).
                    self._buf = bytearray()
                    return packets
        except MqttError as exc:
            exc.packets = packets
            self._error = exc
            self._buf = bytearray()
            raise
        if buffered:
            del self._buf[:pos]
        elif pos < n:
            self._buf = bytearray(data[pos:])
        return packets

    def _fixed_header(self, buf: bytes | bytearray, pos: int,
                      n: int) -> tuple[int, int, int, int] | None:
        b0 = buf[pos]
        ptype, flags = b0 >> 4, b0 & 0x0F
        # Judge the type and flags as soon as the first byte arrives, so garbage (an
        # HTTP request, a TLS hello) is refused before waiting for a body.
        self._check_type(ptype, flags)
        value = 0
        i = pos + 1
        for shift in (0, 7, 14, 21):
            if i >= n:
                return None
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise MalformedPacket("remaining length not minimally encoded")
                break
        else:
            raise MalformedPacket("remaining length longer than 4 bytes")
        if i - pos + value > self.max_packet_size:
            # Refuse from the header alone: never buffer a body we will not accept.
            raise MqttError(ReasonCode.PACKET_TOO_LARGE,
                            f"packet of {i - pos + value} bytes exceeds {self.max_packet_size}")
        return ptype, flags, i, i + value

    def _check_type(self, ptype: int, flags: int) -> None:
        if ptype == 0:
            raise MalformedPacket("reserved packet type 0")
        version = self.version
        if self.server_side:
            if not self._connected:
                if ptype != PacketType.CONNECT:
                    raise ProtocolError("first packet must be CONNECT")   # MQTT-3.1.0-1
            elif ptype == PacketType.CONNECT:
                raise ProtocolError("second CONNECT")                    # MQTT-3.1.0-2
            elif ptype in _SERVER_ONLY:
                raise ProtocolError(f"{PacketType(ptype).name} from a client")
        else:
            if not self._connected:
                raise ProtocolError("data received before CONNECT was sent")
            if ptype in _CLIENT_ONLY:
                raise ProtocolError(f"{PacketType(ptype).name} from a server")
            if not self._connack:
                if ptype != PacketType.CONNACK and not (ptype == PacketType.AUTH and version == 5):
                    raise ProtocolError("first packet from the server must be CONNACK")  # MQTT-3.2.0-1
            elif ptype == PacketType.CONNACK:
                raise ProtocolError("second CONNACK")
            if ptype == PacketType.DISCONNECT and version != 5:
                raise ProtocolError("a 3.1.1 server does not send DISCONNECT")
        if ptype == PacketType.AUTH and version is not None and version != 5:
            raise MalformedPacket("packet type 15 is reserved before MQTT 5.0")
        if ptype == PacketType.PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3:
                raise MalformedPacket("PUBLISH with QoS 3")              # MQTT-3.3.1-4
            if qos == 0 and flags & 0x08:
                raise MalformedPacket("DUP set on a QoS 0 PUBLISH")      # MQTT-3.3.1-2
        elif flags != (0b0010 if ptype in _FLAGS_0010 else 0):
            raise MalformedPacket(f"reserved flags 0b{flags:04b} on {PacketType(ptype).name}")

    def _decode(self, ptype: int, flags: int, buf: bytes, pos: int, end: int) -> Packet:
        return _DECODERS[ptype](self, flags, buf, pos, end)

    # Decoders: (self, flags, buf, pos, end) -> packet; [pos, end) is the variable header
    # and payload.  Every decoder must consume exactly up to `end`.

    def _d_connect(self, flags: int, buf: bytes, pos: int, end: int) -> Connect:
        name, pos = _read_bin(buf, pos, end)
        level, pos = _read_u8(buf, pos, end)
        if name == b"MQTT" and level in (4, 5):
            version = level
        elif name == b"MQIsdp" and level == 3:
            # 3.1: the broker refuses it with return code 1 after looking at conn.version.
            version = 3
        else:
            raise MqttError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"unsupported protocol {name!r} level {level}")
        self.version = version
        cflags, pos = _read_u8(buf, pos, end)
        keepalive, pos = _read_u16(buf, pos, end)
        if cflags & 0x01:
            raise MalformedPacket("CONNECT reserved flag set")           # MQTT-3.1.2-3
        will_flag = cflags & 0x04
        will_qos = (cflags >> 3) & 3
        will_retain = bool(cflags & 0x20)
        if will_qos == 3:
            raise MalformedPacket("will QoS 3")
        if not will_flag and (will_qos or will_retain):
            raise MalformedPacket("will QoS/retain set without the will flag")  # MQTT-3.1.2-11/13
        has_user = cflags & 0x80
        has_pass = cflags & 0x40
        if has_pass and not has_user and version < 5:
            raise MalformedPacket("password without user name")         # 3.1.1 MQTT-3.1.2-22
        props: dict[str, Any] = {}
        if version == 5:
            props, pos = _decode_props(buf, pos, end, PacketType.CONNECT)
        client_id, pos = _read_utf8(buf, pos, end)
        will = None
        if will_flag:
            wprops: dict[str, Any] = {}
            if version == 5:
                wprops, pos = _decode_props(buf, pos, end, _WILL)
            wtopic, pos = _read_utf8(buf, pos, end)
            if not wtopic or "+" in wtopic or "#" in wtopic:
                raise MqttError(ReasonCode.TOPIC_NAME_INVALID, f"invalid will topic {wtopic!r}")
            wpayload, pos = _read_bin(buf, pos, end)
            will = Will(wtopic, wpayload, will_qos, will_retain, wprops)
        username = password = None
        if has_user:
            username, pos = _read_utf8(buf, pos, end)
        if has_pass:
            password, pos = _read_bin(buf, pos, end)
        _expect_end(pos, end, "CONNECT")
        self._connected = True
        if version == 5:
            self.peer_max_packet_size = props.get("maximum_packet_size")
            self.peer_topic_alias_maximum = props.get("topic_alias_maximum", 0)
            self._zero_expiry = not props.get("session_expiry_interval")
        return Connect(client_id, bool(cflags & 0x02), keepalive, username, password, will,
                       props, level)

    def _d_connack(self, flags: int, buf: bytes, pos: int, end: int) -> Connack:
        ack, pos = _read_u8(buf, pos, end)
        rc, pos = _read_u8(buf, pos, end)
        if ack & 0xFE:
            raise MalformedPacket("CONNACK reserved flags set")          # MQTT-3.2.2-1
        props: dict[str, Any] = {}
        if self.version == 5:
            if rc not in _RC_CONNACK:
                raise ProtocolError(f"invalid CONNACK reason code 0x{rc:02X}")
            props, pos = _decode_props(buf, pos, end, PacketType.CONNACK)
            self.peer_max_packet_size = props.get("maximum_packet_size")
            self.peer_topic_alias_maximum = props.get("topic_alias_maximum", 0)
        elif rc not in _RC_CONNACK_311:
            raise ProtocolError(f"invalid CONNACK return code {rc}")
        if ack and rc:
            raise ProtocolError("session present with a refusal")        # MQTT-3.2.2-4/6
        _expect_end(pos, end, "CONNACK")
        self._connack = True
        return Connack(bool(ack), rc, props)

    def _d_publish(self, flags: int, buf: bytes, pos: int, end: int) -> Publish:
        qos = (flags >> 1) & 3
        topic, pos = _read_utf8(buf, pos, end)
        if "+" in topic or "#" in topic:
            raise MqttError(ReasonCode.TOPIC_NAME_INVALID,
                            f"wildcard in PUBLISH topic {topic!r}")      # MQTT-3.3.2-2
        packet_id = None
        if qos:
            packet_id, pos = _read_u16(buf, pos, end)
            if not packet_id:
                raise ProtocolError("PUBLISH with packet id 0")          # MQTT-2.2.1-3
        props: dict[str, Any] = {}
        if self.version == 5:
            props, pos = _decode_props(buf, pos, end, PacketType.PUBLISH)
            if props:
                if self.server_side and "subscription_identifier" in props:
                    raise ProtocolError("subscription identifier from a client")  # MQTT-3.3.4-6
                alias = props.get("topic_alias")
                if alias is not None:
                    if alias > self.topic_alias_maximum:
                        raise MqttError(ReasonCode.TOPIC_ALIAS_INVALID,
                                        f"topic alias {alias} above maximum {self.topic_alias_maximum}")
                    if topic:
                        self._aliases[alias] = topic
                    else:
                        mapped = self._aliases.get(alias)
                        if mapped is None:
                            raise ProtocolError(f"unknown topic alias {alias}")
                        topic = mapped
            if not topic:
                raise ProtocolError("empty topic name without topic alias")   # 3.3.2.3.4
        elif not topic:
            # 3.1.1 has no reason codes on the wire; "topic name invalid" says what happened.
            raise MqttError(ReasonCode.TOPIC_NAME_INVALID, "empty topic name")  # MQTT-4.7.3-1
        return Publish(topic, bytes(buf[pos:end]), qos, bool(flags & 1), bool(flags & 8),
                       packet_id, props)

    def _d_ack(self, ptype: int, buf: bytes, pos: int, end: int) -> Packet:
        packet_id, pos = _read_u16(buf, pos, end)
        if not packet_id:
            raise ProtocolError(f"{PacketType(ptype).name} with packet id 0")
        rc = 0
        props: dict[str, Any] = {}
        if self.version == 5 and pos < end:
            # 3.4.2.1: reason code and properties may be omitted (remaining length 2 / 3).
            rc, pos = _read_u8(buf, pos, end)
            valid = _RC_PUBACK if ptype in (PacketType.PUBACK, PacketType.PUBREC) else _RC_PUBREL
            if rc not in valid:
                raise ProtocolError(f"invalid {PacketType(ptype).name} reason code 0x{rc:02X}")
            if pos < end:
                props, pos = _decode_props(buf, pos, end, ptype)
        _expect_end(pos, end, PacketType(ptype).name)
        return _ACK_CLASSES[ptype](packet_id, rc, props)

    def _d_puback(self, flags, buf, pos, end):
        return self._d_ack(PacketType.PUBACK, buf, pos, end)

    def _d_pubrec(self, flags, buf, pos, end):
        return self._d_ack(PacketType.PUBREC, buf, pos, end)

    def _d_pubrel(self, flags, buf, pos, end):
        return self._d_ack(PacketType.PUBREL, buf, pos, end)

    def _d_pubcomp(self, flags, buf, pos, end):
        return self._d_ack(PacketType.PUBCOMP, buf, pos, end)

    def _d_subscribe(self, flags: int, buf: bytes, pos: int, end: int) -> Subscribe:
        packet_id, pos = _read_u16(buf, pos, end)
        if not packet_id:
            raise ProtocolError("SUBSCRIBE with packet id 0")            # MQTT-2.2.1-3
        v5 = self.version == 5
        props: dict[str, Any] = {}
        if v5:
            props, pos = _decode_props(buf, pos, end, PacketType.SUBSCRIBE)
        subs: list[tuple[str, SubscriptionOptions]] = []
        while pos < end:
            topic_filter, pos = _read_utf8(buf, pos, end)
            opts, pos = _read_u8(buf, pos, end)
            qos = opts & 3
            if v5:
                if opts & 0xC0:
                    raise MalformedPacket("reserved subscription option bits set")  # MQTT-3.8.3-5
                if qos == 3:
                    raise ProtocolError("subscription with QoS 3")
                retain_handling = (opts >> 4) & 3
                if retain_handling == 3:
                    raise ProtocolError("retain handling 3")
                options = SubscriptionOptions(qos, bool(opts & 4), bool(opts & 8), retain_handling)
            else:
                if opts & 0xFC:
                    raise MalformedPacket("reserved subscription option bits set")  # 3.1.1 MQTT-3-8.3-4
                if qos == 3:
                    raise MalformedPacket("subscription with QoS 3")
                options = SubscriptionOptions(qos)
            _check_filter(topic_filter)
            if options.no_local and topic_filter.startswith("$share/"):
                raise ProtocolError("no local on a shared subscription")  # MQTT-3.8.3-4
            subs.append((topic_filter, options))
        if not subs:
            raise ProtocolError("SUBSCRIBE without topic filters")       # MQTT-3.8.3-2
        return Subscribe(packet_id, subs, props)

    def _d_suback(self, flags: int, buf: bytes, pos: int, end: int) -> Suback:
        packet_id, pos = _read_u16(buf, pos, end)
        if not packet_id:
            raise ProtocolError("SUBACK with packet id 0")
        props: dict[str, Any] = {}
        valid = _RC_SUBACK_311
        if self.version == 5:
            props, pos = _decode_props(buf, pos, end, PacketType.SUBACK)
            valid = _RC_SUBACK
        codes = list(buf[pos:end])
        if not codes:
            raise ProtocolError("SUBACK without reason codes")
        for rc in codes:
            if rc not in valid:
                raise ProtocolError(f"invalid SUBACK reason code 0x{rc:02X}")
        return Suback(packet_id, codes, props)

    def _d_unsubscribe(self, flags: int, buf: bytes, pos: int, end: int) -> Unsubscribe:
        packet_id, pos = _read_u16(buf, pos, end)
        if not packet_id:
            raise ProtocolError("UNSUBSCRIBE with packet id 0")
        props: dict[str, Any] = {}
        if self.version == 5:
            props, pos = _decode_props(buf, pos, end, PacketType.UNSUBSCRIBE)
        filters = []
        while pos < end:
            topic_filter, pos = _read_utf8(buf, pos, end)
            _check_filter(topic_filter)
            filters.append(topic_filter)
        if not filters:
            raise ProtocolError("UNSUBSCRIBE without topic filters")     # MQTT-3.10.3-2
        return Unsubscribe(packet_id, filters, props)

    def _d_unsuback(self, flags: int, buf: bytes, pos: int, end: int) -> Unsuback:
        packet_id, pos = _read_u16(buf, pos, end)
        if not packet_id:
            raise ProtocolError("UNSUBACK with packet id 0")
        if self.version != 5:
            _expect_end(pos, end, "UNSUBACK")
            return Unsuback(packet_id)
        props, pos = _decode_props(buf, pos, end, PacketType.UNSUBACK)
        codes = list(buf[pos:end])
        if not codes:
            raise ProtocolError("UNSUBACK without reason codes")
        for rc in codes:
            if rc not in _RC_UNSUBACK:
                raise ProtocolError(f"invalid UNSUBACK reason code 0x{rc:02X}")
        return Unsuback(packet_id, codes, props)

    def _d_pingreq(self, flags, buf, pos, end):
        _expect_end(pos, end, "PINGREQ")
        return Pingreq()

    def _d_pingresp(self, flags, buf, pos, end):
        _expect_end(pos, end, "PINGRESP")
        return Pingresp()

    def _d_disconnect(self, flags: int, buf: bytes, pos: int, end: int) -> Disconnect:
        rc = 0
        props: dict[str, Any] = {}
        if self.version == 5 and pos < end:
            rc, pos = _read_u8(buf, pos, end)
            if rc not in _RC_DISCONNECT:
                raise ProtocolError(f"invalid DISCONNECT reason code 0x{rc:02X}")
            if pos < end:
                props, pos = _decode_props(buf, pos, end, PacketType.DISCONNECT)
            if "session_expiry_interval" in props:
                if not self.server_side:
                    raise ProtocolError("session expiry interval in a server DISCONNECT")  # MQTT-3.14.2-2
                if self._zero_expiry and props["session_expiry_interval"]:
                    raise ProtocolError("session expiry set after CONNECT said 0")  # 3.14.2.2.2
        _expect_end(pos, end, "DISCONNECT")
        self._disconnected = True
        return Disconnect(rc, props)

    def _d_auth(self, flags: int, buf: bytes, pos: int, end: int) -> Auth:
        rc = 0
        props: dict[str, Any] = {}
        if pos < end:
            rc, pos = _read_u8(buf, pos, end)
            if rc not in _RC_AUTH:
                raise ProtocolError(f"invalid AUTH reason code 0x{rc:02X}")
            if pos < end:
                props, pos = _decode_props(buf, pos, end, PacketType.AUTH)
        _expect_end(pos, end, "AUTH")
        return Auth(rc, props)

    # ---- sending ----

    def send(self, packet: Packet) -> bytes:
        """Encode `packet` for this connection's version.

        Fields the version cannot carry are dropped rather than refused, so a broker
        can build one packet for every client: properties and reason codes on 3.1.1,
        5.0 SUBACK failure codes become 0x80, 5.0 CONNACK refusals the nearest 3.1.1
        return code, and a server-side DISCONNECT on 3.1.1 encodes to b"" (3.1.1 has
        none; just close).  Before a CONNECT has been received, a server may still send
        a CONNACK (to refuse an unsupported protocol version); it is encoded as 3.1.1.
        """
        encoder = _ENCODERS.get(type(packet))
        if encoder is None:
            raise TypeError(f"not an MQTT packet: {packet!r}")
        ptype = _PACKET_TYPES[type(packet)]
        if self.server_side:
            if ptype in _CLIENT_ONLY:
                raise ValueError(f"a server does not send {ptype.name}")
            if self.version is None and ptype != PacketType.CONNACK:
                raise ValueError("no CONNECT received yet")
        else:
            if ptype in _SERVER_ONLY:
                raise ValueError(f"a client does not send {ptype.name}")
            if ptype == PacketType.CONNECT:
                if self._connected:
                    raise ValueError("CONNECT already sent")
            elif not self._connected:
                raise ValueError("the first packet a client sends must be CONNECT")
        version = 4 if self.version in (None, 3) else self.version
        data = encoder(self, packet, version)
        if self.peer_max_packet_size is not None and len(data) > self.peer_max_packet_size:
            # MQTT-3.1.2-24 / 3.2.2.3.6: such a packet must not be sent (a PUBLISH is
            # dropped as if delivered); the caller decides.
            raise MqttError(ReasonCode.PACKET_TOO_LARGE,
                            f"{len(data)} bytes exceeds the peer's maximum {self.peer_max_packet_size}")
        return data

    def _e_connect(self, p: Connect, version: int) -> bytes:
        level = p.protocol_level
        if level not in (3, 4, 5):
            raise ValueError(f"unsupported protocol level {level}")
        v5 = level == 5
        flags = 0x02 if p.clean_start else 0
        parts = []
        if v5:
            parts.append(encode_properties(p.properties, PacketType.CONNECT))
        parts.append(_utf8(p.client_id))
        if p.will is not None:
            w = p.will
            if w.qos not in (0, 1, 2):
                raise ValueError(f"invalid will QoS {w.qos}")
            flags |= 0x04 | (w.qos << 3) | (0x20 if w.retain else 0)
            if v5:
                parts.append(encode_properties(w.properties, _WILL))
            parts.append(_utf8(w.topic))
            parts.append(_bin(w.payload))
        if p.username is not None:
            flags |= 0x80
            parts.append(_utf8(p.username))
        if p.password is not None:
            if p.username is None and not v5:
                raise ValueError("3.1.1 does not allow a password without a user name")
            flags |= 0x40
            pw = p.password.encode("utf-8") if isinstance(p.password, str) else p.password
            parts.append(_bin(pw))
        name = b"MQIsdp" if level == 3 else b"MQTT"
        header = _bin(name) + bytes((level, flags)) + _u16(p.keepalive)
        data = _packet(0x10, header, *parts)
        self.version = level
        self._connected = True
        if v5:
            self.topic_alias_maximum = p.properties.get("topic_alias_maximum", 0)
            self._zero_expiry = not p.properties.get("session_expiry_interval")
            self._announce_max(p.properties)
        return data

    def _e_connack(self, p: Connack, version: int) -> bytes:
        rc = p.reason_code
        if version == 5:
            if rc not in _RC_CONNACK:
                raise ValueError(f"invalid CONNACK reason code 0x{rc:02X}")
            body = bytes((1 if p.session_present else 0, rc)) + encode_properties(
                p.properties, PacketType.CONNACK)
            self.topic_alias_maximum = p.properties.get("topic_alias_maximum", 0)
            self._announce_max(p.properties)
        else:
            if rc >= 0x80:
                rc = _CONNACK_5_TO_311.get(rc, ReturnCode311.SERVER_UNAVAILABLE)
            if rc not in _RC_CONNACK_311:
                raise ValueError(f"invalid 3.1.1 CONNACK return code {rc}")
            body = bytes((1 if p.session_present else 0, rc))
        if p.session_present and rc:
            raise ValueError("session present must be 0 on a refusal")
        return _packet(0x20, body)

    def _announce_max(self, props: dict[str, Any]) -> None:
        # What we told the peer is the limit we enforce on what it sends.
        announced = props.get("maximum_packet_size")
        if announced is not None:
            self.max_packet_size = min(self.max_packet_size, announced)

    def _e_publish(self, p: Publish, version: int) -> bytes:
        topic = p.topic
        if "+" in topic or "#" in topic:
            raise ValueError(f"wildcard in topic name {topic!r}")
        if version == 5 and p.properties:
            alias = p.properties.get("topic_alias")
            if alias is not None and not 0 < alias <= self.peer_topic_alias_maximum:
                raise ValueError(f"topic alias {alias} outside 1..{self.peer_topic_alias_maximum}")
            if not self.server_side and "subscription_identifier" in p.properties:
                raise ValueError("a client must not send a subscription identifier")  # MQTT-3.3.4-6
        if not topic and not (version == 5 and p.properties.get("topic_alias")):
            raise ValueError("empty topic name without a topic alias")
        return PublishTemplate(topic, p.payload, p.qos, p.retain, version, p.properties,
                               p.dup).encode(p.packet_id)

    def _e_ack(self, p: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> bytes:
        ptype = _ACK_TYPES[type(p)]
        first = (ptype << 4) | (0b0010 if ptype == PacketType.PUBREL else 0)
        if not 0 < p.packet_id <= 0xFFFF:
            raise ValueError(f"invalid packet id {p.packet_id}")
        pid = p.packet_id.to_bytes(2, "big")
        if version == 5:
            _check_rc(p.reason_code, _RC_PUBACK if ptype in (PacketType.PUBACK, PacketType.PUBREC)
                      else _RC_PUBREL, ptype)
        if version != 5 or (p.reason_code == 0 and not p.properties):
            return bytes((first, 2)) + pid
        if p.properties:
            return _packet(first, pid, _u8(p.reason_code), encode_properties(p.properties, ptype))
        return _packet(first, pid, _u8(p.reason_code))

    def _e_subscribe(self, p: Subscribe, version: int) -> bytes:
        if not p.subscriptions:
            raise ValueError("SUBSCRIBE needs at least one topic filter")
        parts = [_packet_id(p.packet_id)]
        if version == 5:
            parts.append(encode_properties(p.properties, PacketType.SUBSCRIBE))
        for topic_filter, o in p.subscriptions:
            if o.qos not in (0, 1, 2) or o.retain_handling not in (0, 1, 2):
                raise ValueError(f"invalid subscription options {o}")
            opts = o.qos
            if version == 5:
                opts |= (o.no_local << 2) | (o.retain_as_published << 3) | (o.retain_handling << 4)
            parts.append(_utf8(topic_filter))
            parts.append(_SMALL_VARINTS[opts])
        return _packet(0x82, *parts)

    def _e_suback(self, p: Suback, version: int) -> bytes:
        if not p.reason_codes:
            raise ValueError("SUBACK needs at least one reason code")
        if version == 5:
            for rc in p.reason_codes:
                _check_rc(rc, _RC_SUBACK, PacketType.SUBACK)
            return _packet(0x90, _packet_id(p.packet_id),
                           encode_properties(p.properties, PacketType.SUBACK), bytes(p.reason_codes))
        return _packet(0x90, _packet_id(p.packet_id),
                       bytes(rc if rc < 0x80 else 0x80 for rc in p.reason_codes))

    def _e_unsubscribe(self, p: Unsubscribe, version: int) -> bytes:
        if not p.topic_filters:
            raise ValueError("UNSUBSCRIBE needs at least one topic filter")
        parts = [_packet_id(p.packet_id)]
        if version == 5:
            parts.append(encode_properties(p.properties, PacketType.UNSUBSCRIBE))
        parts.extend(_utf8(f) for f in p.topic_filters)
        return _packet(0xA2, *parts)

    def _e_unsuback(self, p: Unsuback, version: int) -> bytes:
        if version != 5:
            return b"\xb0\x02" + _packet_id(p.packet_id)
        if not p.reason_codes:
            raise ValueError("a 5.0 UNSUBACK needs one reason code per topic filter")
        for rc in p.reason_codes:
            _check_rc(rc, _RC_UNSUBACK, PacketType.UNSUBACK)
        return _packet(0xB0, _packet_id(p.packet_id),
                       encode_properties(p.properties, PacketType.UNSUBACK), bytes(p.reason_codes))

    def _e_pingreq(self, p: Pingreq, version: int) -> bytes:
        return b"\xc0\x00"

    def _e_pingresp(self, p: Pingresp, version: int) -> bytes:
        return b"\xd0\x00"

    def _e_disconnect(self, p: Disconnect, version: int) -> bytes:
        if version != 5:
            return b"" if self.server_side else b"\xe0\x00"
        _check_rc(p.reason_code, _RC_DISCONNECT, PacketType.DISCONNECT)
        if p.reason_code == 0 and not p.properties:
            return b"\xe0\x00"
        if p.properties:
            return _packet(0xE0, _u8(p.reason_code),
                           encode_properties(p.properties, PacketType.DISCONNECT))
        return _packet(0xE0, _u8(p.reason_code))

    def _e_auth(self, p: Auth, version: int) -> bytes:
        if version != 5:
            raise ValueError("AUTH exists only in MQTT 5.0")
        _check_rc(p.reason_code, _RC_AUTH, PacketType.AUTH)
        if p.reason_code == 0 and not p.properties:
            return b"\xf0\x00"
        return _packet(0xF0, _u8(p.reason_code), encode_properties(p.properties, PacketType.AUTH))


def _packet(first: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) > MAX_REMAINING_LENGTH:
        raise ValueError("packet larger than the protocol maximum")
    return bytes((first,)) + encode_varint(len(body)) + body


def _packet_id(pid: int) -> bytes:
    if not 0 < pid <= 0xFFFF:
        raise ValueError(f"invalid packet id {pid}")
    return pid.to_bytes(2, "big")


def _check_rc(rc: int, valid: frozenset[int], ptype: int) -> None:
    if rc not in valid:
        raise ValueError(f"reason code 0x{rc:02X} is not valid in {PacketType(ptype).name}")


def _expect_end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MalformedPacket(f"{end - pos} unexpected bytes at the end of {what}")


def _check_filter(topic_filter: str) -> None:
    if not valid_topic_filter(topic_filter):
        raise MqttError(ReasonCode.TOPIC_FILTER_INVALID, f"invalid topic filter {topic_filter!r}")
    try:
        parse_shared(topic_filter)
    except ValueError as exc:
        raise MqttError(ReasonCode.TOPIC_FILTER_INVALID, str(exc)) from None


_C = MqttConnection
_DECODERS: dict[int, Callable[..., Packet]] = {
    PacketType.CONNECT: _C._d_connect, PacketType.CONNACK: _C._d_connack,
    PacketType.PUBLISH: _C._d_publish, PacketType.PUBACK: _C._d_puback,
    PacketType.PUBREC: _C._d_pubrec, PacketType.PUBREL: _C._d_pubrel,
    PacketType.PUBCOMP: _C._d_pubcomp, PacketType.SUBSCRIBE: _C._d_subscribe,
    PacketType.SUBACK: _C._d_suback, PacketType.UNSUBSCRIBE: _C._d_unsubscribe,
    PacketType.UNSUBACK: _C._d_unsuback, PacketType.PINGREQ: _C._d_pingreq,
    PacketType.PINGRESP: _C._d_pingresp, PacketType.DISCONNECT: _C._d_disconnect,
    PacketType.AUTH: _C._d_auth,
}
_ENCODERS: dict[type, Callable[..., bytes]] = {
    Connect: _C._e_connect, Connack: _C._e_connack, Publish: _C._e_publish,
    Puback: _C._e_ack, Pubrec: _C._e_ack, Pubrel: _C._e_ack, Pubcomp: _C._e_ack,
    Subscribe: _C._e_subscribe, Suback: _C._e_suback, Unsubscribe: _C._e_unsubscribe,
    Unsuback: _C._e_unsuback, Pingreq: _C._e_pingreq, Pingresp: _C._e_pingresp,
    Disconnect: _C._e_disconnect, Auth: _C._e_auth,
}
_PACKET_TYPES: dict[type, PacketType] = {
    Connect: PacketType.CONNECT, Connack: PacketType.CONNACK, Publish: PacketType.PUBLISH,
    Puback: PacketType.PUBACK, Pubrec: PacketType.PUBREC, Pubrel: PacketType.PUBREL,
    Pubcomp: PacketType.PUBCOMP, Subscribe: PacketType.SUBSCRIBE, Suback: PacketType.SUBACK,
    Unsubscribe: PacketType.UNSUBSCRIBE, Unsuback: PacketType.UNSUBACK,
    Pingreq: PacketType.PINGREQ, Pingresp: PacketType.PINGRESP,
    Disconnect: PacketType.DISCONNECT, Auth: PacketType.AUTH,
}
del _C
