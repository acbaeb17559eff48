"""JIDs (RFC 7622): parsing and preparation, bare/full, XEP-0106 escaping, a fold for matching names.

Preparation uses the PRECIS profiles of the `precis-i18n` package: the localpart is enforced
with UsernameCaseMapped (RFC 8265 §3.3) and must not contain `"&'/:<>@`, the resourcepart with
OpaqueString (§4.2).  The domainpart is not run through IDNA2008/UTS 46 (no such library
here): it is NFC-normalised and lower-cased, a trailing dot removed, IP literals kept as they
are, and labels checked for length (63 octets) and for characters no domain has (ASCII
controls, space and `"&'/:<>@[\\]`).  A Unicode domain is therefore compared in its U-label
form only, and A-labels (`xn--`) are not decoded: the same domain written both ways is two
domains to this module.  Each part is at most 1023 octets (RFC 7622 §3.1).
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple, Optional

import precis_i18n

__all__ = ["JidError", "Jid", "parse_jid", "prep_localpart", "prep_domain", "prep_resource",
           "escape_localpart", "unescape_localpart", "fold_name"]

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")
_LOCAL_FORBIDDEN = frozenset('"&\'/:<>@')
_DOMAIN_FORBIDDEN = frozenset(' "&\'/:<>@[\\]') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
_MAX_PART = 1023


class JidError(ValueError):
    """Not a valid JID (a stanza error `jid-malformed`)."""


class Jid(NamedTuple):
    local: Optional[str]
    domain: str
    resource: Optional[str] = None

    @property
    def bare(self) -> "Jid":
        return Jid(self.local, self.domain) if self.resource is not None else self

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def with_resource(self, resource: str) -> "Jid":
        return Jid(self.local, self.domain, prep_resource(resource))

    def __str__(self) -> str:
        out = f"{self.local}@{self.domain}" if self.local is not None else self.domain
        return f"{out}/{self.resource}" if self.resource is not None else out


def parse_jid(text: str) -> Jid:
    """Split and prepare `text` (RFC 7622 §3.1: the first `/` ends the domain, then the last `@` before it)."""
    if not isinstance(text, str) or not text:
        raise JidError("empty JID")
    domain_and_local, slash, resource = text.partition("/")
    local, at, domain = domain_and_local.rpartition("@")
    if slash and not resource:
        raise JidError("empty resourcepart")
    if at and not local:
        raise JidError("empty localpart")
    return Jid(prep_localpart(local) if at else None, prep_domain(domain),
               prep_resource(resource) if slash else None)


def _check_length(part: str, what: str) -> str:
    if not part:
        raise JidError(f"empty {what}")
    if len(part.encode("utf-8")) > _MAX_PART:
        raise JidError(f"{what} over {_MAX_PART} octets")
    return part


def prep_localpart(local: str) -> str:
    try:
        prepared = _USERNAME.enforce(local)
    except UnicodeError as exc:
        raise JidError(f"localpart: {exc.reason if hasattr(exc, 'reason') else exc}") from None
    if _LOCAL_FORBIDDEN.intersection(prepared):
        raise JidError("localpart has a character RFC 7622 forbids")
    return _check_length(prepared, "localpart")


def prep_resource(resource: str) -> str:
    try:
        prepared = _OPAQUE.enforce(resource)
    except UnicodeError as exc:
        raise JidError(f"resourcepart: {exc.reason if hasattr(exc, 'reason') else exc}") from None
    return _check_length(prepared, "resourcepart")


def prep_domain(domain: str) -> str:
    if domain.startswith("[") and domain.endswith("]") and ":" in domain:     # IPv6 literal
        return _check_length(domain.lower(), "domainpart")
    domain = unicodedata.normalize("NFC", domain).lower()
    if domain.endswith("."):
        domain = domain[:-1]
    _check_length(domain, "domainpart")
    if _DOMAIN_FORBIDDEN.intersection(domain):
        raise JidError("domainpart has a character no domain has")
    for label in domain.split("."):
        if not label or len(label.encode("utf-8")) > 63:
            raise JidError("domainpart has an empty or overlong label")
    return domain


# XEP-0106: the characters a localpart cannot hold, written as \XX.
_ESCAPES = {" ": "\\20", '"': "\\22", "&": "\\26", "'": "\\27", "/": "\\2f", ":": "\\3a", "<": "\\3c",
            ">": "\\3e", "@": "\\40", "\\": "\\5c"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def escape_localpart(name: str) -> str:
    """XEP-0106 §4.2: escape `name` for a localpart (a `\\` is escaped only where it would read as an escape)."""
    if name.startswith(" ") or name.endswith(" "):
        raise JidError("a localpart cannot begin or end with a space")
    out = []
    for i, ch in enumerate(name):
        if ch == "\\":
            out.append("\\5c" if name[i:i + 3].lower() in _UNESCAPES else "\\")
        else:
            out.append(_ESCAPES.get(ch, ch))
    return "".join(out)


def unescape_localpart(local: str) -> str:
    """XEP-0106 §4.3: the name behind an escaped localpart."""
    out, i = [], 0
    while i < len(local):
        seq = local[i:i + 3].lower()
        if local[i] == "\\" and seq in _UNESCAPES:
            out.append(_UNESCAPES[seq])
            i += 3
        else:
            out.append(local[i])
            i += 1
    return "".join(out)


def fold_name(name: str) -> str:
    """The key two names match under: NFKC, Unicode full case folding, NFKC again.

    So `Ǆ`/`ǆ`, `ß`/`ss`, fullwidth `Ａ`/`a` and `K` (Kelvin sign)/`k` match; default-ignorable
    code points are not removed, and nothing is done about confusables (`а` Cyrillic vs `a`).
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
