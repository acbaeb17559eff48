"""The sans-IO MQTT codec, driven from bytes: round trips, spec and paho byte strings,
framing, and every malformed case the codec must refuse (with its reason code)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridges.mqtt.codec import (
    Auth, Connack, Connect, Disconnect, MalformedPacket, MqttConnection, MqttError, Pingreq,
    Pingresp, ProtocolError, Puback, Pubcomp, Publish, PublishTemplate, Pubrec, Pubrel,
    Suback, Subscribe, SubscriptionOptions, Unsuback, Unsubscribe, Will, decode_properties,
    decode_varint, encode_properties, encode_publish, encode_publish_parts, encode_varint,
)

MALFORMED, PROTOCOL, UNSUPPORTED = 0x81, 0x82, 0x84
FILTER_INVALID, TOPIC_INVALID, ALIAS_INVALID, TOO_LARGE = 0x8F, 0x90, 0x94, 0x95


# -- helpers ------------------------------------------------------------------------------


def pkt(first: int, *body: bytes) -> bytes:
    b = b"".join(body)
    return bytes([first]) + encode_varint(len(b)) + b


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def connect_bytes(version: int = 5, flags: int = 0x02, name: bytes = b"MQTT",
                  props: bytes = b"\x00", payload: bytes = s("c")) -> bytes:
    return pkt(0x10, s(name), bytes([version, flags]), u16(60),
               props if version == 5 else b"", payload)


def connected(version: int = 5, connect_props=None, connack_props=None,
              max_packet_size: int = 268435455) -> tuple[MqttConnection, MqttConnection]:
    """(client, server) after a CONNECT/CONNACK exchange."""
    cli = MqttConnection(server_side=False)
    srv = MqttConnection(server_side=True, max_packet_size=max_packet_size)
    assert srv.receive_data(cli.send(Connect("c", protocol_level=version,
                                             properties=connect_props or {})))
    assert cli.receive_data(srv.send(Connack(properties=connack_props or {})))
    return cli, srv


def server(version: int = 5, **kw) -> MqttConnection:
    return connected(version, **kw)[1]


def roundtrip(sender: MqttConnection, receiver: MqttConnection, packet):
    data = sender.send(packet)
    got = receiver.receive_data(data)
    assert got == [packet], (data, got)
    return data


def raises(conn: MqttConnection, data: bytes, code: int) -> MqttError:
    with pytest.raises(MqttError) as info:
        conn.receive_data(data)
    assert info.value.reason_code == code, str(info.value)
    return info.value


class FakeSocket:
    """Enough of a socket for paho's packet writer/reader."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.sent = bytearray()

    def recv(self, n: int) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        return data

    def send(self, data) -> int:
        self.sent += data
        return len(data)

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def setblocking(self, flag) -> None:
        pass


