"""Server-to-server link codec and handshake helpers (sans-IO, stdlib only).

A frame on the wire is a 4-byte big-endian body length, then a compact JSON
array ``[type, origin, seq, payload]``: `origin` is the id of the server that
generated the frame, `seq` its per-origin sequence number (0 when the frame is
not sequenced) and `payload` an object.

The codec knows frame types only through `FRAME_SCHEMAS` (payload keys,
required or optional, and their exact JSON types, down into lists and objects). A frame of a type not in it is not an error:
it comes out with ``known=False`` so a server can pass it on inside ``ENCAP``.

Any `LinkProtocolError` is fatal to the link: the peer is broken or hostile,
and the codec is not usable after it, so drop the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, get_args

PROTOCOL_VERSION = 1

# What this implementation can do beyond the base protocol; peers use the intersection.
# ENCAP: forwards unknown frames in an envelope; EOB: ends a burst explicitly;
# REPLAY: keeps a replay buffer keyed by (origin, seq) so a returning link resumes.
CAPABILITIES = frozenset({"ENCAP", "EOB", "REPLAY"})

DEFAULT_MAX_FRAME = 1_048_576
MAX_TYPE_LEN = 32
MAX_SEQ = 2**63 - 1
# Latest time a frame may name (ts, signon, time): year 6325, past which clocks cannot render it.
MAX_TIME = 2**37
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


# ---------------------------------------------------------------- the schema language
# A key's spec is one of: a JSON type (str, int, bool, dict, list; exact, so bool is not an int),
# a union of them with None for null (`str | None`), ListOf, Tup, MapOf, Checked, and at the top of a
# schema Opt (the key may be absent). Top-level strings also get FIELD_LIMITS and ID_FIELDS by key
# name, top-level numbers NUMBER_RANGES.


@dataclass(frozen=True, slots=True)
class Opt:
    """The key may be absent; when present it must match `spec`."""
    spec: Any


@dataclass(frozen=True, slots=True)
class ListOf:
    """A JSON array of at most `max_items` items, each matching `item`."""
    item: Any
    max_items: int = 10_000


@dataclass(frozen=True, slots=True)
class Tup:
    """A JSON array of exactly len(items) items, the i-th matching items[i]."""
    items: tuple


@dataclass(frozen=True, slots=True)
class MapOf:
    """A JSON object whose keys pass `key_check` (described by `key_what`) and whose values match `value`."""
    value: Any
    key_check: Callable[[str], bool] | None = None
    key_what: str = ""
    max_items: int = 10_000


@dataclass(frozen=True, slots=True)
class Checked:
    """`spec`, and then `check(value)` must hold; `what` says what it must be, for the error."""
    spec: Any
    check: Callable[[Any], bool]
    what: str

    def __or__(self, other):
        return AnyOf((self, other))


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Any of `specs` (the first that matches); None stands for null."""
    specs: tuple


_TYPE_NAMES = {type(None): "null"}


def _type_name(t) -> str:
    return _TYPE_NAMES.get(t, getattr(t, "__name__", str(t)))


def is_word(s: str) -> bool:
    """A name every protocol can show as one token: not empty, no space or line break, no leading ':'."""
    return bool(s) and s[0] != ":" and " " not in s and is_line(s)


def is_line(s: str) -> bool:
    """Text on one line: no NUL, CR or LF (every protocol's senders fold them before the network)."""
    return "\n" not in s and "\r" not in s and "\0" not in s   # three scans beat one regex call


_A_UID = Checked(str, valid_uid, "is not a valid id")
_WORD = Checked(str, is_word, "is not a name (empty, or a space, line break or leading ':')")
# What may stand for who did something to a channel: a user's id, or a server's name.
_ACTOR = Checked(str, lambda s: valid_uid(s) or (0 < len(s) <= 63 and " " not in s), "is not a user id or server name")
_SHORT = Checked(str, lambda s: len(s) <= 400 and is_line(s), "is not one line of at most 400 characters")
_MASK = Checked(str, lambda s: len(s) <= 400 and is_word(s), "is not a mask of at most 400 characters")
_STATUS = Checked(str, lambda s: len(s) <= 8, "is longer than 8 characters")
_MODE_CHAR = Checked(str, lambda s: len(s) == 1, "must be one character")
_SIGN = Checked(str, lambda s: s in ("+", "-"), "must be + or -")
_TIME = Checked(int, lambda n: 0 <= n <= MAX_TIME, "is not a time")
# A list entry (ban, exception, invite): [mask, setter, set at].
_LIST_ENTRY = Tup((_MASK, _SHORT, _TIME))

