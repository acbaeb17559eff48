"""What the MUC service sends: occupant presence, room messages, errors (built as elements, sent
through stanza.Outgoing so that a stanza to many occupants is serialised once and only `to` varies)."""

from __future__ import annotations

import time as _time

from lxml import etree

from .. import namespaces as ns
from ..stanza import element

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
DELAY = "urn:xmpp:delay"
SID = "urn:xmpp:sid:0"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
C = "{%s}" % ns.CLIENT


def q(namespace: str, name: str) -> str:
    return "{%s}%s" % (namespace, name)


def stamp(t: float) -> str:
    """XEP-0082 date-time in UTC, to the millisecond."""
    whole = int(t)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole)) + ".%03dZ" % int((t - whole) * 1000)


def occupant_presence(frm: str, affiliation: str, role: str, jid: str | None, codes=(), *,
                      unavailable: bool = False, nick: str | None = None, reason: str | None = None,
                      actor: str | None = None, occupant_id: str | None = None) -> etree._Element:
    """`<presence from='room/nick'><x muc#user><item affiliation role [jid] [nick]/><status/>...`"""
    p = element("presence", {"from": frm, "type": "unavailable" if unavailable else None})
    x = etree.SubElement(p, q(MUC_USER, "x"), nsmap={None: MUC_USER})
    item = etree.SubElement(x, q(MUC_USER, "item"), affiliation=affiliation, role=role)
    if jid:
        item.set("jid", jid)
    if nick:
        item.set("nick", nick)
    if actor:
        etree.SubElement(item, q(MUC_USER, "actor"), nick=actor)
    if reason:
        etree.SubElement(item, q(MUC_USER, "reason")).text = reason
    for code in codes:
        etree.SubElement(x, q(MUC_USER, "status"), code=str(code))
    if occupant_id:
        etree.SubElement(p, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}, id=occupant_id)
    return p


def groupchat(frm: str, body: str | None, msgid: str | None, room: str, *, subject: str | None = None,
              delay: float | None = None, occupant_id: str | None = None, stanza_id: str | None = None,
              mtype: str = "groupchat") -> etree._Element:
    m = element("message", {"from": frm, "type": mtype, "id": msgid})
    if subject is not None:
        etree.SubElement(m, C + "subject").text = subject
    if body is not None:
        etree.SubElement(m, C + "body").text = body
    if delay is not None:
        etree.SubElement(m, q(DELAY, "delay"), nsmap={None: DELAY}, stamp=stamp(delay), **{"from": room})
    if stanza_id is not None:
        etree.SubElement(m, q(SID, "stanza-id"), nsmap={None: SID}, id=stanza_id, by=room)
    if occupant_id:
        etree.SubElement(m, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}, id=occupant_id)
    return m


def error(el: etree._Element, to: str, kind: str, condition: str, text: str | None = None,
          code: int | None = None) -> etree._Element:
    """The error answer to `el` (XEP-0045 wants the errored stanza's type and id, from the room)."""
    name = etree.QName(el).localname
    reply = element(name, {"type": "error", "id": el.get("id"), "from": el.get("to"), "to": to})
    if name == "presence":                      # §7.2: the join's <x/> comes back (clients match on it)
        etree.SubElement(reply, q(MUC, "x"), nsmap={None: MUC})
    err = etree.SubElement(reply, C + "error", type=kind)
    if code:
        err.set("code", str(code))
    etree.SubElement(err, q(ns.STANZA_ERRORS, condition), nsmap={None: ns.STANZA_ERRORS})
    if text:
        t = etree.SubElement(err, q(ns.STANZA_ERRORS, "text"), nsmap={None: ns.STANZA_ERRORS})
        t.text = text
    return reply