def paho_client(version: int):
    """A paho client whose outgoing packets are captured instead of written."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cid",
                    protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311)
    out: list[bytes] = []
    c._packet_queue = lambda command, packet, mid, qos, info=None: out.append(bytes(packet)) or 0
    c._sock = FakeSocket()
    return c, out


def paho_props(ptype, **values) -> Properties:
    p = Properties(ptype)
    for k, v in values.items():
        setattr(p, k, v)
    return p


# -- Variable Byte Integer and UTF-8 (spec 1.5) ---------------------------------------------

SPEC_VARINTS = [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"),
    (268435455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize("value,wire", SPEC_VARINTS)
def test_varint_spec_table(value, wire):
    assert encode_varint(value) == wire
    assert decode_varint(wire) == (value, len(wire))


def test_varint_out_of_range():
    with pytest.raises(ValueError):
        encode_varint(268435456)
    with pytest.raises(MalformedPacket):
        decode_varint(b"\x80\x80\x80\x80\x01")
    with pytest.raises(MalformedPacket):
        decode_varint(b"\x80\x00")       # not minimally encoded


def test_utf8_spec_example():
    # 1.5.4 non-normative example: "A" U+2A6D4 -> 00 05 41 F0 AA 9B 94
    cli, srv = connected(5)
    data = cli.send(Publish("A\U0002A6D4", b""))
    assert data == b"\x30\x08\x00\x05\x41\xf0\xaa\x9b\x94\x00"
    assert srv.receive_data(data)[0].topic == "A\U0002A6D4"


# -- round trips of every packet type ---------------------------------------------------------

V5_WILL = Will("will/topic", b"gone", qos=2, retain=True,
               properties={"will_delay_interval": 30, "payload_format_indicator": 1,
                           "message_expiry_interval": 60, "content_type": "text/plain",
                           "response_topic": "reply/here", "correlation_data": b"\x01\x02",
                           "user_property": [("k", "v"), ("k", "v2")]})


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_connect(version):
    will = V5_WILL if version == 5 else Will("will/topic", b"gone", qos=1, retain=True)
    props = {"session_expiry_interval": 3600, "receive_maximum": 20,
             "maximum_packet_size": 65536, "topic_alias_maximum": 8,
             "request_response_information": 1, "request_problem_information": 0,
             "authentication_method": "SCRAM-SHA-1", "authentication_data": b"client-first",
             "user_property": [("a", "1")]} if version == 5 else {}
    packet = Connect("client-\u00e9", clean_start=False, keepalive=120, username="user",
                     password=b"\x00secret\xff", will=will, properties=props,
                     protocol_level=version)
    srv = MqttConnection()
    assert srv.version is None
    roundtrip(MqttConnection(server_side=False), srv, packet)
    assert srv.version == version
    if version == 5:
        assert srv.peer_max_packet_size == 65536
        assert srv.peer_topic_alias_maximum == 8


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_connect_minimal(version):
    roundtrip(MqttConnection(server_side=False), MqttConnection(),
              Connect(protocol_level=version))


def test_roundtrip_connect_v5_password_without_username():
    roundtrip(MqttConnection(server_side=False), MqttConnection(),
              Connect("c", password=b"token", protocol_level=5))


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_connack(version):
    cli = MqttConnection(server_side=False)
    srv = MqttConnection()
    srv.receive_data(cli.send(Connect("c", protocol_level=version)))
    props = {"session_expiry_interval": 10, "receive_maximum": 100, "maximum_qos": 1,
             "retain_available": 0, "maximum_packet_size": 1024,
             "assigned_client_identifier": "auto-1", "topic_alias_maximum": 10,
             "reason_string": "ok", "wildcard_subscription_available": 1,
             "subscription_identifier_available": 1, "shared_subscription_available": 0,
             "server_keep_alive": 30, "response_information": "resp/",
             "server_reference": "other:1883", "authentication_method": "m",
             "authentication_data": b"d", "user_property": [("x", "y")]} if version == 5 else {}
    roundtrip(srv, cli, Connack(session_present=True, reason_code=0, properties=props))
    if version == 5:
        assert cli.peer_max_packet_size == 1024
        assert cli.peer_topic_alias_maximum == 10


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_roundtrip_publish_both_directions(version, qos):
    cli, srv = connected(version)
    props = {"payload_format_indicator": 1, "message_expiry_interval": 99,
             "content_type": "json", "response_topic": "r/t", "correlation_data": b"cd",
             "user_property": [("a", "b"), ("a", "c")]} if version == 5 else {}
    pid = 17 if qos else None
    roundtrip(cli, srv, Publish("a/b/c", b"\x00payload\xff", qos, retain=True,
                                dup=bool(qos), packet_id=pid, properties=props))
    if version == 5:
        props = dict(props, subscription_identifier=[1, 268435455])
    roundtrip(srv, cli, Publish("a/b/c", b"", qos, packet_id=pid, properties=props))


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("cls", [Puback, Pubrec, Pubrel, Pubcomp])
def test_roundtrip_acks(version, cls):
    cli, srv = connected(version)
    roundtrip(cli, srv, cls(1))
    roundtrip(srv, cli, cls(65535))
    if version == 5:
        rc = 0x92 if cls in (Pubrel, Pubcomp) else 0x10
        roundtrip(cli, srv, cls(7, rc))
        roundtrip(srv, cli, cls(7, rc, {"reason_string": "why", "user_property": [("k", "v")]}))
        roundtrip(srv, cli, cls(7, 0, {"reason_string": "ok"}))


@pytest.mark.parametrize("version", [4, 5])
def test_ack_short_forms(version):
    cli, srv = connected(version)
    assert cli.send(Puback(7)) == b"\x40\x02\x00\x07"
    assert cli.send(Pubrec(7)) == b"\x50\x02\x00\x07"
    assert cli.send(Pubrel(7)) == b"\x62\x02\x00\x07"
    assert cli.send(Pubcomp(7)) == b"\x70\x02\x00\x07"
    if version == 5:
        assert cli.send(Puback(7, 0x10)) == b"\x40\x03\x00\x07\x10"
        # 3.4.2.1: remaining length 3 = reason code, no properties
        assert srv.receive_data(b"\x40\x03\x00\x07\x10") == [Puback(7, 0x10)]
        assert srv.receive_data(b"\x40\x04\x00\x07\x00\x00") == [Puback(7)]
    else:
        # 3.1.1 cannot carry reason codes or properties: they are dropped
        assert srv.send(Puback(7, 0x80, {"reason_string": "x"})) == b"\x40\x02\x00\x07"


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_subscribe(version):
    cli, srv = connected(version)
    if version == 5:
        subs = [("a/+/c", SubscriptionOptions(1, no_local=True, retain_as_published=True,
                                              retain_handling=2)),
                ("#", SubscriptionOptions(2, retain_handling=1)),
                ("$share/grp/x/#", SubscriptionOptions(0))]
        props = {"subscription_identifier": 268435455, "user_property": [("u", "p")]}
    else:
        subs = [("a/+/c", SubscriptionOptions(1)), ("#", SubscriptionOptions(2)),
                ("sport/tennis/player1/#", SubscriptionOptions(0))]
        props = {}
    roundtrip(cli, srv, Subscribe(10, subs, props))


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_suback(version):
    cli, srv = connected(version)
    if version == 5:
        roundtrip(srv, cli, Suback(10, [0, 1, 2, 0x80, 0x87, 0x8F, 0x9E, 0xA1, 0xA2],
                                   {"reason_string": "partial"}))
    else:
        roundtrip(srv, cli, Suback(10, [0, 1, 2, 0x80]))


def test_suback_v5_codes_downgrade_on_311():
    _, srv = connected(4)
    assert srv.send(Suback(3, [1, 0x87, 0xA2])) == b"\x90\x05\x00\x03\x01\x80\x80"


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_unsubscribe_unsuback(version):
    cli, srv = connected(version)
    props = {"user_property": [("k", "v")]} if version == 5 else {}
    roundtrip(cli, srv, Unsubscribe(11, ["a/b", "a/+", "$share/g/a/#"], props))
    if version == 5:
        roundtrip(srv, cli, Unsuback(11, [0, 0x11, 0x87], {"reason_string": "r"}))
    else:
        assert roundtrip(srv, cli, Unsuback(11)) == b"\xb0\x02\x00\x0b"


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_ping(version):
    cli, srv = connected(version)
    assert roundtrip(cli, srv, Pingreq()) == b"\xc0\x00"
    assert roundtrip(srv, cli, Pingresp()) == b"\xd0\x00"


@pytest.mark.parametrize("version", [4, 5])
def test_roundtrip_disconnect_from_client(version):
    cli, srv = connected(version, connect_props={"session_expiry_interval": 5}
                         if version == 5 else None)
    if version == 5:
        roundtrip(cli, srv, Disconnect(0x04, {"session_expiry_interval": 0,
                                              "reason_string": "bye",
                                              "user_property": [("a", "b")]}))
    else:
        assert roundtrip(cli, srv, Disconnect()) == b"\xe0\x00"


def test_disconnect_short_forms_v5():
    cli, srv = connected(5)
    assert cli.send(Disconnect()) == b"\xe0\x00"
    assert cli.send(Disconnect(0x04)) == b"\xe0\x01\x04"
    assert srv.receive_data(b"\xe0\x01\x04") == [Disconnect(0x04)]


def test_roundtrip_disconnect_from_server_v5():
    cli, srv = connected(5)
    roundtrip(srv, cli, Disconnect(0x8E, {"server_reference": "elsewhere",
                                          "reason_string": "taken over"}))


def test_server_disconnect_on_311_is_nothing():
    _, srv = connected(4)
    assert srv.send(Disconnect(0x8B)) == b""


def test_roundtrip_auth_v5():
    cli = MqttConnection(server_side=False)
    srv = MqttConnection()
    srv.receive_data(cli.send(Connect("c", properties={"authentication_method": "SCRAM"})))
    # 4.12: the server may continue authentication before CONNACK
    roundtrip(srv, cli, Auth(0x18, {"authentication_method": "SCRAM",
                                    "authentication_data": b"server-first"}))
    roundtrip(cli, srv, Auth(0x18, {"authentication_method": "SCRAM",
                                    "authentication_data": b"client-final",
                                    "reason_string": "r", "user_property": [("a", "b")]}))
    roundtrip(srv, cli, Connack(properties={"authentication_method": "SCRAM"}))
    roundtrip(cli, srv, Auth(0x19, {"authentication_method": "SCRAM"}))
    assert roundtrip(srv, cli, Auth()) == b"\xf0\x00"


def test_mqtt31_is_recognised_for_refusal():
    srv = MqttConnection()
    [packet] = srv.receive_data(connect_bytes(3, name=b"MQIsdp", props=b""))
    assert srv.version == 3 and packet.protocol_level == 3 and packet.client_id == "c"
    # 3.1.1 3.1.2.2: refuse with return code 0x01; 0x84 maps to the same thing.
    assert srv.send(Connack(reason_code=1)) == b"\x20\x02\x00\x01"
    assert srv.send(Connack(reason_code=0x84)) == b"\x20\x02\x00\x01"


def test_mqtt31_client_roundtrip():
    roundtrip(MqttConnection(server_side=False), MqttConnection(),
              Connect("c", username="u", password=b"p", protocol_level=3))


def test_connack_v5_codes_downgrade_on_311():
    _, srv = connected(4)
    assert srv.send(Connack(reason_code=0x86)) == b"\x20\x02\x00\x04"
    assert srv.send(Connack(reason_code=0x87)) == b"\x20\x02\x00\x05"
    assert srv.send(Connack(reason_code=0x85)) == b"\x20\x02\x00\x02"
    assert srv.send(Connack(reason_code=0x80)) == b"\x20\x02\x00\x03"


# -- byte-exact against the spec -------------------------------------------------------------


def test_spec_connect_variable_header_v5():
    # 3.1.2.11 non-normative example: 00 04 'MQTT' 05 CE 00 0A 05 11 00 00 00 0A
    data = MqttConnection(server_side=False).send(Connect(
        "c", keepalive=10, username="u", password=b"p", will=Will("w", b"", qos=1),
        properties={"session_expiry_interval": 10}))
    assert data[2:18] == bytes.fromhex("00044d5154540 5ce000a0511 0000000a".replace(" ", ""))


def test_spec_connect_variable_header_311():
    # 3.1.1 3.1.2.10 example: 00 04 'MQTT' 04 CE 00 0A
    data = MqttConnection(server_side=False).send(Connect(
        "c", keepalive=10, username="u", password=b"p", will=Will("w", b"", qos=1),
        protocol_level=4))
    assert data[2:12] == bytes.fromhex("00044d51545404ce000a")


@pytest.mark.parametrize("version,tail", [(4, b""), (5, b"\x00")])
def test_spec_publish_variable_header(version, tail):
    # 3.3.2.3 example: topic "a/b", packet id 10 -> 00 03 61 2F 62 00 0A (+ 00 in 5.0)
    cli, _ = connected(version)
    data = cli.send(Publish("a/b", b"", qos=1, packet_id=10))
    assert data == b"\x32" + bytes([7 + len(tail)]) + b"\x00\x03a/b\x00\x0a" + tail


@pytest.mark.parametrize("props,wire", [
    ({"payload_format_indicator": 1}, "02 01 01"),
    ({"topic_alias": 258}, "03 23 0102"),
    ({"message_expiry_interval": 0x01020304}, "05 02 01020304"),
    ({"subscription_identifier": [200]}, "03 0b c801"),
    ({"content_type": "json"}, "07 03 0004 6a736f6e"),
    ({"correlation_data": b"\x00\x01"}, "05 09 0002 0001"),
    ({"user_property": [("k", "v")]}, "07 26 0001 6b 0001 76"),
    ({}, "00"),
])
def test_property_encodings(props, wire):
    raw = bytes.fromhex(wire.replace(" ", ""))
    assert encode_properties(props, 3) == raw
    assert decode_properties(raw, 3) == (props, len(raw))


# -- byte-exact against paho-mqtt ---------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_paho_connect_bytes(version):
    c, out = paho_client(version)
    c.username_pw_set("user", "pw")
    c.will_set("w/t", b"bye", qos=1, retain=True,
               properties=paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=5)
               if version == 5 else None)
    if version == 5:
        c._connect_properties = paho_props(PacketTypes.CONNECT, SessionExpiryInterval=30,
                                           ReceiveMaximum=10,
                                           UserProperty=[("a", "b")])
    c._send_connect(60)
    ours = Connect("cid", clean_start=True, keepalive=60, username="user", password=b"pw",
                   will=Will("w/t", b"bye", 1, True,
                             {"will_delay_interval": 5} if version == 5 else {}),
                   properties={"session_expiry_interval": 30, "receive_maximum": 10,
                               "user_property": [("a", "b")]} if version == 5 else {},
                   protocol_level=version)
    assert MqttConnection(server_side=False).send(ours) == out[0]
    assert MqttConnection().receive_data(out[0]) == [ours]


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_publish_bytes(version, qos):
    c, out = paho_client(version)
    props = paho_props(PacketTypes.PUBLISH, PayloadFormatIndicator=1, MessageExpiryInterval=60,
                       ContentType="text", ResponseTopic="resp", CorrelationData=b"id",
                       UserProperty=[("k", "v")]) if version == 5 else None
    pid = 42 if qos else 0
    c._send_publish(pid, b"a/b", b"hello", qos, True, bool(qos), None, props)
    ours = {"payload_format_indicator": 1, "message_expiry_interval": 60, "content_type": "text",
            "response_topic": "resp", "correlation_data": b"id",
            "user_property": [("k", "v")]} if version == 5 else {}
    packet = Publish("a/b", b"hello", qos, True, bool(qos), pid or None, ours)
    cli, srv = connected(version)
    assert cli.send(packet) == out[0]
    assert encode_publish("a/b", b"hello", qos, True, pid or None, version, ours, bool(qos)) == out[0]
    assert srv.receive_data(out[0]) == [packet]


@pytest.mark.parametrize("version", [4, 5])
def test_paho_subscribe_unsubscribe_bytes(version):
    c, out = paho_client(version)
    if version == 5:
        opts = SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True, retainHandling=1)
        props = paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=[7])
        _, mid = c._send_subscribe(False, [(b"a/+", opts), (b"b/#", SubscribeOptions(qos=0))],
                                   props)
        ours = Subscribe(mid, [("a/+", SubscriptionOptions(2, True, True, 1)),
                               ("b/#", SubscriptionOptions(0))], {"subscription_identifier": 7})
    else:
        _, mid = c._send_subscribe(False, [(b"a/+", 2), (b"b/#", 0)])
        ours = Subscribe(mid, [("a/+", SubscriptionOptions(2)), ("b/#", SubscriptionOptions(0))])
    _, mid2 = c._send_unsubscribe(False, [b"a/+", b"b/#"])
    cli, srv = connected(version)
    assert cli.send(ours) == out[0]
    assert cli.send(Unsubscribe(mid2, ["a/+", "b/#"])) == out[1]
    assert srv.receive_data(out[0] + out[1]) == [ours, Unsubscribe(mid2, ["a/+", "b/#"])]


@pytest.mark.parametrize("version", [4, 5])
def test_paho_acks_disconnect_ping_bytes(version):
    c, out = paho_client(version)
    c._send_puback(7)
    c._send_pubrec(7)
    c._send_pubrel(7)
    c._send_pubcomp(7)
    c._send_pingreq()
    c._send_disconnect()
    cli, srv = connected(version)
    ours = [Puback(7), Pubrec(7), Pubrel(7), Pubcomp(7), Pingreq(), Disconnect()]
    assert [cli.send(p) for p in ours] == out
    assert srv.receive_data(b"".join(out)) == ours


def test_paho_disconnect_v5_with_reason_and_properties():
    c, out = paho_client(5)
    c._send_disconnect(PahoReasonCode(PacketTypes.DISCONNECT, identifier=4),
                       paho_props(PacketTypes.DISCONNECT, ReasonString="bye"))
    cli, srv = connected(5)
    ours = Disconnect(4, {"reason_string": "bye"})
    assert cli.send(ours) == out[0]
    assert srv.receive_data(out[0]) == [ours]


def test_paho_properties_pack_matches():
    # Every CONNACK property, in identifier order as paho packs them.
    p = paho_props(PacketTypes.CONNACK, SessionExpiryInterval=1, AssignedClientIdentifier="id",
                   ServerKeepAlive=2, AuthenticationMethod="m", AuthenticationData=b"d",
                   ResponseInformation="ri", ServerReference="sr", ReasonString="rs",
                   ReceiveMaximum=3, TopicAliasMaximum=4, MaximumQoS=1, RetainAvailable=0,
                   UserProperty=[("a", "b"), ("c", "d")], MaximumPacketSize=5,
                   WildcardSubscriptionAvailable=1, SubscriptionIdentifierAvailable=0,
                   SharedSubscriptionAvailable=1)
    ours = {"session_expiry_interval": 1, "assigned_client_identifier": "id",
            "server_keep_alive": 2, "authentication_method": "m", "authentication_data": b"d",
            "response_information": "ri", "server_reference": "sr", "reason_string": "rs",
            "receive_maximum": 3, "topic_alias_maximum": 4, "maximum_qos": 1,
            "retain_available": 0, "user_property": [("a", "b"), ("c", "d")],
            "maximum_packet_size": 5, "wildcard_subscription_available": 1,
            "subscription_identifier_available": 0, "shared_subscription_available": 1}
    assert encode_properties(ours, 2) == p.pack()
    assert decode_properties(p.pack(), 2)[0] == ours


@pytest.mark.parametrize("version", [4, 5])
def test_paho_client_reads_what_the_server_sends(version):
    """The other direction: our server-side bytes fed to paho's packet reader."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cid",
                    protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311)
    sock = c._sock = FakeSocket()
    got = []
    c.on_connect = lambda cl, u, flags, rc, props: got.append(("connect", rc.value))
    c.on_subscribe = lambda cl, u, mid, rcs, props: got.append(("sub", mid, [r.value for r in rcs]))
    c.on_message = lambda cl, u, m: got.append(
        ("msg", m.topic, m.payload, m.qos, m.mid,
         getattr(m.properties, "SubscriptionIdentifier", None) if version == 5 else None))
    cli, srv = connected(version)
    sock.inbox += srv.send(Connack(properties={"topic_alias_maximum": 5} if version == 5 else {}))
    sock.inbox += srv.send(Suback(1, [1, 0x80]))
    props = {"subscription_identifier": [3, 4]} if version == 5 else {}
    sock.inbox += srv.send(Publish("a/b", b"xy", qos=1, packet_id=9, properties=props))
    sock.inbox += srv.send(Publish("a/b", b"z", qos=2, packet_id=10))
    while sock.inbox:
        assert c._packet_read() == 0
    assert got == [("connect", 0), ("sub", 1, [1, 0x80]),
                   ("msg", "a/b", b"xy", 1, 9, [3, 4] if version == 5 else None)]
    # and paho's acknowledgements decode on our side
    assert srv.receive_data(bytes(sock.sent)) == [Puback(9), Pubrec(10)]


