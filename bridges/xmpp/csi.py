"""XEP-0352 client state indication: an inactive client is spared what can wait.

`<inactive xmlns='urn:xmpp:csi:0'/>` starts holding, for that session, presence updates (only
the latest one of each sender is kept) and chat states (messages without a body that carry an
XEP-0085 state); `<active/>` sends what was held, in order, and so does the first message with
a body (held stanzas first, so the client sees them in the order they came). Everything else
goes through at once. Offered as the `<csi/>` stream feature after authentication.
"""

from __future__ import annotations

from lxml import etree

from . import namespaces as ns

_CSI = "{%s}" % ns.CSI
_C = "{%s}" % ns.CLIENT
_PRESENCE, _MESSAGE, _BODY = _C + "presence", _C + "message", _C + "body"
CHAT_STATES = "http://jabber.org/protocol/chatstates"
_STATE = "{%s}" % CHAT_STATES


class Held:
    """What an inactive session holds back: key -> bytes, in arrival order (presence by sender)."""

    __slots__ = ("items", "n")

    def __init__(self):
        self.items: dict = {}
        self.n = 0

    def presence(self, sender: str | None, data: bytes) -> None:
        key = ("p", sender)
        self.items.pop(key, None)           # the newer replaces it, and moves to the end
        self.items[key] = data

    def other(self, data: bytes) -> None:
        self.n += 1
        self.items[("m", self.n)] = data


def hold(s, el: etree._Element, data: bytes) -> bool:
    """The router's out filter: True when `el` waits for the client to become active."""
    held = s.csi
    if held is None:
        return False
    tag = el.tag
    if tag == _PRESENCE:
        if el.get("type") in (None, "unavailable"):
            held.presence(el.get("from"), data)
            return True
    elif tag == _MESSAGE:
        if el.find(_BODY) is not None:
            flush(s, active=False)
        elif any(isinstance(c.tag, str) and c.tag.startswith(_STATE) for c in el):
            held.other(data)
            return True
    return False


def flush(s, active: bool = True) -> None:
    """Send what waits; the session stays inactive (holding from now on) unless `active`."""
    held, s.csi = s.csi, (None if active else Held())
    if held is None:
        return
    for data in held.items.values():
        s.transmit(data)


def nonza(ev):
    """<active xmlns='urn:xmpp:csi:0'/> | <inactive xmlns='urn:xmpp:csi:0'/>"""
    s, tag = ev.session, ev.stanza.tag
    if s.jid is None:
        return True                         # before bind: nothing to indicate yet
    if tag == _CSI + "inactive":
        if s.csi is None:
            s.csi = Held()
    elif tag == _CSI + "active":
        flush(s)
    return True


def setup(module, svc) -> None:
    module.hook("nonza/" + ns.CSI, nonza)
    svc.router.out_filters.append(hold)