# Message tags: keys a protocol can name (IRCv3's rules), values one line.
_TAGS = MapOf(Checked(str, is_line, "is not one line") | None, lambda k: is_word(k) and not any(c in k for c in "=;"),
              "is not a tag name", 100)

# Message text crosses links as one line: every protocol's senders fold line breaks before the network.
_TEXT = Checked(str, is_line, "is not one line (NUL, CR or LF)")

# Payload keys per frame type, with their exact JSON types. Extra keys are allowed, so a newer peer
# can add fields without breaking older ones. HELLO keeps these keys in every protocol version, so a
# version mismatch is reported as one. Each is what the senders in relay/core/links.py put in.
FRAME_SCHEMAS: dict[str, dict[str, Any]] = {
    "HELLO": {"version": int, "id": str, "name": str, "caps": list, "challenge": str},
    "AUTH": {"response": str},
    "ERROR": {"reason": str},
    "VECTOR": {"seen": dict},  # {server id: seq}; checked further by its handler, which names the fault
    "SERVER": {"id": str, "name": str, "parent": str, "hops": int, "description": str, "seq": Opt(int)},
    "SQUIT": {"id": str, "reason": str},
    "UID": {"uid": str, "nick": str, "ts": int, "user": str, "host": str, "realname": str,
            "server": Opt(str), "account": Opt(str | None), "away": Opt(str | None), "modes": Opt(str),
            "proto": Opt(str), "ip": Opt(str), "signon": Opt(int), "attrs": Opt(MapOf(dict))},
    "NICK": {"uid": str, "nick": str, "ts": int},
    "QUIT": {"uid": str, "reason": str},
    "KILL": {"uid": str, "reason": str},
    # members: [[uid, status], ...]; the rows are checked by the handler's schema (MEMBER_ROWS).
    "SJOIN": {"channel": str, "ts": int, "modes": str, "members": list,
              "key": Opt(str | None), "limit": Opt(int | None),
              "lists": Opt(MapOf(ListOf(_LIST_ENTRY, 100_000), lambda k: len(k) == 1, "must be one character")),
              "topic": Opt(Tup((Checked(str, lambda s: len(s) <= 1000 and is_line(s), "is not one line of at most 1000 characters"),
                             _SHORT, _TIME)))},
    "PART": {"uid": str, "channel": str, "reason": str},
    "KICK": {"source": _ACTOR, "channel": str, "uid": str, "reason": str},
    "MODE": {"source": _ACTOR, "channel": str, "ts": int, "changes": ListOf(Tup((_SIGN, _MODE_CHAR, _WORD | None)), 1000)},
    "TOPIC": {"source": _ACTOR, "channel": str, "topic": str, "setter": str, "ts": int},
    "UPDATE": {"uid": str, "what": str, "value": str | dict | None},
    "INVITE": {"source": str, "uid": str, "channel": str},
    "PRIVMSG": {"source": str, "target": str, "text": _TEXT, "tags": Opt(_TAGS),
                "msgid": Opt(str | None), "time": Opt(int | float)},
    "NOTICE": {"source": str, "target": str, "text": _TEXT, "tags": Opt(_TAGS),
               "msgid": Opt(str | None), "time": Opt(int | float)},
    "TAGMSG": {"source": str, "target": str, "text": _TEXT, "tags": Opt(_TAGS),
               "msgid": Opt(str | None), "time": Opt(int | float)},
    "PING": {"token": str},
    "PONG": {"token": str},
    "EOB": {"server": Opt(str)},
    "ENCAP": {"target": str, "type": str, "payload": dict},
}

# SJOIN members, as the receiving side's frame table checks them.
MEMBER_ROWS = ListOf(Tup((_A_UID, _STATUS)), 100_000)