# -- framing -----------------------------------------------------------------------------------


def _stream(version: int):
    cli, srv = connected(version)
    packets = [Publish("t/1", b"x" * 300, 1, packet_id=1), Pingreq(),
               Subscribe(2, [("t/#", SubscriptionOptions(1))]), Puback(5),
               Publish("t/2", b"", 0), Unsubscribe(3, ["t/#"]), Disconnect()]
    return srv, packets, b"".join(cli.send(p) for p in packets)


@pytest.mark.parametrize("version", [4, 5])
def test_multiple_packets_in_one_chunk(version):
    srv, packets, data = _stream(version)
    assert srv.receive_data(data) == packets


@pytest.mark.parametrize("version", [4, 5])
def test_byte_at_a_time(version):
    srv, packets, data = _stream(version)
    got = []
    for i in range(len(data)):
        got += srv.receive_data(data[i:i + 1])
    assert got == packets


@pytest.mark.parametrize("version", [4, 5])
def test_every_split_point(version):
    _, packets, data = _stream(version)
    for cut in range(len(data) + 1):
        srv, _, _ = _stream(version)
        assert srv.receive_data(data[:cut]) + srv.receive_data(data[cut:]) == packets


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_chunking(data):
    version = data.draw(st.sampled_from([4, 5]))
    srv, packets, wire = _stream(version)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    got, last = [], 0
    for cut in cuts + [len(wire)]:
        got += srv.receive_data(wire[last:cut])
        last = cut
    assert got == packets


