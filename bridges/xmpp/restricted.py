"""Restricted XML (RFC 6120 §11.1) enforced on the raw bytes, before lxml sees them.

`<!` other than a CDATA section (DTDs, entity declarations, comments), `<?` other than the XML
declaration at the very start, and entity references other than the five predefined ones and
character references are refused; so is an encoding other than UTF-8.  lxml would parse (or
silently drop) some of these, and expanding anything is what billion laughs and XXE need.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["Refused", "RestrictedXmlScanner", "declaration_length"]

_MARKUP = re.compile(rb"<[!?]|&")
_ALLOWED_REF = re.compile(rb"&(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_PARTIAL_REF = re.compile(rb"&[#a-zA-Z0-9]*")
_LONGEST_REF = 10                   # len(b"&#x10FFFF;")
_CDATA_OPEN = b"<![CDATA["
_XML_DECL = re.compile(rb"<\?xml(?:\s[^?<>]*)?\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")
_BOM = b"\xef\xbb\xbf"
_OTHER_ENCODINGS = (b"\xfe\xff", b"\xff\xfe", b"\x00\x00\x00<", b"<\x00\x00\x00")   # UTF-16/32 starts


class Refused(Exception):
    """The peer broke the rules: `condition` is the stream error; `at` where in the bytes."""

    def __init__(self, condition: str, text: str, at: int = 0):
        super().__init__(text)
        self.condition, self.text, self.at = condition, text, at


def declaration_length(buf: bytes) -> Optional[int]:
    """At a stream's (or message's) start: how many bytes of `buf` are BOM and XML declaration
    (0 if none), or None while `buf` is too short to tell.  Refuses a non-UTF-8 encoding."""
    if buf[:2] in _OTHER_ENCODINGS[:2] or buf[:4] in _OTHER_ENCODINGS[2:]:
        raise Refused("unsupported-encoding", "only UTF-8 is supported")
    if any(len(buf) < len(mark) and mark.startswith(buf) for mark in (_BOM, *_OTHER_ENCODINGS)):
        return None
    bom = 3 if buf.startswith(_BOM) else 0
    body = buf[bom:]
    if len(body) < 2 and b"<?".startswith(body):
        return None
    if not body.startswith(b"<?"):
        return bom
    match = _XML_DECL.match(body)
    if match is None:
        if b">" in body or len(body) > 256:
            raise Refused("restricted-xml", "processing instruction")
        return None
    encoding = _ENCODING.search(match.group())
    if encoding and encoding.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise Refused("unsupported-encoding", f"encoding {encoding.group(1).decode('ascii', 'replace')}")
    return bom + match.end()


def suspicious(data: bytes) -> bool:
    """Whether `data` needs the full scan (fast: most stanzas have none of these)."""
    return b"<!" in data or b"<?" in data or b"&" in data or data.endswith(b"<")


class RestrictedXmlScanner:
    """Scans a stream's bytes chunk by chunk, carrying an undecided tail (`<`, `<![CDA`, `&am`)."""

    __slots__ = ("carry", "in_cdata")

    def __init__(self):
        self.carry = b""
        self.in_cdata = False

    def needs_scan(self, data: bytes) -> bool:
        return bool(self.carry) or self.in_cdata or suspicious(data)

    def scan(self, data: bytes) -> None:
        """Refuse restricted XML in `data` (with the tail carried from the last chunk); `at` is into `data`."""
        carried = len(self.carry)
        buf = self.carry + data if carried else data
        self.carry = b""
        try:
            self._scan(buf)
        except Refused as refused:
            refused.at = max(0, refused.at - carried)
            raise

    def _scan(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while pos < end:
            if self.in_cdata:
                close = buf.find(b"]]>", pos)
                if close < 0:
                    self.carry = buf[-2:]
                    return
                self.in_cdata, pos = False, close + 3
                continue
            m = _MARKUP.search(buf, pos)
            if m is None:
                if buf.endswith(b"<"):
                    self.carry = b"<"
                return
            at = m.start()
            rest = buf[at:at + len(_CDATA_OPEN)]
            if buf[at] == 0x26:                                    # &
                if _ALLOWED_REF.match(buf, at):
                    pos = buf.index(b";", at) + 1
                    continue
                tail = buf[at:]
                if len(tail) < _LONGEST_REF and _PARTIAL_REF.fullmatch(tail):
                    self.carry = tail
                    return
                raise Refused("restricted-xml", "entity reference", at)
            if rest == _CDATA_OPEN:
                self.in_cdata, pos = True, at + len(_CDATA_OPEN)
                continue
            if at + len(rest) == end and len(rest) < len(_CDATA_OPEN) and _CDATA_OPEN.startswith(rest):
                self.carry = rest
                return
            if rest.startswith(b"<?"):
                raise Refused("restricted-xml", "processing instruction", at)
            if rest.startswith(b"<!--"):
                raise Refused("restricted-xml", "comment", at)
            raise Refused("restricted-xml", "DTD or entity declaration", at)
