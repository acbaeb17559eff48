"""MQTT over WebSocket: paho's websockets transport against the `mqtt-ws` listener, and the sans-IO codec."""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest
from mqttsupport import Paho, uniq

from bridges.mqtt.websocket import (WsAccept, WsClose, WsData, WsPing, WsReject, WsServer, accept_key)


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


def _handshake(port: int, protocol: str | None = "mqtt", extra: str = "") -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
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


def test_websocket_handshake_and_framing_on_the_wire(mqtt_server):
    s, resp = _handshake(mqtt_server.ws_port)
    assert resp.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: mqtt" in resp
    # A CONNECT split across two frames (fragmented message), then PINGREQ in the same read.
    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01w"
    s.sendall(_frame(connect[:5], fin=False) + _frame(connect[5:], opcode=0) + _frame(b"\xc0\x00"))
    data = b""
    while len(data) < 8:
        data += s.recv(100)
    assert data == b"\x82\x04\x20\x02\x00\x00" + b"\x82\x02\xd0\x00"   # CONNACK, PINGRESP as binary frames
    s.sendall(_frame(b"hi", opcode=9))                                  # ping -> pong
    assert s.recv(100) == b"\x8a\x02hi"
    s.sendall(_frame(b"text", opcode=1))                                # text frames are refused
    assert s.recv(100)[:4] == b"\x88\x02\x03\xeb"                       # close 1003
    s.close()
    # Not a WebSocket request, or a subprotocol other than mqtt: HTTP errors.
    s = socket.create_connection(("127.0.0.1", mqtt_server.ws_port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 426")
    s.close()
    s, resp = _handshake(mqtt_server.ws_port, protocol="chat")
    assert resp.startswith(b"HTTP/1.1 400")
    s.close()


# ---------------------------------------------------------------------- the sans-IO codec

def _request(key: str = "dGhlIHNhbXBsZSBub25jZQ==", proto: str = "mqtt") -> bytes:
    return (f"GET /mqtt HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Protocol: {proto}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def test_accept_key_rfc6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_codec_handshake_byte_by_byte_then_frames_in_pieces():
    ws = WsServer()
    evs = []
    req = _request(proto="mqttv3.1, mqtt")
    for i in range(len(req)):
        evs += ws.receive_data(req[i:i + 1])
    assert len(evs) == 1 and type(evs[0]) is WsAccept and evs[0].subprotocol == "mqtt"
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in evs[0].response
    payload = bytes(range(256)) * 300                       # 64-bit length form
    wire = _frame(payload) + _frame(b"", opcode=9) + _frame(b"\x03\xe8bye", opcode=8)
    out = []
    for i in range(0, len(wire), 7):
        out += ws.receive_data(wire[i:i + 7])
    data = b"".join(e.data for e in out if type(e) is WsData)
    assert data == payload
    assert [type(e) for e in out if type(e) is not WsData] == [WsPing, WsClose]
    assert out[-1].code == 1000 and out[-1].reason == "bye"


@pytest.mark.parametrize("frame,code", [
    (b"\x82\x02ab", 1002),                                  # unmasked
    (b"\xc2\x80abcd", 1002),                                # RSV1 set
    (b"\x89\xfe\x00\x80" + b"m" * 4, 1002),                 # control frame over 125 bytes
    (b"\x80\x80mask", 1002),                                # continuation without a message
    (b"\x83\x80mask", 1002),                                # reserved opcode
])
def test_codec_protocol_errors(frame, code):
    ws = WsServer()
    ws.receive_data(_request())
    evs = ws.receive_data(frame)
    assert type(evs[-1]) is WsClose and evs[-1].code == code
    assert ws.receive_data(b"more") == []


def test_codec_rejects_bad_handshakes():
    assert type(WsServer().receive_data(b"POST / HTTP/1.1\r\n\r\n")[0]) is WsReject
    assert type(WsServer().receive_data(_request(key="short"))[0]) is WsReject
    bad_version = _request().replace(b"Version: 13", b"Version: 8")
    assert b"426" in WsServer().receive_data(bad_version)[0].response
    assert type(WsServer().receive_data(b"G" * 20000)[0]) is WsReject
    # No subprotocol offered: accepted without one.
    req = _request().replace(b"Sec-WebSocket-Protocol: mqtt\r\n", b"")
    ev = WsServer().receive_data(req)[0]
    assert type(ev) is WsAccept and ev.subprotocol is None and b"Sec-WebSocket-Protocol" not in ev.response
