"""What modern clients need of rooms, as rows of the MUC table: disco of the service, rooms and
occupants (XEP-0030), self-ping (XEP-0410), MAM on rooms (XEP-0313 with RSM), moderation
(XEP-0425: a retraction for everyone). Occupant ids (XEP-0421) are made in service.py.

A moderation rides the channel: the moderator's NOTICE to it carries the tags REDACT_TAG (the
network msgid of the message) and REDACT_REASON_TAG (relay.core.model), so every server's MUC
renders it to its own occupants as the retraction, once, and marks its archive; IRC members with
`draft/message-redaction` get it as REDACT, the others read the notice. An IRC REDACT comes the
same way and is rendered here alike.
"""

from __future__ import annotations

from lxml import etree

from relay.core.model import NOTICE, REDACT_REASON_TAG

from ..stanza import element
from .stanzas import DELAY, MUC, MUC_USER, OCCUPANT_ID, C, groupchat, q, stamp
from .names import local_for
from .render import REDACT_TAG, msgid_of, sid_in
from .table import MucStanza, row
from .timefmt import parse_stamp

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PING = "urn:xmpp:ping"
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"
DATA = "jabber:x:data"
MODERATE = "urn:xmpp:message-moderate:1"
RETRACT = "urn:xmpp:message-retract:1"
CONFERENCE = "jabber:x:conference"          # XEP-0249 direct invitations
MAM_MAX = 100

SERVICE_FEATURES = (DISCO_INFO, DISCO_ITEMS, MUC, MAM, OCCUPANT_ID, MODERATE, PING)


def _query(ns: str, node: str | None = None) -> etree._Element:
    el = etree.Element(q(ns, "query"), nsmap={None: ns})
    if node:
        el.set("node", node)
    return el


# ==================================================================== disco
# <iq type='get' to='conference.domain'><query xmlns='disco#info'/></iq>
@row(f"iq-get/service/{DISCO_INFO}:query")
def service_info(ev: MucStanza):
    out = _query(DISCO_INFO, ev.el[0].get("node"))
    etree.SubElement(out, q(DISCO_INFO, "identity"), category="conference", type="text", name="Chatrooms")
    for f in SERVICE_FEATURES:
        etree.SubElement(out, q(DISCO_INFO, "feature"), var=f)
    ev.muc.result(ev.s, ev.el, out)


# <iq type='get' to='conference.domain'><query xmlns='disco#items'/></iq>: the public (-s) rooms
@row(f"iq-get/service/{DISCO_ITEMS}:query")
def service_items(ev: MucStanza):
    muc = ev.muc
    out = _query(DISCO_ITEMS)
    for ch in list(muc.net.channels.values()):
        if "s" in ch.modes or "p" in ch.modes:
            continue
        room = muc.room(ch)
        if room is not None:
            etree.SubElement(out, q(DISCO_ITEMS, "item"), jid=room.jid, name=f"{ch.name} ({len(ch.members)})")
    for key, config in list(muc.store.rooms.items()):        # persistent rooms with no one in them
        if key not in muc.net.channels and muc.store.persistent(key) and "s" not in config.get("modes", ""):
            local = local_for(config.get("name") or key, muc.net.fold)
            if local is not None:
                etree.SubElement(out, q(DISCO_ITEMS, "item"), jid=f"{local}@{muc.domain}", name=f"{config.get('name')} (0)")
    muc.result(ev.s, ev.el, out)


