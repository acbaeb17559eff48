"""The MUC service's stanza table: narrow names, one dispatch.

Every client stanza to the service's domain is named `<stanza>-<type>/<to>`: `to` is `service` (the
domain), `room` (a bare room JID) or `occupant` (room/nick); iq get/set add their payload,
`iq-set/room/http://jabber.org/protocol/muc#admin:query`. Then the plain `<stanza>/<to>`. The first
name with a row (or a hook: other modules may `module.hook("muc/<name>", fn)`; non-None = handled)
wins; an unknown iq get/set is service-unavailable. `dispatch()` checks once what every row needs:
the room name maps to a channel (names.py), and stanzas to a room come from one of its occupants
where the row says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lxml import etree

from relay.core.members import SpeakRefused, speak_refusal_text
from relay.core.model import MESSAGE, User

from ..jid import Jid
from .names import RoomNameError, channel_for
from .render import PM_TAG
from .stanzas import C, MUC_ADMIN, MUC_OWNER, MUC_USER, q

TABLE: dict[str, tuple[Callable, bool]] = {}     # name -> (handler, needs an occupant)


@dataclass(slots=True)
class MucStanza:
    """What a row gets: the service, the client's session, the stanza, its `to`, the channel name."""

    muc: object
    s: object
    el: etree._Element
    to: Jid
    channel: str | None
    now: float

    @property
    def user(self) -> User:
        return self.s.member.user

    def error(self, kind: str, condition: str, text: str | None = None) -> None:
        self.muc.send_error(self.s, self.el, kind, condition, text)


def row(*names: str, occupant: bool = False):
    def add(fn):
        for n in names:
            TABLE[n] = (fn, occupant)
        return fn
    return add


def names_of(el: etree._Element, kind: str) -> list[str]:
    name = etree.QName(el).localname
    typ = el.get("type")
    if name == "iq":
        if typ in ("get", "set") and len(el) == 1:
            p = etree.QName(el[0])
            return [f"iq-{typ}/{kind}/{p.namespace}:{p.localname}", f"iq/{kind}"]
        return [f"iq/{kind}"]
    default = "normal" if name == "message" else "available"
    return [f"{name}-{typ or default}/{kind}", f"{name}/{kind}"]


def dispatch(muc, s, el: etree._Element, to: Jid, now: float) -> None:
    """The MUC host's handler: every client stanza to the service's domain."""
    if el.get("type") in ("error", "result") and etree.QName(el).localname != "iq":
        return                                           # answers to nothing we sent: dropped
    kind = "service" if to.local is None else "room" if to.resource is None else "occupant"
    channel = None
    if to.local is not None:
        try:
            channel = channel_for(to.local, muc.net.fold, muc.core.config.network.channellen)
        except RoomNameError as e:
            if el.get("type") not in ("unavailable", "error", "result"):
                muc.send_error(s, el, "modify", "not-acceptable" if etree.QName(el).localname != "presence"
                               else "jid-malformed", str(e))
            return
    ev = MucStanza(muc, s, el, to, channel, now)
    hooks = muc.core.hooks
    for name in names_of(el, kind):
        if hooks.has("muc/" + name) and hooks.run("muc/" + name, ev) is not None:
            return
        entry = TABLE.get(name)
        if entry is None:
            continue
        fn, needs_occupant = entry
        if needs_occupant and not muc.is_occupant(s, channel):
            ev.error("cancel", "not-acceptable", "join the room first")
            return
        fn(ev)
        return
    if etree.QName(el).localname == "iq" and el.get("type") in ("get", "set"):
        ev.error("cancel", "service-unavailable")


# ==================================================================== presence
# <presence to='room@service/nick'><x xmlns='http://jabber.org/protocol/muc'><password/><history/></x></presence>
@row("presence-available/occupant")
def join(ev: MucStanza):
    ev.muc.join(ev.s, ev.el, ev.to, ev.channel, ev.now)


# <presence type='unavailable' to='room@service/nick'><status/></presence>
@row("presence-unavailable/occupant", "presence-unavailable/room")
def leave(ev: MucStanza):
    ev.muc.leave(ev.s, ev.el, ev.channel, ev.now)


@row("presence/room", "presence/service", "presence/occupant")
def other_presence(ev: MucStanza):
    if ev.el.get("type") in (None, "available"):
        ev.error("modify", "jid-malformed", "a room nick is needed to join")   # XEP-0045 §7.2.1


