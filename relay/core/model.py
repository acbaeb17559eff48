"""The network's state: users and channels, protocol-neutral.

A member from any protocol is a `User` with a network-unique nick; its
`session` (local users only) knows how to deliver events in its protocol.
Events (past-tense facts) are what sessions are told; each carries a
`cache` so a protocol serialises it once and queues the same bytes to every
local recipient.
"""

from __future__ import annotations

from typing import Any


class User:
    """A member of the network, from any protocol.

    `nick` is network-unique; `ident`, `host` and `realname` are the neutral
    identity every protocol shows (user name, visible host, display name);
    `modes` are network user modes (i invisible, o network operator);
    `attrs` holds what only its protocol knows, by protocol name (an XMPP full
    JID and resource, a SIP contact, an MQTT client id), carried over links.
    """
    __slots__ = ("uid", "nick", "ident", "host", "realname", "server", "account", "away", "modes",
                 "nick_ts", "signon", "proto", "channels", "session", "ip", "invites", "oper_name",
                 "last_active", "attrs")

    def __init__(self, uid: str, nick: str, ident: str, host: str, realname: str, server: str,
                 proto: str, nick_ts: float, signon: float, account: str | None = None,
                 session: Any = None, ip: str = "0.0.0.0"):
        self.uid, self.nick, self.ident, self.host, self.realname = uid, nick, ident, host, realname
        self.server, self.proto, self.nick_ts, self.signon = server, proto, nick_ts, signon
        self.account, self.session, self.ip = account, session, ip
        self.away: str | None = None
        self.modes: set[str] = set()
        self.channels: dict[str, "Channel"] = {}
        self.invites: set[str] = set()
        self.oper_name: str | None = None
        self.last_active = signon
        self.attrs: dict[str, dict] = {}

    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.ident}@{self.host}"

    @property
    def local(self) -> bool:
        return self.session is not None

    def __repr__(self) -> str:
        return f"<User {self.uid} {self.nick}>"


class Ban:
    __slots__ = ("mask", "setter", "ts")

    def __init__(self, mask: str, setter: str, ts: float):
        self.mask, self.setter, self.ts = mask, setter, ts


class Channel:
    __slots__ = ("name", "key_name", "ts", "modes", "key", "limit", "lists", "topic", "topic_by", "topic_ts",
                 "members", "local", "direct", "via", "servers", "fanout")

    def __init__(self, name: str, key_name: str, ts: float):
        self.name, self.key_name, self.ts = name, key_name, ts
        self.modes: set[str] = set()
        self.key: str | None = None
        self.limit: int | None = None
        self.lists: dict[str, list[Ban]] = {"b": [], "e": [], "I": []}
        self.topic = ""
        self.topic_by = ""
        self.topic_ts = 0.0
        # user -> status letters ("o", "v", "ov"); insertion order is join order
        self.members: dict[User, str] = {}
        # local members, for delivery; servers -> member count, for routing
        self.local: dict[User, None] = {}
        # Channel events (joins, parts, modes...): `direct` members are told one by one; a session with
        # an `events_via` (a bridge that renders for all its members, MUC) is told through it, once per
        # event, so a join costs O(1) per bridge instead of O(members) (network.tell_channel).
        self.direct: dict[User, None] = {}
        self.via: dict[Any, dict[User, None]] = {}
        self.servers: dict[str, int] = {}
        self.fanout = None  # relay.core.fanout.ChannelFanout, built on the first message after a change

    def add(self, user: User, status: str = "") -> None:
        self.members[user] = status
        if user.session is not None:
            self.local[user] = None
            self.fanout = None
            d = getattr(user.session, "events_via", None)
            if d is None:
                self.direct[user] = None
            else:
                self.via.setdefault(d, {})[user] = None
        else:
            self.servers[user.server] = self.servers.get(user.server, 0) + 1
        user.channels[self.key_name] = self

    def remove(self, user: User) -> None:
        del self.members[user]
        if user.session is not None:
            self.local.pop(user, None)
            self.fanout = None
            if self.direct.pop(user, 0) is not None:
                for d, users in self.via.items():
                    if users.pop(user, 0) is None:
                        if not users:
                            del self.via[d]
                        break
        else:
            n = self.servers[user.server] - 1
            if n:
                self.servers[user.server] = n
            else:
                del self.servers[user.server]
        user.channels.pop(self.key_name, None)

    def mode_string(self, show_key: bool = True) -> tuple[str, list[str]]:
        flags = "".join(sorted(self.modes))
        args = []
        if self.key:
            flags += "k"
            args.append(self.key if show_key else "*")
        if self.limit:
            flags += "l"
            args.append(str(self.limit))
        return "+" + flags, args

    def __repr__(self) -> str:
        return f"<Channel {self.name} {len(self.members)}>"


# Events: what local sessions are told. Each gets a fresh cache for per-protocol bytes.

class Event:
    __slots__ = ("cache", "time")

    def __init__(self, time: float):
        self.cache: dict = {}
        self.time = time


