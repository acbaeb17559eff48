"""The broker: sessions, subscriptions, retained messages, routing, wills, statistics.

Synchronous and sans-IO like the rest of the core: every entry point takes `now`, the
connection handlers (client.py) feed it decoded packets, and it writes encoded packets
through their transports. One instance per loaded `mqtt` module.

Routing a PUBLISH (`Broker.publish`):

1. a retained message is stored (an empty payload clears the topic);
2. the subscription trie gives every matching subscription; a client with several
   matching subscriptions gets one copy with the highest granted QoS and all its
   subscription identifiers (MQTT 5.0 3.3.4 lets the server choose this);
3. a shared group ($share/GROUP/FILTER) delivers to one member, round robin, preferring
   connected members (see federation.py for the network-wide rule);
4. topics under the channel prefix skip the sessions that are members of the channel:
   those get channel messages through the network's channel path (channels.py), which
   is the only path to members, so nothing is delivered twice;
5. the message is forwarded to the other servers whose subscriptions match (federation).

Delivery to one session (`deliver_to`): QoS 0 goes straight to the connection if it is
online (dropped and counted when its send backlog is past `qos0_backlog`, or when the
session is offline); QoS 1/2 take a packet identifier while fewer than the client's
Receive Maximum are in flight, otherwise they wait in the session's bounded queue.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any

from .codec import PublishTemplate, Pubrel, Will
from relay.core.topics import RetainedStore, TopicTree, parse_shared

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("relay.mod.mqtt")

NEVER = 0xFFFFFFFF  # session expiry interval: the session does not expire
# Properties a broker passes on from publisher to subscribers (MQTT 5.0 3.3.2.3).
FORWARD_PROPS = ("payload_format_indicator", "content_type", "response_topic", "correlation_data",
                 "user_property")


class Message:
    """An application message inside the broker; encoded at most once per (version, QoS)."""

    __slots__ = ("topic", "payload", "qos", "retain", "props", "expires", "origin", "cache")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 props: dict[str, Any] | None = None, expires: float | None = None, origin: str | None = None):
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.props = props or {}
        self.expires = expires
        self.origin = origin
        self.cache: dict = {}

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def remaining(self, now: float) -> int | None:
        if self.expires is None:
            return None
        return max(1, math.ceil(self.expires - now))

    def props_at(self, now: float) -> dict[str, Any]:
        if self.expires is None:
            return self.props
        return {**self.props, "message_expiry_interval": self.remaining(now)}

    def template(self, version: int, qos: int, now: float) -> PublishTemplate:
        key = (version, qos) if self.expires is None else (version, qos, self.remaining(now))
        t = self.cache.get(key)
        if t is None:
            t = self.cache[key] = PublishTemplate(self.topic, self.payload, qos, False, version,
                                                  self.props_at(now) if version == 5 else None)
        return t


class Sub:
    __slots__ = ("filter", "qos", "no_local", "rap", "rh", "sub_id", "group", "real")

    def __init__(self, topic_filter: str, qos: int, no_local: bool = False, rap: bool = False, rh: int = 0,
                 sub_id: int | None = None):
        self.filter, self.qos, self.no_local, self.rap, self.rh, self.sub_id = (
            topic_filter, qos, no_local, rap, rh, sub_id)
        shared = parse_shared(topic_filter)
        self.group, self.real = shared if shared else (None, topic_filter)


class Pending:
    """An outgoing QoS 1/2 message of a session: queued (state 0), PUBLISH sent (1), PUBREL sent (2)."""

    __slots__ = ("msg", "qos", "retain", "sub_ids", "state", "pid", "seq")

    def __init__(self, msg: Message, qos: int, retain: bool, sub_ids, seq: int):
        self.msg, self.qos, self.retain, self.sub_ids, self.seq = msg, qos, retain, sub_ids, seq
        self.state = 0
        self.pid: int | None = None


class SharedGroup:
    __slots__ = ("group", "real", "members", "rr")

    def __init__(self, group: str, real: str):
        self.group, self.real = group, real
        self.members: dict[str, Sub] = {}
        self.rr = 0

    @property
    def name(self) -> str:
        return f"$share/{self.group}/{self.real}"


class Session:
    """MQTT session state; lives across connections when the session expiry allows.

    It is also the network `User`'s session for a member of channels (it renders
    network events: `deliver`), so it answers what the core asks of a session.
    """

    proto = "mqtt"

    def __init__(self, broker: "Broker", cid: str):
        self.broker = broker
        self.cid = cid
        self.version = 4
        self.username: str | None = None
        self.account: str | None = None
        self.ip: str | None = None
        self.expiry = 0
        self.subs: dict[str, Sub] = {}
        self.inflight: dict[int, Pending] = {}
        self.queue: deque[Pending] = deque()
        self.qos2_in: set[int] = set()
        self._pid = 0
        self.seq = itertools.count(1)
        self.client: Client | None = None
        self.user = None
        self.chan_subs: dict[str, str] = {}   # net.fold(channel) -> the filter that joined it
        self.disconnected_at: float | None = None
        self.will: Will | None = None
        self.will_due: float | None = None
        self.overflow_logged = -1e9
        self.refusal_logged = -1e9            # last refused channel publish logged
        self.stored = False                   # has a row in the store

    @property
    def persistent(self) -> bool:
        return self.expiry > 0

    def new_pid(self) -> int:
        inflight = self.inflight
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            if self._pid not in inflight:
                return self._pid
        raise RuntimeError("no free packet identifier")

    # ---- what the core asks of a member's session ----
    @property
    def t(self):
        return self.client.t if self.client is not None else None

    def deliver(self, ev) -> None:
        self.broker.channels.deliver(self, ev)

    def direct_refusal(self) -> str | None:
        """Why a direct message to this member would be dropped (asked by the sender's protocol)."""
        return self.broker.channels.direct_refusal(self)

    def server_closing(self, reason: str, now: float) -> None:
        if self.client is not None:
            self.client.disconnect(0x8B, reason, now, will=False)

    def quit_and_close(self, reason: str, now: float) -> None:
        """KILL by an operator (or a link): QUIT with the reason, disconnect with 0x98."""
        b = self.broker
        if self.user is not None:
            b.channels.quit(self, reason, now)
        if self.client is not None:
            self.client.disconnect(0x98, reason, now)

    def __repr__(self) -> str:
        return f"<Session {self.cid}>"


class Broker:
    def __init__(self, core, opts, store=None, log_=None):
        self.core = core
        self.opts = opts
        self.store = store
        self.log = log_ or log
        self.started = core.now()
        self.sessions: dict[str, Session] = {}
        self.offline: dict[str, Session] = {}      # sessions without a connection (expiry, wills)
        self.clients: dict["Client", None] = {}    # every open connection, CONNECT seen or not
        self.tree = TopicTree()
        self.shared: dict[tuple[str, str], SharedGroup] = {}
        self.retained = RetainedStore()
        self.retained_expiry: list[tuple[float, str]] = []   # heap: retained messages that expire
        self.filter_refs: dict[str, int] = {}      # distinct filters with subscribers here
        self.remote_rr: dict[tuple[str, str], int] = {}
        self.chan_prefix = opts.channel_prefix
        self.receive_maximum = opts.receive_maximum
        self.qos0_backlog = opts.qos0_backlog or core.config.limits.sendq
        self.stats = dict.fromkeys((
            "connections", "messages_received", "messages_sent", "dropped_qos0",
            "dropped_offline", "dropped_overflow", "dropped_too_large", "dropped_expired", "refused_publish",
            "refused_subscribe", "invalid_utf8", "protocol_errors", "auth_failures", "takeovers",
            "wills_published", "keepalive_timeouts", "refused_channel_publish"), 0)
        from .channels import ChannelBridge
        self.channels = ChannelBridge(self)
        self.fed = None          # federation.Federation, set by the module
        self.acl = None          # acl.TopicAcl, set by the module

    # ------------------------------------------------------------------ persistence
    def load(self, now: float) -> None:
        """Restore persistent sessions and retained messages from the store."""
        st = self.store
        if st is None:
            return
        for cid, version, username, expiry, disc in st.sessions():
            s = Session(self, cid)
            s.version, s.username, s.account, s.expiry = version, username, username, expiry
            s.disconnected_at = disc if disc is not None else now
            s.stored = True
            self.sessions[cid] = s
            self.offline[cid] = s
        for cid, filt, qos, nl, rap, rh, sid in st.subs():
            s = self.sessions.get(cid)
            if s is not None:
                self._add_sub(s, Sub(filt, qos, bool(nl), bool(rap), rh, sid), persist=False)
        from .store import props_from_json
        last: dict[str, int] = {}
        for cid, seq, state, pid, topic, payload, qos, retain, props, expires, ids in st.messages():
            s = self.sessions.get(cid)
            if s is None:
                continue
            p = Pending(Message(topic, payload, qos, bool(retain), props_from_json(props), expires), qos,
                        bool(retain), json.loads(ids) if ids else None, seq)
            last[cid] = max(last.get(cid, 0), seq)
            if state and pid:
                p.state, p.pid = state, pid
                s.inflight[pid] = p
                s._pid = max(s._pid, pid)
            else:
                s.queue.append(p)
        for cid, n in last.items():
            self.sessions[cid].seq = itertools.count(n + 1)
        for topic, payload, qos, props, expires in st.retained():
            if expires is not None and expires <= now:
                st.delete_retained(topic)
                continue
            self.retained.set(topic, Message(topic, payload, qos, True, props_from_json(props), expires))
            if expires is not None:
                heapq.heappush(self.retained_expiry, (expires, topic))
        if self.sessions or len(self.retained):
            self.log.info("mqtt: restored %d persistent sessions, %d retained messages",
                          len(self.sessions), len(self.retained))

    def persist_session(self, s: Session) -> None:
        if self.store is None:
            return
        if s.persistent:
            self.store.save_session(s.cid, s.version, s.username, s.expiry, s.disconnected_at)
            if not s.stored:
                s.stored = True
                for sub in s.subs.values():
                    self._store_sub(s, sub)
                for p in list(s.inflight.values()) + list(s.queue):
                    self._store_pending(s, p)
        elif s.stored:
            self.store.delete_session(s.cid)
            s.stored = False

    def _store_sub(self, s: Session, sub: Sub) -> None:
        self.store.save_sub(s.cid, sub.filter, sub.qos, sub.no_local, sub.rap, sub.rh, sub.sub_id)

    def _store_pending(self, s: Session, p: Pending) -> None:
        m = p.msg
        self.store.add_message(s.cid, p.seq, p.state, p.pid, m.topic, m.payload, p.qos, p.retain, m.props,
                               m.expires, p.sub_ids)

    # ------------------------------------------------------------------ sessions
    def new_session(self, cid: str) -> Session:
        s = Session(self, cid)
        self.sessions[cid] = s
        return s

    def end_session(self, s: Session, now: float, reason: str = "Session ended") -> None:
        """Discard a session: its subscriptions, queued messages and stored rows."""
        if s.will is not None:
            self.publish_will(s, now)
        if s.user is not None:
            self.channels.quit(s, reason, now)
        for sub in list(s.subs.values()):
            self._remove_sub(s, sub, persist=False)
        if self.sessions.get(s.cid) is s:
            del self.sessions[s.cid]
        self.offline.pop(s.cid, None)
        if s.stored and self.store is not None:
            self.store.delete_session(s.cid)
            s.stored = False
        s.queue.clear()
        s.inflight.clear()

    def attach(self, s: Session, c: "Client", now: float) -> None:
        s.client = c
        s.disconnected_at = None
        s.will = None          # a new connection before the will delay: no will (MQTT-3.1.3-9)
        s.will_due = None
        self.offline.pop(s.cid, None)

    def detach(self, s: Session, now: float, will: Will | None, keep_user: bool = False,
               reason: str = "Connection closed") -> None:
        """The session's connection is gone; `will` is the will to publish (abnormal close)."""
        s.client = None
        s.disconnected_at = now
        if s.user is not None and not keep_user:
            self.channels.quit(s, reason, now)
        if will is not None:
            delay = will.properties.get("will_delay_interval", 0) if will.properties else 0
            s.will = will
            if delay <= 0 or not s.persistent:
                self.publish_will(s, now)
            else:
                s.will_due = now + min(delay, s.expiry)
        if not s.persistent:
            self.end_session(s, now)
            return
        self.offline[s.cid] = s
        self.persist_session(s)

    def publish_will(self, s: Session, now: float) -> None:
        w, s.will, s.will_due = s.will, None, None
        if w is None:
            return
        props = {k: v for k, v in w.properties.items() if k in FORWARD_PROPS} if w.properties else {}
        exp = w.properties.get("message_expiry_interval") if w.properties else None
        if self.acl is not None and not self.acl.allowed("publish", w.topic, s.username, s.cid, s.account, s.ip):
            self.stats["refused_publish"] += 1
            return
        if w.topic.startswith("$") or self.channels.channel_for(w.topic) is not None:
            # A will cannot speak in a channel: its member has already left.
            return
        self.stats["wills_published"] += 1
        self.publish(Message(w.topic, w.payload, w.qos, w.retain, props,
                             now + exp if exp else None, origin=s.cid), now)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, s: Session, sub: Sub, now: float) -> bool:
        """Add or replace a subscription; True if it is new. Sends retained messages per retain handling."""
        old = s.subs.get(sub.filter)
        self._add_sub(s, sub, persist=True)
        if sub.group is None and (sub.rh == 0 or (sub.rh == 1 and old is None)):
            qos_cap = sub.qos
            ids = [sub.sub_id] if sub.sub_id else None
            for topic, msg in self.retained.match(sub.real):
                if msg.expired(now):
                    self.retained.delete(topic)
                    if self.store is not None and not topic.startswith("$SYS/"):
                        self.store.delete_retained(topic)
                    continue
                q = msg.qos if msg.qos < qos_cap else qos_cap
                self.deliver_to(s, msg, q, True, ids, now)
        return old is None

    def _add_sub(self, s: Session, sub: Sub, persist: bool) -> None:
        old = s.subs.get(sub.filter)
        s.subs[sub.filter] = sub
        if sub.group is None:
            self.tree.subscribe(sub.filter, s.cid, sub)
        else:
            gk = (sub.group, sub.real)
            g = self.shared.get(gk)
            if g is None:
                g = self.shared[gk] = SharedGroup(sub.group, sub.real)
                self.tree.subscribe(sub.real, ("$share", sub.group), g)
            g.members[s.cid] = sub
        if old is None:
            self._ref(sub.filter, 1)
        if persist and s.stored and self.store is not None:
            self._store_sub(s, sub)

    def unsubscribe(self, s: Session, topic_filter: str, now: float) -> bool:
        sub = s.subs.get(topic_filter)
        if sub is None:
            return False
        self._remove_sub(s, sub, persist=True)
        return True

    def _remove_sub(self, s: Session, sub: Sub, persist: bool) -> None:
        del s.subs[sub.filter]
        if sub.group is None:
            self.tree.unsubscribe(sub.filter, s.cid)
        else:
            gk = (sub.group, sub.real)
            g = self.shared.get(gk)
            if g is not None:
                g.members.pop(s.cid, None)
                if not g.members:
                    del self.shared[gk]
                    self.tree.unsubscribe(sub.real, ("$share", sub.group))
        self._ref(sub.filter, -1)
        if persist and s.stored and self.store is not None:
            self.store.delete_sub(s.cid, sub.filter)

    def _ref(self, topic_filter: str, d: int) -> None:
        n = self.filter_refs.get(topic_filter, 0) + d
        if n > 0:
            self.filter_refs[topic_filter] = n
            if n == 1 and d > 0 and self.fed is not None:
                self.fed.filters_changed()
        else:
            self.filter_refs.pop(topic_filter, None)
            if self.fed is not None:
                self.fed.filters_changed()

    # ------------------------------------------------------------------ retained
    def set_retained(self, msg: Message) -> None:
        topic = msg.topic
        persist = self.store is not None and not topic.startswith("$SYS/")
        if not msg.payload:
            if self.retained.delete(topic) and persist:
                self.store.delete_retained(topic)
            return
        kept = Message(topic, msg.payload, msg.qos, True, msg.props, msg.expires, msg.origin)
        self.retained.set(topic, kept)
        if msg.expires is not None:
            heapq.heappush(self.retained_expiry, (msg.expires, topic))
        if persist:
            self.store.set_retained(topic, msg.payload, msg.qos, msg.props, msg.expires)

    # ------------------------------------------------------------------ routing
    def publish(self, msg: Message, now: float, from_server: str | None = None,
                shares: list[str] | None = None) -> int:
        """Route one application message; returns how many local sessions it was given to."""
        topic = msg.topic
        if msg.retain:
            self.set_retained(msg)
        exclude = self.channels.member_cids(topic) if topic.startswith(self.chan_prefix) else None
        targets: dict[str, list] = {}
        groups: list[SharedGroup] = []
        origin = msg.origin
        mq = msg.qos
        for key, sub in self.tree.match(topic):
            if type(key) is not str:
                groups.append(sub)
                continue
            if exclude and key in exclude:
                continue
            if sub.no_local and origin == key:
                continue
            q = sub.qos if sub.qos < mq else mq
            t = targets.get(key)
            if t is None:
                targets[key] = [q, sub.rap, [sub.sub_id] if sub.sub_id else None]
            else:
                if q > t[0]:
                    t[0] = q
                t[1] = t[1] or sub.rap
                if sub.sub_id:
                    t[2] = (t[2] or []) + [sub.sub_id]
        fed = self.fed if self.fed is not None and from_server is None and self.fed.active else None
        remote_shares: dict[str, list[str]] = {}
        shared_to: list[tuple[str, Sub]] = []
        if from_server is None:
            rgroups = fed.shared_candidates(topic) if fed is not None else {}
            for g in groups:
                pick = self._pick_shared(g, rgroups.pop((g.group, g.real), ()), exclude)
                if type(pick) is str:
                    remote_shares.setdefault(pick, []).append(g.name)
                elif pick is not None:
                    shared_to.append(pick)
            for (group, real), sids in rgroups.items():
                gk = (group, real)
                n = self.remote_rr.get(gk, 0)
                self.remote_rr[gk] = n + 1
                sids = sorted(sids)
                remote_shares.setdefault(sids[n % len(sids)], []).append(f"$share/{group}/{real}")
        elif shares:
            mine = set(shares)
            for g in groups:
                if g.name in mine:
                    pick = self._pick_shared(g, (), exclude)
                    if pick is not None and type(pick) is not str:
                        shared_to.append(pick)
        sessions = self.sessions
        retain = msg.retain
        for cid, (q, rap, ids) in targets.items():
            self.deliver_to(sessions[cid], msg, q, retain and rap, ids, now)
        for cid, sub in shared_to:
            q = sub.qos if sub.qos < mq else mq
            self.deliver_to(sessions[cid], msg, q, retain and sub.rap, [sub.sub_id] if sub.sub_id else None, now)
        if fed is not None:
            fed.forward(msg, remote_shares, now)
        return len(targets) + len(shared_to)

    def _pick_shared(self, g: SharedGroup, remote: tuple | list, exclude) -> tuple[str, Sub] | str | None:
        """Round robin over the local members and the remote servers with members; a connected
        local member (or a remote server) is preferred over an offline one. Returns
        (client id, sub) for a local member, a server id for a remote slot, or None."""
        slots: list[tuple[bool, str]] = [(True, cid) for cid in g.members if not (exclude and cid in exclude)]
        slots.extend((False, sid) for sid in sorted(remote))
        n = len(slots)
        if not n:
            return None
        fallback = None
        sessions = self.sessions
        for i in range(n):
            local, k = slots[(g.rr + i) % n]
            if not local:
                g.rr += i + 1
                return k
            s = sessions.get(k)
            if s is None:
                continue
            if s.client is None:
                if fallback is None:
                    fallback = (i, (k, g.members[k]))
                continue
            g.rr += i + 1
            return k, g.members[k]
        if fallback is not None:
            g.rr += fallback[0] + 1
            return fallback[1]
        return None

    def deliver_to(self, s: Session, msg: Message, qos: int, retain: bool, sub_ids, now: float) -> None:
        c = s.client
        if qos == 0:
            if c is None or not c.ready:
                self.stats["dropped_offline"] += 1
                return
            c.send_publish(msg, 0, None, retain, sub_ids, now)
            return
        p = Pending(msg, qos, retain, sub_ids, next(s.seq))
        if c is not None and c.ready and not s.queue and len(s.inflight) < c.peer_receive_max:
            self._send_pending(s, c, p, now, new=True)
            return
        if len(s.queue) >= self.opts.max_queued:
            self.stats["dropped_overflow"] += 1
            if now - s.overflow_logged > 10.0:
                s.overflow_logged = now
                self.log.warning("mqtt: session %s: queue full (%d messages); QoS %d message on %s dropped",
                                 s.cid, len(s.queue), qos, msg.topic)
            return
        s.queue.append(p)
        if s.stored:
            self._store_pending(s, p)

    def _send_pending(self, s: Session, c: "Client", p: Pending, now: float, new: bool) -> None:
        pid = s.new_pid()
        p.pid, p.state = pid, 1
        s.inflight[pid] = p
        sent = c.send_publish(p.msg, p.qos, pid, p.retain, p.sub_ids, now)
        if not sent:
            # Too large for the client: discarded as if delivered (MQTT-3.1.2-25).
            del s.inflight[pid]
            if s.stored and not new:
                self.store.delete_message(s.cid, p.seq)
            return
        if s.stored:
            if new:
                self._store_pending(s, p)
            else:
                self.store.update_message(s.cid, p.seq, 1, pid)

    def pump(self, s: Session, now: float) -> None:
        """Move queued messages in flight while the client's receive maximum allows."""
        c = s.client
        if c is None or not c.ready:
            return
        q = s.queue
        limit = c.peer_receive_max
        while q and len(s.inflight) < limit and s.client is c and not c.closed:
            p = q.popleft()
            if p.msg.expired(now):
                self.stats["dropped_expired"] += 1
                if s.stored:
                    self.store.delete_message(s.cid, p.seq)
                continue
            self._send_pending(s, c, p, now, new=False)

    def resend_inflight(self, s: Session, c: "Client", now: float) -> None:
        """On a resumed session: PUBLISH (DUP) and PUBREL again, with the original packet ids."""
        for pid, p in list(s.inflight.items()):
            if c.closed:
                return
            if p.state == 2:
                c.send(Pubrel(pid))
            elif p.msg.expired(now):
                del s.inflight[pid]
                self.stats["dropped_expired"] += 1
                if s.stored:
                    self.store.delete_message(s.cid, p.seq)
            elif not c.send_publish(p.msg, p.qos, pid, p.retain, p.sub_ids, now, dup=True):
                del s.inflight[pid]
                if s.stored:
                    self.store.delete_message(s.cid, p.seq)

    def acked(self, s: Session, pid: int, now: float) -> bool:
        """PUBACK / PUBCOMP (or a PUBREC refusal): the message is done."""
        p = s.inflight.pop(pid, None)
        if p is None:
            return False
        if s.stored:
            self.store.delete_message(s.cid, p.seq)
        self.pump(s, now)
        return True

    def released(self, s: Session, pid: int) -> bool:
        """PUBREC accepted: PUBREL goes out, PUBCOMP is awaited."""
        p = s.inflight.get(pid)
        if p is None or p.qos != 2:
            return False
        p.state = 2
        if s.stored:
            self.store.update_message(s.cid, p.seq, 2, pid)
        return True

    # ------------------------------------------------------------------ timers
    def sweep(self, now: float) -> None:
        """The one periodic check: connect timeouts, keep-alives, will delays, session expiry."""
        for c in list(self.clients):
            c.check(now)
        heap = self.retained_expiry
        while heap and heap[0][0] <= now:
            _, topic = heapq.heappop(heap)
            msg = self.retained.get(topic)
            if msg is not None and msg.expired(now):
                self.retained.delete(topic)
                if self.store is not None and not topic.startswith("$SYS/"):
                    self.store.delete_retained(topic)
        for s in list(self.offline.values()):
            if s.will_due is not None and now >= s.will_due:
                self.publish_will(s, now)
            if s.expiry != NEVER and s.disconnected_at is not None and now >= s.disconnected_at + s.expiry:
                self.log.info("mqtt: session %s expired", s.cid)
                self.end_session(s, now, "Session expired")

    def sys_values(self, now: float) -> dict[str, str]:
        st = self.stats
        connected = sum(1 for c in self.clients if c.session is not None)
        from relay import __version__
        return {
            "$SYS/broker/version": f"relaynet {__version__}",
            "$SYS/broker/uptime": f"{int(now - self.started)} seconds",
            "$SYS/broker/clients/connected": str(connected),
            "$SYS/broker/clients/disconnected": str(len(self.offline)),
            "$SYS/broker/clients/total": str(len(self.sessions)),
            "$SYS/broker/messages/received": str(st["messages_received"]),
            "$SYS/broker/messages/sent": str(st["messages_sent"]),
            "$SYS/broker/messages/dropped": str(st["dropped_qos0"] + st["dropped_overflow"] + st["dropped_offline"]
                                                + st["dropped_too_large"] + st["dropped_expired"]),
            "$SYS/broker/messages/stored": str(sum(len(s.queue) + len(s.inflight) for s in self.sessions.values())),
            "$SYS/broker/subscriptions/count": str(sum(len(s.subs) for s in self.sessions.values())),
            "$SYS/broker/retained messages/count": str(len(self.retained)),
        }

    def publish_sys(self, now: float) -> None:
        for topic, value in self.sys_values(now).items():
            old = self.retained.get(topic)
            if old is not None and old.payload == value.encode() and topic != "$SYS/broker/uptime":
                continue
            self.publish(Message(topic, value.encode(), 0, True), now)

    def status(self, now: float) -> dict:
        return {"sessions": len(self.sessions), "connected": sum(1 for c in self.clients if c.session is not None),
                "offline": len(self.offline), "subscriptions": sum(len(s.subs) for s in self.sessions.values()),
                "retained": len(self.retained), "uptime": int(now - self.started), **self.stats}

    def close_all(self, reason: str, now: float) -> None:
        for c in list(self.clients):
            c.disconnect(0x8B, reason, now, will=False)
