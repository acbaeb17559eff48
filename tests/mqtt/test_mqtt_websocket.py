"""MQTT over WebSocket: paho's websockets transport against `/mqtt` on the http listener, the frames on
the wire, and the `mqtt-ws` alias listener kept for existing configs."""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest
from mqttsupport import MqttServer, Paho, uniq
from support import free_port


@pytest.mark.parametrize("version", [4, 5])
def test_paho_over_websocket_talks_to_tcp_clients(mqtt_server, version):
    topic = f"ws/{uniq()}"
    ws = Paho(mqtt_server.ws_port, uniq("ws"), version=version, transport="websockets")
    tcp = Paho(mqtt_server.mqtt_port, uniq("tcp"), version=version)
    ws.subscribe(topic + "/in", qos=1)
    tcp.subscribe(topic + "/out", qos=2)
    tcp.publish(topic + "/in", b"to ws" * 1000, qos=1)
    m = ws.get()
    assert m.payload == b"to ws" * 1000 and m.qos == 1
    ws.publish(topic + "/out", b"from ws", qos=2)
    m = tcp.get()
    assert (m.topic, m.payload, m.qos) == (topic + "/out", b"from ws", 2)
    ws.close()
    tcp.close()


def _handshake(port: int, protocol: str | None = "mqtt", extra: str = "", path: str = "/mqtt"
               ) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "") + extra + "\r\n")
    s.sendall(req.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return s, data


def _frame(payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _wire_checks(port: int, plain_path: str) -> None:
    s, resp = _handshake(port)
    assert resp.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: mqtt" in resp
    # A CONNECT split across two frames (fragmented message), then PINGREQ in the same read.
    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01w"
    s.sendall(_frame(connect[:5], fin=False) + _frame(connect[5:], opcode=0) + _frame(b"\xc0\x00"))
    data = _recv_exactly(s, 10)
    assert data == b"\x82\x04\x20\x02\x00\x00" + b"\x82\x02\xd0\x00"   # CONNACK, PINGRESP as binary frames
    s.sendall(_frame(b"hi", opcode=9))                                  # ping -> pong
    assert _recv_exactly(s, 4) == b"\x8a\x02hi"
    s.sendall(_frame(b"text", opcode=1))                                # text frames are refused
    assert _recv_exactly(s, 4)[:4] == b"\x88\x02\x03\xeb"               # close 1003
    s.close()
    # Not a WebSocket request, or a subprotocol other than mqtt: HTTP errors.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {plain_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 426")
    s.close()
    s, resp = _handshake(port, protocol="chat")
    assert resp.startswith(b"HTTP/1.1 400")
    s.close()


def test_websocket_handshake_and_framing_on_the_wire(mqtt_server):
    _wire_checks(mqtt_server.ws_port, "/")         # `/` is IRC's WebSocket route: a plain GET there is 426
    _wire_checks(mqtt_server.ws_port, "/mqtt")
    # No subprotocol offered (older clients): accepted, without the header.
    s, resp = _handshake(mqtt_server.ws_port, protocol=None)
    assert resp.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol" not in resp
    s.close()


def test_mqtt_ws_alias_listener_serves_the_route_at_any_path(tmp_path):
    """Configs written for the old `proto: mqtt-ws` listener keep working: the /mqtt route on its own port."""
    srv = MqttServer(tmp_path / "alias")
    alias_port = free_port()
    srv.config["listen"].append({"proto": "mqtt-ws", "host": "127.0.0.1", "port": alias_port})
    srv.path.write_text(__import__("yaml").safe_dump(srv.config))
    srv.start()
    try:
        _wire_checks(alias_port, "/")
        s, resp = _handshake(alias_port, path="/anything")
        assert resp.startswith(b"HTTP/1.1 101")
        s.close()
        topic = f"alias/{uniq()}"
        ws = Paho(alias_port, uniq("ws"), version=5, transport="websockets")
        tcp = Paho(srv.mqtt_port, uniq("tcp"), version=5)
        ws.subscribe(topic, qos=1)
        tcp.publish(topic, b"via alias", qos=1)
        assert ws.get().payload == b"via alias"
        ws.close()
        tcp.close()
    finally:
        srv.stop()