# MessageSent.kind: what sort of message, named for every protocol (IRC renders PRIVMSG, NOTICE, TAGMSG).
MESSAGE = "message"   # a message people read
NOTICE = "notice"     # a message that must never trigger an automatic reply (bots, services)
TAG_ONLY = "tag"      # metadata only (typing, reactions): no text
KINDS = frozenset((MESSAGE, NOTICE, TAG_ONLY))
# A redaction (IRCv3 draft/message-redaction, XEP-0424/0425 retraction) rides the channel as a NOTICE
# whose text says what happened (for members that know no redaction) with these tags: the network
# msgid of the message it takes back and the reason. Each protocol renders it as its own redaction.
REDACT_TAG = "+relaynet/redact"
REDACT_REASON_TAG = "+relaynet/redact-reason"


# Batch.kind: why events belong together.
NETSPLIT = "netsplit"   # the quits of users behind a lost server: near and far are the servers either side
NETJOIN = "netjoin"     # the joins and modes a returning server's burst causes


class Batch:
    """Events that belong together (a netsplit's quits, a netjoin's joins and modes). Told to sessions
    between a BatchStarted and a BatchEnded; a protocol that can group them does (IRC: a BATCH),
    others ignore the three. `ref` names it uniquely on this server."""
    __slots__ = ("ref", "kind", "near", "far")

    def __init__(self, ref: str, kind: str, near: str, far: str):
        self.ref, self.kind, self.near, self.far = ref, kind, near, far

    def __repr__(self) -> str:
        return f"<Batch {self.ref} {self.kind} {self.near} {self.far}>"


class BatchStarted(Event):
    __slots__ = ("batch",)

    def __init__(self, time, batch: Batch):
        super().__init__(time)
        self.batch = batch


class BatchEnded(Event):
    __slots__ = ("batch",)

    def __init__(self, time, batch: Batch):
        super().__init__(time)
        self.batch = batch


class MessageSent(Event):
    """A message to a channel or a user; `kind` is MESSAGE, NOTICE or TAG_ONLY."""
    __slots__ = ("source", "target", "kind", "text", "tags", "msgid")

    def __init__(self, time, source: User, target, kind: str, text: str, tags: dict, msgid: str):
        super().__init__(time)
        self.source, self.target, self.kind, self.text, self.tags, self.msgid = source, target, kind, text, tags, msgid


class MemberJoined(Event):
    __slots__ = ("user", "channel", "batch")

    def __init__(self, time, user: User, channel: Channel, batch: Batch | None = None):
        super().__init__(time)
        self.user, self.channel, self.batch = user, channel, batch


class MemberLeft(Event):
    __slots__ = ("user", "channel", "reason")

    def __init__(self, time, user: User, channel: Channel, reason: str):
        super().__init__(time)
        self.user, self.channel, self.reason = user, channel, reason


class MemberKicked(Event):
    __slots__ = ("source", "channel", "user", "reason")

    def __init__(self, time, source: User | str, channel: Channel, user: User, reason: str):
        super().__init__(time)
        self.source, self.channel, self.user, self.reason = source, channel, user, reason


class UserQuit(Event):
    __slots__ = ("user", "reason", "batch")

    def __init__(self, time, user: User, reason: str, batch: Batch | None = None):
        super().__init__(time)
        self.user, self.reason, self.batch = user, reason, batch


class NickChanged(Event):
    __slots__ = ("user", "old_prefix")

    def __init__(self, time, user: User, old_prefix: str):
        super().__init__(time)
        self.user, self.old_prefix = user, old_prefix


class ModeChanged(Event):
    __slots__ = ("source", "channel", "changes", "batch")

    def __init__(self, time, source: User | str, channel: Channel, changes: list[tuple[str, str, str | None]],
                 batch: Batch | None = None):
        super().__init__(time)
        self.source, self.channel, self.changes, self.batch = source, channel, changes, batch


class TopicChanged(Event):
    __slots__ = ("source", "channel")

    def __init__(self, time, source: User | str, channel: Channel):
        super().__init__(time)
        self.source, self.channel = source, channel


class UserUpdated(Event):
    """away, account, realname (setname) or host changed: for cap-gated notifications."""
    __slots__ = ("user", "what")

    def __init__(self, time, user: User, what: str):
        super().__init__(time)
        self.user, self.what = user, what


class UserInvited(Event):
    __slots__ = ("source", "user", "channel")

    def __init__(self, time, source: User, user: User, channel: Channel):
        super().__init__(time)
        self.source, self.user, self.channel = source, user, channel


class OperNoticeSent(Event):
    """Something network operators should know (a refused link, a loop): told to local operators."""
    __slots__ = ("text",)

    def __init__(self, time, text: str):
        super().__init__(time)
        self.text = text


def source_prefix(src: User | str) -> str:
    return src.prefix if isinstance(src, User) else src


def format_changes(changes: list[tuple[str, str, str | None]]) -> tuple[str, list[str]]:
    """[('+','o','nick'), ('-','k','key')] -> ('+o-k', ['nick', 'key'])"""
    out, args, sign = [], [], ""
    for s, m, a in changes:
        if s != sign:
            out.append(s)
            sign = s
        out.append(m)
        if a is not None:
            args.append(a)
    return "".join(out), args
