"""XEP-0280 message carbons: an account's resources see each other's conversations.

`<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>` (or `disable`) switches it per
session. A message is copied when it is of type chat, or normal with a body, and carries neither
`<private xmlns='urn:xmpp:carbons:2'/>` nor `<no-copy xmlns='urn:xmpp:hints'/>`:
- `received`: a message reaching some resources of the account here is wrapped (XEP-0297) and sent
  to its other carbon-enabled resources here;
- `sent`: a message a resource sends is wrapped and sent to the account's other carbon-enabled
  resources here.
The wrapper is from the account's bare JID. A `private` element is removed from what is delivered.
"""

from __future__ import annotations

import copy

from lxml import etree

from . import namespaces as ns
from .routing import Delivering, StanzaReceived
from .stanza import element

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
HINTS = "urn:xmpp:hints"
_C = "{%s}" % ns.CLIENT
_PRIVATE, _NO_COPY = "{%s}private" % CARBONS, "{%s}no-copy" % HINTS
_RECEIVED, _SENT = "{%s}received" % CARBONS, "{%s}sent" % CARBONS


def eligible(el: etree._Element) -> bool:
    typ = el.get("type")
    if typ != "chat" and not (typ in (None, "normal") and el.find(_C + "body") is not None):
        return False
    for child in el:
        if child.tag in (_PRIVATE, _NO_COPY, _RECEIVED, _SENT):
            return False
    return True


def wrapped(kind: str, el: etree._Element, account: str, to: str) -> etree._Element:
    """<message from=account to=to type=T><KIND xmlns=carbons><forwarded xmlns=forward>el</forwarded></KIND></message>"""
    out = element("message", {"from": account, "to": to, "type": el.get("type") or "normal"})
    box = etree.SubElement(out, "{%s}%s" % (CARBONS, kind), nsmap={None: CARBONS})
    fwd = etree.SubElement(box, "{%s}forwarded" % FORWARD, nsmap={None: FORWARD})
    fwd.append(copy.deepcopy(el))
    return out


def _strip_private(el: etree._Element) -> None:
    for child in el.findall(_PRIVATE):
        el.remove(child)


def copy_to(r, bare, el: etree._Element, kind: str, skip) -> None:
    blocking = getattr(r.svc, "blocking", None)
    for x in r.sessions_of(bare):
        if x.carbons and x not in skip:
            if blocking is not None and blocking.drops(x, el):
                continue
            r.to_full(x, wrapped(kind, el, str(bare), str(x.jid)))


def on_delivering(ev: Delivering):
    """A message reaching some of the account's resources: `received` copies to the others."""
    el = ev.stanza
    if eligible(el):
        copy_to(ev.router, ev.to, el, "received", ev.sessions)
    elif el.find(_PRIVATE) is not None:
        _strip_private(el)
    return None


def on_sent(ev: StanzaReceived):
    """A message from one of the account's resources: `sent` copies to the others."""
    el = ev.stanza
    if eligible(el):
        copy_to(ev.router, ev.session.jid.bare, el, "sent", (ev.session,))
    return None


# <iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>, and <disable/>
def enable(ev: StanzaReceived):
    ev.session.carbons = etree.QName(ev.stanza[0]).localname == "enable"
    ev.router.result(ev.session, ev.stanza)
    return True


def setup(module, svc) -> None:
    module.hook(f"iq-set/self/{CARBONS}:enable", enable)
    module.hook(f"iq-set/self/{CARBONS}:disable", enable)
    module.hook("message/delivering", on_delivering)          # after MAM (its stanza-id is in the copy)
    module.hook("message/bare", on_sent)
    module.hook("message/full", on_sent)
    module.add_item("xmpp-feature", CARBONS)
