"""Sans-IO IRC codec: bytes in, events out; messages out as bytes.

No sockets, clock or logging, like h11/wsproto. Framing and grammar follow
RFC 1459/2812, the Modern IRC documents and IRCv3 message-tags:

    ['@' tags SPACE] [':' source SPACE] command [params] CRLF

The tag section (with its '@' and trailing space) may be up to 8191 bytes;
the rest of the line up to 512 bytes including CRLF.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

from relay.proto.casemap import rfc1459_fold

__all__ = [
    "Message", "ProtocolError", "parse_line", "build", "escape_tag_value", "unescape_tag_value",
    "MessageReceived", "LineRejected", "IrcConnection",
    "INPUT_TOO_LONG", "INVALID_UTF8", "NUL_BYTE", "MALFORMED",
    "CASEMAP", "irc_lower", "valid_nick", "valid_channel", "mask_match", "normalize_mask",
]

INPUT_TOO_LONG = "INPUT_TOO_LONG"
INVALID_UTF8 = "INVALID_UTF8"
NUL_BYTE = "NUL_BYTE"
MALFORMED = "MALFORMED"


@dataclass(slots=True)
class Message:
    tags: dict[str, str]
    source: str | None
    command: str
    params: list[str]

    def to_bytes(self) -> bytes:
        return build(self.source, self.command, *self.params, tags=self.tags)


class ProtocolError(Exception):
    """A line that is not a valid IRC message. `command` is set if it could be read."""

    def __init__(self, reason: str, command: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command


# -- message tags -------------------------------------------------------------

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def escape_tag_value(v: str) -> str:
    # Backslash first, so the escapes added afterwards are not doubled.
    return (v.replace("\\", "\\\\").replace(";", "\\:").replace(" ", "\\s")
            .replace("\r", "\\r").replace("\n", "\\n"))


def unescape_tag_value(v: str) -> str:
    """IRCv3 unescaping: an unknown escape yields the char itself; a trailing lone '\\' is dropped."""
    if "\\" not in v:
        return v
    out = []
    i = 0
    while (j := v.find("\\", i)) >= 0:
        out.append(v[i:j])
        c = v[j + 1:j + 2]
        out.append(_UNESCAPES.get(c, c))
        i = j + 2
    out.append(v[i:])
    return "".join(out)


def _parse_tags(section: str) -> dict[str, str]:
    tags = {}
    for item in section.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if not key:
            raise ProtocolError("empty tag key")
        # IRCv3: when a key repeats, the last value wins; dict assignment does that.
        tags[key] = unescape_tag_value(value)
    return tags


# -- parsing and serialising --------------------------------------------------

def _valid_command(cmd: str) -> bool:
    # RFC 1459 says letters or three digits, but today's servers answer any other word with
    # 421 ERR_UNKNOWNCOMMAND rather than dropping the line, so any visible ASCII word parses.
    return cmd.isascii() and cmd.isprintable() and cmd[0] != ":"


def parse_line(line: str) -> Message:
    """Parse one decoded line without its CRLF. Raises ProtocolError."""
    if "\0" in line or "\r" in line or "\n" in line:
        raise ProtocolError("NUL, CR or LF inside a line")
    rest = line.lstrip(" ")  # tolerated, as solanum's parser does
    if not rest:
        raise ProtocolError("empty line")
    tags: dict[str, str] = {}
    if rest[0] == "@":
        sp = rest.find(" ")
        if sp < 0:
            raise ProtocolError("tags without a command")
        tags = _parse_tags(rest[1:sp])
        rest = rest[sp + 1:].lstrip(" ")
    source = None
    if rest[:1] == ":":
        sp = rest.find(" ")
        if sp < 0:
            raise ProtocolError("source without a command")
        source = rest[1:sp]
        if not source:
            raise ProtocolError("empty source")
        rest = rest[sp + 1:].lstrip(" ")
    # A middle param never starts with ':', so the first " :" starts the trailing param.
    trailing = None
    i = rest.find(" :")
    if i >= 0:
        trailing = rest[i + 2:]
        rest = rest[:i]
    # Modern IRC allows runs of spaces between parameters.
    words = [w for w in rest.split(" ") if w]
    if not words:
        raise ProtocolError("no command")
    command = words[0]
    if not _valid_command(command):
        raise ProtocolError("invalid command")
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return Message(tags, source, command.upper(), params)


def build(source: str | None, command: str, *params: str, tags: dict | None = None) -> bytes:
    """Serialise one message to bytes ending in CRLF. Raises ValueError on unsendable input.

    The last param gets a ':' only when it needs one. This is the fan-out hot
    path, so it is plain joins and substring tests.
    """
    parts = []
    if tags:
        items = []
        for key, value in tags.items():
            if not key or "=" in key or ";" in key or " " in key:
                raise ValueError(f"invalid tag key {key!r}")
            items.append(f"{key}={escape_tag_value(value)}" if value else key)
        parts.append("@" + ";".join(items))
    if source is not None:
        if not source or " " in source:
            raise ValueError(f"invalid source {source!r}")
        parts.append(":" + source)
    if not command or " " in command or command[0] == ":":
        raise ValueError(f"invalid command {command!r}")
    parts.append(command)
    if params:
        middle = params[:-1]
        for p in middle:
            if not p or " " in p or p[0] == ":":
                raise ValueError(f"only the last param may be empty, contain a space or start with ':': {p!r}")
        parts.extend(middle)
        last = params[-1]
        parts.append(":" + last if not last or " " in last or last[0] == ":" else last)
    line = " ".join(parts)
    # One scan of the whole line stops CRLF injection from any field.
    if "\r" in line or "\n" in line or "\0" in line:
        raise ValueError("NUL, CR or LF in message")
    return (line + "\r\n").encode("utf-8")


# -- connection -----------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class MessageReceived:
    message: Message


@dataclass(slots=True, frozen=True)
class LineRejected:
    reason: str
    code: str
    command: str | None = None


def _command_word(raw: bytes | bytearray, complete: bool) -> str | None:
    """Best-effort command of an unparsable line, for error replies."""
    raw = raw.lstrip(b" ")
    for marker in (b"@", b":"):
        if raw[:1] == marker:
            sp = raw.find(b" ")
            if sp < 0:
                return None
            raw = raw[sp + 1:].lstrip(b" ")
    word, sp, _ = raw.partition(b" ")
    if not (sp or complete):
        return None  # the word may go on in data not received yet
    # bytes.isalpha/isdigit are ASCII-only, matching _valid_command.
    if word.isalpha() or (len(word) == 3 and word.isdigit()):
        return word.decode("ascii").upper()
    return None


class IrcConnection:
    """Turns a client's byte stream into MessageReceived/LineRejected events."""

    def __init__(self, max_line: int = 512, max_tags: int = 8191, max_buffer: int = 16384) -> None:
        self.max_line = max_line
        self.max_tags = max_tags
        self.max_buffer = max_buffer
        self._buf = bytearray()  # the pending partial line
        self._discarding = False  # inside an overlong line that was already rejected

    def receive_data(self, data: bytes) -> list[MessageReceived | LineRejected]:
        events: list[MessageReceived | LineRejected] = []
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return events
            data = data[nl + 1:]
            self._discarding = False
        buf = self._buf
        if b"\n" not in data:
            buf += data
            self._check_partial(events)
            return events
        if buf:
            buf += data
            lines = buf.split(b"\n")
            buf.clear()
        else:
            lines = data.split(b"\n")
        buf += lines.pop()
        for raw in lines:
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if raw:
                events.append(self._line_event(raw))
        self._check_partial(events)
        return events

    def _oversize(self, raw: bytes | bytearray, end: int) -> str | None:
        """Which limit raw[:end] (a line or the start of one) breaks, if any."""
        if raw[:1] == b"@":
            sp = raw.find(b" ", 0, end)
            if sp < 0:
                # Still inside the tag section; its space is yet to come.
                return "tag data too long" if end + 1 > self.max_tags else None
            if sp + 1 > self.max_tags:
                return "tag data too long"
            body = end - sp - 1
        else:
            body = end
        return "line too long" if body + 2 > self.max_line else None

    def _check_partial(self, events: list) -> None:
        buf = self._buf
        if not buf:
            return
        # A trailing CR may be the first half of the CRLF still to come.
        reason = ("line too long" if len(buf) > self.max_buffer
                  else self._oversize(buf, len(buf) - (buf[-1:] == b"\r")))
        if reason:
            events.append(LineRejected(reason, INPUT_TOO_LONG, _command_word(buf, complete=False)))
            buf.clear()
            self._discarding = True

    def _line_event(self, raw: bytes | bytearray) -> MessageReceived | LineRejected:
        if raw[0] == 0x40 or len(raw) + 2 > self.max_line:  # only then can a limit be broken
            reason = self._oversize(raw, len(raw))
            if reason:
                return LineRejected(reason, INPUT_TOO_LONG, _command_word(raw, complete=True))
        if b"\0" in raw:
            return LineRejected("NUL byte in line", NUL_BYTE, _command_word(raw, complete=True))
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return LineRejected("invalid UTF-8", INVALID_UTF8, _command_word(raw, complete=True))
        try:
            return MessageReceived(parse_line(line))
        except ProtocolError as e:
            return LineRejected(e.reason, MALFORMED, e.command)


