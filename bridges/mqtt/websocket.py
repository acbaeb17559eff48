"""A small sans-IO WebSocket server (RFC 6455) for MQTT over WebSocket.

Bytes in, events out; no sockets, no clock. Only what a broker needs:

* the opening handshake (HTTP/1.1 GET with Upgrade: websocket, version 13), choosing
  the `mqtt` subprotocol when the client offers it (MQTT 5.0 section 6: the client
  SHOULD offer "mqtt"; an offer that lacks it is refused with 400);
* binary frames, fragmented or not, handed on as a byte stream: MQTT packets may span
  frames and a frame may hold several packets, so frame boundaries carry no meaning;
* ping/pong, close; text frames are refused (MQTT-6.0.0-1: close with 1003).

    ws = WsServer()
    for ev in ws.receive_data(data):
        if type(ev) is WsAccept:  sock.send(ev.response)
        elif type(ev) is WsData:  mqtt.receive_data(ev.data)
        elif type(ev) is WsPing:  sock.send(ws.pong(ev.payload))
        elif type(ev) is WsClose: sock.send(ws.close(1000 if ev.by_peer else ev.code)); sock.close()
        elif type(ev) is WsReject: sock.send(ev.response); sock.close()
    sock.send(ws.frame(mqtt_bytes))
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

__all__ = ["WsServer", "WsAccept", "WsReject", "WsData", "WsPing", "WsClose", "accept_key"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16384
MAX_CONTROL = 125

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes (RFC 6455 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009


@dataclass(slots=True)
class WsAccept:
    """The handshake is valid: send `response`; `path` and `subprotocol` for information."""
    response: bytes
    path: str
    subprotocol: str | None
    headers: dict[str, str]


@dataclass(slots=True)
class WsReject:
    """Not a valid WebSocket handshake: send `response` (an HTTP error) and close."""
    response: bytes
    reason: str


@dataclass(slots=True)
class WsData:
    data: bytes


@dataclass(slots=True)
class WsPing:
    payload: bytes


@dataclass(slots=True)
class WsClose:
    """The peer closed (by_peer) or broke the protocol: answer with `close(code)` and close."""
    code: int
    reason: str
    by_peer: bool = False


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def _http_error(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body


class WsServer:
    def __init__(self, subprotocol: str = "mqtt", max_frame: int = 1 << 28) -> None:
        self.subprotocol = subprotocol
        self.max_frame = max_frame
        self.open = False
        self.closed = False
        self._buf = bytearray()
        # Frame being received (payload bytes may arrive in pieces).
        self._remaining = 0
        self._mask = b""
        self._mask_pos = 0
        self._opcode = 0          # opcode of the current (possibly continued) data message
        self._frame_op = 0
        self._control = bytearray()
        self._in_frame = False

    # ---- handshake ----

    def _handshake(self) -> list:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HANDSHAKE:
                self.closed = True
                return [WsReject(_http_error("431 Request Header Fields Too Large", "headers too large"),
                                 "handshake too large")]
            return []
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
            return self._reject("400 Bad Request", "not an HTTP/1.1 GET request")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return self._reject("400 Bad Request", "malformed header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if "websocket" not in [t.strip().lower() for t in headers.get("upgrade", "").split(",")]:
            return self._reject("426 Upgrade Required", "this endpoint speaks WebSocket only",
                                "Upgrade: websocket\r\n")
        if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
            return self._reject("400 Bad Request", "Connection: Upgrade missing")
        if headers.get("sec-websocket-version") != "13":
            return self._reject("426 Upgrade Required", "WebSocket version 13 only",
                                "Sec-WebSocket-Version: 13\r\n")
        key = headers.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError
        except ValueError:
            return self._reject("400 Bad Request", "bad Sec-WebSocket-Key")
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        chosen = None
        if offered:
            if self.subprotocol not in offered:
                return self._reject("400 Bad Request", f"subprotocol {self.subprotocol!r} not offered")
            chosen = self.subprotocol
        response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
                    + (f"Sec-WebSocket-Protocol: {chosen}\r\n" if chosen else "") + "\r\n").encode()
        self.open = True
        return [WsAccept(response, parts[1], chosen, headers)]

    def _reject(self, status: str, reason: str, extra: str = "") -> list:
        self.closed = True
        return [WsReject(_http_error(status, reason + "\n", extra), reason)]

    # ---- frames ----

    def receive_data(self, data: bytes) -> list:
        if self.closed:
            return []
        self._buf += data
        events: list = []
        if not self.open:
            events = self._handshake()
            if not self.open:
                return events
        buf = self._buf
        pos = 0
        n = len(buf)
        while pos < n and not self.closed:
            if not self._in_frame:
                header = self._frame_header(buf, pos, n)
                if header is None:
                    break
                if type(header) is WsClose:
                    self.closed = True
                    events.append(header)
                    break
                pos = header
                if self._remaining == 0:
                    self._finish_frame(events)
                continue
            take = min(self._remaining, n - pos)
            chunk = self._unmask(bytes(buf[pos:pos + take]))
            pos += take
            self._remaining -= take
            if self._frame_op in (OP_CONT, OP_BINARY):
                if chunk:
                    events.append(WsData(chunk))
            else:
                self._control += chunk
            if self._remaining == 0:
                self._finish_frame(events)
        del buf[:pos]
        return events

    def _frame_header(self, buf: bytearray, pos: int, n: int):
        if n - pos < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        fin, rsv, op = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        masked, length = b1 & 0x80, b1 & 0x7F
        i = pos + 2
        if length == 126:
            if n - i < 2:
                return None
            length = struct.unpack_from("!H", buf, i)[0]
            i += 2
        elif length == 127:
            if n - i < 8:
                return None
            length = struct.unpack_from("!Q", buf, i)[0]
            i += 8
        if rsv:
            return WsClose(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if not masked:
            return WsClose(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if n - i < 4:
            return None
        if op >= 0x8:
            if not fin or length > MAX_CONTROL:
                return WsClose(CLOSE_PROTOCOL_ERROR, "bad control frame")
            if op not in (OP_CLOSE, OP_PING, OP_PONG):
                return WsClose(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
        elif op == OP_TEXT:
            return WsClose(CLOSE_UNSUPPORTED, "MQTT over WebSocket uses binary frames")
        elif op == OP_BINARY:
            if self._opcode:
                return WsClose(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            if not fin:
                self._opcode = OP_BINARY
        elif op == OP_CONT:
            if not self._opcode:
                return WsClose(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            if fin:
                self._opcode = 0
        else:
            return WsClose(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
        if length > self.max_frame:
            return WsClose(CLOSE_TOO_BIG, "frame too large")
        self._mask = bytes(buf[i:i + 4])
        self._mask_pos = 0
        self._remaining = length
        self._frame_op = op
        self._control = bytearray()
        self._in_frame = True
        return i + 4

    def _unmask(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        k = self._mask_pos
        mask = (self._mask[k:] + self._mask[:k]) * (len(chunk) // 4 + 1)
        self._mask_pos = (k + len(chunk)) % 4
        n = len(chunk)
        return (int.from_bytes(chunk, "big") ^ int.from_bytes(mask[:n], "big")).to_bytes(n, "big")

    def _finish_frame(self, events: list) -> None:
        self._in_frame = False
        op = self._frame_op
        if op == OP_PING:
            events.append(WsPing(bytes(self._control)))
        elif op == OP_CLOSE:
            data = bytes(self._control)
            code, reason = CLOSE_NORMAL, ""
            if len(data) >= 2:
                code = struct.unpack("!H", data[:2])[0]
                reason = data[2:].decode("utf-8", "replace")
            self.closed = True
            events.append(WsClose(code, reason, by_peer=True))

    # ---- sending ----

    @staticmethod
    def frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        return head + payload

    def pong(self, payload: bytes) -> bytes:
        return self.frame(payload, OP_PONG)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        self.closed = True
        return self.frame(struct.pack("!H", code) + reason.encode()[:120], OP_CLOSE)
