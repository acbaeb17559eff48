"""Sans-IO SIP codec: bytes in, events out. `parse_datagram(data)` for UDP (one message per datagram),
`SipStreamConnection` for TCP/TLS/WebSocket-less streams (Content-Length framing, RFC 5626 CRLF
keepalives), `serialise(message)` for bytes out. No sockets, clock or logging here.

Who reports which fault:

* The codec (this module) refuses what is not a well-formed message, because nothing can be done with it:
  the start line (400, or 505 for another SIP version), header lines (syntax, folding, bare CR/LF),
  framing (Content-Length missing on a stream, negative, repeated, larger than the message; the maximum
  message size, 513), and the headers every transaction routes by: exactly one From, To, Call-ID and
  CSeq, at least one Via, at most one Max-Forwards, each well-formed, CSeq's method equal to the
  request's. A refused request gives `MessageRejected(reason, response)` with the 400/505/513 to send
  (None for ACK, which is never answered, and when no Via says where a response would go); a refused
  response gives `MessageRejected(reason, None)`: it is dropped, never answered.
* `validate_request(request, for_us)` (the element's checks, RFC 3261 §8.2 and §16.3) gives the
  response for what is well-formed but not acceptable: 416 for a Request-URI scheme other than sip, sips
  or tel; 400 for headers inside the Request-URI, a malformed Contact or Expires, a REGISTER whose To is
  not a SIP URI; 483 for Max-Forwards 0 on a request to forward; 420 with Unsupported for unknown
  Require options (for_us) or Proxy-Require options (to forward); 415 with Accept for a body the method's
  recipient must understand but cannot; 406 for an INVITE whose Accept excludes application/sdp.
* Stray responses (no client transaction) are the transaction layer's to drop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers, is_token, split_commas
from bridges.sip.message import REASONS, Message, Request, Response, make_response, serialise
from bridges.sip.uri import SipUri, parse_uri

__all__ = ["RequestReceived", "ResponseReceived", "MessageRejected", "KeepalivePing", "KeepalivePong",
           "parse_datagram", "SipStreamConnection", "serialise", "validate_request", "MAX_MESSAGE_SIZE",
           "PING", "PONG"]

MAX_MESSAGE_SIZE = 65535
PING = b"\r\n\r\n"
PONG = b"\r\n"
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)
_STATUS = re.compile(r"[1-6][0-9][0-9]\Z")


@dataclass(slots=True)
class RequestReceived:
    request: Request


@dataclass(slots=True)
class ResponseReceived:
    response: Response


@dataclass(slots=True)
class MessageRejected:
    """Bytes that are not an acceptable message. `response` is what to send back (None: send nothing);
    `framing_lost` means a stream cannot find the next message and must be closed after the response."""
    reason: str
    response: Response | None
    framing_lost: bool = False


@dataclass(slots=True)
class KeepalivePing:
    """A "\\r\\n\\r\\n" ping (RFC 5626 §4.4.1): answer with PONG."""


@dataclass(slots=True)
class KeepalivePong:
    """The "\\r\\n" answer to a ping this side sent."""


Event = RequestReceived | ResponseReceived | MessageRejected | KeepalivePing | KeepalivePong


_is_header_name = lru_cache(maxsize=4096)(is_token)  # names repeat: check each spelling once


class _Head:
    """A message head split into its start line and fields, with the first fault found (if any)."""

    __slots__ = ("start", "fields", "fault", "is_response")

    def __init__(self, start: str, fields: list[tuple[str, str]], fault: str | None):
        self.start = start
        self.fields = fields
        self.fault = fault
        self.is_response = start.startswith("SIP/")


def _split_head(head: bytes) -> _Head:
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    fields: list[tuple[str, str]] = []
    fault = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not fields:
                fault = fault or "continuation line before any header"
                continue
            name, value = fields[-1]
            more = line.strip(" \t")
            fields[-1] = (name, f"{value} {more}" if value else more)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _is_header_name(name):
            fault = fault or "malformed header line"
            continue
        fields.append((name, value.strip(" \t")))
    crlf = len(lines) - 1
    if fault is None and (text.count("\r") != crlf or text.count("\n") != crlf):
        fault = "bare CR or LF in header"
    return _Head(lines[0], fields, fault)


def _rejection_target(head: _Head) -> Request | None:
    """A request object good enough to address an error response, or None if none can be sent."""
    if head.is_response:
        return None
    method = head.start.split(" ", 1)[0]
    # Copied values must not carry a bare CR or LF into our response (header injection).
    headers = Headers([(n, v.replace("\r", " ").replace("\n", " ")) for n, v in head.fields])
    if method == "ACK" or not headers.fields("Via"):
        return None
    return Request(method, "sip:invalid", headers)


def _reject(head: _Head, status: int, fault: str, framing_lost: bool = False) -> MessageRejected:
    phrase = REASONS.get(status, "Error")
    reason = phrase if status == 505 else f"{phrase}: {fault}"
    target = _rejection_target(head)
    response = make_response(target, status, reason) if target is not None else None
    return MessageRejected(reason, response, framing_lost)


def _content_length(fields: list[tuple[str, str]]) -> int | None:
    values = [v for n, v in fields if n.lower() in ("content-length", "l")]
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("multiple Content-Length headers")
    value = values[0]
    if not value.isdigit() or not value.isascii():
        raise SipParseError("bad Content-Length")
    if len(value) > 12:
        raise SipParseError("Content-Length too large", 513)
    return int(value)


def _build(head: _Head, body: bytes) -> Event:
    """Turn a framed message into an event, running the codec's checks (module docstring)."""
    try:
        message = _start_line(head, body)
        if head.fault:
            raise SipParseError(head.fault)
        _check_routing_headers(message)
    except SipParseError as e:
        if head.is_response:
            return MessageRejected(f"response dropped: {e.reason}", None)
        return _reject(head, e.status, e.reason)
    if isinstance(message, Response):
        return ResponseReceived(message)
    return RequestReceived(message)


