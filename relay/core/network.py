"""Network operations: the one protocol-neutral way to change state.

IRC commands, bridges and (later) server links all call these. Each applies
the change, tells local sessions through events, and hands the change to
`router` (the link layer, when links are configured) to propagate.
"""

from __future__ import annotations

import itertools
import logging
import string
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from relay.core.fanout import ChannelFanout
from relay.core.model import (KINDS, Ban, Batch, Channel, MemberJoined, MemberKicked, MemberLeft, MessageSent, ModeChanged,
                              NickChanged, OperNoticeSent, TopicChanged, User, UserInvited, UserQuit, UserUpdated)
from relay.proto.casemap import fold_for
from relay.proto.irc import mask_match

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices

log = logging.getLogger("relay.net")

_B36 = string.digits + string.ascii_uppercase


class JoinRefused(Exception):
    """Why a member may not join: banned, invite_only, bad_key, full, too_many, may_not_create."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class WhowasEntry:
    __slots__ = ("nick", "ident", "host", "realname", "server", "time", "account")

    def __init__(self, u: User, server_name: str, time: float):
        self.nick, self.ident, self.host, self.realname = u.nick, u.ident, u.host, u.realname
        self.server, self.time, self.account = server_name, time, u.account


class Network:
    def __init__(self, core: "CoreServices"):
        self.core = core
        self.cfg = core.config
        self.me = core.config.server
        # Every name lookup folds with the network's casemapping.
        self.fold = fold_for(core.config.network.casemapping)
        self.users: dict[str, User] = {}          # uid -> user
        self.nicks: dict[str, User] = {}          # fold(nick) -> user
        self.channels: dict[str, Channel] = {}    # fold(name) -> channel
        self.local_count = 0
        self.max_local = 0
        self.max_global = 0
        self.whowas: deque[WhowasEntry] = deque(maxlen=core.config.network.whowas)
        self._uid_counter = itertools.count(1)
        self._msgid = itertools.count(1)
        self.router: Any = None  # link layer; None on a lone server
        self.server_names: dict[str, str] = {self.me.id: self.me.name}
        self.mode_counts = {"i": 0, "o": 0}  # users with these modes, for LUSERS

    # ------------------------------------------------------------------ lookups
    # A key is its own fold, so a name given already folded (most are) is found without folding it.
    def find_nick(self, nick: str) -> User | None:
        u = self.nicks.get(nick)
        return u if u is not None else self.nicks.get(self.fold(nick))

    def find_channel(self, name: str) -> Channel | None:
        ch = self.channels.get(name)
        return ch if ch is not None else self.channels.get(self.fold(name))

    def counts(self) -> dict:
        return {"users": len(self.users), "local": self.local_count, "channels": len(self.channels),
                "invisible": self.mode_counts["i"], "opers": self.mode_counts["o"]}

    # User modes change only through these, so LUSERS counts stay exact without a scan.
    def set_user_mode(self, u: User, mode: str, on: bool) -> bool:
        """Set or clear one user mode; True if it changed."""
        if (mode in u.modes) == on:
            return False
        if on:
            u.modes.add(mode)
        else:
            u.modes.discard(mode)
        if mode in self.mode_counts:
            self.mode_counts[mode] += 1 if on else -1
        return True

    def replace_user_modes(self, u: User, modes) -> None:
        modes = set(modes)
        for m in u.modes - modes:
            self.set_user_mode(u, m, False)
        for m in modes - u.modes:
            self.set_user_mode(u, m, True)

    def links_summary(self) -> list[dict]:
        return self.router.summary() if self.router else []

    def server_name(self, sid: str) -> str:
        return self.server_names.get(sid, sid)

    def new_uid(self) -> str:
        n = next(self._uid_counter)
        out = []
        for _ in range(6):
            n, r = divmod(n, 36)
            out.append(_B36[r])
        return self.me.id + "".join(reversed(out))

    def new_msgid(self) -> str:
        return f"{self.me.id}-{next(self._msgid):x}"

    # ------------------------------------------------------------------ delivery
    @staticmethod
    def tell(users: Iterable[User], event) -> None:
        for u in users:
            s = u.session
            if s is not None:
                s.deliver(event)

    def tell_channel(self, ch: Channel, event) -> None:
        """A channel event to its local members: direct ones one by one, each bridge (events_via) once."""
        self.tell(ch.direct, event)
        if ch.via:
            for d, users in list(ch.via.items()):
                d.channel_event(ch, event, users)

    def tell_channels_of(self, user: User, event) -> None:
        """A user's event (quit, nick) to the bridges of every channel it is in, once per channel."""
        for ch in list(user.channels.values()):
            if ch.via:
                for d, users in list(ch.via.items()):
                    d.channel_event(ch, event, users)

    def notify_opers(self, text: str, now: float) -> None:
        """Tell local network operators (user mode o), in whatever protocol they use."""
        self.tell([u for u in self.users.values() if u.session is not None and "o" in u.modes],
                  OperNoticeSent(now, text))

    def neighbours(self, user: User, include_self: bool = False) -> list[User]:
        """Local users sharing a channel with `user` (each once)."""
        seen: dict[User, None] = {}
        for ch in user.channels.values():
            seen.update(ch.direct)         # members told through a bridge: tell_channels_of
        if include_self and user.session is not None:
            seen[user] = None
        else:
            seen.pop(user, None)
        return list(seen)

    # ------------------------------------------------------------------ users
    def nick_in_use(self, nick: str, but: User | None = None) -> bool:
        u = self.nicks.get(self.fold(nick))
        return u is not None and u is not but

    def introduce(self, session: Any, nick: str, ident: str, host: str, realname: str, proto: str,
                  now: float, account: str | None = None, ip: str = "0.0.0.0",
                  uid: str | None = None, server: str | None = None, nick_ts: float | None = None,
                  propagate: bool = True, attrs: dict | None = None) -> User:
        u = User(uid or self.new_uid(), nick, ident, host, realname, server or self.me.id, proto,
                 int(nick_ts if nick_ts is not None else now), now, account, session, ip)
        if attrs:
            u.attrs = attrs
        self.users[u.uid] = u
        self.nicks[self.fold(nick)] = u
        if session is not None:
            self.local_count += 1
            self.max_local = max(self.max_local, self.local_count)
        self.max_global = max(self.max_global, len(self.users))
        self.core.hooks.run("client_connected", u)
        if propagate and self.router:
            self.router.user_introduced(u)
        return u

    def quit(self, user: User, reason: str, now: float, propagate: bool = True, batch: Batch | None = None) -> None:
        if self.users.get(user.uid) is not user:
            return
        ev = UserQuit(now, user, reason, batch)
        self.tell(self.neighbours(user), ev)
        self.tell_channels_of(user, ev)
        for ch in list(user.channels.values()):
            ch.remove(user)
            self.core.hooks.run("member_left", user, ch, reason)
            self._maybe_destroy(ch)
        self.whowas.append(WhowasEntry(user, self.server_name(user.server), now))
        del self.users[user.uid]
        for m in self.mode_counts:
            if m in user.modes:
                self.mode_counts[m] -= 1
        if self.nicks.get(self.fold(user.nick)) is user:
            del self.nicks[self.fold(user.nick)]
        if user.session is not None:
            self.local_count -= 1
        self.core.hooks.run("client_disconnected", user, reason)
        if propagate and self.router:
            self.router.user_quit(user, reason)

    def change_nick(self, user: User, new: str, now: float, propagate: bool = True, ts: float | None = None) -> None:
        old_prefix, old_nick = user.prefix, user.nick
        old_key, new_key = self.fold(user.nick), self.fold(new)
        if self.nicks.get(old_key) is user:
            del self.nicks[old_key]
        self.nicks[new_key] = user
        self.whowas.append(WhowasEntry(user, self.server_name(user.server), now))
        user.nick = new
        user.nick_ts = int(now if ts is None else ts)
        ev = NickChanged(now, user, old_prefix)
        self.tell(self.neighbours(user, include_self=True), ev)
        self.tell_channels_of(user, ev)
        self.core.hooks.run("nick_changed", user, old_nick)
        if propagate and self.router:
            self.router.nick_changed(user)

    def set_attrs(self, user: User, proto: str, values: dict, now: float, propagate: bool = True) -> None:
        """Replace one protocol's attributes of a user (they travel with the user over links)."""
        if values:
            user.attrs[proto] = values
        else:
            user.attrs.pop(proto, None)
        self.update_user(user, "attrs", now, propagate)

    def update_user(self, user: User, what: str, now: float, propagate: bool = True) -> None:
        """Tell neighbours that away / account / realname changed (they filter by capability)."""
        self.tell(self.neighbours(user, include_self=(what == "realname")), UserUpdated(now, user, what))
        self.core.hooks.run("user_updated", user, what)
        if propagate and self.router:
            self.router.user_updated(user, what)

    # ------------------------------------------------------------------ channels
    # ------------------------------------------------------------------ channel policy
    # Who may join, speak and set the topic: one set of rules for every protocol.
    def check_join(self, user: User, name: str, key: str | None) -> Channel | None:
        """Raise JoinRefused if `user` may not join; return the channel if it exists."""
        ch = self.channels.get(self.fold(name))
        if len(user.channels) >= self.cfg.network.chanlimit and self.fold(name) not in user.channels:
            raise JoinRefused("too_many")
        if ch is None:
            acl = self.core.acl
            if "create_channel" in acl.rule_names() and \
                    not acl.allowed("create_channel", self.core.subject(user.account, user.ip)):
                raise JoinRefused("may_not_create")
            return None
        invited = ch.key_name in user.invites
        if self.matches_list(ch, "b", user) and not self.matches_list(ch, "e", user) and not invited:
            raise JoinRefused("banned")
        if "i" in ch.modes and not invited and not self.matches_list(ch, "I", user):
            raise JoinRefused("invite_only")
        if ch.key and key != ch.key and not invited:
            raise JoinRefused("bad_key")
        if ch.limit and len(ch.members) >= ch.limit and not invited:
            raise JoinRefused("full")
        return ch

    def may_speak(self, ch: Channel, user: User) -> bool:
        """+n keeps non-members out, +m needs a status, a ban (without exception) silences."""
        st = ch.members.get(user)
        if st is None:
            return "n" not in ch.modes and "m" not in ch.modes and not self.banned(ch, user)
        if st:
            return True
        if "m" in ch.modes:
            return False
        return not self.banned(ch, user)

    def may_set_topic(self, ch: Channel, user: User) -> bool:
        return "t" not in ch.modes or "o" in ch.members.get(user, "")

    def banned(self, ch: Channel, user: User) -> bool:
        return bool(ch.lists["b"]) and self.matches_list(ch, "b", user) and not self.matches_list(ch, "e", user)

    def matches_list(self, ch: Channel, mode: str, user: User) -> bool:
        entries = ch.lists[mode]
        if not entries:
            return False
        ids = (user.prefix, f"{user.nick}!{user.ident}@{user.ip}")
        for b in entries:
            if b.mask.startswith("$a:"):
                if user.account and mask_match(b.mask[3:], user.account):
                    return True
                continue
            if any(mask_match(b.mask, s) for s in ids):
                return True
        return False

    def join(self, user: User, name: str, now: float, status: str | None = None,
             ts: float | None = None, propagate: bool = True, batch: Batch | None = None) -> Channel:
        key = self.fold(name)
        ch = self.channels.get(key)
        created = ch is None
        if created:
            # Timestamps are whole seconds, as on the wire, so every server compares the same values.
            ch = Channel(name, key, int(ts if ts is not None else now))
            ch.modes.update(("n", "t"))
            self.channels[key] = ch
            self.core.hooks.run("channel_created", ch)
        if status is None:
            status = "o" if created else ""
        ch.add(user, status)
        user.invites.discard(key)
        self.tell_channel(ch, MemberJoined(now, user, ch, batch))
        self.core.hooks.run("member_joined", user, ch)
        if propagate and self.router:
            self.router.member_joined(user, ch, created)
        return ch

    def part(self, user: User, ch: Channel, reason: str, now: float, propagate: bool = True) -> None:
        ev = MemberLeft(now, user, ch, reason)
        self.tell_channel(ch, ev)
        ch.remove(user)
        self.core.hooks.run("member_left", user, ch, reason)
        if propagate and self.router:
            self.router.member_left(user, ch, reason)
        self._maybe_destroy(ch)

    def kick(self, source: User | str, ch: Channel, target: User, reason: str, now: float,
             propagate: bool = True) -> None:
        self.tell_channel(ch, MemberKicked(now, source, ch, target, reason))
        ch.remove(target)
        self.core.hooks.run("member_left", target, ch, reason)
        if propagate and self.router:
            self.router.member_kicked(source, ch, target, reason)
        self._maybe_destroy(ch)

    def _maybe_destroy(self, ch: Channel) -> None:
        if not ch.members and self.channels.get(ch.key_name) is ch:
            del self.channels[ch.key_name]
            self.core.hooks.run("channel_destroyed", ch)

    def set_topic(self, source: User | str, ch: Channel, text: str, now: float, propagate: bool = True) -> None:
        ch.topic = text
        ch.topic_by = source.prefix if isinstance(source, User) else source
        ch.topic_ts = now
        self.tell_channel(ch, TopicChanged(now, source, ch))
        if propagate and self.router:
            self.router.topic_changed(source, ch)

    def invite(self, source: User, target: User, ch: Channel, now: float) -> None:
        target.invites.add(ch.key_name)
        ev = UserInvited(now, source, target, ch)
        # The invitee, and (invite-notify) the channel's operators.
        recipients = dict.fromkeys(u for u, st in ch.members.items() if "o" in st and u.session is not None)
        if target.session is not None:
            recipients[target] = None
        self.tell(recipients, ev)
        if self.router:
            self.router.user_invited(source, target, ch)

    def apply_modes(self, source: User | str, ch: Channel, changes: list[tuple[str, str, str | None]], now: float,
                    propagate: bool = True, batch: Batch | None = None) -> list[tuple[str, str, str | None]]:
        """Apply already-validated channel mode changes; returns those that changed something.
        `batch`: the (netjoin) batch that the clients' lines belong to."""
        done = []
        for sign, m, arg in changes:
            add = sign == "+"
            if m in "ov":
                u = self.find_nick(arg) if isinstance(arg, str) else arg
                if u is None or u not in ch.members:
                    continue
                st = ch.members[u]
                if add == (m in st):
                    continue
                ch.members[u] = st + m if add else st.replace(m, "")
                done.append((sign, m, u.nick))
            elif m in "beI":
                lst = ch.lists[m]
                have = next((b for b in lst if self.fold(b.mask) == self.fold(arg)), None)
                if add and have is None:
                    if len(lst) >= self.cfg.network.maxlist:
                        continue
                    lst.append(Ban(arg, source.prefix if isinstance(source, User) else source, now))
                    done.append((sign, m, arg))
                elif not add and have is not None:
                    lst.remove(have)
                    done.append((sign, m, have.mask))
            elif m == "k":
                if add:
                    ch.key = arg
                    done.append((sign, m, arg))
                elif ch.key is not None:
                    ch.key = None
                    done.append((sign, m, "*"))
            elif m == "l":
                if add:
                    ch.limit = int(arg)
                    done.append((sign, m, arg))
                elif ch.limit is not None:
                    ch.limit = None
                    done.append((sign, m, None))
            else:
                if add == (m in ch.modes):
                    continue
                (ch.modes.add if add else ch.modes.discard)(m)
                done.append((sign, m, None))
        if done:
            self.tell_channel(ch, ModeChanged(now, source, ch, done, batch))
            if propagate and self.router:
                self.router.modes_changed(source, ch, done)
        return done

    # ------------------------------------------------------------------ messages
    def message(self, source: User, target: Channel | User, kind: str, text: str, now: float,
                tags: dict | None = None, msgid: str | None = None, propagate: bool = True) -> MessageSent | None:
        """Deliver a PRIVMSG/NOTICE/TAGMSG. filter_packet may rewrite (return a new event) or drop (Stop(None))."""
        if kind not in KINDS:  # a protocol's own verb ("PRIVMSG") is a bug in its module
            raise ValueError(f"message kind {kind!r} is not one of {sorted(KINDS)}")
        ev = MessageSent(now, source, target, kind, text, tags or {}, msgid or self.new_msgid())
        hooks = self.core.hooks
        if hooks.has("filter_packet"):
            ev = hooks.fold("filter_packet", ev)
            if ev is None:
                return None
        if type(target) is Channel:
            fan = target.fanout
            if fan is None:
                fan = target.fanout = ChannelFanout(target.local)
            fan.message(ev, source.session)
            # Narrow hooks, so a message costs nothing for modules that need none of it: every
            # channel message this server sees, once (room history), and those of its own users
            # (the MQTT topic tree's non-member subscribers).
            if hooks.has("channel_message"):
                hooks.run("channel_message", ev)
            if source.server == self.me.id and hooks.has("local_channel_message"):
                hooks.run("local_channel_message", ev)
            if propagate and self.router and target.servers:
                self.router.channel_message(ev)
        else:
            s = target.session
            if s is not None:
                s.deliver(ev)
            elif propagate and self.router:
                self.router.direct_message(ev)
        return ev

    def shutdown(self, reason: str, now: float) -> None:
        for u in [u for u in self.users.values() if u.session is not None]:
            u.session.server_closing(reason, now)
