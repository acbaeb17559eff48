"""The control-socket protocol: one JSON object per line, both ways. Sans-IO.

Request: {"argv": ["module", "load", "welcome"]}
Reply:   {"ok": true, "status": 0, "text": "...", "data": ...}
"""

from __future__ import annotations

import json

MAX_LINE = 1 << 20


class ControlError(Exception):
    pass


class ControlCodec:
    def __init__(self, max_line: int = MAX_LINE):
        self._buf = bytearray()
        self.max_line = max_line

    def receive_data(self, data: bytes) -> list[dict]:
        self._buf += data
        out = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self.max_line:
                    raise ControlError("control message too long")
                return out
            line = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise ControlError(f"not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ControlError("a control message must be a JSON object")
            out.append(obj)

    @staticmethod
    def send(obj: dict) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def request(argv: list[str]) -> dict:
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ControlError("argv must be a list of strings")
    return {"argv": argv}