def test_empty_input_is_fine():
    _, srv = connected(5)
    assert srv.receive_data(b"") == []


def test_connect_split_learns_version_late():
    cli = MqttConnection(server_side=False)
    srv = MqttConnection()
    data = cli.send(Connect("c", protocol_level=4)) + cli.send(Pingreq())
    assert srv.receive_data(data[:5]) == []
    assert srv.version is None
    assert srv.receive_data(data[5:]) == [Connect("c", protocol_level=4), Pingreq()]
    assert srv.version == 4


@settings(max_examples=150, deadline=None)
@given(version=st.sampled_from([4, 5]),
       topic=st.text(st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)),
                     min_size=1, max_size=40),
       payload=st.binary(max_size=300), qos=st.integers(0, 2), retain=st.booleans(),
       pid=st.integers(1, 65535),
       user=st.lists(st.tuples(st.text(max_size=5).filter(lambda t: "\x00" not in t),
                               st.text(max_size=5).filter(lambda t: "\x00" not in t)),
                     max_size=3))
def test_publish_roundtrip_property(version, topic, payload, qos, retain, pid, user):
    cli, srv = connected(version)
    props = {"user_property": user} if version == 5 and user else {}
    packet = Publish(topic, payload, qos, retain, False, pid if qos else None, props)
    roundtrip(cli, srv, packet)
    tpl = encode_publish_parts(topic, payload, qos, retain, version, props)
    assert srv.receive_data(tpl.encode(pid)) == [packet]


