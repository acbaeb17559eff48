"""The MQTT packets as values, and the PUBLISH fast path (one encoding per version and QoS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from .wire import MAX_REMAINING_LENGTH, PacketType, _SMALL_VARINTS, _utf8, encode_varint
from .properties import _encode_props_body

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
                 "_topic", "_props", "_payload", "_head", "_tail", "_whole")

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
        self._whole: bytes | None = None      # QoS 0: the same packet for every subscriber, joined once
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
        if not self.qos and not subscription_ids and (retain is None or retain == self.retain):
            whole = self._whole
            if whole is None:
                whole = self._whole = self._head + self._tail
            return whole
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
