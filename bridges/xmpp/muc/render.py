"""The network's channel events as room stanzas, once per event for all of a room's local occupants.

The MUC service is the `events_via` of every local XMPP account, so the network tells it each
channel event once (network.tell_channel), not once per occupant: a join in a room of n local
occupants costs one presence serialised once and n splices of `to` when it is broadcast, and
nothing when it is not (past `max_users_presence` only moderators' comings and goings are).
The occupant the event is about, when it is a local account, gets its own variant (status 110).
"""

from __future__ import annotations

from lxml import etree

from relay.core.model import (NETSPLIT, REDACT_TAG, TAG_ONLY, MemberJoined, MemberKicked, MemberLeft, MessageSent, ModeChanged,
                              NickChanged, TopicChanged, User, UserInvited, UserQuit)  # REDACT_TAG: features.retraction

from ..service import xml_text
from ..stanza import Outgoing
from .stanzas import MUC_USER, groupchat, q

PM_TAG = "+relaynet/muc-pm"         # a PRIVMSG to a nick sent through a room: the room's channel name


def msgid_of(sid: str) -> str:
    """The network msgid in a stanza-id (what a redaction names)."""
    return sid.rsplit("-", 1)[0] if sid.count("-") >= 2 else sid


def sid_in(room, msgid: str) -> str | None:
    """The stanza-id of the message `msgid` in the room's recent history, if it is there."""
    for e in room.history:
        if msgid_of(e[4]) == msgid:
            return e[4]
    return None


def stanza_id(ev) -> str:
    """XEP-0359 stanza-id and archive id of a channel message: the network msgid and the origin's time
    (both travel with the message, so every server names it alike; the time keeps it unique after the
    origin restarts and its msgid counter starts again)."""
    return f"{ev.msgid}-{int(ev.time * 1000):x}"


def _send(out: Outgoing, sessions) -> None:
    for s in list(sessions.values()):
        s.send_bytes_of(out)


def broadcast(room, el: etree._Element, but=None) -> None:
    """`el` to every local occupant's sessions (but the account `but`): serialised once."""
    out = Outgoing(el)
    for bare, sessions in list(room.occupants.items()):
        if bare != but:
            _send(out, sessions)


def own(u: User):
    """The bare JID of `u` when it is a local XMPP account, else None."""
    s = u.session
    return getattr(s, "bare", None) if s is not None else None


def r_message(m, ch, room, ev: MessageSent) -> None:
    if ev.kind is TAG_ONLY:
        return
    if ev.tags and REDACT_TAG in ev.tags:
        from .features import retraction
        el = retraction(m, room, ev)
    else:
        el = groupchat(f"{room.jid}/{ev.source.nick}", xml_text(ev.text), ev.msgid, room.jid, stanza_id=stanza_id(ev),
                       occupant_id=m.occupant_id(room, ev.source))
    broadcast(room, el, but=own(ev.source))         # the sender's own sessions get the reflection


def r_joined(m, ch, room, ev: MemberJoined) -> None:
    u = ev.user
    if m.crowded(ch) and "o" not in ch.members.get(u, ""):
        return
    broadcast(room, m.presence_of(ch, room, u), but=own(u))   # its own sessions: the join's welcome


def _left(m, ch, room, u: User, codes=(), **kw) -> None:
    mine = own(u)
    if mine is not None and mine in room.occupants:   # parted or kicked from elsewhere: all its sessions leave
        _send(Outgoing(m.presence_of(ch, room, u, [110, *codes], unavailable=True, **kw)), room.occupants.pop(mine))
    if m.crowded(ch) and "o" not in ch.members.get(u, "") and not codes:
        return
    broadcast(room, m.presence_of(ch, room, u, codes, unavailable=True, **kw))


def r_part(m, ch, room, ev: MemberLeft) -> None:
    _left(m, ch, room, ev.user)


def r_kick(m, ch, room, ev: MemberKicked) -> None:
    """A KICK is 307; a KICK of someone the channel bans (+b, set first as IRC ops do) is 301."""
    actor = ev.source.nick if isinstance(ev.source, User) else None
    code = 301 if m.net.banned(ch, ev.user) else 307
    _left(m, ch, room, ev.user, (code,), reason=ev.reason or None, actor=actor)


def r_quit(m, ch, room, ev: UserQuit) -> None:
    """Gone from the network; 333 when a netsplit took it (told only once the split-hold expired)."""
    u = ev.user
    if m.crowded(ch) and "o" not in ch.members.get(u, ""):
        return
    codes = (333,) if ev.batch is not None and ev.batch.kind == NETSPLIT else ()
    broadcast(room, m.presence_of(ch, room, u, codes, unavailable=True, reason=ev.reason or None), but=own(u))