# -- the PUBLISH fast path --------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_template_patches_packet_id(version, qos):
    props = {"content_type": "c", "user_property": [("a", "b")]}
    payload = b"p" * 200
    tpl = encode_publish_parts("fan/out", payload, qos, False, version, props)
    assert isinstance(tpl, PublishTemplate)
    cli, srv = connected(version)
    for pid in (1, 2, 300, 65535):
        want = srv.send(Publish("fan/out", payload, qos, packet_id=pid if qos else None,
                                properties=props))
        assert tpl.encode(pid) == want
        assert b"".join(tpl.buffers(pid)) == want
        assert tpl.size == len(want)
        assert encode_publish("fan/out", payload, qos, False, pid, version, props) == want
        [got] = cli.receive_data(want)
        assert got.packet_id == (pid if qos else None)
    # the payload buffer is passed through, not copied into the shared pieces
    assert tpl.buffers(1)[-1].endswith(payload)


def test_publish_template_retain_and_subscription_ids():
    cli, srv = connected(5)
    tpl = encode_publish_parts("a/b", b"data", 1, False, 5, {"content_type": "x"})
    want = srv.send(Publish("a/b", b"data", 1, retain=True, packet_id=9,
                            properties={"content_type": "x", "subscription_identifier": [5, 200]}))
    assert tpl.encode(9, retain=True, subscription_ids=[5, 200]) == want
    assert cli.receive_data(want)[0].properties["subscription_identifier"] == [5, 200]
    assert tpl.encode(9, retain=True) == srv.send(
        Publish("a/b", b"data", 1, retain=True, packet_id=9, properties={"content_type": "x"}))
    assert tpl.encode(9, retain=False) == tpl.encode(9)


def test_publish_template_311_drops_properties():
    assert encode_publish("a", b"", 0, False, None, 4, {"content_type": "x"}) == b"\x30\x03\x00\x01a"


def test_publish_template_needs_packet_id_for_qos():
    tpl = encode_publish_parts("a", b"", 1, False, 5)
    for bad in (None, 0, 65536):
        with pytest.raises(ValueError):
            tpl.encode(bad)
    with pytest.raises(ValueError):
        encode_publish_parts("a", b"", 3, False, 5)


# -- send-side guards ----------------------------------------------------------------------


def test_send_guards():
    srv = MqttConnection()
    with pytest.raises(ValueError):
        srv.send(Pingresp())                       # no CONNECT received yet
    cli = MqttConnection(server_side=False)
    with pytest.raises(ValueError):
        cli.send(Pingreq())                        # CONNECT first
    cli, srv = connected(5)
    with pytest.raises(ValueError):
        srv.send(Subscribe(1, [("a", SubscriptionOptions())]))
    with pytest.raises(ValueError):
        cli.send(Suback(1, [0]))
    with pytest.raises(ValueError):
        cli.send(Connect("again"))
    with pytest.raises(ValueError):
        cli.send(Publish("a/+", b""))
    with pytest.raises(ValueError):
        cli.send(Publish("a", b"", 1))             # QoS 1 without packet id
    with pytest.raises(ValueError):
        cli.send(Publish("a", b"", properties={"session_expiry_interval": 1}))
    with pytest.raises(ValueError):
        cli.send(Publish("a", b"", properties={"no_such_property": 1}))
    with pytest.raises(ValueError):
        srv.send(Puback(1, 0x92))                  # not a PUBACK reason code
    with pytest.raises(ValueError):
        MqttConnection(server_side=False).send(Connect(password=b"p", protocol_level=4))
    with pytest.raises(ValueError):
        connected(4)[0].send(Auth())
    with pytest.raises(ValueError):                # MQTT-3.3.4-6
        cli.send(Publish("a", b"", properties={"subscription_identifier": [1]}))
    with pytest.raises(ValueError):                # the server announced no topic aliases
        cli.send(Publish("a", b"", properties={"topic_alias": 1}))


def test_send_refuses_packets_over_peer_maximum():
    cli, srv = connected(5, connect_props={"maximum_packet_size": 64})
    srv.send(Publish("a", b"x" * 50))
    with pytest.raises(MqttError) as info:
        srv.send(Publish("a", b"x" * 100))
    assert info.value.reason_code == TOO_LARGE