# <iq type='get' to='room'><query xmlns='disco#info'/></iq>
@row(f"iq-get/room/{DISCO_INFO}:query")
def room_info(ev: MucStanza):
    muc = ev.muc
    ch = muc.net.find_channel(ev.channel)
    key = muc.net.fold(ev.channel)
    persistent = muc.store.persistent(key)
    if ch is None and not persistent:
        ev.error("cancel", "item-not-found", "no such room")
        return
    config = muc.store.rooms.get(key) or {}
    out = _query(DISCO_INFO, ev.el[0].get("node"))
    etree.SubElement(out, q(DISCO_INFO, "identity"), category="conference", type="text",
                     name=config.get("title") or (ch.name if ch is not None else ev.channel))
    modes = ch.modes if ch is not None else set(config.get("modes", ""))
    feats = [MUC, "muc_persistent" if persistent else "muc_temporary",
             "muc_membersonly" if "i" in modes else "muc_open",
             "muc_moderated" if "m" in modes else "muc_unmoderated",
             "muc_passwordprotected" if ch is not None and ch.key else "muc_unsecured",
             "muc_hidden" if "s" in modes else "muc_public", "muc_nonanonymous", MAM, OCCUPANT_ID, MODERATE]
    for f in feats:
        etree.SubElement(out, q(DISCO_INFO, "feature"), var=f)
    x = etree.SubElement(out, q(DATA, "x"), nsmap={None: DATA}, type="result")
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roominfo"),
                       ("muc#roominfo_occupants", str(len(ch.members) if ch is not None else 0)),
                       ("muc#roominfo_subject", ch.topic if ch is not None else ""),
                       ("muc#roominfo_description", config.get("description") or ""),
                       ("muc#roomconfig_changesubject", "0" if "t" in modes else "1")):
        f = etree.SubElement(x, q(DATA, "field"), var=var)
        etree.SubElement(f, q(DATA, "value")).text = value
    muc.result(ev.s, ev.el, out)


# <iq type='get' to='room'><query xmlns='disco#items'/></iq>: the occupants (none past max_users_presence)
@row(f"iq-get/room/{DISCO_ITEMS}:query")
def room_items(ev: MucStanza):
    muc = ev.muc
    ch = muc.net.find_channel(ev.channel)
    out = _query(DISCO_ITEMS)
    if ch is not None and not muc.crowded(ch) and "s" not in ch.modes:
        room = muc.room(ch)
        for u in ch.members:
            etree.SubElement(out, q(DISCO_ITEMS, "item"), jid=f"{room.jid}/{u.nick}")
    muc.result(ev.s, ev.el, out)


# ==================================================================== XEP-0410 self-ping, iq to occupants
# <iq type='get' to='room/own nick'><ping xmlns='urn:xmpp:ping'/></iq>: the service answers a self-ping
@row(f"iq-get/occupant/{PING}:ping")
def self_ping(ev: MucStanza):
    muc = ev.muc
    if not muc.is_occupant(ev.s, ev.channel):
        ev.error("cancel", "not-acceptable", "not joined")
        return
    if muc.net.fold(ev.to.resource) != muc.net.fold(ev.user.nick):
        muc.iq_relay.ask(ev)                             # a ping to someone else is theirs to answer
        return
    muc.result(ev.s, ev.el)


# <iq type='get|set' to='room/nick'>...</iq>: to the occupant's real JID (iq_relay.py); and its answer
@row("iq/occupant")
def iq_to_occupant(ev: MucStanza):
    muc = ev.muc
    if ev.el.get("type") in ("get", "set"):
        if not muc.is_occupant(ev.s, ev.channel):
            ev.error("cancel", "not-acceptable", "join the room first")
            return
        muc.iq_relay.ask(ev)
    elif ev.el.get("type") in ("result", "error"):
        muc.iq_relay.answer(ev)


