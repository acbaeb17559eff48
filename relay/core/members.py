"""Bridged members: the lifecycle every non-IRC protocol shares.

A client of a bridged protocol (MQTT, XMPP, SIP) becomes a real network member:
a network-unique nick within NICKLEN made from its account or user name, an
introduction with its protocol's attributes, joins through the channel policy,
the speak check before a channel message, and a quit when it leaves. Each
protocol keeps its own session object (the member's `session`, which the
network tells events to); this holds what they would otherwise write three times.
"""

from __future__ import annotations

import re
from typing import Any

from relay.core.model import MESSAGE, Channel, MessageSent, User
from relay.core.network import JoinRefused, Network
from relay.proto.irc import valid_channel, valid_nick

_NICK_BAD = re.compile(r"[^A-Za-z0-9\[\]\\`_^{|}\-]")
_IDENT_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


class SpeakRefused(Exception):
    """Why a member may not speak in a channel: not_member, moderated, banned, no_such_channel, filtered."""

    def __init__(self, code: str, channel: str):
        super().__init__(code)
        self.code, self.channel = code, channel


class BridgedMembers:
    """Members of one protocol on this server (`proto`, shown as host `<proto>.<server name>`)."""

    def __init__(self, net: Network, proto: str, config):
        self.net = net
        self.proto = proto
        self.config = config  # read at each use: reload-config may change network: limits
        self.host = f"{proto}.{config.server.name}"

    @property
    def nicklen(self) -> int:
        return self.config.network.nicklen

    # ------------------------------------------------------------------ names
    def unique_nick(self, wanted: str | None, fallback: str | None = None) -> str:
        """A free, valid nick as close to `wanted` as NICKLEN allows (alice, alice1, alic12...)."""
        nicklen = self.nicklen
        base = _NICK_BAD.sub("_", wanted or fallback or self.proto)
        if not base or not valid_nick(base[:1], nicklen):
            base = (self.proto[:1] or "u") + base
        base = base[:nicklen]
        if valid_nick(base, nicklen) and not self.net.nick_in_use(base):
            return base
        for n in range(1, 10 ** min(nicklen, 6)):
            suffix = str(n)
            cand = base[: max(1, nicklen - len(suffix))] + suffix
            if valid_nick(cand, nicklen) and not self.net.nick_in_use(cand):
                return cand
        raise RuntimeError("no free nick")

    def valid_channel(self, name: str) -> bool:
        return valid_channel(name, self.config.network.channellen)

    @staticmethod
    def ident_for(name: str | None, default: str) -> str:
        return _IDENT_BAD.sub("", name or "")[:10] or default

    # ------------------------------------------------------------------ lifecycle
    def introduce(self, session: Any, wanted_nick: str | None, now: float, *, account: str | None,
                  ip: str | None, realname: str, ident: str | None = None,
                  attrs: dict | None = None) -> User:
        nick = self.unique_nick(wanted_nick)
        return self.net.introduce(session, nick, self.ident_for(ident or wanted_nick, self.proto), self.host,
                                  realname[:100], self.proto, now, account=account, ip=ip or "0.0.0.0",
                                  attrs={self.proto: attrs} if attrs else None)

    def join(self, user: User, name: str, now: float, key: str | None = None) -> Channel:
        """Join through the channel policy; raises JoinRefused (with its code) when refused."""
        fold = self.net.fold(name)
        if fold in user.channels:
            return user.channels[fold]
        if not self.valid_channel(name):
            raise JoinRefused("bad_name")
        self.net.check_join(user, name, key)
        return self.net.join(user, name, now)

    def check_speak(self, user: User, name: str) -> Channel:
        """The channel `user` may speak in now; raises SpeakRefused with the reason."""
        ch = self.net.find_channel(name)
        if ch is None:
            raise SpeakRefused("no_such_channel", name)
        if not self.net.may_speak(ch, user):
            if user not in ch.members:
                raise SpeakRefused("not_member", ch.name)
            raise SpeakRefused("banned" if self.net.banned(ch, user) else "moderated", ch.name)
        return ch

    def speak(self, user: User, name: str, text: str, now: float, kind: str = MESSAGE,
              tags: dict | None = None) -> MessageSent:
        """A channel message from a bridged member; raises SpeakRefused (filtered: dropped by a hook)."""
        ch = self.check_speak(user, name)
        user.last_active = now
        ev = self.net.message(user, ch, kind, text, now, tags)
        if ev is None:
            raise SpeakRefused("filtered", ch.name)
        return ev

    def leave(self, user: User, name: str, reason: str, now: float) -> bool:
        ch = user.channels.get(self.net.fold(name))
        if ch is None:
            return False
        self.net.part(user, ch, reason, now)
        return True

    def quit(self, user: User | None, reason: str, now: float) -> None:
        if user is not None:
            self.net.quit(user, reason, now)


SPEAK_REASONS = {
    "not_member": "join {channel} to speak there",
    "moderated": "{channel} is moderated (+m) and you have no voice",
    "banned": "you are banned from {channel}",
    "no_such_channel": "{channel} does not exist",
    "filtered": "a filter dropped the message",
}


def speak_refusal_text(e: SpeakRefused) -> str:
    return SPEAK_REASONS.get(e.code, e.code).format(channel=e.channel)