# UPDATE {what, value}: the type of `value` for each `what` this version knows (others pass on).
_LINE = Checked(str, lambda s: len(s) <= 400 and is_line(s), "is not one line of at most 400 characters")
UPDATE_VALUES: dict[str, Any] = {"away": _LINE | None, "account": _WORD | None, "realname": _LINE, "modes": _LINE,
                                 "attrs": MapOf(dict)}

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
    "account": 200,
    "away": 400,
    "topic": 1000,
    "setter": 400,
    "key": 200,
    "what": 32,
    "proto": 32,
    "ip": 64,
    "msgid": 128,
}

# Payload keys that hold ids, and the syntax each must have.
ID_FIELDS: dict[str, Callable[[object], bool]] = {
    "id": valid_server_id,
    "parent": valid_server_id,
    "server": valid_server_id,
    "uid": valid_uid,
    "source": _valid_source,
}

# Strings by key name: what every protocol shows as one token (a word), or as one line of text.
_WORD_KEYS = ("nick", "user", "channel", "name", "account", "key", "proto", "what")
# Hosts and addresses may start with ':' (IPv6); the setter of a topic may be empty.
_LINE_KEYS = ("reason", "realname", "away", "topic", "description", "modes", "setter")
_TOKEN_KEYS = ("host", "ip")
STRING_CHECKS: dict[str, tuple[Callable[[str], bool], str]] = {
    **{k: (is_word, "is not a name (empty, or a space, line break or leading ':')") for k in _WORD_KEYS},
    **{k: (is_line, "is not one line (NUL, CR or LF)") for k in _LINE_KEYS},
    **{k: (lambda s: bool(s) and " " not in s and is_line(s), "is not a host (empty, or a space or line break)")
       for k in _TOKEN_KEYS},
}