# -- malformed input: each case and its reason code ---------------------------------------------


def test_remaining_length_more_than_four_bytes():
    raises(server(5), b"\x30\xff\xff\xff\xff\x01", MALFORMED)
    raises(server(4), b"\xc0\x80\x80\x80\x80", MALFORMED)


def test_remaining_length_not_minimal():
    raises(server(5), b"\xc0\x80\x00", MALFORMED)


@pytest.mark.parametrize("version", [4, 5])
def test_packet_too_large_detected_from_fixed_header(version):
    srv = server(version, max_packet_size=100)
    # Only the fixed header of a 1000-byte PUBLISH: refused before any body arrives.
    raises(srv, b"\x30\xe8\x07", TOO_LARGE)


def test_packet_too_large_counts_whole_packet():
    srv = server(5, max_packet_size=20)
    assert srv.receive_data(pkt(0x30, s("a"), b"\x00", b"x" * 14))   # 20 bytes: fine
    raises(srv, pkt(0x30, s("a"), b"\x00", b"x" * 15), TOO_LARGE)   # 21 bytes


def test_connect_too_large():
    raises(MqttConnection(max_packet_size=20), connect_bytes(payload=s("x" * 50)), TOO_LARGE)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\xe2\x82", b"\xf8\x88\x80\x80\x80"],
                         ids=["ff", "overlong-nul", "surrogate", "truncated", "5-byte"])
@pytest.mark.parametrize("version", [4, 5])
def test_invalid_utf8_topic(bad, version):
    raises(server(version), pkt(0x30, s(bad), b"\x00" if version == 5 else b""), MALFORMED)


@pytest.mark.parametrize("version", [4, 5])
def test_nul_in_utf8_strings(version):
    raises(server(version), pkt(0x30, s(b"a\x00b"), b"\x00" if version == 5 else b""), MALFORMED)
    raises(MqttConnection(), connect_bytes(version, payload=s(b"c\x00")), MALFORMED)
    raises(server(version), pkt(0x82, u16(1), b"\x00" if version == 5 else b"", s(b"a\x00"),
                                b"\x00"), MALFORMED)


def test_invalid_utf8_in_user_property_and_username():
    raises(server(5), pkt(0x30, s("a"), b"\x07\x26", s("k"), s(b"\xff")), MALFORMED)
    raises(MqttConnection(), connect_bytes(5, flags=0x82, payload=s("c") + s(b"\xc3")), MALFORMED)


@pytest.mark.parametrize("topic", ["a/+", "+", "a/#", "#", "a+b", "sport/tennis#"])
@pytest.mark.parametrize("version", [4, 5])
def test_wildcard_in_publish_topic(topic, version):
    raises(server(version), pkt(0x30, s(topic), b"\x00" if version == 5 else b""), TOPIC_INVALID)


def test_empty_topic():
    raises(server(5), pkt(0x30, s(""), b"\x00"), PROTOCOL)         # 5.0: no alias -> Protocol Error
    raises(server(4), pkt(0x30, s("")), TOPIC_INVALID)            # 3.1.1 MQTT-4.7.3-1


@pytest.mark.parametrize("version", [4, 5])
def test_publish_qos3(version):
    raises(server(version), pkt(0x36, s("a"), u16(1), b"\x00" if version == 5 else b""), MALFORMED)


def test_publish_qos3_detected_from_first_byte():
    raises(server(5), b"\x36", MALFORMED)


def test_publish_dup_with_qos0():
    raises(server(4), pkt(0x38, s("a")), MALFORMED)


@pytest.mark.parametrize("first", [0x80, 0x83, 0x60, 0x61, 0xA0, 0xC1, 0xE2, 0x41, 0x18])
def test_reserved_fixed_header_flags(first):
    # SUBSCRIBE/UNSUBSCRIBE/PUBREL need 0b0010, the others 0 (2.1.3)
    srv = server(5) if first != 0x18 else MqttConnection()
    raises(srv, bytes([first, 0]), MALFORMED)


def test_reserved_packet_type_zero():
    raises(server(5), b"\x00\x00", MALFORMED)


def test_auth_is_reserved_in_311():
    raises(server(4), b"\xf0\x00", MALFORMED)


@pytest.mark.parametrize("version", [4, 5])
def test_packet_id_zero(version):
    p = b"\x00" if version == 5 else b""
    raises(server(version), pkt(0x32, s("a"), u16(0), p), PROTOCOL)
    raises(server(version), pkt(0x34, s("a"), u16(0), p), PROTOCOL)
    raises(server(version), pkt(0x82, u16(0), p, s("a"), b"\x00"), PROTOCOL)
    raises(server(version), pkt(0xA2, u16(0), p, s("a")), PROTOCOL)
    raises(server(version), pkt(0x40, u16(0)), PROTOCOL)
    raises(server(version), pkt(0x62, u16(0)), PROTOCOL)


@pytest.mark.parametrize("version", [4, 5])
def test_subscribe_without_filters(version):
    raises(server(version), pkt(0x82, u16(1), b"\x00" if version == 5 else b""), PROTOCOL)


@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_without_filters(version):
    raises(server(version), pkt(0xA2, u16(1), b"\x00" if version == 5 else b""), PROTOCOL)


@pytest.mark.parametrize("topic_filter", ["a/#/b", "#/a", "a#", "a/b#", "a/b+", "+a", "a/+b/c", "",
                                          "$share//a", "$share/g", "$share/g/", "$share/g+/a",
                                          "$share/g/a/#/b"])
@pytest.mark.parametrize("version", [4, 5])
def test_invalid_topic_filter(topic_filter, version):
    p = b"\x00" if version == 5 else b""
    raises(server(version), pkt(0x82, u16(1), p, s(topic_filter), b"\x01"), FILTER_INVALID)
    raises(server(version), pkt(0xA2, u16(1), p, s(topic_filter)), FILTER_INVALID)