# ==================================================================== messages
# <message type='groupchat' to='room@service'><body/>|<subject/></message>
@row("message-groupchat/room", occupant=True)
def groupchat(ev: MucStanza):
    el, muc = ev.el, ev.muc
    subject = el.find(C + "subject")
    body = el.findtext(C + "body")
    ch = muc.net.find_channel(ev.channel)
    if subject is not None and body is None:
        if not muc.net.may_set_topic(ch, ev.user):
            ev.error("auth", "forbidden", "only moderators may change the subject here (+t)")
            return
        muc.net.set_topic(ev.user, ch, (subject.text or "")[: muc.core.config.network.topiclen], ev.now)
        muc.reflect_subject(ev.s, ch, ev.now)
        return
    if body is None:
        return                                           # chat states and the like: nothing for the channel
    try:
        sent = muc.xmpp.members.speak(ev.user, ch.name, body, ev.now)
    except SpeakRefused as e:
        ev.error("auth" if e.code != "filtered" else "modify", "forbidden" if e.code != "filtered"
                 else "not-acceptable", speak_refusal_text(e))
        return
    muc.reflect(ev.s, el, ch, sent)


# <message type='groupchat' to='room@service/nick'/>: XEP-0045 §7.5
@row("message-groupchat/occupant")
def groupchat_to_nick(ev: MucStanza):
    ev.error("modify", "bad-request", "groupchat goes to the room, not to a nick")


# <message type='chat' to='room@service/nick'><body/></message>: a PRIVMSG to the nick, tagged with the
# room so that an XMPP occupant gets it from room/nick (render.private_message)
@row("message-chat/occupant", "message-normal/occupant", occupant=True)
def private_message(ev: MucStanza):
    body = ev.el.findtext(C + "body")
    if body is None:
        return
    net = ev.muc.net
    target = net.find_nick(ev.to.resource)
    ch = net.find_channel(ev.channel)
    if target is None or target not in ch.members:
        ev.error("cancel", "item-not-found", "no one by that nick is in the room")
        return
    net.message(ev.user, target, MESSAGE, body, ev.now, tags={PM_TAG: ch.name})


# <message to='room@service'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='jid'><reason/>
#   </invite></x></message>: a mediated invitation = INVITE
@row("message-normal/room", occupant=True)
def room_message(ev: MucStanza):
    x = ev.el.find(q(MUC_USER, "x"))
    if x is not None:
        for inv in x.findall(q(MUC_USER, "invite")):
            ev.muc.invite(ev, inv.get("to") or "")
        return
    ev.muc.room_form(ev)


def reason_of(item) -> str:
    return (item.findtext(q(MUC_USER, "reason")) or "") if item is not None else ""


# ==================================================================== moderation (XEP-0045 §8-10)
# <iq type='set' to='room'><query xmlns='muc#admin'><item nick='N' role='none|visitor|participant|moderator'>
#   <reason/></item> | <item jid='J' affiliation='outcast|none|member|admin|owner'/></query></iq>
@row(f"iq-set/room/{MUC_ADMIN}:query", occupant=True)
def admin_set(ev: MucStanza):
    items = ev.el[0].findall(q(MUC_ADMIN, "item"))
    if not items:
        ev.error("modify", "bad-request", "no item")
        return
    for item in items:
        failed = ev.muc.admin_item(ev, item)
        if failed:
            ev.error(*failed)
            return
    ev.muc.result(ev.s, ev.el)


# <iq type='get' to='room'><query xmlns='muc#admin'><item role='R'|affiliation='A'/></query></iq>
@row(f"iq-get/room/{MUC_ADMIN}:query", occupant=True)
def admin_get(ev: MucStanza):
    item = ev.el[0].find(q(MUC_ADMIN, "item"))
    if item is None or (item.get("role") is None and item.get("affiliation") is None):
        ev.error("modify", "bad-request", "ask for a role or an affiliation")
        return
    out = ev.muc.admin_list(ev, item.get("role"), item.get("affiliation"))
    if isinstance(out, tuple):
        ev.error(*out)
    else:
        ev.muc.result(ev.s, ev.el, out)


# <iq type='get' to='room'><query xmlns='muc#owner'/></iq>: the configuration form
@row(f"iq-get/room/{MUC_OWNER}:query", occupant=True)
def owner_get(ev: MucStanza):
    if not ev.muc.may_configure(ev):
        ev.error("auth", "forbidden", "only the room's owners and admins (@) configure it")
        return
    ev.muc.result(ev.s, ev.el, ev.muc.config_form(ev.channel))


# <iq type='set' to='room'><query xmlns='muc#owner'><x xmlns='jabber:x:data' type='submit|cancel'/>
#   | <destroy/></query></iq>
@row(f"iq-set/room/{MUC_OWNER}:query", occupant=True)
def owner_set(ev: MucStanza):
    if not ev.muc.may_configure(ev):
        ev.error("auth", "forbidden", "only the room's owners and admins (@) configure it")
        return
    failed = ev.muc.configure(ev)
    if failed:
        ev.error(*failed)
    else:
        ev.muc.result(ev.s, ev.el)