# ==================================================================== XEP-0313 MAM on the room
# <iq type='set' to='room'><query xmlns='urn:xmpp:mam:2' queryid='Q'><x xmlns='jabber:x:data'>start end
#   </x><set xmlns='http://jabber.org/protocol/rsm'><max/><after/><before/></set></query></iq>
@row(f"iq-set/room/{MAM}:query")
def mam_query(ev: MucStanza):
    muc = ev.muc
    name = muc.net.fold(ev.channel)
    ch = muc.net.find_channel(ev.channel)
    if not muc.may_read_archive(ev.s, ev.user, ch, name):
        ev.error("auth", "forbidden", "join the room or be one of its members to read its archive")
        return
    query = ev.el[0]
    fields = {}
    x = query.find(q(DATA, "x"))
    if x is not None:
        for f in x.findall(q(DATA, "field")):
            fields[f.get("var")] = f.findtext(q(DATA, "value"))
    start = parse_stamp(fields["start"]) if fields.get("start") else None
    end = parse_stamp(fields["end"]) if fields.get("end") else None
    if (fields.get("start") and start is None) or (fields.get("end") and end is None):
        ev.error("modify", "bad-request", "start and end are XEP-0082 date-times")
        return
    rsm = query.find(q(RSM, "set"))
    limit, after, before = MAM_MAX, None, None
    if rsm is not None:
        try:
            limit = max(0, min(MAM_MAX, int(rsm.findtext(q(RSM, "max")) or MAM_MAX)))
        except ValueError:
            ev.error("modify", "bad-request", "max is a number")
            return
        after = rsm.findtext(q(RSM, "after")) or None
        b = rsm.find(q(RSM, "before"))
        if b is not None:
            before = b.text or ""
    qid = query.get("queryid")
    room = muc.room(ch if ch is not None else ev.channel)
    s, iq = ev.s, ev.el

    def done(rows):
        if rows is None:
            muc.send_error(s, iq, "wait", "internal-server-error", "the archive could not be read")
            return
        if before == "":                                # the last page
            rows = rows[-(limit + 1):]
        complete = len(rows) <= limit
        if not complete:
            rows = rows[1:] if before is not None else rows[:limit]
        for msgid, t, nick, jid, body, retracted in rows:
            res = element("message", {"from": room.jid, "to": str(s.jid)})
            r = etree.SubElement(res, q(MAM, "result"), nsmap={None: MAM}, id=msgid)
            if qid:
                r.set("queryid", qid)
            fwd = etree.SubElement(r, q(FORWARD, "forwarded"), nsmap={None: FORWARD})
            etree.SubElement(fwd, q(DELAY, "delay"), nsmap={None: DELAY}, stamp=stamp(t))
            inner = groupchat(f"{room.jid}/{nick}", None if retracted else body, msgid, room.jid)
            if retracted:
                etree.SubElement(inner, q(RETRACT, "retracted"), nsmap={None: RETRACT}, stamp=stamp(t))
            fwd.append(inner)
            s.send(res)
        fin = etree.Element(q(MAM, "fin"), nsmap={None: MAM}, complete="true" if complete else "false")
        st = etree.SubElement(fin, q(RSM, "set"), nsmap={None: RSM})
        if rows:
            etree.SubElement(st, q(RSM, "first")).text = rows[0][0]
            etree.SubElement(st, q(RSM, "last")).text = rows[-1][0]
        muc.result(s, iq, fin)

    def read(now):
        if before == "":
            muc.store.query(name, start, end, None, None, 1_000_000, done)   # the newest `limit` (sliced above)
        else:
            muc.store.query(name, start, end, after, before, limit, done)
    # the servers that saw what this one did not (it had no members) merge theirs in first (catchup.py)
    muc.catchup.archive(ch, {"start": start, "end": end, "after": after, "before": before or None,
                             "last": before == "", "limit": limit}, read, ev.now)


# <iq type='get' to='room'><query xmlns='urn:xmpp:mam:2'/></iq>: the form's fields
@row(f"iq-get/room/{MAM}:query")
def mam_fields(ev: MucStanza):
    out = _query(MAM)
    x = etree.SubElement(out, q(DATA, "x"), nsmap={None: DATA}, type="form")
    for var, typ in (("FORM_TYPE", "hidden"), ("start", "text-single"), ("end", "text-single")):
        f = etree.SubElement(x, q(DATA, "field"), var=var, type=typ)
        if var == "FORM_TYPE":
            etree.SubElement(f, q(DATA, "value")).text = MAM
    ev.muc.result(ev.s, ev.el, out)