def test_subscription_options_reserved_bits():
    raises(server(4), pkt(0x82, u16(1), s("a"), b"\x04"), MALFORMED)     # 3.1.1: bits 7-2
    raises(server(4), pkt(0x82, u16(1), s("a"), b"\x03"), MALFORMED)     # 3.1.1: QoS 3
    raises(server(5), pkt(0x82, u16(1), b"\x00", s("a"), b"\x40"), MALFORMED)  # 5.0: bits 7-6
    raises(server(5), pkt(0x82, u16(1), b"\x00", s("a"), b"\x03"), PROTOCOL)   # 5.0: QoS 3
    raises(server(5), pkt(0x82, u16(1), b"\x00", s("a"), b"\x30"), PROTOCOL)   # retain handling 3
    raises(server(5), pkt(0x82, u16(1), b"\x00", s("$share/g/a"), b"\x04"), PROTOCOL)  # no local


def test_connect_reserved_flag():
    raises(MqttConnection(), connect_bytes(5, flags=0x03), MALFORMED)
    raises(MqttConnection(), connect_bytes(4, flags=0x01), MALFORMED)


@pytest.mark.parametrize("flags", [0x08, 0x10, 0x18, 0x20, 0x1C])
@pytest.mark.parametrize("version", [4, 5])
def test_connect_will_flags_inconsistent(flags, version):
    # will QoS / retain without the will flag, or will QoS 3 (0x1C)
    will = (b"\x00" if version == 5 else b"") + s("w") + s(b"m")
    raises(MqttConnection(), connect_bytes(version, flags=0x02 | flags,
                                           payload=s("c") + (will if flags & 4 else b"")), MALFORMED)


def test_connect_password_without_username_311():
    raises(MqttConnection(), connect_bytes(4, flags=0x42, payload=s("c") + s(b"pw")), MALFORMED)


def test_connect_will_topic_must_be_topic_name():
    raises(MqttConnection(), connect_bytes(4, flags=0x06, payload=s("c") + s("w/#") + s(b"m")),
           TOPIC_INVALID)


@pytest.mark.parametrize("name,level", [(b"MQTT", 3), (b"MQTT", 6), (b"MQTT", 0x84),
                                        (b"MQIsdp", 4), (b"HTTP", 4)])
def test_unsupported_protocol(name, level):
    srv = MqttConnection()
    raises(srv, connect_bytes(level, name=name, props=b""), UNSUPPORTED)
    assert srv.version is None
    # the broker may still refuse with a 3.1.1-format CONNACK
    assert srv.send(Connack(reason_code=0x84)) == b"\x20\x02\x00\x01"


def test_first_packet_must_be_connect():
    raises(MqttConnection(), b"\xc0\x00", PROTOCOL)
    raises(MqttConnection(), b"GET / HTTP/1.1\r\n", PROTOCOL)   # refused on the first byte


def test_second_connect():
    raises(server(5), connect_bytes(5), PROTOCOL)


@pytest.mark.parametrize("first", [0x20, 0x90, 0xB0, 0xD0])
def test_server_refuses_server_only_packets(first):
    raises(server(5), bytes([first, 0]), PROTOCOL)


@pytest.mark.parametrize("first", [0x10, 0x82, 0xA2, 0xC0])
def test_client_refuses_client_only_packets(first):
    raises(connected(5)[0], bytes([first, 0]), PROTOCOL)


def test_client_first_packet_must_be_connack():
    cli = MqttConnection(server_side=False)
    raises(cli, b"\x20\x02\x00\x00", PROTOCOL)   # nothing sent yet
    cli = MqttConnection(server_side=False)
    cli.send(Connect("c", protocol_level=4))
    raises(cli, b"\x30\x03\x00\x01a", PROTOCOL)


def test_connack_checks():
    def client(version):
        c = MqttConnection(server_side=False)
        c.send(Connect("c", protocol_level=version))
        return c
    raises(client(4), b"\x20\x02\x02\x00", MALFORMED)          # reserved ack flags
    raises(client(4), b"\x20\x02\x00\x06", PROTOCOL)           # unknown return code
    raises(client(4), b"\x20\x02\x01\x05", PROTOCOL)           # session present on refusal
    raises(client(5), b"\x20\x03\x00\x01\x00", PROTOCOL)       # 0x01 is not a 5.0 CONNACK code
    raises(client(4), b"\x20\x03\x00\x00\x00", MALFORMED)      # trailing byte
    raises(client(5), b"\x20\x02\x00\x00", MALFORMED)          # 5.0 needs the property length


def test_trailing_and_truncated_bytes():
    raises(server(5), b"\xc0\x01\x00", MALFORMED)                      # PINGREQ with a body
    raises(server(4), pkt(0x40, u16(1), b"\x00"), MALFORMED)           # 3.1.1 PUBACK length 3
    raises(server(5), pkt(0x30, u16(10), b"ab", b"\x00"), MALFORMED)   # string past the end
    raises(server(5), pkt(0x30, s("a"), b"\x05\x02\x00"), MALFORMED)   # properties past the end
    raises(server(5), pkt(0x30, s("a"), b"\x03\x02\x00\x00"), MALFORMED)  # property truncated
    raises(MqttConnection(), pkt(0x10, s("MQTT"), b"\x04"), MALFORMED)


def test_properties_unknown_disallowed_duplicate():
    raises(server(5), pkt(0x30, s("a"), b"\x02\x04\x00"), MALFORMED)          # id 0x04 unknown
    raises(server(5), pkt(0x30, s("a"), b"\x05\x11\x00\x00\x00\x01"), MALFORMED)  # not in PUBLISH
    raises(server(5), pkt(0x30, s("a"), b"\x04\x01\x01\x01\x01"), PROTOCOL)   # duplicate
    raises(server(5), pkt(0x82, u16(1), b"\x04\x0b\x01\x0b\x02", s("a"), b"\x00"), PROTOCOL)
    raises(MqttConnection(), connect_bytes(5, props=b"\x06\x21\x00\x01\x21\x00\x02"), PROTOCOL)
    raises(server(5), pkt(0x30, s("a"), b"\x02\x80\x01"), MALFORMED)          # 2-byte id


def test_property_value_rules():
    raises(server(5), pkt(0x30, s("a"), b"\x02\x01\x02"), PROTOCOL)            # format indicator 2
    raises(MqttConnection(), connect_bytes(5, props=b"\x03\x21\x00\x00"), PROTOCOL)  # receive max 0
    raises(MqttConnection(), connect_bytes(5, props=b"\x05\x27\x00\x00\x00\x00"), PROTOCOL)
    raises(MqttConnection(), connect_bytes(5, props=b"\x03\x16\x00\x00"), PROTOCOL)  # data w/o method
    raises(server(5), pkt(0x82, u16(1), b"\x02\x0b\x00", s("a"), b"\x00"), PROTOCOL)  # sub id 0
    raises(server(5), pkt(0x30, s("a"), b"\x06\x08\x00\x03a/#"), PROTOCOL)    # wildcard response topic


