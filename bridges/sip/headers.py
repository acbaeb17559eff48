"""SIP header fields: names (canonical and compact forms), the ordered field list of a message, and
parsers for the structured values (name-addr/addr-spec with parameters, Contact, Via, CSeq, scalars).

Values are kept as received (unfolded) so a message re-serialises faithfully; the structured parsers
run on demand. Each raises SipParseError naming the fault.
"""

from __future__ import annotations

import re
from functools import lru_cache

from bridges.sip.errors import SipParseError
from bridges.sip.uri import SipUri, Uri, parse_host, parse_uri

CANONICAL = {n.lower(): n for n in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
    "Event", "Expires", "Flow-Timer", "From", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards",
    "MIME-Version", "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity", "Path", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route",
    "RSeq", "RAck", "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate")}
COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
           "f": "From", "t": "To", "v": "Via", "s": "Subject", "k": "Supported", "o": "Event", "r": "Refer-To",
           "u": "Allow-Events", "a": "Accept-Contact", "b": "Referred-By", "j": "Reject-Contact",
           "d": "Request-Disposition", "x": "Session-Expires", "y": "Identity", "n": "Identity-Info"}
# Headers whose grammar is a comma-separated list: several field lines and one line with commas mean
# the same. Not the authentication headers (commas separate their parameters), nor Date, nor unknowns.
MULTI_VALUED = frozenset(n.lower() for n in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
    "P-Asserted-Identity", "Path", "Proxy-Require", "Reason", "Record-Route", "Reject-Contact",
    "Request-Disposition", "Require", "Route", "Service-Route", "Supported", "Unsupported", "Via", "Warning"))

TOKEN_CHARS = "A-Za-z0-9\\-.!%*_+`'~"
_TOKEN = re.compile(f"[{TOKEN_CHARS}]+")
_TOKEN_FULL = re.compile(f"[{TOKEN_CHARS}]+\\Z")
_WS = re.compile(r"[ \t]*")
_DISPLAY_TOKENS = re.compile(f"[{TOKEN_CHARS}]+(?:[ \\t]+[{TOKEN_CHARS}]+)*\\Z")
_PARAM_VALUE = re.compile(f"[{TOKEN_CHARS}:\\[\\]]+")
_SIMPLE_PARAMS = re.compile(f"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}:\\[\\]]+)?)*\\Z")
_VIA = re.compile(
    f"[ \\t]*([{TOKEN_CHARS}]+)[ \\t]*/[ \\t]*([{TOKEN_CHARS}]+)[ \\t]*/[ \\t]*([{TOKEN_CHARS}]+)[ \\t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?")
_IPV6_BARE = re.compile(r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\Z")
_CSEQ = re.compile(f"[ \\t]*([0-9]+)[ \\t]+([{TOKEN_CHARS}]+)[ \\t]*\\Z")

MAX_CSEQ = 2**31 - 1
MAX_DELTA_SECONDS = 2**32 - 1


@lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """Full canonical spelling of a known header (compact forms expanded); unknown names as given."""
    lower = name.lower()
    return COMPACT.get(lower) or CANONICAL.get(lower) or name


@lru_cache(maxsize=4096)
def header_key(name: str) -> str:
    """The lookup key of a header name in any spelling or form."""
    return canonical_name(name).lower()


def is_token(text: str) -> bool:
    return bool(_TOKEN_FULL.match(text))


def split_commas(value: str) -> list[str]:
    """Split a list-valued header at commas that are not inside a quoted string or <...>."""
    if "," not in value:
        return [value.strip(" \t")]
    parts, start, quoted, angle, i, n = [], 0, False, False, 0, len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(" \t"))
    return parts