# ==================================================================== XEP-0425 moderation
# <iq type='set' to='room'><moderate xmlns='urn:xmpp:message-moderate:1' id='STANZA-ID'>
#   <retract xmlns='urn:xmpp:message-retract:1'/><reason/></moderate></iq>
@row(f"iq-set/room/{MODERATE}:moderate", occupant=True)
def moderate(ev: MucStanza):
    muc = ev.muc
    ch = muc.net.find_channel(ev.channel)
    if "o" not in ch.members.get(ev.user, ""):
        ev.error("auth", "forbidden", "only moderators (@) retract messages")
        return
    target = ev.el[0].get("id")
    if not target or ev.el[0].find(q(RETRACT, "retract")) is None:
        ev.error("modify", "bad-request", "moderate needs the stanza id and a retract")
        return
    room = muc.room(ch)
    entry = next((e for e in room.history if e[4] == target), None)
    reason = ev.el[0].findtext(q(MODERATE, "reason")) or ""
    whose = f" from {entry[1]}" if entry else ""
    text = f"[moderation] {ev.user.nick} retracted a message{whose}" + (f": {reason}" if reason else "")
    tags = {REDACT_TAG: msgid_of(target), **({REDACT_REASON_TAG: reason} if reason else {})}
    sent = muc.net.message(ev.user, ch, NOTICE, text, ev.now, tags=tags)
    if sent is not None:
        muc._to(room.occupants.get(ev.s.jid.bare, {}), retraction(muc, room, sent, target))   # the moderator's own
    muc.result(ev.s, ev.el)


def retraction(muc, room, ev, sid: str | None = None) -> etree._Element:
    """The room's announcement of a moderation or an IRC REDACT (the NOTICE that carries the tags);
    it names the stanza-id occupants saw (the network msgid when the history no longer holds it)."""
    msgid = ev.tags[REDACT_TAG]
    msg = element("message", {"from": room.jid, "type": "groupchat", "id": ev.msgid})
    r = etree.SubElement(msg, q(RETRACT, "retract"), nsmap={None: RETRACT}, id=sid or sid_in(room, msgid) or msgid)
    mod = etree.SubElement(r, q(MODERATE, "moderated"), nsmap={None: MODERATE},
                           by=f"{room.jid}/{ev.source.nick}")
    oid = muc.occupant_id(room, ev.source)
    if oid:
        etree.SubElement(mod, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}, id=oid)
    text = ev.tags.get(REDACT_REASON_TAG)
    if text:
        etree.SubElement(r, q(RETRACT, "reason")).text = text
    etree.SubElement(msg, C + "body").text = ev.text           # for clients without XEP-0424
    return msg


# ==================================================================== XEP-0249 direct invitations
def direct_invitation(muc, xev) -> bool | None:
    """A hook on `message/bare`: `<x xmlns='jabber:x:conference' jid='room'/>` to a non-XMPP user is an
    INVITE (an XMPP account gets the message itself)."""
    x = xev.stanza.find(q(CONFERENCE, "x"))
    if x is None:
        return None
    try:
        from ..jid import parse_jid
        room_jid = parse_jid(x.get("jid") or "")
    except ValueError:
        return None
    if room_jid.domain != muc.domain or room_jid.local is None:
        return None
    target = muc.xmpp.network_user(xev.to.bare)
    ch = muc.net.find_channel("#" + room_jid.local)
    user = xev.session.member.user
    if target is None or ch is None or user not in ch.members:
        return None
    if target.proto == "xmpp":
        if "o" in ch.members.get(user, "") or "i" not in ch.modes:
            target.invites.add(ch.key_name)    # the invitation itself goes on as the client wrote it
        return None
    muc.net.invite(user, target, ch, xev.now)
    return True


__all__ = ["retraction", "direct_invitation", "REDACT_TAG", "MUC_USER"]
