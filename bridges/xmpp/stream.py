"""Sans-IO XMPP stream codec (RFC 6120 §4 XML streams, RFC 7395 WebSocket framing) on lxml.

Bytes in, events out; commands in, bytes out.  No sockets, clock or logging, like h11:

    stream = XmppStream(host_ok=lambda to: to == "localhost")
    for event in stream.receive_data(data):
        ...                                   # StreamOpened, StanzaReceived, StreamClosed, ...
    sock.sendall(stream.send(OpenStream(from_="localhost", id="abc")))

A stanza comes out as an lxml element once its end tag has arrived, detached from the
stream root, so the parser's memory does not grow with the stream.  What the peer did
wrong comes out as one `StreamErrorOccurred(condition, text)`, after which the stream is
dead (later data is ignored); the owner answers it with `send(SendStreamError(...))`,
which for TCP carries the header (if none was sent), the error and the close (§4.9).

Restricted XML (RFC 6120 §11.1) is enforced on the raw bytes before lxml sees them
(restricted.py): DTDs, entity declarations, comments, processing instructions and entity
references other than the predefined ones are `restricted-xml`.  Sizes are enforced while
parsing: the bytes fed since the last complete stanza are counted per slice of at most
`SLICE` bytes (so a limit holds to within one slice), depth and attribute counts at each
start tag (`policy-violation`).  Before authentication the owner leaves
`authenticated` False and the smaller pre-auth limits apply.

WebSocket framing: each `receive_data()` call is one whole WebSocket message (one XML
document: `<open/>`, `<close/>` or one stanza), and each `send()` returns one message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

from lxml import etree

from . import namespaces as ns
from .restricted import Refused, RestrictedXmlScanner, declaration_length
from .stanza import serialise

__all__ = [
    "SLICE", "Limits", "XmppStream",
    "StreamOpened", "StanzaReceived", "StreamClosed", "StreamErrorReceived", "StreamErrorOccurred",
    "OpenStream", "SendStanza", "SendStreamError", "EndStream", "SendKeepalive",
    "stream_error_element",
]

SLICE = 4096                        # bytes fed to lxml at a time; the granularity of the size checks
_STREAM_TAG = "{%s}stream" % ns.STREAMS
_ERROR_TAG = "{%s}error" % ns.STREAMS
_OPEN_TAG = "{%s}open" % ns.FRAMING
_CLOSE_TAG = "{%s}close" % ns.FRAMING
_LANG = "{%s}lang" % ns.XML
_STANZA_NAMES = frozenset({"message", "presence", "iq"})


@dataclass(frozen=True)
class Limits:
    """What one peer can make the parser allocate (bytes are counted as fed, see module doc)."""
    max_stanza_bytes: int = 256 * 1024
    max_stanza_bytes_preauth: int = 16 * 1024
    max_header_bytes: int = 4096
    max_depth: int = 64                       # the stream root is depth 1, a stanza depth 2
    max_attributes: int = 64
    max_attributes_preauth: int = 16


# Events: what the peer did.

@dataclass(frozen=True)
class StreamOpened:
    """The peer's stream header (or RFC 7395 `<open/>`); attrs by plain name: to, from, id, version, xml:lang."""
    attrs: dict


@dataclass(frozen=True)
class StanzaReceived:
    element: etree._Element


@dataclass(frozen=True)
class StreamClosed:
    """`</stream:stream>` or `<close/>`: the peer closed its half of the stream."""


@dataclass(frozen=True)
class StreamErrorReceived:
    """The peer sent `<stream:error>`; the stream is over."""
    condition: str
    text: Optional[str] = None


@dataclass(frozen=True)
class StreamErrorOccurred:
    """The peer broke the protocol: send `SendStreamError(condition, text)` and close."""
    condition: str
    text: Optional[str] = None


Event = Union[StreamOpened, StanzaReceived, StreamClosed, StreamErrorReceived, StreamErrorOccurred]


# Commands: what we send.

