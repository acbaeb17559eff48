"""MQTT 5.0 properties (2.2.2.2): the table, which packets may carry which, encoding, decoding, checks."""

from __future__ import annotations

from typing import Any, Callable

from .wire import (_BIN, _BYTE, _PAIR, _U16, _U32, _UTF8, _VARINT, MAX_REMAINING_LENGTH, MalformedPacket, MqttError,
                   PacketType, ProtocolError, ReasonCode, _READERS, _SMALL_VARINTS, _WRITERS, _read_varint,
                   encode_varint)

# -- properties (2.2.2.2) ---------------------------------------------------------------
#
# A packet's properties are a dict keyed by property name, in wire order.  Values are
# int / str / bytes by type; "user_property" is always a list of (key, value) pairs and
# "subscription_identifier" is a list of ints in PUBLISH (it may repeat there) but a
# single int in SUBSCRIBE.  An inbound PUBLISH keeps its "topic_alias" property (the
# topic is already resolved); strip it, and any subscription identifiers, before
# forwarding.


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
