"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966); any other scheme is kept as an opaque absolute URI.

Components are kept as received (escaped) so a URI re-serialises byte for byte; `unescape` gives the
value a comparison or a lookup needs. A malformed URI raises SipParseError (the codec's one error type).
"""

from __future__ import annotations

import re

from bridges.sip.errors import SipParseError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# Labels of letters, digits and inner hyphens, dot-separated (IPv4 addresses match too).
_HOSTNAME = re.compile(r"(?!.*\.\.)(?!.*-\.)(?!.*\.-)[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# What may appear unescaped in a URI (no LWS, no controls, no quotes or angle brackets).
_URI_CHARS = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:@\[\]]*\Z")
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+\Z")


def unescape(text: str) -> str:
    """%XX escapes decoded (as Latin-1 code points, so no escape can fail); others left alone."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def parse_host(text: str) -> str:
    """A hostname, IPv4 address or bracketed IPv6 reference; SipParseError otherwise."""
    if not text or not (_HOSTNAME.match(text) or _IPV6.match(text)):
        raise SipParseError(f"bad host {text[:40]!r}")
    return text


def parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[:end + 1], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise SipParseError(f"bad host {text[:40]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, _, port_text = text.partition(":")
        if not _:
            port_text = None
    parse_host(host)
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError(f"bad port {port_text[:10]!r}")
    return host, int(port_text)


def _split_params(text: str) -> list[tuple[str, str | None]]:
    params = []
    for item in text.split(";"):
        if not item:
            raise SipParseError("empty URI parameter")
        name, eq, value = item.partition("=")
        if not name:
            raise SipParseError("URI parameter without a name")
        params.append((name, value if eq else None))
    return params


class Uri:
    """Common face of every URI: scheme, the text as received, str() re-serialises it."""

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Uri) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)


class SipUri(Uri):
    """sip: or sips: URI. `params` and `headers` are ordered (name, value-or-None) pairs as received."""

    __slots__ = ("scheme", "text", "user_raw", "password", "host", "port", "params", "headers")

    def __init__(self, scheme, text, user_raw, password, host, port, params, headers):
        self.scheme = scheme
        self.text = text
        self.user_raw = user_raw
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers

    @property
    def user(self) -> str | None:
        return None if self.user_raw is None else unescape(self.user_raw)

    def param(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value
        return default

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key.lower() == name for key, _ in self.params)

    @property
    def header_values(self) -> dict[str, str]:
        return {unescape(k): unescape(v or "") for k, v in self.headers}

    @property
    def aor(self) -> str:
        """scheme:user@host, the address-of-record form a registrar keys bindings by (RFC 3261 §10.3)."""
        user = self.user
        return f"{self.scheme}:{user}@{self.host.lower()}" if user is not None else f"{self.scheme}:{self.host.lower()}"


class TelUri(Uri):
    __slots__ = ("scheme", "text", "number", "params")

    def __init__(self, text, number, params):
        self.scheme = "tel"
        self.text = text
        self.number = number
        self.params = params


class AbsoluteUri(Uri):
    """A URI of a scheme SIP does not interpret (RFC 3261 absoluteURI): kept opaque."""

    __slots__ = ("scheme", "text", "opaque")

    def __init__(self, scheme, text, opaque):
        self.scheme = scheme
        self.text = text
        self.opaque = opaque


def parse_uri(text: str) -> Uri:
    """Parse one URI with no surrounding LWS or angle brackets."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise SipParseError(f"bad URI {text[:60]!r}")
    if not _URI_CHARS.match(rest) or not rest:
        raise SipParseError(f"bad character in URI {text[:60]!r}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, text, rest)
    if lower == "tel":
        number, _, param_text = rest.partition(";")
        if not _TEL_NUMBER.match(number):
            raise SipParseError(f"bad tel URI {text[:60]!r}")
        return TelUri(text, number, _split_params(param_text) if _ else [])
    return AbsoluteUri(lower, text, rest)


def _parse_sip(scheme: str, text: str, rest: str) -> SipUri:
    # '@' appears only in userinfo (it is escaped in parameters and headers), so the first one ends it.
    at = rest.find("@")
    user_raw = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user_raw, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user_raw:
            raise SipParseError("empty user in SIP URI")
    rest, q, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    params = _split_params(param_text) if semi else []
    headers = []
    if q:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("bad header in SIP URI")
            headers.append((name, value))
    return SipUri(scheme, text, user_raw, password, host, port, params, headers)