# Numbers a peer could make absurd (a time past what clocks render, a negative count): their range.
NUMBER_RANGES: dict[str, tuple[int, int]] = {
    "ts": (0, MAX_TIME),
    "signon": (0, MAX_TIME),
    "time": (0, MAX_TIME),
    "hops": (0, 1000),
    "limit": (0, MAX_SEQ),
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


_frame_length = struct.Struct(">I").unpack_from
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


def _base_type(spec) -> type:
    """The JSON type a spec in an AnyOf stands for (one each)."""
    while isinstance(spec, Checked):
        spec = spec.spec
    if spec is None:
        return type(None)
    return {ListOf: list, Tup: list, MapOf: dict}.get(type(spec), spec)


def _checker(spec, ftype: str, path: str) -> Callable[[Any], None]:
    """A function that raises LinkProtocolError, naming `ftype` and `path`, unless its value matches `spec`."""
    if isinstance(spec, Checked):
        inner = _checker(spec.spec, ftype, path)
        check, what = spec.check, spec.what

        def run(v):
            inner(v)
            if not check(v):
                raise LinkProtocolError(f"{ftype} frame: {path} {str(v)[:16]!r} {what}")
        return run
    if isinstance(spec, AnyOf):
        alts = [(_base_type(x), _checker(x, ftype, path)) for x in spec.specs]
        expected = " or ".join(_type_name(t) for t, _ in alts)

        def run(v):
            for t, alt in alts:
                if type(v) is t:
                    return alt(v)
            raise LinkProtocolError(f"{ftype} frame: {path} must be {expected}, not {_type_name(type(v))}")
        return run
    if spec is None:
        spec = type(None)
    # Containers compile their items' checker once; only a failing item gets one naming its place.
    if isinstance(spec, ListOf):
        item, most = spec.item, spec.max_items
        check_item = _checker(item, ftype, path)

        def run(v):
            if type(v) is not list:
                raise LinkProtocolError(f"{ftype} frame: {path} must be list, not {_type_name(type(v))}")
            if len(v) > most:
                raise LinkProtocolError(f"{ftype} frame: {path} has more than {most} items")
            for i, x in enumerate(v):
                try:
                    check_item(x)
                except LinkProtocolError:
                    _checker(item, ftype, f"{path}[{i}]")(x)
                    raise
        return run
    if isinstance(spec, Tup):
        items = spec.items
        checks = tuple(_checker(s, ftype, path) for s in items)

        def run(v):
            if type(v) is not list or len(v) != len(items):
                raise LinkProtocolError(f"{ftype} frame: {path} must be a list of {len(items)} items")
            for i, (check, x) in enumerate(zip(checks, v)):
                try:
                    check(x)
                except LinkProtocolError:
                    _checker(items[i], ftype, f"{path}[{i}]")(x)
                    raise
        return run
    if isinstance(spec, MapOf):
        value, key_check, key_what, most = spec.value, spec.key_check, spec.key_what, spec.max_items
        check_value = _checker(value, ftype, path)

        def run(v):
            if type(v) is not dict:
                raise LinkProtocolError(f"{ftype} frame: {path} must be dict, not {_type_name(type(v))}")
            if len(v) > most:
                raise LinkProtocolError(f"{ftype} frame: {path} has more than {most} keys")
            for k, x in v.items():
                if key_check is not None and not key_check(k):
                    raise LinkProtocolError(f"{ftype} frame: {path} key {k[:16]!r} {key_what}")
                try:
                    check_value(x)
                except LinkProtocolError:
                    _checker(value, ftype, f"{path}[{k[:16]!r}]")(x)
                    raise
        return run
    types = tuple(type(None) if t is None else t for t in get_args(spec)) or (spec,)
    if not all(isinstance(t, type) for t in types):
        raise TypeError(f"{ftype}.{path}: {spec!r} is not a schema")
    expected = " or ".join(map(_type_name, types))

    def run(v):
        if type(v) not in types:
            raise LinkProtocolError(f"{ftype} frame: {path} must be {expected}, not {_type_name(type(v))}")
    return run


def _rule(ftype: str, key: str, spec) -> tuple:
    """A schema row: (key, exact types or None, required, length limit, string checks, range, deep check).
    Plain types and unions of them take the fast path in _check_payload; anything else runs its checker."""
    required = not isinstance(spec, Opt)
    spec = spec.spec if isinstance(spec, Opt) else spec
    extra = ()
    if isinstance(spec, Checked) and isinstance(spec.spec, type) and spec.spec is str:
        extra, spec = ((spec.check, spec.what),), spec.spec     # a checked string: the fast path too
    types = tuple(type(None) if t is None else t for t in get_args(spec)) or (spec,)
    plain = all(isinstance(t, type) for t in types)
    limit = FIELD_LIMITS.get(key) if str in types else None
    idcheck = ID_FIELDS.get(key) if spec is str and not extra else None   # a Checked string has its own
    if idcheck is not None:
        checks = ((idcheck, "is not a valid id"),)
    else:
        checks = (STRING_CHECKS[key],) if key in STRING_CHECKS and str in types else ()
    checks = (*checks, *extra)
    rng = NUMBER_RANGES.get(key) if int in types or float in types else None
    return (key, types if plain else None, required, limit, checks or None, rng,
            None if plain else _checker(spec, ftype, key))


def _check_payload(ftype: str, payload: dict[str, Any], rules) -> None:
    """Raise LinkProtocolError unless `payload` has every key of its schema, well typed and within limits."""
    for key, exact, required, limit, checks, rng, deep in rules:
        value = payload.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise LinkProtocolError(f"{ftype} frame without {key}")
            continue
        if exact is not None:
            if type(value) not in exact:
                expected = " or ".join(map(_type_name, exact))
                raise LinkProtocolError(f"{ftype} frame: {key} must be {expected}, not {_type_name(type(value))}")
        else:
            deep(value)
        if type(value) is str:
            if limit is not None and len(value) > limit:
                raise LinkProtocolError(f"{ftype} frame: {key} longer than {limit} characters")
            if checks is not None:
                for check, what in checks:
                    if not check(value):
                        raise LinkProtocolError(f"{ftype} frame: {key} {value[:16]!r} {what}")
        elif rng is not None and type(value) in (int, float) and not rng[0] <= value <= rng[1]:
            raise LinkProtocolError(f"{ftype} frame: {key} {value!r:.20} is out of range {rng[0]}-{rng[1]}")
    if ftype == "UPDATE" and payload["what"] in _UPDATE_CHECKS:
        _UPDATE_CHECKS[payload["what"]](payload["value"])


def compile_schema(ftype: str, schema: dict[str, Any]) -> tuple:
    """A schema (key -> spec) as the rows `check_payload` takes."""
    return tuple(_rule(ftype, k, spec) for k, spec in schema.items())


def check_payload(ftype: str, payload: dict[str, Any], rules: tuple) -> None:
    """Raise LinkProtocolError (naming `ftype` and the key) unless `payload` matches the compiled schema."""
    _check_payload(ftype, payload, rules)


_MISSING = object()
# The schemas as rows: looked up once, not per frame.
_RULES = {ftype: compile_schema(ftype, schema) for ftype, schema in FRAME_SCHEMAS.items()}
_UPDATE_CHECKS = {what: _checker(spec, "UPDATE", f"value (for {what})") for what, spec in UPDATE_VALUES.items()}


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
    if type(origin) is not str or origin not in _KNOWN_ORIGINS:
        if not valid_server_id(origin):
            raise LinkProtocolError(f"{ftype} frame: origin {str(origin)[:16]!r} is not a server id")
        _remember(_KNOWN_ORIGINS, origin)
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise LinkProtocolError(f"{ftype} frame: seq must be an integer 0-{MAX_SEQ}")
    if type(payload) is not dict:
        raise LinkProtocolError(f"{ftype} frame: payload must be an object")
    rules = _RULES.get(ftype)
    if rules is None:
        return Frame(ftype, origin, seq, payload, False)
    if ftype not in _MESSAGE_TYPES or not _plain_message(payload):
        _check_payload(ftype, payload, rules)
    return Frame(ftype, origin, seq, payload, True)


# Origins (server ids) and message sources (user or server ids) already found valid: a network has
# few, each sending many frames, so the regular expression runs once per id, not once per frame.
# Bounded, so a hostile peer cycling through ids costs a clear, not memory.
_KNOWN_ORIGINS: dict[str, None] = {}
_KNOWN_SOURCES: dict[str, None] = {}


def _remember(known: dict, ident: str) -> None:
    if len(known) >= 65536:
        known.clear()
    known[ident] = None


_MESSAGE_TYPES = frozenset(("PRIVMSG", "NOTICE", "TAGMSG"))
_SOURCE = re.compile(r"[0-9][0-9A-Z]{2}(?:[A-Z0-9]{6})?")
_BAD_TAG_KEY = re.compile(r"[\0\r\n =;]")


def _plain_message(p: dict) -> bool:
    """The hot frames, accepted in one pass: True only for a payload the schema accepts (the same
    rules as FRAME_SCHEMAS and _TAGS, inlined); anything else takes the full check, which accepts it
    or names the fault. tests/proto checks both agree."""
    source, target, text = p.get("source"), p.get("target"), p.get("text")
    if type(source) is not str or type(target) is not str or type(text) is not str or len(target) > 200 \
            or not is_line(text):
        return False
    if source not in _KNOWN_SOURCES:
        if _SOURCE.fullmatch(source) is None:
            return False
        _remember(_KNOWN_SOURCES, source)
    tags = p.get("tags", _MISSING)
    if tags is not _MISSING:
        if type(tags) is not dict or len(tags) > 100:
            return False
        for k, v in tags.items():
            if not k or k[0] == ":" or _BAD_TAG_KEY.search(k) is not None:
                return False
            if v is not None and (type(v) is not str or not is_line(v)):
                return False
    msgid = p.get("msgid")
    if msgid is not None and (type(msgid) is not str or len(msgid) > 128):
        return False
    when = p.get("time", _MISSING)
    if when is not _MISSING:
        tw = type(when)
        if (tw is not float and tw is not int) or not 0 <= when <= MAX_TIME:
            return False
    return True


class LinkCodec:
    """Bytes to frames and back for one link. `receive_data` validates everything; `encode` only the size."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = b""   # the start of a frame not yet whole

    def receive_data(self, data: bytes) -> list[Frame]:
        if self._buf:
            data = self._buf + data
        elif type(data) is not bytes:
            data = bytes(data)
        pos, size, limit = 0, len(data), self.max_frame
        raws = []
        while size - pos >= 4:
            length = _frame_length(data, pos)[0]
            # Checked on the header alone, so a hostile length never makes us buffer its body.
            if length > limit:
                raise LinkProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
            end = pos + 4 + length
            if end > size:
                break
            raws.append(data[pos:end])   # the whole of `data` when it is one frame: no copy
            pos = end
        self._buf = data[pos:] if pos < size else b""
        frames = []
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