def _start_line(head: _Head, body: bytes) -> Message:
    line = head.start
    headers = Headers(head.fields)
    if head.is_response:
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or not _STATUS.match(parts[1]):
            raise SipParseError("malformed Status-Line")
        return Response(int(parts[1]), parts[2] if len(parts) == 3 else "", headers, body)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("bad method")
    if not _VERSION.match(version):
        raise SipParseError("malformed Request-Line")
    if version.upper() != "SIP/2.0":
        raise SipParseError("Version Not Supported", 505)
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI enclosed in <>")
    try:
        uri = parse_uri(uri_text)
    except SipParseError:
        raise SipParseError("malformed Request-URI") from None
    return Request(method, uri, headers, body, "SIP/2.0")


_ROUTING = ("Via", "From", "To", "Call-ID", "CSeq")


def _check_routing_headers(message: Message) -> None:
    headers = message.headers
    counts = [len(headers.fields(n)) for n in _ROUTING]
    if 0 in counts:
        raise SipParseError(f"missing {', '.join(n for n, c in zip(_ROUTING, counts) if not c)}")
    for name, count in zip(_ROUTING[1:], counts[1:]):
        if count > 1:
            raise SipParseError(f"multiple {name} headers")
    call_id = message.call_id
    if not call_id or " " in call_id or "\t" in call_id:
        raise SipParseError("malformed Call-ID")
    message.vias, message.cseq, message.from_, message.to  # noqa: B018 - parse now, raising on faults
    if isinstance(message, Request):
        if len(headers.fields("Max-Forwards")) > 1:
            raise SipParseError("multiple Max-Forwards headers")
        message.max_forwards  # noqa: B018
        if message.cseq.method != message.method:
            raise SipParseError("CSeq method does not match the request method")


