"""Malformed input over raw sockets: the connection is closed with the right reason, the server stays up."""

from __future__ import annotations

import socket

import pytest
from mqttsupport import RawMqtt, uniq

from bridges.mqtt.codec import Connack, Connect, Disconnect, Pingreq, Pingresp, encode_varint


@pytest.fixture(scope="module")
def srv(start_mqtt):
    return start_mqtt({"connect_timeout": 0.5})


def _publish_bytes(topic: bytes, payload: bytes = b"x", first: int = 0x30, v5: bool = True) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (b"\x00" if v5 else b"") + payload
    return bytes((first,)) + encode_varint(len(body)) + body


CASES = [
    # name, bytes after CONNECT, 5.0 DISCONNECT reason code
    ("remaining length of 5 bytes", b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("remaining length not minimal", b"\x30\x80\x00", 0x81),
    ("oversized packet", b"\x30" + encode_varint(2 * 1024 * 1024) + b"\x00\x01a", 0x95),
    ("invalid UTF-8 topic", _publish_bytes(b"a/\xff\xfe"), 0x81),
    ("U+0000 in topic", _publish_bytes(b"a\x00b"), 0x81),
    ("wildcard in PUBLISH topic", _publish_bytes(b"a/+/c"), 0x90),
    ("'#' in PUBLISH topic", _publish_bytes(b"a/#"), 0x90),
    ("QoS 3", _publish_bytes(b"a/b", first=0x36), 0x81),
    ("reserved packet type 0", b"\x00\x00", 0x81),
    ("second CONNECT", b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc", 0x82),
    ("SUBSCRIBE with bad flags", b"\x80\x06\x00\x01\x00\x01a\x00", 0x81),
]


@pytest.mark.parametrize("version", [5, 4])
@pytest.mark.parametrize("name,data,rc", CASES, ids=[c[0] for c in CASES])
def test_malformed_packet_closes_connection(srv, version, name, data, rc):
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(uniq(), version=version).reason_code == 0
    if version == 4 and name in ("invalid UTF-8 topic", "U+0000 in topic", "wildcard in PUBLISH topic",
                                 "'#' in PUBLISH topic", "QoS 3"):
        # The same violations in the 3.1.1 layout (no properties).
        data = _publish_bytes({"invalid UTF-8 topic": b"a/\xff\xfe", "U+0000 in topic": b"a\x00b",
                               "wildcard in PUBLISH topic": b"a/+/c", "'#' in PUBLISH topic": b"a/#",
                               "QoS 3": b"a/b"}[name], first=0x36 if name == "QoS 3" else 0x30, v5=False)
    c.send_raw(data)
    assert c.wait_closed(), f"{name}: connection not closed"
    disconnects = [p for p in c.packets if type(p) is Disconnect]
    if version == 5:
        assert [d.reason_code for d in disconnects] == [rc], name
    else:
        assert disconnects == []          # 3.1.1 has no server DISCONNECT: just closed
    _server_alive(srv)


def _server_alive(srv) -> None:
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(uniq()).reason_code == 0
    c.send(Pingreq())
    c.expect(Pingresp)
    c.close()


def test_garbage_before_connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.mqtt_port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100) == b""
    s.close()
    # A truncated CONNECT followed by EOF, and a CONNECT with a malformed body (5.0: CONNACK 0x81).
    s = socket.create_connection(("127.0.0.1", srv.mqtt_port), timeout=10)
    s.sendall(b"\x10\x20\x00\x04MQ")
    s.close()
    c = RawMqtt(srv.mqtt_port)
    c.codec.send(Connect("x"))                 # the codec's state only; the bytes below go out
    # Protocol level 5 with a reserved CONNECT flag set.
    c.send_raw(b"\x10\x0e\x00\x04MQTT\x05\x03\x00\x3c\x00\x00\x01x")
    ack = c.expect(Connack)
    assert ack.reason_code == 0x81 and c.wait_closed()
    _server_alive(srv)


def test_packet_before_connect_and_connect_timeout(srv):
    s = socket.create_connection(("127.0.0.1", srv.mqtt_port), timeout=10)
    s.sendall(b"\xc0\x00")                     # PINGREQ first
    assert s.recv(10) == b""
    s.close()
    s = socket.create_connection(("127.0.0.1", srv.mqtt_port), timeout=10)   # says nothing
    assert s.recv(10) == b""
    s.close()
    _server_alive(srv)
