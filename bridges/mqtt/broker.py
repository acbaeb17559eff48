"""The broker: sessions, subscriptions, retained messages, routing, wills, statistics.

Synchronous and sans-IO like the rest of the core: every entry point takes `now`, the
connection handlers (client.py) feed it decoded packets, and it writes encoded packets
through their transports. One instance per loaded `mqtt` module.

MQTT is a protocol on the network's topic service (relay/core/topic_service.py): a
PUBLISH is a published item (`Broker.publish`), and every session is a subscriber.
The service keeps the retained item (an empty payload clears the topic), matches the
subscriptions, picks the member of a shared group ($share/GROUP/FILTER, round robin,
network-wide, preferring connected members) and forwards to the other servers whose
subscriptions match. What stays here is MQTT's:

1. a session matching through several subscriptions gets one copy with the highest
   granted QoS and all its subscription identifiers (`deliver_matches`; MQTT 5.0 3.3.4);
2. topics under the channel prefix skip the sessions that are members of the channel
   (`Session.accepts`): those get channel messages through the network's channel path
   (channels.py), which is the only path to members, so nothing is delivered twice;
3. no-local, retain-as-published, QoS, queues and sessions.

Delivery to one session (`deliver_to`): QoS 0 goes straight to the connection if it is
online (dropped and counted when its send backlog is past `qos0_backlog`, or when the
session is offline); QoS 1/2 take a packet identifier while fewer than the client's
Receive Maximum are in flight, otherwise they wait in the session's bounded queue.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

from .channels import ChannelBridge
from .codec import Pubrel, Will
from .session import _UNSET, FORWARD_PROPS, NEVER, Message, Pending, Session, Sub
from .store import props_from_json

__all__ = ["Broker", "FORWARD_PROPS", "NEVER", "Message", "Session", "Sub"]

log = logging.getLogger("relay.mod.mqtt")


class Broker:
    def __init__(self, core, opts, store=None, log_=None):
        self.core = core
        self.opts = opts
        self.store = store
        self.log = log_ or log
        self.started = core.now()
        self.sessions: dict[str, Session] = {}
        self.offline: dict[str, Session] = {}      # sessions without a connection (expiry, wills)
        self.clients: dict[Any, None] = {}         # every open connection (client.Client), CONNECT seen or not
        # The network's topic service: matching, shared groups, retained items, federation, topic ACL.
        self.topics = core.services["topics"]
        self.chan_prefix = opts.channel_prefix
        self.receive_maximum = opts.receive_maximum
        self.qos0_backlog = opts.qos0_backlog or core.config.limits.sendq
        self.stats = dict.fromkeys((
            "connections", "messages_received", "messages_sent", "dropped_qos0",
            "dropped_offline", "dropped_overflow", "dropped_too_large", "dropped_expired", "refused_publish",
            "refused_subscribe", "invalid_utf8", "protocol_errors", "auth_failures", "takeovers",
            "wills_published", "keepalive_timeouts", "refused_channel_publish"), 0)
        self.channels = ChannelBridge(self)
        self.fed = None          # the topic service's federation, when the module federates

    @property
    def retained(self):
        return self.topics.retained

    @property
    def filter_refs(self) -> dict[str, int]:
        return self.topics.filter_refs

    @property
    def acl(self):
        return self.topics.acl

    @acl.setter
    def acl(self, acl) -> None:
        self.topics.acl = acl

    def detach_topics(self) -> None:
        """The module unloads: its sessions stop subscribing, the store stops keeping retained items."""
        for s in self.sessions.values():
            for sub in list(s.subs.values()):
                self.topics.unsubscribe(sub.filter, s)
        if getattr(self.topics.persistence, "store", None) is self.store and self.store is not None:
            self.topics.persistence = None

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
            if not self.topics.restore_retained(Message(topic, payload, qos, True, props_from_json(props), expires),
                                                now):
                st.delete_retained(topic)
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

    def attach(self, s: Session, c, now: float) -> None:
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
        if not self.topics.may_publish(w.topic, s.username, s.cid, s.account, s.ip):
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
            for topic, msg in self.topics.retained_matching(sub.real, now):
                q = msg.qos if msg.qos < qos_cap else qos_cap
                self.deliver_to(s, msg, q, True, ids, now)
        return old is None

    def _add_sub(self, s: Session, sub: Sub, persist: bool) -> None:
        s.subs[sub.filter] = sub
        self.topics.subscribe(sub.filter, s, sub)
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
        self.topics.unsubscribe(sub.filter, s)
        if persist and s.stored and self.store is not None:
            self.store.delete_sub(s.cid, sub.filter)

    # ------------------------------------------------------------------ retained
    def set_retained(self, msg: Message) -> None:
        self.topics.set_retained(msg)

    # ------------------------------------------------------------------ routing
    def publish(self, msg: Message, now: float, from_server: str | None = None,
                shares: list[str] | None = None) -> int:
        """Route one application message through the topic service (here, and the servers that need it);
        our sessions get it back as subscribers (`deliver_matches`)."""
        return self.topics.publish(msg, now, origin=from_server, shares=shares)

    def deliver_matches(self, s: Session, item, subs: list, now: float) -> None:
        """An item for one session matching through `subs`: one copy with the highest granted QoS and
        every subscription identifier (MQTT 5.0 3.3.4 lets the server choose this)."""
        ex = item.cache.get("mqtt.members", _UNSET)     # Session.accepts, inlined: once per recipient
        if ex is _UNSET:
            ex = s.members_of(item)
        if ex and s.cid in ex:
            return
        origin = item.publisher
        mq = item.qos
        if len(subs) == 1:      # the common case, kept short: this runs once per recipient
            sub = subs[0]
            if sub.no_local and origin == s.cid:
                return
            q = sub.qos if sub.qos < mq else mq
            if q == 0 and type(item) is Message:     # deliver_to's QoS 0 branch, inlined
                c = s.client
                if c is None or not c.ready:
                    self.stats["dropped_offline"] += 1
                    return
                c.send_publish(item, 0, None, item.retain and sub.rap, [sub.sub_id] if sub.sub_id else None, now)
                return
            self.deliver_to(s, item, q, item.retain and sub.rap, [sub.sub_id] if sub.sub_id else None, now)
            return
        q = -1
        rap = False
        ids = None
        for sub in subs:
            if sub.no_local and origin == s.cid:
                continue
            g = sub.qos if sub.qos < mq else mq
            if g > q:
                q = g
            rap = rap or sub.rap
            if sub.sub_id:
                ids = (ids or []) + [sub.sub_id]
        if q < 0:
            return
        self.deliver_to(s, item, q, item.retain and rap, ids, now)

    def deliver_to(self, s: Session, msg: Message, qos: int, retain: bool, sub_ids, now: float) -> None:
        if type(msg) is not Message:
            msg = Message.of(msg)
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

    def _send_pending(self, s: Session, c, p: Pending, now: float, new: bool) -> None:
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

    def resend_inflight(self, s: Session, c, now: float) -> None:
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
        self.topics.expire_retained(now)
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
