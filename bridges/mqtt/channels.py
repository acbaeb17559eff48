"""Channels as MQTT topics: `<channel_prefix>NAME` (default `chan/NAME`) is channel `#NAME`.

Membership. An authenticated client that subscribes to exactly `chan/NAME` becomes a
network member: it is introduced once per session (`core.net.introduce`, nick from its
user name, host `mqtt.<server name>`, so WHOIS shows the protocol) and joins `#NAME`
(bans, invite-only, keys and limits apply: a refusal is SUBACK 0x87 / 0x80). Its
UNSUBSCRIBE is a PART and its disconnect a QUIT; a resumed persistent session joins
again. Anonymous clients and wildcard filters (`chan/+`, `chan/#`) are plain
subscribers of the topic tree.

Speaking. A PUBLISH on `chan/NAME` by a member is `core.net.message(user, #NAME,
MESSAGE, text)`: the payload must be UTF-8 (else 5.0: 0x99, 3.1.1: dropped and
counted) and the member must be allowed to speak (+m, bans). A non-member may not publish
there, like IRC's +n. A refused publish is counted (`refused_channel_publish` in `mqtt
stats`), logged at info (at most every 10 s per session) and, at QoS 1/2, acked 0x87 with
a 5.0 reason string that says why ("subscribe to chan/NAME to be a member of #NAME").

The one-path rule (no double delivery). Each channel message reaches each MQTT
subscriber exactly once:

* members receive channel messages **only** through the network's channel path: their
  session's `deliver(ev)` renders `MessageSent` (payload = text, 5.0 user property
  `nick`), whatever protocol the message came from;
* the topic tree (and MQTT federation) carries channel topics **only to non-members**:
  `Broker.publish` skips the sessions that are members of the channel;
* a message enters the topic tree once, at its origin server: an MQTT member's PUBLISH
  is routed to non-members after `net.message`; a message from any other protocol is
  injected by the tap here, on the core's `local_channel_message` hook (after filter_packet,
  so it sees the final text; only for this server's own users). Messages arriving over
  server links were injected by their origin server and forwarded with MQTT_PUB.

An MQTT member that publishes gets its own message back (through the channel path, like
any MQTT broker) unless its subscription has No Local.

Direct messages to a member (`MessageSent` whose target is its user) are delivered on
`<direct_prefix><username>/inbox` (default `users/<username>/inbox`) when the session
has a subscription matching that topic, at that subscription's QoS. Without one the message
is not dropped silently: an IRC sender on this server is told by a server NOTICE ("*** Message
to carol not delivered: ..."), a sender on another server by a NOTICE from the member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.core.model import MESSAGE, NOTICE, TAG_ONLY, Channel, MessageSent
from relay.core.members import BridgedMembers
from relay.core.network import JoinRefused
from relay.proto.irc import valid_channel

from relay.core.topic_acl import topic_matches
from .session import Message, Session
from relay.core.topics import valid_topic_name

if TYPE_CHECKING:
    from .session import Sub



class ChannelBridge:
    def __init__(self, broker: Any):
        """`broker` is the broker.Broker that owns this bridge (broker.py imports this module)."""
        self.b = broker
        self.core = broker.core
        self.net = broker.core.net
        opts = broker.opts
        self.prefix = opts.channel_prefix
        self.direct_prefix = opts.direct_prefix
        self.members = BridgedMembers(self.net, "mqtt", self.core.config)
        self.host = self.members.host
        self.me = self.core.config.server.id
        # (user, message) while an MQTT member's PUBLISH goes through net.message: its QoS caps the copies.
        self.current: tuple | None = None
        self._quitting = False

    # ------------------------------------------------------------------ names
    def channel_for(self, topic: str) -> str | None:
        """'#NAME' for a topic (or exact filter) 'chan/NAME'; None otherwise."""
        if not self.prefix or not topic.startswith(self.prefix):
            return None
        name = topic[len(self.prefix):]
        if not name or "/" in name or "+" in name or "#" in name:
            return None
        ch = "#" + name
        return ch if valid_channel(ch, self.core.config.network.channellen) else None

    def member_cids(self, topic: str) -> set[str] | None:
        name = self.channel_for(topic)
        if name is None:
            return None
        ch = self.net.find_channel(name)
        if ch is None:
            return None
        out = {u.session.cid for u in ch.local if type(u.session) is Session}
        return out or None

    def direct_topic(self, username: str) -> str:
        return f"{self.direct_prefix}{username}/inbox"

    def make_nick(self, username: str | None) -> str:
        return self.members.unique_nick(username, fallback="mqtt")

    # ------------------------------------------------------------------ membership
    def ensure_user(self, s: Session, now: float):
        if s.user is None:
            username = s.username or s.cid
            s.user = self.members.introduce(s, username, now, account=s.account, ip=s.ip,
                                            realname=f"MQTT client {s.cid}", attrs={"client_id": s.cid})
        return s.user

    def _join(self, u, name: str, now: float) -> int:
        if self.net.fold(name) in u.channels:
            return 0
        try:
            self.net.check_join(u, name, None)
        except JoinRefused:
            return 0x87
        self.net.join(u, name, now)
        return 0

    def subscribe(self, s: Session, sub: "Sub", now: float) -> int:
        """A SUBSCRIBE on a channel topic by an authenticated client joins the channel; returns a reason code."""
        if sub.group is not None or s.account is None:
            return 0
        name = self.channel_for(sub.filter)
        if name is None:
            return 0
        key = self.net.fold(name)
        if key in s.chan_subs and s.user is not None and key in s.user.channels:
            return 0
        u = self.ensure_user(s, now)
        rc = self._join(u, name, now)
        if rc == 0:
            s.chan_subs[key] = sub.filter
        return rc

    def unsubscribed(self, s: Session, topic_filter: str, now: float) -> None:
        name = self.channel_for(topic_filter)
        if name is None:
            return
        key = self.net.fold(name)
        if s.chan_subs.get(key) != topic_filter:
            return
        del s.chan_subs[key]
        u = s.user
        if u is not None:
            ch = u.channels.get(key)
            if ch is not None:
                self.net.part(u, ch, "Unsubscribed", now)

    def resume(self, s: Session, now: float) -> None:
        """A resumed session joins the channels of its subscriptions again."""
        if s.account is None:
            return
        if not s.chan_subs:
            for f, sub in s.subs.items():
                name = self.channel_for(f) if sub.group is None else None
                if name is not None:
                    s.chan_subs.setdefault(self.net.fold(name), f)
        if not s.chan_subs:
            return
        u = self.ensure_user(s, now)
        for key, f in list(s.chan_subs.items()):
            if self._join(u, "#" + f[len(self.prefix):], now):
                del s.chan_subs[key]

    def quit(self, s: Session, reason: str, now: float) -> None:
        u, s.user = s.user, None
        if u is None:
            return
        self._quitting = True
        try:
            self.net.quit(u, reason, now)
        finally:
            self._quitting = False

    def on_member_left(self, user, ch: Channel, reason: str) -> None:
        """KICK (or any removal we did not ask for): the subscription stays, as a plain one."""
        s = user.session
        if self._quitting or type(s) is not Session or s.broker is not self.b:
            return
        s.chan_subs.pop(ch.key_name, None)

    # ------------------------------------------------------------------ speaking
    def route(self, s: Session, msg: Message, now: float) -> tuple[int, str]:
        """A client's PUBLISH (already allowed by the ACL): a channel message or a plain publish.
        Returns the reason code and, for a refusal, why (the 5.0 ack's reason string)."""
        b = self.b
        name = self.channel_for(msg.topic)
        if name is None:
            b.publish(msg, now)
            return 0, ""
        u = s.user
        ch = self.net.find_channel(name)
        if u is None or ch is None or u not in ch.members:
            if s.account is None:
                why = (f"anonymous clients cannot speak in {name}: connect with a username and password "
                       f"and subscribe to {msg.topic} to be a member")
            else:
                why = f"subscribe to {msg.topic} to be a member of {name}"
            return self.refused(s, msg.topic, why, now)
        try:
            text = msg.payload.decode("utf-8")
        except UnicodeDecodeError:
            b.stats["invalid_utf8"] += 1
            return 0x99, "a channel message must be UTF-8 text"
        if "\0" in text:
            b.stats["invalid_utf8"] += 1
            return 0x99, "a channel message must not contain NUL"
        text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
        if not self.net.may_speak(ch, u):
            if "m" in ch.modes and not ch.members[u]:
                why = f"{name} is moderated (+m): only members with voice or ops may speak"
            else:
                why = f"you are banned from {name}"
            return self.refused(s, msg.topic, why, now)
        u.last_active = now
        self.current = (u, msg)
        try:
            ev = self.net.message(u, ch, MESSAGE, text, now)
            if ev is None:
                return 0          # dropped by a filter: accepted, delivered nowhere (as for IRC)
            sub = s.subs.get(s.chan_subs.get(ch.key_name, ""))
            if sub is not None and not sub.no_local:
                self.deliver(s, ev)
        finally:
            self.current = None
        if ev.text != text:
            msg = Message(msg.topic, ev.text.encode(), msg.qos, msg.retain, msg.props, msg.expires, msg.origin)
        b.publish(msg, now)       # non-member subscribers, here and on other servers
        return 0, ""

    def refused(self, s: Session, topic: str, why: str, now: float) -> tuple[int, str]:
        """A channel publish the client may not make: counted always, logged at most every 10 s per
        session (a client that floods at QoS 0 gets no ack, and must not flood the log either)."""
        self.b.stats["refused_channel_publish"] += 1
        if now - s.refusal_logged >= 10.0:
            s.refusal_logged = now
            self.b.log.info("mqtt: channel publish on %s refused for client %s (user %s): %s",
                            topic, s.cid, s.username or "anonymous", why)
        return 0x87, why

    def tap(self, ev):
        """local_channel_message (after filter_packet, so it sees the final text): channel messages of
        this server's non-MQTT users enter the topic tree, for its subscribers that are not members."""
        src = ev.source
        if src.proto == "mqtt" or ev.kind is TAG_ONLY:
            return None
        b = self.b
        # No subscriber on any server: nothing to publish (the common case of a plain IRC network).
        if not b.filter_refs and (b.fed is None or not b.fed.remote_subscribers):
            return None
        topic = self.prefix + ev.target.name[1:]
        if not valid_topic_name(topic):
            return None
        b.publish(Message(topic, ev.text.encode("utf-8", "replace"), 2, False, _text_props(src.nick)), ev.time)
        return None

    def direct_refusal(self, s: Session) -> str | None:
        """Why a direct message to member `s` would be dropped: no subscription to its inbox topic."""
        topic = self.direct_topic(s.username or s.cid)
        if s.username and any(sub.group is None and topic_matches(sub.filter, topic) for sub in s.subs.values()):
            return None
        nick = s.user.nick if s.user is not None else s.cid
        return (f"{nick} is an MQTT client that receives direct messages only on {topic}, "
                "and it has not subscribed to it")

    def deliver(self, s: Session, ev) -> None:
        """A network event for a member: channel and direct messages become PUBLISHes."""
        if type(ev) is not MessageSent or ev.kind is TAG_ONLY or s.client is None:
            return
        t = ev.target
        ids = None
        if type(t) is Channel:
            f = s.chan_subs.get(t.key_name)
            sub = s.subs.get(f) if f is not None else None
            if sub is None:
                return
            qos = sub.qos
            cur = self.current
            if cur is not None and cur[0] is ev.source and cur[1].qos < qos:
                qos = cur[1].qos
            topic = f
            if sub.sub_id:
                ids = [sub.sub_id]
        elif t is s.user and s.username:
            topic = self.direct_topic(s.username)
            qos = -1
            for sub in s.subs.values():
                if sub.group is None and topic_matches(sub.filter, topic):
                    qos = max(qos, sub.qos)
                    if sub.sub_id:
                        ids = (ids or []) + [sub.sub_id]
            if qos < 0:
                self._undelivered(s, ev)
                return
        else:
            return
        key = ("mqtt", topic)
        msg = ev.cache.get(key)
        if msg is None:
            msg = ev.cache[key] = Message(topic, ev.text.encode("utf-8", "replace"), 2, False,
                                          _text_props(ev.source.nick))
        self.b.deliver_to(s, msg, qos, False, ids, self.core.now())

    def _undelivered(self, s: Session, ev) -> None:
        """A direct PRIVMSG the member has no inbox subscription for. A local sender's protocol asked
        first (direct_refusal) and told its user; a remote sender gets an automatic NOTICE from the
        member (the network has no server-to-user notice frame), never for a NOTICE (no reply loops)."""
        src = ev.source
        if ev.kind is not MESSAGE or src.server == self.me or s.user is None:
            return
        self.net.message(s.user, src, NOTICE, f"*** Message to {s.user.nick} not delivered: "
                         f"{self.direct_refusal(s)}", self.core.now())


def _text_props(nick: str) -> dict:
    return {"payload_format_indicator": 1, "user_property": [("nick", nick)]}