class Headers:
    """The header fields of one message in order, each as (name, value). Names are canonical for known
    headers (so "i:" reads back as Call-ID), lookups are case-insensitive by any spelling."""

    __slots__ = ("_fields", "_map")

    def __init__(self, fields: list[tuple[str, str]] | None = None):
        self._fields = [(canonical_name(n), v) for n, v in fields] if fields else []
        self._map: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        if self._map is None:
            index: dict[str, list[str]] = {}
            for name, value in self._fields:
                key = header_key(name)
                if key in index:
                    index[key].append(value)
                else:
                    index[key] = [value]
            self._map = index
        return self._map

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: str) -> bool:
        return header_key(name) in self._index()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def fields(self, name: str) -> list[str]:
        """The field lines of this header, unsplit."""
        return self._index().get(header_key(name), [])

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.fields(name)
        return found[0] if found else default

    def values(self, name: str) -> list[str]:
        """Every value of a header: field lines in order, list-valued headers split at their commas."""
        found = self.fields(name)
        if header_key(name) not in MULTI_VALUED:
            return list(found)
        out = []
        for line in found:
            out.extend(split_commas(line))
        return out

    def add(self, name: str, value: str) -> None:
        self._fields.append((canonical_name(name), value))
        self._map = None

    def insert(self, index: int, name: str, value: str) -> None:
        self._fields.insert(index, (canonical_name(name), value))
        self._map = None

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._fields = [f for f in self._fields if header_key(f[0]) != key]
        self._map = None

    def set(self, name: str, value: str) -> None:
        """Replace every field of this header by one, at the place of the first (or at the end)."""
        key, name = header_key(name), canonical_name(name)
        out, done = [], False
        for field in self._fields:
            if header_key(field[0]) == key:
                if not done:
                    out.append((name, value))
                    done = True
            else:
                out.append(field)
        if not done:
            out.append((name, value))
        self._fields, self._map = out, None

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a header, keeping the rest of its field line (a proxy
        taking its Via off a response whose first Via line holds several)."""
        key = header_key(name)
        for index, (field_name, line) in enumerate(self._fields):
            if header_key(field_name) == key:
                values = split_commas(line) if key in MULTI_VALUED else [line]
                if len(values) > 1:
                    self._fields[index] = (field_name, ", ".join(values[1:]))
                else:
                    del self._fields[index]
                self._map = None
                return values[0]
        return None

    def copy(self) -> Headers:
        h = Headers()
        h._fields = list(self._fields)
        return h


# --- structured values ------------------------------------------------------------------------------

def parse_uint(text: str, what: str, maximum: int) -> int:
    text = text.strip(" \t")
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"bad {what}")
    if len(text) > 20 or int(text) > maximum:
        raise SipParseError(f"{what} too large")
    return int(text)


def read_quoted(s: str, i: int) -> int:
    """Index just past the quoted string starting at s[i] == '"'."""
    i += 1
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError("unterminated quoted string")


_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(s: str, i: int, what: str) -> list[tuple[str, str | None]]:
    """`*( SEMI name [EQUAL value] )` from s[i] to the end; values kept raw (quotes included)."""
    if _SIMPLE_PARAMS.match(s, i):  # the usual case: no LWS, no quotes
        if i == len(s):
            return []
        return [(name, value if eq else None) for name, eq, value in
                (item.partition("=") for item in s[i + 1:].split(";"))]
    params = []
    n = len(s)
    while True:
        i = _WS.match(s, i).end()
        if i >= n:
            return params
        if s[i] != ";":
            raise SipParseError(f"junk in {what}")
        i = _WS.match(s, i + 1).end()
        m = _TOKEN.match(s, i)
        if not m:
            raise SipParseError(f"empty parameter in {what}")
        name = m.group()
        i = _WS.match(s, m.end()).end()
        value = None
        if i < n and s[i] == "=":
            i = _WS.match(s, i + 1).end()
            if i < n and s[i] == '"':
                end = read_quoted(s, i)
                value, i = s[i:end], end
            else:
                m = _PARAM_VALUE.match(s, i)
                if not m:
                    raise SipParseError(f"empty parameter value in {what}")
                value, i = m.group(), m.end()
        params.append((name, value))


def _param(params: list[tuple[str, str | None]], name: str, default=None):
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return value
    return default


def _has(params, name: str) -> bool:
    name = name.lower()
    return any(key.lower() == name for key, _ in params)


def format_params(params: list[tuple[str, str | None]]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


class NameAddr:
    """From, To, Contact, Route, Record-Route...: an optional display name, a URI, header parameters.
    `text` is the value as received; str() re-serialises it unchanged."""

    __slots__ = ("display", "uri", "params", "text")

    def __init__(self, display: str | None, uri: Uri, params: list, text: str | None = None):
        self.display = display
        self.uri = uri
        self.params = params
        self.text = text if text is not None else self.format()

    def format(self) -> str:
        head = f"{quote(self.display)} " if self.display else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NameAddr({self.text!r})"

    def param(self, name: str, default=None):
        return _param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return _has(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_tag(self, tag: str) -> NameAddr:
        if self.tag is not None:
            return self
        return NameAddr(self.display, self.uri, self.params + [("tag", tag)], self.text + f";tag={tag}")


def parse_name_addr(value: str, what: str) -> NameAddr:
    """name-addr (`["display"] <uri>`) or addr-spec (`uri`, whose `;params` belong to the header)."""
    s = value
    n = len(s)
    i = _WS.match(s).end()
    display = None
    if i < n and s[i] == '"':
        end = read_quoted(s, i)
        display = unquote(s[i:end])
        i = _WS.match(s, end).end()
        if i >= n or s[i] != "<":
            raise SipParseError(f"display name without <URI> in {what}")
    elif "<" in s:
        lt = s.index("<")
        head = s[i:lt].rstrip(" \t")
        if head:
            if not _DISPLAY_TOKENS.match(head):
                raise SipParseError(f"bad display name in {what}")
            display = head
        i = lt
    if i < n and s[i] == "<":
        gt = s.find(">", i)
        if gt < 0:
            raise SipParseError(f"unterminated <URI> in {what}")
        inner = s[i + 1:gt]
        if " " in inner or "\t" in inner:
            raise SipParseError(f"whitespace inside <URI> in {what}")
        uri = parse_uri(inner)
        i = gt + 1
    else:
        j = i
        while j < n and s[j] not in "; \t":
            j += 1
        inner = s[i:j]
        if not inner:
            raise SipParseError(f"missing URI in {what}")
        if "?" in inner or "," in inner:
            raise SipParseError(f"URI with headers must be enclosed in <> in {what}")
        uri = parse_uri(inner)
        i = j
    params = parse_params(s, i, what)
    return NameAddr(display, uri, params, value.strip(" \t"))


class Contact(NameAddr):
    """A Contact value: a name-addr with expires, q, +sip.instance and reg-id (RFC 5626), or `*`."""

    __slots__ = ()

    @property
    def is_star(self) -> bool:
        return self.uri is None

    @property
    def expires(self) -> int | None:
        value = self.param("expires")
        return None if value is None else parse_uint(value, "Contact expires", MAX_DELTA_SECONDS)

    @property
    def q(self) -> float | None:
        value = self.param("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise SipParseError("bad Contact q") from None
        if not 0 <= q <= 1:
            raise SipParseError("bad Contact q")
        return q

    @property
    def instance(self) -> str | None:
        value = self.param("+sip.instance")
        return None if value is None else unquote(value).strip("<>")

    @property
    def reg_id(self) -> int | None:
        value = self.param("reg-id")
        return None if value is None else parse_uint(value, "Contact reg-id", MAX_DELTA_SECONDS)


def parse_contacts(values: list[str]) -> list[Contact]:
    out = []
    for value in values:
        if value.strip(" \t") == "*":
            if len(values) != 1:
                raise SipParseError("Contact * must be alone")
            return [Contact(None, None, [], "*")]
        na = parse_name_addr(value, "Contact")
        contact = Contact(na.display, na.uri, na.params, na.text)
        contact.expires, contact.q, contact.reg_id  # noqa: B018 - validate the scalars now
        out.append(contact)
    return out


class Via:
    """One Via value: sent-protocol, sent-by and parameters (branch, received, rport, maddr...)."""

    __slots__ = ("protocol", "version", "transport", "host", "port", "params", "text")

    def __init__(self, transport: str, host: str, port: int | None, params: list, text: str | None = None,
                 protocol: str = "SIP", version: str = "2.0"):
        self.protocol = protocol
        self.version = version
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.text = text if text is not None else self.format()

    def format(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.version}/{self.transport} {self.host}{port}{format_params(self.params)}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Via({self.text!r})"

    def param(self, name: str, default=None):
        return _param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return _has(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        value = self.param("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host.lower(), self.port

    def with_param(self, name: str, value: str | None) -> Via:
        """This Via with a parameter set (replaced where present, appended otherwise)."""
        lower, params, done = name.lower(), [], False
        for key, old in self.params:
            if key.lower() == lower:
                params.append((key, value))
                done = True
            else:
                params.append((key, old))
        if not done:
            params.append((name, value))
        return Via(self.transport, self.host, self.port, params, None, self.protocol, self.version)


def parse_via(value: str) -> Via:
    m = _VIA.match(value)
    if not m:
        raise SipParseError("malformed Via")
    protocol, version, transport, host, port = m.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise SipParseError("unsupported SIP version in Via")
    parse_host(host)
    if port is not None and int(port) > 65535:
        raise SipParseError("bad Via port")
    params = parse_params(value, m.end(), "Via")
    for key, val in params:
        if key.lower() == "received" and val is not None and not _IPV6_BARE.match(val):
            parse_host(val)  # RFC 3261 writes an IPv6 received= without brackets
        elif key.lower() == "maddr" and val is not None:
            parse_host(val)
        elif key.lower() == "rport" and val is not None and not (val.isdigit() and int(val) <= 65535):
            raise SipParseError("bad Via rport")
    return Via(transport.upper(), host, int(port) if port else None, params, value.strip(" \t"),
               protocol.upper(), version)


class CSeq:
    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str):
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.number, self.method) == (other.number, other.method)


def parse_cseq(value: str) -> CSeq:
    m = _CSEQ.match(value)
    if not m:
        raise SipParseError("malformed CSeq")
    digits = m.group(1)
    if len(digits) > 10 or int(digits) > MAX_CSEQ:
        raise SipParseError("CSeq number too large")
    return CSeq(int(digits), m.group(2))


def is_sip_uri(uri: Uri | None) -> bool:
    return isinstance(uri, SipUri)