# -- IRC text rules -------------------------------------------------------------

CASEMAP = "rfc1459"
irc_lower = rfc1459_fold  # the default network casemapping (relay.proto.casemap)


_NICK_FIRST = frozenset(string.ascii_letters + "[]\\`_^{|}")
_NICK_CHARS = _NICK_FIRST | frozenset(string.digits + "-")


def valid_nick(nick: str, nicklen: int) -> bool:
    return 0 < len(nick) <= nicklen and nick[0] in _NICK_FIRST and _NICK_CHARS.issuperset(nick)


# ':' is legal in RFC 2812 channel names (mask separator) but rejected here for simplicity.
_CHAN_FORBIDDEN = frozenset(" ,\x07\0\r\n:")


def valid_channel(name: str, chanlen: int) -> bool:
    return 2 <= len(name) <= chanlen and name[0] == "#" and _CHAN_FORBIDDEN.isdisjoint(name)


def _glob_segment(seg: str) -> str:
    return "".join("." if c == "?" else re.escape(c) for c in seg)


@functools.lru_cache(maxsize=4096)
def _compile_mask(mask: str) -> re.Pattern[str]:
    parts = irc_lower(mask).split("*")
    if len(parts) == 1:
        return re.compile(_glob_segment(parts[0]), re.DOTALL)
    # Masks come from users, so no backtracking blow-up: each middle segment is
    # matched at its leftmost place inside an atomic group (always optimal for
    # '*'/'?' globs), leaving one '.*' for the segment anchored at the end.
    middle = "".join(f"(?>.*?{_glob_segment(p)})" for p in parts[1:-1] if p)
    return re.compile(_glob_segment(parts[0]) + middle + ".*" + _glob_segment(parts[-1]), re.DOTALL)


def mask_match(mask: str, value: str) -> bool:
    """IRC glob match ('*' any run, '?' one char), case-insensitive under rfc1459."""
    return _compile_mask(mask).fullmatch(irc_lower(value)) is not None


def normalize_mask(mask: str) -> str:
    """Complete a ban mask to nick!user@host; missing parts become '*'.

    Like charybdis/solanum, a bare word with '.' or ':' is a host, since
    nicks cannot contain either. An account extban (`$a:account`) stays as it is.
    """
    if mask.startswith("$a:") and len(mask) > 3:
        return mask
    if "!" in mask:
        nick, _, rest = mask.partition("!")
        user, _, host = rest.partition("@")
    elif "@" in mask:
        nick = ""
        user, _, host = mask.partition("@")
    elif "." in mask or ":" in mask:
        nick, user, host = "", "", mask
    else:
        nick, user, host = mask, "", ""
    return f"{nick or '*'}!{user or '*'}@{host or '*'}"