def r_nick(m, ch, room, ev: NickChanged) -> None:
    """XEP-0045 §7.6: unavailable from the old nick with 303 and the new one, then presence from it."""
    u, old = ev.user, ev.old_prefix.split("!", 1)[0]
    mine = own(u)
    crowded = m.crowded(ch) and "o" not in ch.members.get(u, "")
    for codes, to_self in (((), False), ((110,), True)):
        if to_self and (mine is None or mine not in room.occupants):
            continue
        if not to_self and crowded:
            continue
        gone = m.presence_of(ch, room, u, [303, *codes], unavailable=True, nick=u.nick)
        gone.set("from", f"{room.jid}/{old}")
        back = m.presence_of(ch, room, u, list(codes))
        if to_self:
            _send(Outgoing(gone), room.occupants[mine])
            _send(Outgoing(back), room.occupants[mine])
        else:
            broadcast(room, gone, but=mine)
            broadcast(room, back, but=mine)


def r_mode(m, ch, room, ev: ModeChanged) -> None:
    """+o/+v and their removal change an occupant's role; +m changes every unvoiced one's."""
    changed: dict[User, None] = {}
    for _sign, mode, arg in ev.changes:
        if mode in "ov" and arg is not None:
            u = m.net.find_nick(arg)
            if u is not None and u in ch.members:
                changed[u] = None
        elif mode == "m" and not m.crowded(ch):
            changed.update((u, None) for u, st in ch.members.items() if not st)
    for u in changed:
        mine = own(u)
        if mine is not None and mine in room.occupants:
            _send(Outgoing(m.presence_of(ch, room, u, [110])), room.occupants[mine])
        if not m.crowded(ch) or "o" in ch.members.get(u, ""):
            broadcast(room, m.presence_of(ch, room, u), but=mine)
    if any(mode not in "ovbeI" for _s, mode, _a in ev.changes):
        note = groupchat(room.jid, None, None, room.jid)   # XEP-0045 §10.2.1: 104, the configuration changed
        x = etree.SubElement(note, q(MUC_USER, "x"), nsmap={None: MUC_USER})
        etree.SubElement(x, q(MUC_USER, "status"), code="104")
        broadcast(room, note)


def r_topic(m, ch, room, ev: TopicChanged) -> None:
    src = ev.source
    frm = f"{room.jid}/{src.nick}" if isinstance(src, User) and src in ch.members else room.jid
    broadcast(room, groupchat(frm, None, None, room.jid, subject=xml_text(ch.topic)),
              but=own(src) if isinstance(src, User) else None)    # the setter's sessions: reflect_subject


def invitation(m, acct, ev: UserInvited) -> None:
    """An INVITE of this account: a mediated invitation (XEP-0045 §7.8.2) to its bare JID."""
    if ev.user is not acct.user:
        return
    room = m.room(ev.channel)
    if room is None:
        return
    msg = groupchat(room.jid, None, None, room.jid)
    del msg.attrib["type"]
    x = etree.SubElement(msg, q(MUC_USER, "x"), nsmap={None: MUC_USER})
    etree.SubElement(x, q(MUC_USER, "invite"), **{"from": m.real_jid(ev.source)})
    if ev.channel.key:
        etree.SubElement(x, q(MUC_USER, "password")).text = ev.channel.key
    msg.set("to", str(acct.bare))
    m.xmpp.router.to_bare(acct.bare, msg, ev.time)


def private_message(m, acct, ev: MessageSent) -> bool:
    """XEP-0045 §7.5: a private message through a room comes from the sender's occupant JID, to the
    recipient's sessions in that room; False (a plain chat message then) when it has none there."""
    room = m.rooms.get(m.net.fold(ev.tags[PM_TAG]))
    sessions = room.occupants.get(acct.bare) if room is not None else None
    if not sessions or ev.target is not acct.user:
        return False
    msg = groupchat(f"{room.jid}/{ev.source.nick}", xml_text(ev.text), ev.msgid, room.jid, mtype="chat")
    etree.SubElement(msg, q(MUC_USER, "x"), nsmap={None: MUC_USER})
    msg.set("to", str(acct.bare))
    m.xmpp.router.deliver_to(acct.bare, msg, list(sessions.values()), ev.time)
    return True


RENDER = {MessageSent: r_message, MemberJoined: r_joined, MemberLeft: r_part, MemberKicked: r_kick,
          UserQuit: r_quit, NickChanged: r_nick, ModeChanged: r_mode, TopicChanged: r_topic}
