"""SIP requests and responses: a start line, the ordered header fields, a body; `serialise` to bytes.

The routing headers (Via, CSeq, Call-ID, From, To, Max-Forwards) are parsed by the codec as it accepts a
message and kept on it; anything else is parsed when first asked for (`contacts`, `content_type`...), so
forwarding a message costs no more than the headers it routes by.
"""

from __future__ import annotations

import hashlib

from bridges.sip.errors import SipParseError
from bridges.sip.headers import (
    CSeq, Contact, Headers, NameAddr, Via, parse_contacts, parse_cseq, parse_name_addr, parse_uint, parse_via,
    MAX_DELTA_SECONDS,
)
from bridges.sip.uri import Uri, parse_uri

SIP_VERSION = "SIP/2.0"

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class Message:
    """What requests and responses share. `headers` is the ordered field list; `body` raw bytes."""

    __slots__ = ("headers", "body", "_vias", "_cseq", "_from", "_to", "_contacts")

    def __init__(self, headers: Headers, body: bytes = b""):
        self.headers = headers
        self.body = body
        self._vias = self._cseq = self._from = self._to = self._contacts = None

    # The routing headers, parsed once.
    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            self._vias = [parse_via(v) for v in self.headers.values("Via")]
        return self._vias

    @property
    def top_via(self) -> Via | None:
        vias = self.vias
        return vias[0] if vias else None

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = parse_cseq(self.headers.get("CSeq", ""))
        return self._cseq

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID", "")

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = parse_name_addr(self.headers.get("From", ""), "From")
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = parse_name_addr(self.headers.get("To", ""), "To")
        return self._to

    # Parsed when asked for.
    @property
    def contacts(self) -> list[Contact]:
        if self._contacts is None:
            self._contacts = parse_contacts(self.headers.values("Contact"))
        return self._contacts

    @property
    def content_type(self) -> str | None:
        """The media type, lowercased, without parameters."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip(" \t").lower() if value else None

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_uint(value, "Expires", MAX_DELTA_SECONDS)

    def invalidate(self) -> None:
        """Forget the parsed headers after editing `headers` directly."""
        self._vias = self._cseq = self._from = self._to = self._contacts = None

    def start_line(self) -> str:
        raise NotImplementedError

    def serialise(self) -> bytes:
        return serialise(self)


class Request(Message):
    __slots__ = ("method", "uri_text", "_uri", "version")

    def __init__(self, method: str, uri: str | Uri, headers: Headers, body: bytes = b"",
                 version: str = SIP_VERSION):
        super().__init__(headers, body)
        self.method = method
        self.uri_text = str(uri)
        self._uri = uri if isinstance(uri, Uri) else None
        self.version = version

    @property
    def uri(self) -> Uri:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str | None, headers: Headers, body: bytes = b"",
                 version: str = SIP_VERSION):
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def serialise(message: Message) -> bytes:
    """Bytes of a message: start line, every field in order as it stands, Content-Length set to the body
    (added if absent, since stream transports need it)."""
    lines = [message.start_line()]
    length = str(len(message.body))
    seen_length = False
    for name, value in message.headers:
        if name == "Content-Length":
            if seen_length:
                continue
            value, seen_length = length, True
        lines.append(f"{name}: {value}")
    if not seen_length:
        lines.append(f"Content-Length: {length}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + message.body


def to_tag_for(request: Request) -> str:
    """A To tag derived from the request, so a retransmission of it gets the same tag (RFC 3261 §8.2.7)
    without the responder keeping state or reading a random source."""
    key = "\0".join((request.headers.get("Call-ID", ""), request.headers.get("CSeq", ""),
                     request.headers.get("Via", ""), request.headers.get("From", "")))
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _has_tag(request: Request, to_value: str) -> bool:
    if request._to is not None:  # parsed already when the codec accepted the request
        return request._to.tag is not None
    try:
        return parse_name_addr(to_value, "To").tag is not None
    except SipParseError:
        return "tag" in to_value.lower()


def make_response(request: Request, status: int, reason: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                  to_tag: str | None = None) -> Response:
    """A response to `request` (RFC 3261 §8.2.6): its Via fields, From, Call-ID and CSeq copied as
    received, To copied with a tag added to anything but 100. Works on a request whose headers did not
    parse, copying what is there."""
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.fields(name):
            if name == "To" and status != 100 and not _has_tag(request, value):
                value = f"{value};tag={to_tag or to_tag_for(request)}"
            headers.add(name, value)
    for name, value in extra or ():
        headers.add(name, value)
    return Response(status, reason, headers, body)
