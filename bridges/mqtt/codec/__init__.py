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

Layout, like h11: `wire` (packet types, reason codes, errors, primitives),
`properties`, `packets` (the packet values and the PUBLISH fast path) and
`connection` (MqttConnection).
"""

from __future__ import annotations

from .wire import (MAX_REMAINING_LENGTH, PacketType, ReasonCode, ReturnCode311, MqttError, MalformedPacket,
                   ProtocolError, encode_varint, decode_varint)
from .properties import PROPERTY_IDS, encode_properties, decode_properties
from .packets import (SubscriptionOptions, Will, Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp,
                      Subscribe, Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth, Packet,
                      PublishTemplate, encode_publish, encode_publish_parts)
from .connection import MqttConnection

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
