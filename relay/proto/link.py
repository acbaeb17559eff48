"""Server-to-server link codec and handshake helpers (sans-IO, stdlib only).

A frame on the wire is a 4-byte big-endian body length, then a compact JSON
array ``[type, origin, seq, payload]``: `origin` is the id of the server that
generated the frame, `seq` its per-origin sequence number (0 when the frame is
not sequenced) and `payload` an object.

The codec knows frame types only through `FRAME_SCHEMAS` (required payload
keys and their exact JSON types). A frame of a type not in it is not an error:
it comes out with ``known=False`` so a server can pass it on inside ``ENCAP``.

Any `LinkProtocolError` is fatal to the link: the peer is broken or hostile,
and the codec is not usable after it, so drop the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

PROTOCOL_VERSION = 1

# What this implementation can do beyond the base protocol; peers use the intersection.
# ENCAP: forwards unknown frames in an envelope; EOB: ends a burst explicitly;
# REPLAY: keeps a replay buffer keyed by (origin, seq) so a returning link resumes.
CAPABILITIES = frozenset({"ENCAP", "EOB", "REPLAY"})

DEFAULT_MAX_FRAME = 1_048_576
MAX_TYPE_LEN = 32
MAX_SEQ = 2**63 - 1
# Challenges are hex strings; 16 random bytes is the least a peer may send.
MIN_CHALLENGE_BYTES = 16
MAX_CHALLENGE_LEN = 128

_SERVER_ID = re.compile(r"[0-9][0-9A-Z]{2}")
_UID = re.compile(r"[0-9][0-9A-Z]{2}[A-Z0-9]{6}")
_HEX = re.compile(r"[0-9a-f]+")


def valid_server_id(s: object) -> bool:
    """A TS6-style server id: a digit then two digits or capital letters (``001``, ``0AB``)."""
    return isinstance(s, str) and _SERVER_ID.fullmatch(s) is not None


def valid_uid(s: object) -> bool:
    """A user id: the user's server id followed by 6 characters [A-Z0-9] (``001AAAAAB``)."""
    return isinstance(s, str) and _UID.fullmatch(s) is not None


def _valid_source(s: object) -> bool:
    return valid_uid(s) or valid_server_id(s)


# Required payload keys per frame type, with their exact JSON type (bool is not an int).
# Extra keys are allowed, so a newer peer can add fields without breaking older ones.
# HELLO keeps these keys in every protocol version, so a version mismatch is reported as one.
FRAME_SCHEMAS: dict[str, dict[str, type]] = {
    "HELLO": {"version": int, "id": str, "name": str, "caps": list, "challenge": str},
    "AUTH": {"response": str},
    "ERROR": {"reason": str},
    "SERVER": {"id": str, "name": str, "parent": str, "hops": int, "description": str},
    "SQUIT": {"id": str, "reason": str},
    "UID": {"uid": str, "nick": str, "ts": int, "user": str, "host": str, "realname": str},
    "NICK": {"uid": str, "nick": str, "ts": int},
    "QUIT": {"uid": str, "reason": str},
    "SJOIN": {"channel": str, "ts": int, "modes": str, "members": list},
    "PART": {"uid": str, "channel": str, "reason": str},
    "PRIVMSG": {"source": str, "target": str, "text": str},
    "NOTICE": {"source": str, "target": str, "text": str},
    "PING": {"token": str},
    "PONG": {"token": str},
    "EOB": {},
    "ENCAP": {"target": str, "type": str, "payload": dict},
}

# Longest string accepted for a payload key, in every known frame type that has it.
# Message text has no limit of its own: the frame limit bounds it.
FIELD_LIMITS: dict[str, int] = {
    "name": 63,
    "description": 400,
    "nick": 64,
    "user": 64,
    "host": 255,
    "realname": 400,
    "channel": 200,
    "target": 200,
    "modes": 400,
    "reason": 400,
    "token": 64,
    "type": MAX_TYPE_LEN,
    "challenge": MAX_CHALLENGE_LEN,
    "response": 128,
}

# Payload keys that hold ids, and the syntax each must have.
ID_FIELDS: dict[str, Callable[[object], bool]] = {
    "id": valid_server_id,
    "parent": valid_server_id,
    "uid": valid_uid,
    "source": _valid_source,
}