@dataclass(frozen=True)
class OpenStream:
    from_: Optional[str] = None
    to: Optional[str] = None
    id: Optional[str] = None
    version: Optional[str] = "1.0"
    lang: Optional[str] = "en"


@dataclass(frozen=True)
class SendStanza:
    element: etree._Element


@dataclass(frozen=True)
class SendStreamError:
    condition: str
    text: Optional[str] = None


@dataclass(frozen=True)
class EndStream:
    pass


@dataclass(frozen=True)
class SendKeepalive:
    """A whitespace keepalive (RFC 6120 §4.6.1); nothing in WebSocket framing (use ping frames)."""


Command = Union[OpenStream, SendStanza, SendStreamError, EndStream, SendKeepalive]


def _new_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end", "comment", "pi"), encoding="utf-8",
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
        remove_comments=False, remove_pis=False, collect_ids=False)


class XmppStream:
    """One XML stream, either side, TCP or WebSocket framing (`framing="websocket"`)."""

    def __init__(self, *, server_side: bool = True, content_ns: str = ns.CLIENT, framing: str = "tcp",
                 limits: Limits = Limits(), host_ok: Optional[Callable[[Optional[str]], bool]] = None):
        if content_ns not in ns.CONTENT_NAMESPACES:
            raise ValueError(f"unknown content namespace {content_ns!r}")
        if framing not in ("tcp", "websocket"):
            raise ValueError(f"unknown framing {framing!r}")
        self.server_side = server_side
        self.content_ns = content_ns
        self.websocket = framing == "websocket"
        self.limits = limits
        self.host_ok = host_ok
        self.authenticated = False            # set by the owner once SASL/handshake succeeded
        self.error: Optional[StreamErrorOccurred] = None
        self.peer_attrs: Optional[dict] = None
        self.stream_id: Optional[str] = None  # the id we sent (XEP-0114 handshake, SASL channel binding)
        self.restart()

    # -- receiving ----------------------------------------------------------------------------

    def restart(self) -> None:
        """A new stream on the same connection (after STARTTLS and SASL success): a new parser."""
        self._parser = _new_parser()
        self._root: Optional[etree._Element] = None
        self._nsmap: dict = {}
        self._depth = 0
        self._at_start = True                 # nothing seen yet: an XML declaration may come
        self._prefix = b""                    # bytes held back while deciding about the declaration
        self._scanner = RestrictedXmlScanner()
        self._pending = 0                     # bytes fed since the last complete stanza (or header)
        self._peer_closed = False
        self._header_sent = False
        self.peer_attrs = None

    def hibernate(self) -> bool:
        """Drop the parser of an idle stream (the owner calls it from an idle timer); True if done.

        Only between stanzas.  The parser is most of an idle stream's memory (about 11 KiB);
        the next receive_data() makes a new one and feeds it a copy of the peer's namespace
        declarations, which is all a stanza's parse depends on.
        """
        if (self.websocket or self._root is None or self._depth != 1 or self._pending
                or self._scanner.needs_scan(b"") or self.error is not None or self._peer_closed):
            return False
        self._parser = None
        self._root = None
        return True

    def _wake(self) -> None:
        declarations = b"".join(b' xmlns%s="%s"' % (b":" + prefix.encode() if prefix else b"", _attr(uri))
                                for prefix, uri in self._nsmap.items())
        self._parser = _new_parser()
        self._parser.feed(b"<stream:stream%s>" % declarations)
        ((_, self._root),) = self._parser.read_events()

    def receive_data(self, data: bytes) -> list:
        if self.error is not None or self._peer_closed or not data:
            return []
        if self._parser is None:
            self._wake()
        events: list = []
        try:
            if self.websocket:
                self._receive_message(data, events)
            else:
                self._receive_stream(data, events)
        except Refused as refused:
            self.error = StreamErrorOccurred(refused.condition, refused.text)
            events.append(self.error)
        return events

    def _receive_stream(self, data: bytes, events: list) -> None:
        if self._at_start:
            data = self._declaration(data)
            if data is None:
                return
        if self._scanner.needs_scan(data):
            self._scan_or_refuse(data, events)
        if len(data) <= SLICE:
            self._count(data, self._feed(data, events))
        else:
            self._receive_clean(data, events)

    def _scan_or_refuse(self, data: bytes, events: list) -> None:
        try:
            self._scanner.scan(data)
        except Refused as refused:
            # What came before the refused construct still counts, so the events do not
            # depend on where the chunks were cut.
            if refused.at:
                self._receive_clean(data[:refused.at], events)
            raise

    def _receive_clean(self, data: bytes, events: list) -> None:
        if len(data) <= SLICE:
            self._count(data, self._feed(data, events))
            return
        for start in range(0, len(data), SLICE):
            piece = data[start:start + SLICE]
            ended = self._feed(piece, events)
            self._count(piece, ended)
            if self._peer_closed:
                return

    def _receive_message(self, data: bytes, events: list) -> None:
        # RFC 7395 §3.3.3: every message is one whole document, parsed on its own.
        limit = self._stanza_limit()
        if len(data) > limit:
            raise Refused("policy-violation", f"message over {limit} bytes")
        self._parser, self._depth, self._scanner = _new_parser(), 1, RestrictedXmlScanner()
        self._at_start, self._prefix = True, b""
        data = self._declaration(data)
        if data is None:
            raise Refused("not-well-formed", "incomplete XML declaration")
        self._scanner.scan(data)
        self._feed(data, events)
        try:
            self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise Refused("not-well-formed", _first_line(exc)) from None
        if self._depth != 1:
            raise Refused("not-well-formed", "incomplete message")

    def _declaration(self, data: bytes) -> Optional[bytes]:
        """Hold bytes at the stream start until the XML declaration (if any) is whole; None meanwhile."""
        buf = self._prefix + data
        skip = declaration_length(buf)
        if skip is None:
            self._prefix = buf
            return None
        self._prefix, self._at_start = b"", False
        if skip:
            self._feed(buf[:skip], [])        # to lxml, but not scanned as a PI
        return buf[skip:]

    def _feed(self, piece: bytes, events: list) -> bool:
        """Feed one slice to lxml; turn its events into ours.  Returns whether a stanza (or the header) ended."""
        failure = None
        try:
            self._parser.feed(piece)
        except etree.XMLSyntaxError as exc:
            failure = exc                     # the events before the error still count (depth first)
        ended = self._events(piece, events)
        if failure is not None:
            raise Refused("not-well-formed", _first_line(failure))
        return ended

    def _events(self, piece: bytes, events: list) -> bool:
        ended = False
        limits = self.limits
        depth = self._depth
        for action, el in self._parser.read_events():
            if action == "start":
                depth += 1
                if depth > 2:
                    if depth > limits.max_depth:
                        self._depth = depth
                        raise Refused("policy-violation", f"nesting deeper than {limits.max_depth}")
                    if len(el.attrib) > (limits.max_attributes if self.authenticated
                                         else limits.max_attributes_preauth):
                        raise Refused("policy-violation", "too many attributes")
                    continue
                self._depth = depth
                if depth == 1:
                    self._check_size(piece, ended, b">", limits.max_header_bytes)
                    self._open(el, events)
                    ended = True
                else:
                    self._stanza_started(el)
            elif action == "end":
                depth -= 1
                if depth > 1:
                    continue
                self._depth = depth
                if depth == 1:
                    if not self.websocket:
                        self._check_size(piece, ended, b"</", self._stanza_limit())
                    ended = True
                    if self.websocket:
                        self._message(el, events)
                        continue
                    # A copy in a document of its own keeps the default namespace (a moved
                    # node would get a made-up `ns0:` prefix); the parsed one is freed.
                    stanza = el.__deepcopy__(None)
                    stanza.tail = None
                    root = self._root
                    text = root.text
                    if text is not None:
                        if text.strip():
                            raise Refused("bad-format", "text at stream level")
                        root.text = None
                    root.remove(el)
                    self._stanza(stanza, events)
                    if self._peer_closed:     # it was <stream:error>
                        return ended
                else:
                    self._peer_closed = True
                    events.append(StreamClosed())
                    return ended
            else:                             # comment or pi that got past the scanner
                raise Refused("restricted-xml", action)
        self._depth = depth
        if depth == 1 and self._root is not None:
            text = self._root.text
            if text is not None:
                if text.strip():
                    raise Refused("bad-format", "text at stream level")
                self._root.text = None        # whitespace keepalives must not pile up
        return ended

    def _stanza_started(self, el: etree._Element) -> None:
        limits = self.limits
        max_attributes = limits.max_attributes if self.authenticated else limits.max_attributes_preauth
        if len(el.attrib) > max_attributes:
            raise Refused("policy-violation", f"more than {max_attributes} attributes")
        if self.peer_attrs is None and not self.websocket:
            raise Refused("not-well-formed", "stanza before the stream header")
        tag = el.tag
        if tag[0] != "{":
            raise Refused("invalid-namespace", "element in no namespace")
        close = tag.index("}")
        if tag[close + 1:] in _STANZA_NAMES and tag[1:close] != self.content_ns:
            raise Refused("invalid-namespace", f"stanza namespace is not {self.content_ns}")

    def _open(self, el: etree._Element, events: list) -> None:
        if el.tag != _STREAM_TAG:
            if el.tag.endswith("}stream") or el.tag == "stream":
                raise Refused("invalid-namespace", f"stream namespace is not {ns.STREAMS}")
            raise Refused("invalid-namespace", "the root element is not stream:stream")
        if el.prefix != "stream":
            raise Refused("bad-namespace-prefix", "the stream prefix must be 'stream'")
        if el.nsmap.get(None) != self.content_ns:
            raise Refused("invalid-namespace", f"content namespace is not {self.content_ns}")
        self._root = el
        self._nsmap = el.nsmap                # to wake from hibernate() with
        self._opened(el, events)

    def _message(self, el: etree._Element, events: list) -> None:
        tag = el.tag
        if tag == _OPEN_TAG:
            self._opened(el, events)
        elif tag == _CLOSE_TAG:
            self._peer_closed = True
            events.append(StreamClosed())
        elif tag[0] == "{" and tag[1:tag.index("}")] == ns.FRAMING:
            raise Refused("invalid-xml", "unknown framing element")
        elif self.peer_attrs is None:
            raise Refused("not-well-formed", "stanza before <open/>")
        else:
            self._stanza(el, events)

    def _opened(self, el: etree._Element, events: list) -> None:
        attrs = {(k if k != _LANG else "xml:lang"): v for k, v in el.attrib.items()}
        version = attrs.get("version")
        major = _major(version)
        # XEP-0114 component streams are of the pre-1.0 kind: no version, no features.
        if self.content_ns != ns.COMPONENT and (major is None or major < 1):
            raise Refused("unsupported-version", f"version {version!r} is not 1.x")
        if self.server_side and self.host_ok is not None and not self.host_ok(attrs.get("to")):
            raise Refused("host-unknown", f"{attrs.get('to')!r} is not served here")
        self.peer_attrs = attrs
        events.append(StreamOpened(attrs))

    def _stanza(self, el: etree._Element, events: list) -> None:
        if el.tag == _ERROR_TAG:
            condition, text = "undefined-condition", None
            for child in el:
                if child.tag == "{%s}text" % ns.STREAM_ERRORS:
                    text = child.text
                elif isinstance(child.tag, str) and child.tag.startswith("{%s}" % ns.STREAM_ERRORS):
                    condition = child.tag[len(ns.STREAM_ERRORS) + 2:]
            self._peer_closed = True
            events.append(StreamErrorReceived(condition, text))
            return
        events.append(StanzaReceived(el))

    def _stanza_limit(self) -> int:
        return self.limits.max_stanza_bytes if self.authenticated else self.limits.max_stanza_bytes_preauth

    def _check_size(self, piece: bytes, ended_before: bool, marker: bytes, limit: int) -> None:
        """A stanza (or header) just ended in `piece`: refuse it if it was over `limit`."""
        if self._pending == 0 and len(piece) <= limit:
            return
        if ended_before:
            size = len(piece)                 # it began in this piece
        else:
            # It ends at the first `>` after the first end tag: estimated to within the slice.
            mark = piece.find(marker)
            size = self._pending + (piece.find(b">", mark) + 1 if mark >= 0 else len(piece))
        if size > limit:
            raise Refused("policy-violation", f"stanza over {limit} bytes")

    def _count(self, piece: bytes, ended: bool) -> None:
        if ended:
            # Bytes after the last `>` may be the start of the next stanza; an open one counts whole (strict).
            if self._depth >= 2:
                self._pending = len(piece)
            elif piece.endswith(b">"):
                self._pending = 0
                return
            else:
                self._pending = len(piece) - piece.rfind(b">") - 1 if piece.rstrip()[-1:] != b">" else 0
        elif self._pending or piece.strip():
            self._pending += len(piece)
        limit = self.limits.max_header_bytes if self.peer_attrs is None else self._stanza_limit()
        if self._pending > limit:
            raise Refused("policy-violation", f"stanza over {limit} bytes")

    # -- sending ------------------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        if isinstance(command, SendStanza):
            return serialise(command.element, self.content_ns, self.websocket)
        if isinstance(command, OpenStream):
            return self._header(command)
        if isinstance(command, SendStreamError):
            error = _error_bytes(command.condition, command.text, self.websocket)
            if self.websocket:
                return error                  # then send(EndStream()): <close/> is a message of its own
            served = self.peer_attrs.get("to") if self.server_side and self.peer_attrs else None
            head = b"" if self._header_sent else self._header(OpenStream(from_=served, id=self.stream_id))
            return head + error + b"</stream:stream>"
        if isinstance(command, EndStream):
            return b'<close xmlns="%s"/>' % ns.FRAMING.encode() if self.websocket else b"</stream:stream>"
        if isinstance(command, SendKeepalive):
            return b"" if self.websocket else b" "
        raise TypeError(f"cannot send {command!r}")

    def _header(self, command: OpenStream) -> bytes:
        self._header_sent = True
        if command.id is not None:
            self.stream_id = command.id
        attrs = []
        for name, value in (("from", command.from_), ("to", command.to), ("id", command.id),
                            ("version", command.version), ("xml:lang", command.lang)):
            if value is not None:
                attrs.append(b' %s="%s"' % (name.encode(), _attr(value)))
        if self.websocket:
            return b'<open xmlns="%s"%s/>' % (ns.FRAMING.encode(), b"".join(attrs))
        return (b"<?xml version='1.0'?><stream:stream xmlns=\"%s\" xmlns:stream=\"%s\"%s>"
                % (self.content_ns.encode(), ns.STREAMS.encode(), b"".join(attrs)))


def stream_error_element(condition: str, text: Optional[str] = None) -> etree._Element:
    if condition not in ns.STREAM_ERROR_CONDITIONS:
        raise ValueError(f"unknown stream error condition {condition!r}")
    error = etree.Element(_ERROR_TAG, nsmap={"stream": ns.STREAMS})
    etree.SubElement(error, "{%s}%s" % (ns.STREAM_ERRORS, condition), nsmap={None: ns.STREAM_ERRORS})
    if text:
        etree.SubElement(error, "{%s}text" % ns.STREAM_ERRORS, nsmap={None: ns.STREAM_ERRORS}).text = text
    return error


def _error_bytes(condition: str, text: Optional[str], websocket: bool) -> bytes:
    data = etree.tostring(stream_error_element(condition, text), encoding="utf-8")
    if websocket:
        return data
    # Inside the stream, the `stream` prefix is already bound by the header.
    return data.replace(b' xmlns:stream="%s"' % ns.STREAMS.encode(), b"", 1)


def _attr(value: str) -> bytes:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;").encode("utf-8"))


def _major(version: Optional[str]) -> Optional[int]:
    if not version:
        return None
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()):
        return None
    return int(major)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
