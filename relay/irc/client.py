"""One local IRC client: registration, capabilities, SASL, and delivery of
network events as IRC lines.

Lines for an event are built once per capability profile and cached on the
event, so every recipient with the same profile gets the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time as _time
from collections import deque
from typing import TYPE_CHECKING

from relay.core.sasl import Challenge, SaslServer, Succeeded, offered_mechanisms
from relay.core.model import (MESSAGE, NOTICE, REDACT_REASON_TAG, REDACT_TAG, TAG_ONLY, BatchEnded, BatchStarted, Channel, OperNoticeSent, MemberJoined, MemberKicked, MemberLeft, MessageSent, ModeChanged,
                              NickChanged, TopicChanged, User, UserInvited, UserQuit, UserUpdated,
                              format_changes, source_prefix)
from relay.proto.irc import IrcConnection, LineRejected, MessageReceived, build, escape_tag_value

if TYPE_CHECKING:
    from relay.irc.service import IrcService

log = logging.getLogger("relay.irc")

CAPS = ("message-tags", "server-time", "echo-message", "batch", "multi-prefix", "userhost-in-names",
        "away-notify", "account-notify", "account-tag", "extended-join", "labeled-response",
        "invite-notify", "setname", "cap-notify", "sasl", "draft/message-redaction")
IRC_SASL_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN")

# How each kind of network message is written in IRC.
IRC_VERB = {MESSAGE: "PRIVMSG", NOTICE: "NOTICE", TAG_ONLY: "TAGMSG"}

# Capability profile bits: which tags a client's copy of a message carries.
T_TIME, T_MSGTAGS, T_ACCOUNT, T_REDACT = 1, 2, 4, 8

_NO_CAPS: frozenset[str] = frozenset()
FLOOD_QUEUE = 64  # commands held back by the shaper before "Excess Flood"


def server_time(t: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class IrcClient:
    proto = "irc"

    def __init__(self, svc: "IrcService", transport, now: float):
        self.svc = svc
        self.core = core = svc.core
        self.net = core.net
        self.t = transport
        self.codec = IrcConnection(max_tags=4096)  # message-tags: 4094 bytes of client tag data, plus '@' and ' '
        self.server_name = core.config.server.name
        self.user: User | None = None
        self.nick: str | None = None
        self.ident: str | None = None
        self.realname = ""
        self.host = transport.peer_host
        self.password: str | None = None
        self.caps: frozenset[str] = _NO_CAPS   # most clients negotiate none: no set of their own
        self.cap_negotiating = False
        self.cap_version = 301
        self.tagbits = 0
        self.account: str | None = None
        self.sasl = None
        self.connected_at = now
        self.last_rx = now
        self.ping_sent: float | None = None
        self.closed = False
        self.label: str | None = None
        self.label_buf: list[bytes] | None = None
        self.shaper = core.acl.shaper_for(core.subject(None, transport.peer_host))
        self.held: deque | None = None   # fakelag's waiting commands: made on the first (a deque is 760 bytes)
        self.held_timer = None
        svc.local[self] = None

    # ------------------------------------------------------------------ I/O
    @property
    def registered(self) -> bool:
        return self.user is not None

    @property
    def target(self) -> str:
        return self.nick if self.user is not None else (self.nick or "*")

    def send(self, data: bytes) -> None:
        if self.label_buf is not None:
            self.label_buf.append(data)
        else:
            self.t.write(data)

    def reply(self, command: str, *params: str, tags: dict | None = None) -> None:
        self.send(build(self.server_name, command, *params, tags=tags))

    def numeric(self, code: str, *params: str) -> None:
        self.send(build(self.server_name, code, self.target, *params))

    def data_received(self, data: bytes, now: float) -> None:
        self.last_rx = now
        shaper = self.shaper
        for ev in self.codec.receive_data(data):
            if self.closed:
                return
            if type(ev) is MessageReceived:
                msg = ev.message
                if shaper is None:
                    self.svc.commands.dispatch(self, msg, now)
                    continue
                size = _size(msg)
                delay = 1.0 if self.held else shaper.consume(size, now)
                if delay:
                    self._hold(msg, size, now)
                else:
                    self.svc.commands.dispatch(self, msg, now)
            else:
                self._rejected(ev)

    def _hold(self, msg, size: int, now: float) -> None:
        """Fakelag: commands past the shaper's rate wait; too many waiting is a flood."""
        if self.held is None:
            self.held = deque()
        elif len(self.held) >= FLOOD_QUEUE:
            log.info("irc %s:%s: refused: Excess Flood", self.t.peer_host, self.t.peer_port)
            self.quit_and_close("Excess Flood", now)
            return
        self.held.append((msg, size))
        if self.held_timer is None:
            self._release(now)

    def _release(self, now: float) -> None:
        self.held_timer = None
        while self.held and not self.closed:
            msg, size = self.held[0]
            delay = self.shaper.consume(size, now)
            if delay:
                self.held_timer = self.core.timers.call_at(now + delay, self._release, owner="irc")
                return
            self.held.popleft()
            self.svc.commands.dispatch(self, msg, now)

    def _rejected(self, ev: LineRejected) -> None:
        if ev.code == "INPUT_TOO_LONG":
            self.numeric("417", "Input line was too long")
        elif ev.code == "INVALID_UTF8":
            self.reply("FAIL", ev.command or "*", "INVALID_UTF8", "Message rejected: it contained invalid UTF-8")
        elif ev.code == "NUL_BYTE":
            self.reply("FAIL", ev.command or "*", "INVALID_MESSAGE", "Message rejected: it contained a NUL byte")
        # MALFORMED lines are ignored, as RFC 1459 servers do with empty/garbled input.

    def connection_lost(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self._forget()
        if self.user is not None:
            self.net.quit(self.user, reason or "Connection closed", now)

    def quit_and_close(self, reason: str, now: float, quit_reason: str | None = None) -> None:
        """ERROR to the client, QUIT to the network, then close the connection."""
        if self.closed:
            return
        self.closed = True
        self._forget()
        self.t.write(build(None, "ERROR", f"Closing Link: {self.host} ({reason})"))
        if self.user is not None:
            self.net.quit(self.user, quit_reason or reason, now)
        self.t.close(reason)

    def _forget(self) -> None:
        local = self.svc.local
        if self in local:
            del local[self]
            if self.user is not None:
                self.svc.registered -= 1
        if self.held_timer is not None:
            self.held_timer.cancel()
        self.held = None

    def server_closing(self, reason: str, now: float) -> None:
        self.quit_and_close(reason, now)

    # Called by the sweep timer.
    def check_alive(self, now: float) -> None:
        cfg = self.svc.opts
        if self.user is None:
            if now - self.connected_at > cfg.registration_timeout:
                self.quit_and_close("Registration timed out", now)
            return
        if self.ping_sent is not None:
            if now - self.ping_sent > cfg.ping_timeout:
                self.quit_and_close(f"Ping timeout: {int(now - self.last_rx)} seconds", now)
        elif now - self.last_rx > cfg.ping_interval:
            self.ping_sent = now
            self.send(build(None, "PING", self.server_name))

    # ------------------------------------------------------------------ capabilities
    def set_caps(self, add: set[str], remove: set[str]) -> None:
        c = self.caps = (self.caps | add) - remove
        self.tagbits = ((T_TIME if "server-time" in c else 0) | (T_MSGTAGS if "message-tags" in c else 0)
                        | (T_ACCOUNT if "account-tag" in c else 0)
                        | (T_REDACT if "draft/message-redaction" in c else 0))
        self._refan()

    def cap_list(self) -> list[str]:
        out = []
        for c in CAPS:
            if c == "sasl" and self.cap_version >= 302:
                out.append(f"sasl={','.join(self.sasl_mechanisms())}")
            else:
                out.append(c)
        return out

    # ------------------------------------------------------------------ labeled-response
    def begin_label(self, label: str | None) -> None:
        # Like InspIRCd: only with batch too, since a batch must never reach a client without it.
        if label is not None and "labeled-response" in self.caps and "batch" in self.caps:
            self.label, self.label_buf = label, []
            self._refan()  # lines caused by this command go to the label's batch, not to shared runs

    def end_label(self) -> None:
        if self.label_buf is None:
            return
        lines, label = self.label_buf, self.label
        self.label = self.label_buf = None
        esc = escape_tag_value(label)  # all of \\ ; space CR LF: a label can never break the line
        if not lines:
            self.t.write(f"@label={esc} :{self.server_name} ACK\r\n".encode())
        elif len(lines) == 1:
            self.t.write(_add_tag(lines[0], f"label={esc}"))
        else:
            ref = f"L{id(lines) & 0xffffff:x}"
            self.t.write(f"@label={esc} :{self.server_name} BATCH +{ref} labeled-response\r\n".encode())
            tag = f"batch={ref}"
            for l in lines:
                self.t.write(_add_tag(l, tag))
            self.t.write(f":{self.server_name} BATCH -{ref}\r\n".encode())

    # ------------------------------------------------------------------ registration
    def try_register(self, now: float) -> None:
        if self.user is not None or self.cap_negotiating or not self.nick or not self.ident:
            return
        if self.sasl is not None:  # registration completed mid-SASL: aborted (IRCv3 sasl-3.1)
            self.sasl = None
            self.numeric("906", "SASL authentication aborted")
        net = self.net
        if net.nick_in_use(self.nick):
            self.numeric("433", self.nick, "Nickname is already in use")
            return
        required = self.svc.opts.password
        if required is not None and not hmac.compare_digest((self.password or "").encode(), required.encode()):
            self.numeric("464", "Password incorrect")
            self.quit_and_close("Bad password", now)
            return
        self.svc.registered += 1
        self.user = net.introduce(self, self.nick, self.ident, self.host, self.realname, "irc", now,
                                  account=self.account, ip=self.t.peer_host)
        self.svc.commands.welcome(self, now)

    # SASL (AUTHENTICATE): framing here, the mechanisms in relay.core.sasl. State lives in self.sasl.
    def sasl_mechanisms(self) -> list[str]:
        return offered_mechanisms(self.t.tls, self.t.channel_bindings(), plain_needs_tls=False,
                                  allowed=IRC_SASL_MECHANISMS)

    def sasl_step(self, data: str, now: float) -> None:
        if self.account is not None:
            self.numeric("907", "You have already authenticated using SASL")
            return
        if self.sasl is None:
            mech = data.upper()
            offered = self.sasl_mechanisms()
            if mech not in offered:
                self.numeric("908", ",".join(offered), "are available SASL mechanisms")
                self.numeric("904", "SASL authentication failed")
                return
            self.sasl = _SaslState(SaslServer(mech, self.core.accounts.get, tls=self.t.tls,
                                              bindings=self.t.channel_bindings(), plain_needs_tls=False,
                                              allowed=IRC_SASL_MECHANISMS))
            self.send(b"AUTHENTICATE +\r\n")
            return
        if data == "*":
            self.sasl = None
            self.numeric("906", "SASL authentication aborted")
            return
        st = self.sasl
        if len(data) > 400:
            self.sasl = None
            self.numeric("905", "SASL message too long")
            return
        if data != "+":
            st.buf += data
        if len(data) == 400:
            return  # more chunks follow
        if st.succeeded is not None:  # the client acknowledged the mechanism's final message
            return self._sasl_ok(st.succeeded)
        try:
            payload = base64.b64decode(st.buf, validate=True) if st.buf else b""
        except (binascii.Error, ValueError):
            self._sasl_fail()
            return
        st.buf = ""
        out = st.server.step(payload)
        if type(out) is Challenge:
            self._sasl_send(out.data)
        elif type(out) is Succeeded:
            if out.data is None:
                self._sasl_ok(out.account)
            else:  # SCRAM's server-final: success once the client answers "+"
                st.succeeded = out.account
                self._sasl_send(out.data)
        else:
            self._sasl_fail()

    def _sasl_fail(self) -> None:
        self.sasl = None
        self.numeric("904", "SASL authentication failed")

    def _sasl_ok(self, account: str) -> None:
        self.sasl = None
        self.account = account
        if self.user is not None:  # logged in after registration: update the user, notify (account-notify)
            self.user.account = account
            self.net.update_user(self.user, "account", self.core.now())
        nick = self.nick or "*"
        self.numeric("900", f"{nick}!{self.ident or '*'}@{self.host}", account, f"You are now logged in as {account}")
        self.numeric("903", "SASL authentication successful")

    def _sasl_send(self, msg: bytes) -> None:
        b = base64.b64encode(msg).decode() if msg else "+"
        for i in range(0, len(b), 400):
            self.send(build(None, "AUTHENTICATE", b[i:i + 400]))
        if len(b) % 400 == 0:
            self.send(b"AUTHENTICATE +\r\n")

    # ------------------------------------------------------------------ delivery
    def direct_refusal(self) -> None:
        """Direct messages always reach this member (MemberSession)."""
        return None

    def deliver(self, ev) -> None:
        if self.closed:
            return
        render = _RENDER.get(type(ev))  # an event IRC has no words for is not shown
        data = render(self, ev) if render is not None else None
        if data:
            self.send(data)

    def tags_for(self, ev, source: User | None) -> dict | None:
        return _tags(self.tagbits, ev, source)

    # Channel messages: shared runs (relay.core.fanout). The profile is the tag bits.
    shares_runs = True

    @property
    def profile(self) -> int:
        return self.tagbits

    def run_ready(self) -> bool:
        return not self.closed and self.label_buf is None and not self.t.congested

    @staticmethod
    def render_shared(ev: MessageSent, bits: int) -> bytes | None:
        if bits & T_REDACT and REDACT_TAG not in ev.tags:
            bits ^= T_REDACT                         # the same line as without the capability: one copy
        k = _MKEYS[bits]
        data = ev.cache.get(k)
        if data is None:
            if ev.kind is TAG_ONLY and not bits & T_MSGTAGS:
                return None
            src = ev.source
            if bits & T_REDACT and REDACT_TAG in ev.tags:
                data = ev.cache[k] = redact_line(ev, bits)
            else:
                data = ev.cache[k] = build(src.prefix, IRC_VERB[ev.kind], ev.target.name,
                                           *((ev.text,) if ev.kind is not TAG_ONLY else ()), tags=_tags(bits, ev, src))
        return data

    def _refan(self) -> None:
        """This client's profile or readiness changed: its channels rebuild their fan-out."""
        if self.user is not None:
            for ch in self.user.channels.values():
                ch.fanout = None


_MKEYS = [("m", bits) for bits in range((T_TIME | T_MSGTAGS | T_ACCOUNT | T_REDACT) + 1)]  # cache keys, made once


def redact_line(ev: MessageSent, bits: int) -> bytes:
    """`REDACT <target> <msgid> [:reason]` for a client with draft/message-redaction (not the NOTICE)."""
    reason = ev.tags.get(REDACT_REASON_TAG) or ""
    tags = _tags(bits, ev, ev.source)
    if tags:
        tags.pop(REDACT_TAG, None)
        tags.pop(REDACT_REASON_TAG, None)
    target = ev.target.name if type(ev.target) is Channel else ev.target.nick
    return build(ev.source.prefix, "REDACT", target, ev.tags[REDACT_TAG], *((reason,) if reason else ()),
                 tags=tags or None)


def _tags(bits: int, ev, source: User | None) -> dict | None:
    if not bits:
        return None
    tags = {}
    if bits & T_MSGTAGS and type(ev) is MessageSent:
        tags.update(ev.tags)
        tags["msgid"] = ev.msgid
    if bits & T_TIME:
        tags["time"] = server_time(ev.time)
    if bits & T_ACCOUNT and source is not None and source.account:
        tags["account"] = source.account
    return tags


def _size(msg) -> int:
    params = msg.params
    return len(msg.command) + len(params) + sum(map(len, params))


class _SaslState:
    __slots__ = ("server", "buf", "succeeded")

    def __init__(self, server: SaslServer):
        self.server, self.buf, self.succeeded = server, "", None


def _add_tag(line: bytes, tag: str) -> bytes:
    if line.startswith(b"@"):
        return b"@" + tag.encode() + b";" + line[1:]
    return b"@" + tag.encode() + b" " + line


def _cached(c: IrcClient, ev, key, make) -> bytes:
    k = (key, c.tagbits)
    data = ev.cache.get(k)
    if data is None:
        data = ev.cache[k] = make()
    return data


def _r_message(c: IrcClient, ev: MessageSent) -> bytes | None:
    if ev.kind is TAG_ONLY and not c.tagbits & T_MSGTAGS:
        return None
    src = ev.source
    if type(ev.target) is Channel:
        return IrcClient.render_shared(ev, c.tagbits)
    if c.tagbits & T_REDACT and ev.tags and REDACT_TAG in ev.tags:
        return redact_line(ev, c.tagbits)
    params = (ev.target.nick, ev.text) if ev.kind is not TAG_ONLY else (ev.target.nick,)
    return build(src.prefix, IRC_VERB[ev.kind], *params, tags=c.tags_for(ev, src))


def _batch_tags(c: IrcClient, ev, source: User | None) -> dict | None:
    """The event's tags for this client, plus its batch (a netjoin's) where the client has `batch`."""
    tags = c.tags_for(ev, source)
    if ev.batch and "batch" in c.caps:
        tags = dict(tags or {}, batch=ev.batch.ref)
    return tags


def _r_join(c: IrcClient, ev: MemberJoined) -> bytes:
    u = ev.user
    ext = "extended-join" in c.caps
    batched = bool(ev.batch) and "batch" in c.caps
    data = _cached(c, ev, ("j", ext, batched), lambda: build(
        u.prefix, "JOIN", ev.channel.name, *((u.account or "*", u.realname) if ext else ()),
        tags=_batch_tags(c, ev, u)))
    if u.away and "away-notify" in c.caps and u is not c.user:
        data += build(u.prefix, "AWAY", u.away, tags=_batch_tags(c, ev, u))
    return data


def _r_part(c: IrcClient, ev: MemberLeft) -> bytes:
    u = ev.user
    return _cached(c, ev, "p", lambda: build(u.prefix, "PART", ev.channel.name,
                                             *((ev.reason,) if ev.reason else ()), tags=c.tags_for(ev, u)))


def _r_kick(c: IrcClient, ev: MemberKicked) -> bytes:
    src = ev.source if isinstance(ev.source, User) else None
    return _cached(c, ev, "k", lambda: build(source_prefix(ev.source), "KICK", ev.channel.name, ev.user.nick,
                                             ev.reason, tags=c.tags_for(ev, src)))


def _r_quit(c: IrcClient, ev: UserQuit) -> bytes:
    u = ev.user
    batch = ev.batch.ref if ev.batch and "batch" in c.caps else None

    def make():
        tags = c.tags_for(ev, u)
        if batch:
            tags = dict(tags or {}, batch=batch)
        return build(u.prefix, "QUIT", ev.reason, tags=tags)
    return _cached(c, ev, ("q", batch), make)


def _r_nick(c: IrcClient, ev: NickChanged) -> bytes:
    return _cached(c, ev, "n", lambda: build(ev.old_prefix, "NICK", ev.user.nick, tags=c.tags_for(ev, ev.user)))


def _r_mode(c: IrcClient, ev: ModeChanged) -> bytes:
    src = ev.source if isinstance(ev.source, User) else None
    flags, args = format_changes(ev.changes)
    batched = bool(ev.batch) and "batch" in c.caps
    return _cached(c, ev, ("mo", batched), lambda: build(source_prefix(ev.source), "MODE", ev.channel.name, flags,
                                                         *args, tags=_batch_tags(c, ev, src)))


def _r_topic(c: IrcClient, ev: TopicChanged) -> bytes:
    src = ev.source if isinstance(ev.source, User) else None
    return _cached(c, ev, "t", lambda: build(source_prefix(ev.source), "TOPIC", ev.channel.name, ev.channel.topic,
                                             tags=c.tags_for(ev, src)))


def _r_updated(c: IrcClient, ev: UserUpdated) -> bytes | None:
    u = ev.user
    if ev.what == "away" and "away-notify" in c.caps:
        return _cached(c, ev, "a", lambda: build(u.prefix, "AWAY", *((u.away,) if u.away else ()),
                                                 tags=c.tags_for(ev, u)))
    if ev.what == "account" and "account-notify" in c.caps:
        return _cached(c, ev, "ac", lambda: build(u.prefix, "ACCOUNT", u.account or "*", tags=c.tags_for(ev, u)))
    if ev.what == "realname" and "setname" in c.caps:
        return _cached(c, ev, "sn", lambda: build(u.prefix, "SETNAME", u.realname, tags=c.tags_for(ev, u)))
    return None


def _r_invite(c: IrcClient, ev: UserInvited) -> bytes | None:
    if c.user is ev.source:
        return None
    if c.user is not ev.user and "invite-notify" not in c.caps:
        return None
    return build(ev.source.prefix, "INVITE", ev.user.nick, ev.channel.name, tags=c.tags_for(ev, ev.source))


def _r_oper_notice(c: IrcClient, ev: OperNoticeSent) -> bytes:
    return _cached(c, ev, "on", lambda: build(c.server_name, "NOTICE", "*", f"*** {ev.text}"))


def _r_batch_started(c: IrcClient, ev: BatchStarted) -> bytes | None:
    """BATCH +ref netsplit|netjoin near far (IRCv3 netsplit/netjoin batch types), only with `batch`."""
    if "batch" not in c.caps:
        return None
    b = ev.batch
    return _cached(c, ev, "b+", lambda: build(c.server_name, "BATCH", f"+{b.ref}", b.kind, b.near, b.far))


def _r_batch_ended(c: IrcClient, ev: BatchEnded) -> bytes | None:
    if "batch" not in c.caps:
        return None
    return _cached(c, ev, "b-", lambda: build(c.server_name, "BATCH", f"-{ev.batch.ref}"))


_RENDER = {
    MessageSent: _r_message, MemberJoined: _r_join, MemberLeft: _r_part, MemberKicked: _r_kick,
    UserQuit: _r_quit, NickChanged: _r_nick, ModeChanged: _r_mode, TopicChanged: _r_topic,
    UserUpdated: _r_updated, UserInvited: _r_invite, OperNoticeSent: _r_oper_notice,
    BatchStarted: _r_batch_started, BatchEnded: _r_batch_ended,
}