def parse_datagram(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> Event:
    """One UDP datagram, one message (RFC 3261 §18.3): bytes past Content-Length are ignored; without
    Content-Length the body runs to the end of the datagram. A datagram of CRLFs only is a KeepalivePing."""
    if len(data) > max_size:
        return MessageRejected("message too large", None)
    start = 0
    while data.startswith(b"\r\n", start):  # CRLFs before a start line are ignored (§7.5)
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        head, body = data[start:], b""
    else:
        head, body = data[start:end], data[end + 4:]
    if not head:
        # Only CRLFs: a NAT keepalive some agents send over UDP too; answering it is optional.
        return KeepalivePing() if start >= 4 else MessageRejected("empty datagram", None)
    parsed = _split_head(head)
    try:
        length = _content_length(parsed.fields)
    except SipParseError as e:
        return _build_failure(parsed, e)
    if length is not None:
        if length > len(body):
            return _build_failure(parsed, SipParseError("Content-Length larger than message"))
        body = body[:length]
    return _build(parsed, body)


def _build_failure(head: _Head, error: SipParseError, framing_lost: bool = False) -> MessageRejected:
    # A fault in the start line outranks one in the framing (a SIP/7.0 request gets 505 whatever else),
    # except the size limit, which says why the rest was never read.
    if error.status != 513:
        try:
            _start_line(head, b"")
        except SipParseError as e:
            error = e
    if head.is_response:
        return MessageRejected(f"response dropped: {error.reason}", None, framing_lost)
    return _reject(head, error.status, error.reason, framing_lost)


class SipStreamConnection:
    """One TCP/TLS connection's inbound byte stream. `receive_data(bytes) -> [events]`; `receive_eof()`
    at the end of the stream. After a framing fault (`framing_lost`) it yields nothing more."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no blank line yet
        self._head: _Head | None = None
        self._head_bytes = b""  # the raw head of a message whose body is still arriving
        self._body_length = 0
        self.awaiting_pong = False
        self.closed = False

    def send_ping(self) -> bytes:
        """The bytes of a keepalive ping; the next lone CRLF received is its pong."""
        self.awaiting_pong = True
        return PING

    def receive_data(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        self._buffer += data
        events: list[Event] = []
        while not self.closed:
            event = self._next_event()
            if event is None:
                break
            events.append(event)
        return events

    def receive_eof(self) -> list[Event]:
        """The peer closed: whatever is left is an incomplete message, refused with the reason the
        datagram rules give it (for example a Content-Length larger than what came)."""
        if self.closed:
            return []
        self.closed = True
        rest = bytes(self._buffer)
        if self._head is not None:
            rest = self._head_bytes + b"\r\n\r\n" + rest
        rest = rest.lstrip(b"\r\n")
        self._buffer.clear()
        if not rest:
            return []
        event = parse_datagram(rest, self.max_size)
        if isinstance(event, MessageRejected):
            event.framing_lost = True
            return [event]
        head = _split_head(rest.split(b"\r\n\r\n", 1)[0])
        return [_build_failure(head, SipParseError("incomplete message at end of stream"), True)]

    def _next_event(self) -> Event | None:
        buf = self._buffer
        if self._head is None:
            if buf[:2] == b"\r\n":
                if self.awaiting_pong:
                    del buf[:2]
                    self.awaiting_pong = False
                    return KeepalivePong()
                if buf[:4] == PING:
                    del buf[:4]
                    return KeepalivePing()
                if PING.startswith(bytes(buf[:4])):
                    return None  # maybe a ping still arriving
                del buf[:2]  # a stray CRLF before a start line (RFC 3261 §7.5)
                return self._next_event()
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_size:
                    start = bytes(buf[:200]).split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape")
                    return self._lose_framing(_Head(start, [], None), SipParseError("larger than the maximum message size", 513))
                return None
            head_bytes = bytes(buf[:end])
            head = _split_head(head_bytes)
            del buf[:end + 4]
            self._scanned = 0
            try:
                length = _content_length(head.fields)
                if length is None:
                    raise SipParseError("missing Content-Length")
                if end + 4 + length > self.max_size:
                    raise SipParseError("larger than the maximum message size", 513)
            except SipParseError as e:
                return self._lose_framing(head, e)
            self._head, self._head_bytes, self._body_length = head, head_bytes, length
        if len(buf) < self._body_length:
            return None
        body = bytes(buf[:self._body_length])
        del buf[:self._body_length]
        head, self._head = self._head, None
        return _build(head, body)

    def _lose_framing(self, head: _Head, error: SipParseError) -> MessageRejected:
        self.closed = True
        self._buffer.clear()
        return _build_failure(head, error, framing_lost=True)


# --- the element's checks ------------------------------------------------------------------------------

DEFAULT_ACCEPT = {
    "INVITE": ("application/sdp",),
    "MESSAGE": ("text/plain", "message/cpim"),
}
ROUTABLE_SCHEMES = ("sip", "sips", "tel")


def validate_request(request: Request, for_us: bool, supported: frozenset[str] | set[str] = frozenset(),
                     accept: dict[str, tuple[str, ...]] | None = None) -> Response | None:
    """The response an element sends for a well-formed request it will not process, or None to go on.
    `for_us`: this element is the request's destination (UAS, registrar); otherwise it would forward it
    (proxy). `supported`: option tags this element supports. `accept`: method -> media types it
    understands in a body (DEFAULT_ACCEPT)."""
    if request.method == "ACK":
        return None  # never answered; a bad ACK is dropped by whoever processes it
    accept = DEFAULT_ACCEPT if accept is None else accept
    uri = request.uri
    if uri.scheme not in ROUTABLE_SCHEMES:
        return make_response(request, 416, "Unsupported URI Scheme")
    if isinstance(uri, SipUri) and uri.headers:
        return _bad(request, "headers in the Request-URI")
    if not for_us and request.max_forwards == 0:
        return make_response(request, 483, "Too Many Hops")
    try:
        request.contacts  # noqa: B018
        request.expires  # noqa: B018
    except SipParseError as e:
        return _bad(request, e.reason)
    if request.method != "CANCEL":
        header = "Require" if for_us else "Proxy-Require"
        unknown = [tag for tag in _tags(request, header) if tag.lower() not in supported]
        if unknown:
            return make_response(request, 420, "Bad Extension", [("Unsupported", ", ".join(unknown))])
    if not for_us:
        return None
    if request.method == "REGISTER" and request.to.uri.scheme not in ("sip", "sips"):
        return _bad(request, "To of a REGISTER must be a SIP or SIPS URI")
    understood = accept.get(request.method)
    if understood is not None and request.body:
        if request.content_type not in understood:
            return make_response(request, 415, "Unsupported Media Type", [("Accept", ", ".join(understood))])
    if request.method == "INVITE" and "Accept" in request.headers:
        ranges = [v.split(";", 1)[0].strip(" \t").lower() for v in request.headers.values("Accept")]
        if not {"application/sdp", "application/*", "*/*"} & set(ranges) and any(ranges):
            return make_response(request, 406, "Not Acceptable", [("Accept", "application/sdp")])
    return None


def _bad(request: Request, fault: str) -> Response:
    return make_response(request, 400, f"Bad Request: {fault}")


def _tags(request: Request, header: str) -> list[str]:
    return [t for line in request.headers.fields(header) for t in split_commas(line) if t]