def test_subscription_identifier_from_client_publish():
    raises(server(5), pkt(0x30, s("a"), b"\x02\x0b\x01"), PROTOCOL)


def test_topic_alias():
    cli, srv = connected(5, connack_props={"topic_alias_maximum": 3})
    assert srv.topic_alias_maximum == 3
    [p] = srv.receive_data(pkt(0x30, s("long/topic"), b"\x03\x23\x00\x02", b"one"))
    assert p.topic == "long/topic" and p.properties == {"topic_alias": 2}
    [p] = srv.receive_data(pkt(0x30, s(""), b"\x03\x23\x00\x02", b"two"))
    assert (p.topic, p.payload) == ("long/topic", b"two")
    # the client may also send an empty topic via send() when it uses an alias
    [p] = srv.receive_data(cli.send(Publish("", b"3", properties={"topic_alias": 2})))
    assert p.topic == "long/topic"
    raises(server(5, connack_props={"topic_alias_maximum": 3}),
           pkt(0x30, s(""), b"\x03\x23\x00\x01"), PROTOCOL)        # unknown alias
    raises(server(5, connack_props={"topic_alias_maximum": 3}),
           pkt(0x30, s("a"), b"\x03\x23\x00\x04"), ALIAS_INVALID)  # above the maximum
    raises(server(5, connack_props={"topic_alias_maximum": 3}),
           pkt(0x30, s("a"), b"\x03\x23\x00\x00"), ALIAS_INVALID)  # 0
    raises(server(5), pkt(0x30, s("a"), b"\x03\x23\x00\x01"), ALIAS_INVALID)  # none announced


def test_disconnect_session_expiry_rules():
    _, srv = connected(5)   # CONNECT had no session expiry (= 0)
    raises(srv, pkt(0xE0, b"\x00\x05\x11\x00\x00\x00\x0a"), PROTOCOL)
    cli, _ = connected(5)
    raises(cli, pkt(0xE0, b"\x00\x05\x11\x00\x00\x00\x00"), PROTOCOL)   # never from a server


def test_311_server_never_sends_disconnect():
    raises(connected(4)[0], b"\xe0\x00", PROTOCOL)


def test_data_after_disconnect_is_dropped():
    # The DISCONNECT must reach the broker (it discards the Will); trailing junk must not
    # turn it into an error.
    _, srv = connected(5)
    assert srv.receive_data(b"\xe0\x00\xc0\x00\xff\xff") == [Disconnect()]
    assert srv.receive_data(b"\x36\x00") == []


def test_ack_packet_id_zero_from_server():
    raises(connected(5)[0], pkt(0x90, u16(0), b"\x00", b"\x00"), PROTOCOL)
    raises(connected(4)[0], pkt(0xB0, u16(0)), PROTOCOL)


def test_announced_maximum_packet_size_is_enforced():
    cli = MqttConnection(server_side=False)
    srv = MqttConnection()
    srv.receive_data(cli.send(Connect("c", properties={"maximum_packet_size": 50})))
    cli.receive_data(srv.send(Connack(properties={"maximum_packet_size": 40})))
    assert (srv.max_packet_size, cli.max_packet_size) == (40, 50)
    assert (srv.peer_max_packet_size, cli.peer_max_packet_size) == (50, 40)
    raises(srv, pkt(0x30, s("a"), b"\x00", b"x" * 40), TOO_LARGE)


def test_invalid_reason_codes():
    cli, srv = connected(5)
    raises(srv, pkt(0x40, u16(1), b"\x92"), PROTOCOL)            # 0x92 is not a PUBACK code
    raises(cli, pkt(0x90, u16(1), b"\x00", b"\x03"), PROTOCOL)   # SUBACK 3
    raises(connected(4)[0], pkt(0x90, u16(1), b"\x87"), PROTOCOL)  # 3.1.1 SUBACK only 0x80
    raises(server(5), pkt(0xE0, b"\x05"), PROTOCOL)
    raises(server(5), pkt(0xF0, b"\x01"), PROTOCOL)


def test_error_is_sticky_and_keeps_earlier_packets():
    _, srv = connected(5)
    err = raises(srv, b"\xc0\x00" + b"\x36\x00", MALFORMED)
    assert err.packets == [Pingreq()]
    with pytest.raises(MqttError) as again:
        srv.receive_data(b"\xc0\x00")
    assert again.value is err


def test_error_types():
    _, srv = connected(5)
    with pytest.raises(MalformedPacket):
        srv.receive_data(b"\x36\x00")
    _, srv = connected(5)
    with pytest.raises(ProtocolError):
        srv.receive_data(pkt(0x32, s("a"), u16(0), b"\x00"))
    assert "0x82" in str(ProtocolError("x"))


def test_paho_mqtt31_connect_is_recognised():
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="old", protocol=paho.MQTTv31)
    out: list[bytes] = []
    c._packet_queue = lambda command, packet, mid, qos, info=None: out.append(bytes(packet)) or 0
    c._sock = FakeSocket()
    c._send_connect(30)
    srv = MqttConnection()
    assert srv.receive_data(out[0]) == [Connect("old", keepalive=30, protocol_level=3)]
    assert srv.version == 3


@pytest.mark.parametrize("version", [4, 5])
def test_runs_of_bare_pubacks_decode_like_any_packet(version):
    # The inline PUBACK path: many in one read, one split across reads, mixed with other packets.
    srv = server(version)
    acks = [Puback(i) for i in range(1, 300)]
    data = b"".join(bytes([0x40, 2, i >> 8, i & 0xFF]) for i in range(1, 300)) + b"\xc0\x00"
    assert srv.receive_data(data[:101]) + srv.receive_data(data[101:]) == acks + [Pingreq()]


def test_a_bare_puback_with_packet_id_0_is_still_refused():
    srv = server(4)
    assert srv.receive_data(b"\x40\x02\x00\x01") == [Puback(1)]
    raises(srv, b"\x40\x02\x00\x00", 0x82)