class LinkProtocolError(Exception):
    """The peer broke the link protocol; `reason` says how. Drop the link."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Frame:
    type: str
    origin: str
    seq: int
    payload: dict[str, Any]
    known: bool = True
    raw: bytes | None = field(default=None, compare=False, repr=False)  # the frame as received (header included): forwarded unchanged, not re-encoded


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json = _decoder.decode
_scan_json = _decoder.scan_once
_encode_json = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def _not_json(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


if json.encoder.c_make_encoder is not None:
    # The same encoding, with the C encoder made once rather than on every frame.
    _c_encoder = json.encoder.c_make_encoder(None, _not_json, json.encoder.encode_basestring, None, ":", ",",
                                             False, False, False)

    def _encode_json(obj) -> str:  # noqa: F811
        return "".join(_c_encoder(obj, 0))


def _check_payload(ftype: str, payload: dict[str, Any], rules) -> None:
    """Raise LinkProtocolError unless `payload` has every key of its schema, well typed and within limits."""
    for key, expected, limit, check in rules:
        value = payload.get(key, _MISSING)
        if type(value) is not expected:
            if value is _MISSING:
                raise LinkProtocolError(f"{ftype} frame without {key}")
            raise LinkProtocolError(f"{ftype} frame: {key} must be {expected.__name__}, not {type(value).__name__}")
        if limit is not None and len(value) > limit:
            raise LinkProtocolError(f"{ftype} frame: {key} longer than {limit} characters")
        if check is not None and not check(value):
            raise LinkProtocolError(f"{ftype} frame: {key} {value[:16]!r} is not a valid id")


_MISSING = object()
# The schemas as (key, type, length limit, id check) rows: looked up once, not per frame.
_RULES = {ftype: tuple((k, t, FIELD_LIMITS.get(k) if t is str else None, ID_FIELDS.get(k) if t is str else None)
                       for k, t in schema.items())
          for ftype, schema in FRAME_SCHEMAS.items()}


def _decode_body(body) -> Frame:
    try:
        data = _decode_json(str(body, "utf-8"))
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8 and bad JSON; RecursionError, absurd nesting.
        raise LinkProtocolError(f"frame body is not JSON: {str(e)[:80]}") from None
    return _check_frame(data)


def _check_frame(data) -> Frame:
    if type(data) is not list or len(data) != 4:
        raise LinkProtocolError("frame body must be a JSON array [type, origin, seq, payload]")
    ftype, origin, seq, payload = data
    if type(ftype) is not str or not 0 < len(ftype) <= MAX_TYPE_LEN:
        raise LinkProtocolError(f"frame type must be a string of 1-{MAX_TYPE_LEN} characters")
    if not valid_server_id(origin):
        raise LinkProtocolError(f"{ftype} frame: origin {str(origin)[:16]!r} is not a server id")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise LinkProtocolError(f"{ftype} frame: seq must be an integer 0-{MAX_SEQ}")
    if type(payload) is not dict:
        raise LinkProtocolError(f"{ftype} frame: payload must be an object")
    rules = _RULES.get(ftype)
    if rules is None:
        return Frame(ftype, origin, seq, payload, False)
    _check_payload(ftype, payload, rules)
    return Frame(ftype, origin, seq, payload, True)


class LinkCodec:
    """Bytes to frames and back for one link. `receive_data` validates everything; `encode` only the size."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames = []
        pos, size = 0, len(buf)
        raws = []
        while size - pos >= 4:
            length = int.from_bytes(buf[pos:pos + 4], "big")
            # Checked on the header alone, so a hostile length never makes us buffer its body.
            if length > self.max_frame:
                raise LinkProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            end = pos + 4 + length
            if end > size:
                break
            raws.append(bytes(buf[pos:end]))
            pos = end
        del buf[:pos]
        for raw in raws:
            # The C scanner straight on each body (no per-frame wrapper); a body it does not take
            # whole (whitespace around it, bad UTF-8 or JSON) goes through the full decoder, which
            # accepts or names the fault.
            body, end = None, -1
            try:
                body = str(memoryview(raw)[4:], "utf-8")
                data, end = _scan_json(body, 0)
            except (ValueError, RecursionError, StopIteration):
                pass
            if body is None or end != len(body):
                f = _decode_body(memoryview(raw)[4:])
            else:
                f = _check_frame(data)
            f.raw = raw
            frames.append(f)
        return frames

    def encode(self, type: str, origin: str, seq: int, payload: dict[str, Any]) -> bytes:
        # A lone surrogate (only reachable through a \u escape a peer sent) has no UTF-8 form:
        # replace it rather than fail to forward someone else's frame.
        body = _encode_json([type, origin, seq, payload]).encode("utf-8", "replace")
        if len(body) > self.max_frame:
            raise LinkProtocolError(f"{type} frame of {len(body)} bytes exceeds the limit of {self.max_frame}")
        return len(body).to_bytes(4, "big") + body

    def send(self, frame: Frame) -> bytes:
        return self.encode(frame.type, frame.origin, frame.seq, frame.payload)


def make_challenge(rand: bytes) -> str:
    """A handshake challenge from caller-supplied random bytes (16 to 64 of them)."""
    if not MIN_CHALLENGE_BYTES <= len(rand) <= MAX_CHALLENGE_LEN // 2:
        raise ValueError(f"a challenge needs {MIN_CHALLENGE_BYTES}-{MAX_CHALLENGE_LEN // 2} random bytes")
    return rand.hex()


def valid_challenge(s: object) -> bool:
    return (isinstance(s, str) and MIN_CHALLENGE_BYTES * 2 <= len(s) <= MAX_CHALLENGE_LEN
            and _HEX.fullmatch(s) is not None)


def auth_response(secret: str, challenge: str, my_id: str, peer_id: str, my_challenge: str) -> str:
    """What `my_id` answers to `challenge`, the challenge `peer_id` sent it.

    The MAC covers who answers whom and both challenges, so a response is
    worthless in the other direction or in another handshake; the secret
    itself never crosses the wire.
    """
    msg = "\n".join(("relaynet-link-auth-v1", my_id, peer_id, challenge, my_challenge))
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def verify_response(secret: str, response: str, my_challenge: str, my_id: str, peer_id: str,
                    peer_challenge: str) -> bool:
    """True if `response` is what `peer_id` must answer to `my_challenge`."""
    expected = auth_response(secret, my_challenge, peer_id, my_id, peer_challenge)
    return hmac.compare_digest(expected.encode(), response.encode())
