"""Stanza serialisation: once per recipient class, with `to` spliced into pre-serialised bytes.

A recipient class is what decides the bytes apart from `to`: the content namespace of the
recipient's stream and its framing (in a TCP stream the stanza inherits the stream's default
namespace, so the declaration is left out; in RFC 7395 WebSocket framing every stanza carries
it).  `Outgoing(element)` serialises the element once per class and, for a stanza routed to
many full JIDs that differ only in `to`, keeps the bytes without `to` split after the tag name,
so each recipient costs two concatenations instead of a tree walk.

Relayed stanzas are always re-serialised from the parsed tree (the codec hands out elements,
never the peer's bytes), so what leaves is well-formed whatever arrived.
"""

from __future__ import annotations

from typing import Optional

from lxml import etree

from . import namespaces as ns

__all__ = ["element", "serialise", "Outgoing", "escape_attr"]

_STREAM_DECL = b' xmlns:stream="%s"' % ns.STREAMS.encode()


def element(tag: str, attrib: Optional[dict] = None, content_ns: str = ns.CLIENT) -> etree._Element:
    """A new top-level stanza element `tag` (plain name) in `content_ns`, declared as the default namespace."""
    el = etree.Element("{%s}%s" % (content_ns, tag), nsmap={None: content_ns})
    if attrib:
        for key, value in attrib.items():
            if value is not None:
                el.set(key, value)
    return el


def serialise(el: etree._Element, content_ns: str = ns.CLIENT, websocket: bool = False) -> bytes:
    """The bytes of `el` for a stream whose content namespace is `content_ns`."""
    tag = el.tag
    if tag[0] == "{":
        el_ns = tag[1:tag.index("}")]
        if el_ns in ns.CONTENT_NAMESPACES and el_ns != content_ns:
            el = _renamespace(el, el_ns, content_ns)      # component/server stanza to a client, and back
        elif el.prefix is not None and el_ns == content_ns:
            el = _renamespace(el, el_ns, content_ns)      # built without nsmap: lxml made up `ns0:`
    data = etree.tostring(el, encoding="utf-8")
    end = data.find(b">")
    head = data[:end]
    if _STREAM_DECL in head and b"stream:" not in data[len(b"<"):].replace(_STREAM_DECL, b"", 1):
        head = head.replace(_STREAM_DECL, b"", 1)
    if not websocket:
        head = head.replace(b' xmlns="%s"' % content_ns.encode(), b"", 1)
    return head + data[end:]


class Outgoing:
    """One stanza on its way to several local recipients: serialised once per (class, without `to`)."""

    __slots__ = ("element", "_bytes", "_split")

    def __init__(self, el: etree._Element):
        self.element = el
        self._bytes: dict = {}
        self._split: dict = {}

    def bytes_for(self, content_ns: str = ns.CLIENT, websocket: bool = False) -> bytes:
        key = (content_ns, websocket)
        data = self._bytes.get(key)
        if data is None:
            data = self._bytes[key] = serialise(self.element, content_ns, websocket)
        return data

    def bytes_to(self, to: str, content_ns: str = ns.CLIENT, websocket: bool = False) -> bytes:
        """The stanza addressed to `to` (replacing its own `to`), from bytes made once per class."""
        key = (content_ns, websocket)
        split = self._split.get(key)
        if split is None:
            el = self.element
            old = el.get("to")
            if old is not None:
                del el.attrib["to"]
            try:
                data = serialise(el, content_ns, websocket)
            finally:
                if old is not None:
                    el.set("to", old)
            cut = len(el.tag) - el.tag.index("}") if el.tag[0] == "{" else len(el.tag) + 1
            declaration = b' xmlns="%s"' % content_ns.encode()
            if data.startswith(declaration, cut):
                cut += len(declaration)             # where lxml would have put `to`
            split = self._split[key] = (data[:cut], data[cut:])
        return b'%s to="%s"%s' % (split[0], escape_attr(to), split[1])


def escape_attr(value: str) -> bytes:
    """`value` as the inside of a double-quoted attribute (what lxml would write)."""
    if "&" in value or "<" in value or '"' in value or ">" in value or "\t" in value \
            or "\n" in value or "\r" in value:
        value = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
                 .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))
    return value.encode("utf-8")


def _renamespace(el: etree._Element, old: str, new: str) -> etree._Element:
    """A copy of `el` with every element of namespace `old` moved to `new` (as the default namespace)."""
    prefix = "{%s}" % old

    def rebuild(src: etree._Element, parent: Optional[etree._Element]) -> None:
        tag = src.tag
        if not isinstance(tag, str):
            return                            # comments/PIs never come from the codec; drop them
        if tag.startswith(prefix):
            tag, nsmap = "{%s}%s" % (new, tag[len(prefix):]), {None: new}
        else:
            nsmap = {k: v for k, v in src.nsmap.items() if v != old}
        if parent is None:
            out = etree.Element(tag, nsmap=nsmap)
            holder[0] = out
        else:
            out = etree.SubElement(parent, tag, nsmap=nsmap)
        for key, value in src.attrib.items():
            out.set(key, value)
        out.text = src.text
        if parent is not None:
            out.tail = src.tail
        for child in src:
            rebuild(child, out)

    holder: list = [None]
    rebuild(el, None)
    return holder[0]
