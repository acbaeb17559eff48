"""The MUC service of one server: which local XMPP sessions occupy which rooms, joins and leaves,
and the renderer that turns the network's channel events into room stanzas for them.

A room is the channel (names.py); an occupant is the account's network user joined to it; the
resources of one account in a room are one occupant with several sessions. This keeps only what
channels cannot hold: the joined resources, the room's recent history and (store.py) affiliations,
persistent rooms' configuration and the archive. Roles and affiliations are read from the channel:
moderator = @, participant = +v or no +m, visitor = neither under +m; owner/admin from the store
(an @ without a stored affiliation is admin), member = `+I $a:account`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque

from lxml import etree

from relay.core.model import TAG_ONLY, Channel, MemberJoined, MessageSent, TopicChanged, User, UserInvited
from relay.core.network import JoinRefused
from relay.proto.irc import valid_nick

from ..jid import Jid
from ..service import xml_text
from ..stanza import Outgoing
from .catchup import FRAMES as CATCHUP_FRAMES, Catchup
from .iq_relay import IQ_FRAME, IqRelay
from .moderation import ROOM_FRAME, Moderation
from .names import local_for
from .render import PM_TAG, REDACT_TAG, RENDER, invitation, msgid_of, private_message, stanza_id
from .stanzas import C, error, groupchat, occupant_presence, q

AFFIL_FRAME = "MUC_AFFIL"

# JoinRefused codes -> (error type, condition, text), XEP-0045 §7.2
JOIN_ERRORS = {
    "banned": ("auth", "forbidden", "you are banned from this room"),
    "invite_only": ("auth", "registration-required", "this room is members-only (+i)"),
    "bad_key": ("auth", "not-authorized", "this room needs a password (+k)"),
    "full": ("wait", "service-unavailable", "this room is full (+l)"),
    "too_many": ("wait", "resource-constraint", "you are in as many rooms as the network allows"),
    "may_not_create": ("cancel", "not-allowed", "you may not create rooms"),
    "bad_name": ("modify", "jid-malformed", "not a valid room name"),
}


class Room:
    """What this server keeps of one room beyond its channel."""

    __slots__ = ("key", "local", "jid", "_history", "_pending", "_entry", "occupants", "waiting", "mods")

    def __init__(self, key: str, local: str, jid: str, history_length: int, entry):
        self.key, self.local, self.jid = key, local, jid
        self._history: deque = deque(maxlen=history_length)  # (time, nick, real jid, text, stanza-id)
        # Every channel message passes here on every server with members, most never read by a
        # join: kept raw (event, nick then) and made into entries by `entry` when history is read.
        self._pending: deque = deque(maxlen=history_length)
        self._entry = entry
        self.occupants: dict[Jid, dict[str, object]] = {}      # account bare JID -> resource -> session
        self.waiting: dict[Jid, object] = {}                   # full JID -> session joined, history on its way
        self.mods: list | None = None                          # the @s, while no status or member changes

    @property
    def history(self) -> deque:
        """The recent history, oldest first: (time, nick, real jid, text, stanza-id)."""
        pending = self._pending
        if pending:
            entry = self._entry
            self._history.extend([entry(ev, nick) for ev, nick in pending])
            pending.clear()
        return self._history

    def stored_before(self, rows) -> None:
        """The stored history read after the room came up (a module load while serving): older than
        what it has kept since, so it goes first."""
        if rows:
            self._history = deque([*map(tuple, rows), *self.history], maxlen=self._history.maxlen)


class MucService(Moderation):
    def __init__(self, core, xmpp, opts, store=None):
        self.core, self.xmpp, self.opts, self.store = core, xmpp, opts, store
        self.net = core.net
        self.domain = opts.domain or f"conference.{xmpp.domain}"
        self.rooms: dict[str, Room] = {}                # channel key -> room
        self.no_room: set[str] = set()                 # channel keys XMPP cannot name
        secret = opts.occupant_id_secret or (store.secret if store is not None else "")
        self.secret = secret.encode()
        self._oids: dict = {}                           # (room, uid) -> occupant id
        self.catchup = Catchup(self)                    # one history across the tree (catchup.py)
        self.iq_relay = IqRelay(self)                   # iq to occupants (iq_relay.py)
        if store is not None and opts.history_length:
            for key, config in store.rooms.items():     # persistent rooms: their history survives a restart
                if not store.persistent(key):
                    continue
                room = self.room(config.get("name") or key)
                if room is None:
                    continue
                if core.serving:        # a module load while serving: read without waiting
                    store.recent_later(key, opts.history_length, room.stored_before)
                else:
                    room.history.extend(tuple(r) for r in store.recent(key, opts.history_length))

    # ---------------------------------------------------------------- names
    def room(self, ch: Channel | str) -> Room | None:
        """The room of a channel (made on first use), None if XMPP cannot name it."""
        key = ch.key_name if type(ch) is Channel else self.net.fold(ch)
        r = self.rooms.get(key)
        if r is None and key not in self.no_room:
            name = ch.name if type(ch) is Channel else ch
            local = local_for(name, self.net.fold)
            if local is None:
                self.no_room.add(key)
                return None
            r = self.rooms[key] = Room(key, local, f"{local}@{self.domain}", self.opts.history_length,
                                       self._history_entry)
        return r

    def real_jid(self, u: User) -> str:
        full = u.attrs.get("xmpp", {}).get("jid")
        return full or self.xmpp.jid_of(u)

    def role(self, ch: Channel, u: User) -> str:
        st = ch.members.get(u)
        if st is None:
            return "none"
        if "o" in st:
            return "moderator"
        return "participant" if "v" in st or "m" not in ch.modes else "visitor"

    def affiliation(self, ch: Channel, u: User) -> str:
        if u.account:
            stored = self.store.affiliation(ch.key_name, u.account, ch.ts) if self.store else None
            if stored in ("owner", "admin"):
                return stored
            if "o" in ch.members.get(u, ""):
                return "admin"
            if stored == "member" or self.net.matches_list(ch, "I", u):
                return "member"
        elif "o" in ch.members.get(u, ""):
            return "admin"
        return "none"

    def presence_of(self, ch: Channel, room: Room, u: User, codes=(), **kw) -> etree._Element:
        return occupant_presence(f"{room.jid}/{u.nick}", self.affiliation(ch, u), self.role(ch, u),
                                 self.real_jid(u), codes, occupant_id=self.occupant_id(room, u), **kw)

    def occupant_id(self, room: Room, u: User) -> str | None:
        """XEP-0421: an HMAC of the room and the real bare JID with the server's secret (the same on
        every server of the tree when `occupant_id_secret` is set); never what a client sent."""
        key = (room.jid, u.uid)
        oid = self._oids.get(key)
        if oid is None:
            bare = self.real_jid(u).split("/", 1)[0]
            oid = hmac.new(self.secret, f"{room.jid}\0{bare}".encode(), hashlib.sha256).hexdigest()[:32]
            if len(self._oids) > 100_000:
                self._oids.clear()
            self._oids[key] = oid
        return oid

    def may_read_archive(self, s, user: User, ch, key: str) -> bool:
        """Occupants, the room's affiliated accounts (offline members catch up), anyone in an open room."""
        if ch is not None and self.is_occupant(s, ch.name):
            return True
        if user.account and self.store is not None and self.store.affiliation(key, user.account):
            return True
        if ch is not None:
            return "i" not in ch.modes and "s" not in ch.modes
        return False

    def moderators(self, ch: Channel, room: "Room") -> list:
        """The room's @s, kept until a status or a member changes (a crowded room's occupant list)."""
        mods = room.mods
        if mods is None:
            mods = room.mods = [u for u, st in ch.members.items() if "o" in st]
        return mods

    def crowded(self, ch: Channel) -> bool:
        """Past max_users_presence only moderators' comings and goings are broadcast (membership is kept)."""
        return len(ch.members) > self.opts.max_users_presence

    # ---------------------------------------------------------------- sending
    def send(self, s, el: etree._Element) -> None:
        el.set("to", str(s.jid))
        s.send(el)

    def send_error(self, s, el: etree._Element, kind: str, condition: str, text: str | None = None) -> None:
        s.send(error(el, str(s.jid), kind, condition, text))

    def sessions(self, room: Room, bare: Jid):
        return room.occupants.get(bare, {}).values()

    # ---------------------------------------------------------------- joining and leaving
    def join(self, s, el: etree._Element, room_jid: Jid, name: str, now: float) -> None:
        """Presence to room/nick: a join, a nick change, or (already in) a presence update."""
        user = s.member.user
        net = self.net
        want = room_jid.resource
        room = self.room(name)
        key = net.fold(name)
        here = room.occupants.get(s.jid.bare, {}) if room is not None else {}
        codes = []
        if net.fold(want) != net.fold(user.nick):
            if not valid_nick(want, self.core.config.network.nicklen):
                codes.append(210)                        # the network nick stays: the service changed it
            elif net.nick_in_use(want, but=user):
                self.send_error(s, el, "cancel", "conflict", "that nick is taken on the network")
                return
            else:
                net.change_nick(user, want, now)          # 303 in every room this account is in
        if s.jid.resource in here or (room is not None and s.jid in room.waiting):
            return
        ch = net.find_channel(name)
        created = ch is None
        if ch is None or user not in ch.members:
            x = el.find(q("http://jabber.org/protocol/muc", "x"))
            password = x.findtext(q("http://jabber.org/protocol/muc", "password")) if x is not None else None
            granted = ch is not None and self.store is not None and user.account is not None \
                and self.store.affiliation(key, user.account, ch.ts) in ("owner", "admin") \
                and not self.net.banned(ch, user) \
                and key not in user.invites
            if granted:
                user.invites.add(key)           # owners and admins pass +i +k +l as the invited do (members: +I)
            try:
                ch = self.xmpp.members.join(user, name, now, key=password)
            except JoinRefused as e:
                if granted:
                    user.invites.discard(key)
                kind, cond, text = JOIN_ERRORS.get(e.code, ("cancel", "not-allowed", e.code))
                self.send_error(s, el, kind, cond, text)
                return
            room = self.room(ch)
            if created:
                self.room_created(ch, room, user, now)
            else:
                self.rejoined(ch, room, user, now)
        codes += [201] if created else []
        room.waiting[s.jid] = s                  # until the room's history here is whole (catchup.py)
        self.catchup.history(ch, lambda t: self.joined(s, el, ch, room, user, codes, t), now)

    def joined(self, s, el, ch: Channel, room: Room, user: User, codes: list, now: float) -> None:
        """The history is here: the join goes on in the XEP-0045 order (unless it ended meanwhile)."""
        if room.waiting.pop(s.jid, None) is None or user not in ch.members:
            return
        room.occupants.setdefault(s.jid.bare, {})[s.jid.resource] = s
        self.welcome(s, el, ch, room, user, codes, now)

    def room_created(self, ch: Channel, room: Room, user: User, now: float) -> None:
        """A new channel from XMPP: a persistent room's configuration comes back and its owners get
        their @; otherwise the creator owns it."""
        if self.store is None:
            return
        if self.restore_room(ch, user, now):
            if self.store.affiliation(room.key, user.account or "", ch.ts) not in ("owner", "admin"):
                self.net.apply_modes(self.net_source(ch), ch, [("-", "o", user)], now)
        elif user.account:
            self.grant(ch, user.account, "owner", now)

    def rejoined(self, ch: Channel, room: Room, user: User, now: float) -> None:
        """Joined an existing channel: an owner or admin by account gets its @ back."""
        if self.store is None or not user.account or "o" in ch.members.get(user, ""):
            return
        if self.store.affiliation(room.key, user.account, ch.ts) in ("owner", "admin"):
            self.net.apply_modes(self.core.config.server.name, ch, [("+", "o", user)], now)

    def welcome(self, s, el, ch: Channel, room: Room, user: User, codes: list, now: float) -> None:
        """XEP-0045 §7.2: the others' presence, self-presence (110 ...), history, subject."""
        for u in (self.moderators(ch, room) if self.crowded(ch) else ch.members):
            if u is not user:
                self.send(s, self.presence_of(ch, room, u))
        self.send(s, self.presence_of(ch, room, user, [110, *codes]))
        self.send_history(s, el, room, now)
        by = ch.topic_by.split("!", 1)[0] if ch.topic_by else None
        self.send(s, groupchat(f"{room.jid}/{by}" if by else room.jid, None, None, room.jid,
                               subject=xml_text(ch.topic or "")))

    def send_history(self, s, el, room: Room, now: float) -> None:
        """History on join, limited by `<history maxstanzas maxchars seconds since/>`."""
        h = el.find(q("http://jabber.org/protocol/muc", "x") + "/" + q("http://jabber.org/protocol/muc", "history"))
        entries = list(room.history)
        if h is not None:
            entries = history_limits(entries, h, now, room.jid)
        else:
            n = self.history_default(room.key)
            entries = entries[-n:] if n else []
        for t, nick, jid, text, msgid in entries:
            self.send(s, groupchat(f"{room.jid}/{nick}", xml_text(text), msgid, room.jid, delay=t,
                                   stanza_id=msgid))

    def history_default(self, key: str) -> int:
        """What a join that asks for no limit gets: the room's configured history, else the module's."""
        n = (self.store.rooms.get(key) or {}).get("history") if self.store is not None else None
        return self.opts.history_default if not isinstance(n, int) else n

    def leave(self, s, el: etree._Element, name: str, now: float) -> None:
        room = self.room(name)
        if room is not None and room.waiting.pop(s.jid, None) is not None:
            self.gone_while_waiting(s, room, el.findtext(C + "status") or "", now)
            return
        here = room.occupants.get(s.jid.bare) if room is not None else None
        if not here or s.jid.resource not in here:
            return
        del here[s.jid.resource]
        ch = self.net.find_channel(name)
        user = s.member.user
        if ch is not None and user in ch.members:
            self.send(s, self.presence_of(ch, room, user, [110], unavailable=True))
        if not here:
            del room.occupants[s.jid.bare]
            if ch is not None:
                self.xmpp.members.leave(user, ch.name, el.findtext(C + "status") or "", now)

    def resource_unbound(self, s, now: float) -> None:
        """A resource's stream ended: it leaves its rooms (the account's last resource: the QUIT says it)."""
        acct = s.member
        last = acct is not None and len(acct.resources) <= 1
        for room in list(self.rooms.values()):
            if room.waiting.pop(s.jid, None) is not None and not last:
                self.gone_while_waiting(s, room, "", now)
            here = room.occupants.get(s.jid.bare)
            if not here or s.jid.resource not in here:
                continue
            del here[s.jid.resource]
            if not here:
                del room.occupants[s.jid.bare]
                ch = self.net.channels.get(room.key)
                if not last and ch is not None and acct.user in ch.members:
                    self.xmpp.members.leave(acct.user, ch.name, "", now)

    def gone_while_waiting(self, s, room: Room, reason: str, now: float) -> None:
        """A resource left before its history came: the account parts unless another resource is in."""
        bare = s.jid.bare
        if room.occupants.get(bare) or any(j.bare == bare for j in room.waiting):
            return
        ch = self.net.channels.get(room.key)
        user = s.member.user if s.member is not None else None
        if ch is not None and user is not None and user in ch.members:
            self.xmpp.members.leave(user, ch.name, reason, now)

    # ---------------------------------------------------------------- affiliations across the tree
    def grant(self, ch: Channel, account: str, affiliation: str | None, now: float) -> None:
        """Store an affiliation (with the channel's ts, stamped now) and tell every server (MUC_AFFIL)."""
        stamp = (float(now), self.net.me.id)
        if self.store.set_affiliation(ch.key_name, account, affiliation, ch.ts, stamp):
            self.announce(ch.key_name, [[account, affiliation or "none", int(ch.ts), *stamp]])

    def announce(self, room: str, items: list, servers=None) -> None:
        router = self.net.router
        if router is not None and items:
            router.send_extension(AFFIL_FRAME, {"room": room, "items": items}, servers)

    def link_extension(self, ftype: str, origin: str, payload, from_link):
        """MUC_AFFIL {room, items: [[account, affiliation, chts, time, server id]]}: another server's
        grants and removals; the newest of each account's wins."""
        if ftype in CATCHUP_FRAMES:
            self.catchup.link_extension(ftype, origin, payload)
            return True
        if ftype == IQ_FRAME:
            self.iq_relay.frame(origin, payload)
            return True
        if ftype == ROOM_FRAME:
            self.room_frame(payload)
            return True
        if ftype != AFFIL_FRAME:
            return None
        room, items = payload.get("room") if isinstance(payload, dict) else None, \
            payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(room, str) or not isinstance(items, list):
            return True                                  # malformed: claimed and dropped
        for item in items:
            if isinstance(item, list) and len(item) == 5 and isinstance(item[0], str) \
                    and item[1] in ("owner", "admin", "member", "none") and isinstance(item[2], int) \
                    and isinstance(item[3], (int, float)) and isinstance(item[4], str):
                if self.store.merge_affiliation(room, item[0], item[1], item[2], (float(item[3]), item[4])) \
                        and item[1] == "none":
                    self._drop_member_entry(room, item[0], float(item[3]))
        return True

    def _drop_member_entry(self, room: str, account: str, removed_at: float) -> None:
        """A removal from another server won: the member-list entry (+I $a:account) it took away there
        goes here too. Without this, the netjoin's union of channel lists brings back an entry made
        before the removal, and with it the account's membership."""
        ch = self.net.channels.get(room)
        if ch is None:
            return
        entry = self.account_entry(ch, "I", account)
        if entry is not None and entry.ts <= removed_at:
            self.modes(ch, [("-", "I", "$a:" + account)], self.core.now())

    def link_up(self, peer_id: str, *rest):
        """A new link: the peer learns every grant this server holds (its side of the tree sends theirs)."""
        for room in list(self.store.stamps):
            self.announce(room, self.store.changes(room))
        self.room_burst()
        return None

    def is_occupant(self, s, name: str) -> bool:
        room = self.rooms.get(self.net.fold(name))
        return room is not None and s.jid.resource in room.occupants.get(s.jid.bare, ())

    # ---------------------------------------------------------------- history
    def channel_message(self, ev: MessageSent) -> None:
        """Every channel message this server sees (once): the room's history and archive. On the
        tree's hot path (every message, every server with members): kept to a few lookups."""
        if ev.kind is TAG_ONLY:
            return
        room = self.rooms.get(ev.target.key_name) or self.room(ev.target)
        if room is None:
            return
        if ev.tags and REDACT_TAG in ev.tags:       # a moderation: the message leaves history and archive
            redact = ev.tags[REDACT_TAG]
            for e in list(room.history):
                if msgid_of(e[4]) == redact:
                    room.history.remove(e)
            if self.store is not None:
                self.store.retract(room.key, redact)
            return
        room._pending.append((ev, ev.source.nick))  # raw: Room.history makes the entry when read
        store = self.store
        if store is not None:
            mode = self.opts.archive
            if mode == "all" or (mode == "persistent" and store.persistent(room.key)):
                store.archive(room.key, stanza_id(ev), ev.time, ev.source.nick, self.real_jid(ev.source), ev.text)

    def _history_entry(self, ev: MessageSent, nick: str) -> tuple:
        u = ev.source
        full = u.attrs.get("xmpp", {}).get("jid")
        jid = full or (self.xmpp.jid_of(u) if u.nick == nick else self.xmpp.jid_of_nick(nick, u.uid))
        return (ev.time, nick, jid, ev.text, stanza_id(ev))

    def channel_destroyed(self, ch: Channel) -> None:
        """The last member left: a temporary room ends with it, a persistent one stays in the store."""
        room = self.rooms.get(ch.key_name)
        self.no_room.discard(ch.key_name)
        self.catchup.channel_destroyed(ch)
        if room is None:
            return
        if self.store is not None and self.store.persistent(ch.key_name):
            return
        del self.rooms[ch.key_name]
        if self.store is not None:
            self.store.forget_room(ch.key_name)
            config = self.store.rooms.get(ch.key_name)
            if config is not None:                   # a temporary room's settings end; its stamp stays
                self.store.save_room(ch.key_name, {"persistent": False, "stamp": config.get("stamp"),
                                                   "name": ch.name})

    # ---------------------------------------------------------------- what an occupant sent
    def reflect(self, s, el: etree._Element, ch: Channel, ev: MessageSent) -> None:
        """XEP-0045 §7.4: the sender's own sessions in the room get the message too, with its id."""
        room = self.rooms[ch.key_name]
        msg = groupchat(f"{room.jid}/{ev.source.nick}", xml_text(ev.text), el.get("id") or ev.msgid, room.jid,
                        stanza_id=stanza_id(ev), occupant_id=self.occupant_id(room, ev.source))
        self._to(room.occupants.get(s.jid.bare, {}), msg)

    def reflect_subject(self, s, ch: Channel, now: float) -> None:
        room = self.rooms[ch.key_name]
        self._to(room.occupants.get(s.jid.bare, {}),
                 groupchat(f"{room.jid}/{s.member.user.nick}", None, None, room.jid, subject=xml_text(ch.topic)))

    def invite(self, ev, to_text: str) -> None:
        """A mediated invitation: an INVITE of the network user that JID names."""
        from ..jid import JidError, parse_jid
        try:
            target = self.xmpp.network_user(parse_jid(to_text).bare)
        except JidError:
            target = None
        if target is None:
            ev.error("cancel", "item-not-found", "no such user on the network")
            return
        ch = self.net.find_channel(ev.channel)
        if "i" in ch.modes and "o" not in ch.members.get(ev.user, ""):
            ev.error("auth", "forbidden", "only moderators may invite to a members-only room")
            return
        self.net.invite(ev.user, target, ch, ev.now)

    # ---------------------------------------------------------------- channel events -> occupants
    def channel_event(self, ch: Channel, ev, users=None) -> None:
        """The network tells this (every local XMPP account's `events_via`) a channel's event once."""
        t = type(ev)
        render = RENDER.get(t)
        if render is None:
            return
        room = self.rooms.get(ch.key_name)
        if room is not None and t is not MessageSent and t is not TopicChanged:
            if t is not MemberJoined or ch.members.get(ev.user):
                room.mods = None                         # a status or a member with one changed
        if room is not None and room.occupants:
            render(self, ch, room, ev)

    def on_event(self, acct, ev):
        """What the network tells one account (AccountMember.deliver): invitations render here;
        channel events already came through channel_event, so they stop here."""
        t = type(ev)
        if t is UserInvited:
            invitation(self, acct, ev)
            return True
        if t is MessageSent:
            if type(ev.target) is Channel:
                return True
            return True if ev.tags and PM_TAG in ev.tags and private_message(self, acct, ev) else None
        return True if t in RENDER else None

    def _to(self, sessions, el: etree._Element) -> None:
        out = Outgoing(el)
        for s in list(sessions.values()):
            s.send_bytes_of(out)

def history_limits(entries: list, h: etree._Element, now: float, room_jid: str) -> list:
    """XEP-0045 §7.2.15: the most recent entries that fit every limit given."""
    from .timefmt import parse_stamp
    try:
        maxstanzas = int(h.get("maxstanzas")) if h.get("maxstanzas") is not None else None
        maxchars = int(h.get("maxchars")) if h.get("maxchars") is not None else None
        seconds = int(h.get("seconds")) if h.get("seconds") is not None else None
    except ValueError:
        maxstanzas = maxchars = seconds = None
    since = parse_stamp(h.get("since")) if h.get("since") else None
    if seconds is not None:
        entries = [e for e in entries if e[0] >= now - seconds]
    if since is not None:
        entries = [e for e in entries if e[0] >= since]
    if maxstanzas is not None:
        entries = entries[-maxstanzas:] if maxstanzas > 0 else []
    if maxchars is not None:
        out, used = [], 0
        for e in reversed(entries):
            size = len(etree.tostring(groupchat(f"{room_jid}/{e[1]}", xml_text(e[3]), e[4], room_jid, delay=e[0])))
            if used + size > maxchars:
                break
            used += size
            out.append(e)
        entries = out[::-1]
    return entries

