"""The sans-IO MQTT connection: bytes in, packets out; packets in, bytes out (see the package docstring)."""

from __future__ import annotations

from typing import Any, Callable

from relay.core.topics import parse_shared, valid_topic_filter
from .wire import (MAX_REMAINING_LENGTH, MalformedPacket, MqttError, PacketType, ProtocolError, ReasonCode,
                   ReturnCode311, _CONNACK_5_TO_311, _RC_AUTH, _RC_CONNACK, _RC_CONNACK_311, _RC_DISCONNECT,
                   _RC_PUBACK, _RC_PUBREL, _RC_SUBACK, _RC_SUBACK_311, _RC_UNSUBACK, _SMALL_VARINTS, _bin, _read_bin,
                   _read_u16, _read_u8, _read_utf8, _u16, _u8, _utf8, encode_varint)
from .properties import _WILL, _decode_props, encode_properties
from .packets import (Auth, Connack, Connect, Disconnect, Packet, Pingreq, Pingresp, Puback, Pubcomp, Publish,
                      PublishTemplate, Pubrec, Pubrel, Suback, Subscribe, SubscriptionOptions, Unsuback, Unsubscribe,
                      Will, _ACK_CLASSES, _ACK_TYPES, _CLIENT_ONLY, _FLAGS_0010, _SERVER_ONLY)

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
