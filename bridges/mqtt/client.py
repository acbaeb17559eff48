"""One MQTT network connection (TCP, or WebSocket through the `http` listener): packets in, broker calls out.

The runtime gives the handler `data_received(data, now)`, `connection_lost(reason, now)`
and `send_queue_full(now)`; the handler writes through its transport (`write`, `close`,
`backlog`). Protocol violations close the connection with the reason code the codec
names (an MQTT 5.0 client first gets a DISCONNECT, or a CONNACK before the session
exists); the server is never affected.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from relay.core.accounts import check_password

from .session import FORWARD_PROPS, NEVER, Message, Session, Sub
from .codec import (Connack, Connect, Disconnect, MqttConnection, MqttError, Pingreq, Pingresp, Puback, Pubcomp,
                    Publish, PublishTemplate, Pubrec, Pubrel, Suback, Subscribe, Unsuback, Unsubscribe, Auth)

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("relay.mod.mqtt")

_RC_CONNACK_OK = frozenset({0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
                            0x97, 0x99, 0x9A, 0x9B})
_RC_DISCONNECT_OK = frozenset({0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
                               0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2})


class Client:
    proto = "mqtt"

    def __init__(self, broker: "Broker", transport, now: float):
        self.broker = broker
        self.t = transport
        opts = broker.opts
        self.codec = MqttConnection(server_side=True, max_packet_size=opts.max_packet_size)
        self.session: Session | None = None
        self.version = 4
        self.ready = False            # CONNACK sent
        self.closed = False
        self.connected_at = now
        self.last_rx = now
        self.keepalive = 0
        self.peer_receive_max = opts.max_inflight
        self.peer_max_packet: int | None = None
        self.alias_max = 0
        self.aliases: dict[str, int] = {}
        self.will = None
        self.clean_exit = False
        self.peer = f"{transport.peer_host}:{getattr(transport, 'peer_port', 0)}"
        broker.clients[self] = None
        broker.stats["connections"] += 1

    def __repr__(self) -> str:
        return f"<mqtt Client {self.session.cid if self.session else '?'} {self.peer}>"

    # ------------------------------------------------------------------ output
    def send(self, packet) -> None:
        if self.closed:
            return
        try:
            data = self.codec.send(packet)
        except MqttError:
            return  # larger than the client's maximum packet size: not sent (MQTT-3.1.2-24)
        if data:
            self.t.write(data)

    def send_publish(self, msg: Message, qos: int, pid: int | None, retain: bool, sub_ids, now: float,
                     dup: bool = False) -> bool:
        """Encode (once per version/QoS, see Message.template) and write; False if not sent."""
        if self.closed:
            return False
        b = self.broker
        v = self.version
        if not qos and not sub_ids and not dup and not (self.alias_max and v == 5):
            # QoS 0 fan-out: the one packet every subscriber of this version gets.
            data = msg.template(v, 0, now).encode(None, retain=True if retain else None)
            if self.peer_max_packet is not None and len(data) > self.peer_max_packet:
                b.stats["dropped_too_large"] += 1
                return False
            t = self.t
            if t.backlog + len(data) > b.qos0_backlog:
                b.stats["dropped_qos0"] += 1
                return False
            b.stats["messages_sent"] += 1
            t.write(data)
            return True
        new_alias = None
        if self.alias_max and v == 5:
            alias = self.aliases.get(msg.topic)
            topic = msg.topic
            if alias is not None:
                topic = ""
            elif len(self.aliases) < self.alias_max:
                alias = new_alias = len(self.aliases) + 1
            if alias is not None:
                props = {**msg.props_at(now), "topic_alias": alias}
                data = PublishTemplate(topic, msg.payload, qos, retain, 5, props, dup).encode(
                    pid, subscription_ids=sub_ids or ())
            else:
                data = None
        else:
            data = None
        if data is None:
            if dup:
                t = PublishTemplate(msg.topic, msg.payload, qos, False, v, msg.props_at(now) if v == 5 else None,
                                    dup=True)
            else:
                t = msg.template(v, qos, now)
            data = t.encode(pid, retain=True if retain else None,
                            subscription_ids=sub_ids if (sub_ids and v == 5) else ())
        if self.peer_max_packet is not None and len(data) > self.peer_max_packet:
            b.stats["dropped_too_large"] += 1
            return False
        if qos == 0 and getattr(self.t, "backlog", 0) + len(data) > b.qos0_backlog:
            # A reader that cannot keep up: QoS 0 is shed (counted), never queued past the limit.
            b.stats["dropped_qos0"] += 1
            return False
        if new_alias is not None:
            self.aliases[msg.topic] = new_alias
        b.stats["messages_sent"] += 1
        self.t.write(data)
        return True

    # ------------------------------------------------------------------ input
    def data_received(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self.last_rx = now
        try:
            packets = self.codec.receive_data(data)
        except MqttError as e:
            for p in e.packets:
                if self.closed:
                    return
                self.handle(p, now)
            if not self.closed:
                self.protocol_error(e, now)
            return
        for p in packets:
            if self.closed:
                return
            self.handle(p, now)

    def handle(self, p, now: float) -> None:
        h = _HANDLERS.get(type(p))
        if h is None:
            return
        if type(p) is not Connect and self.session is None:
            return
        h(self, p, now)

    def protocol_error(self, e: MqttError, now: float) -> None:
        b = self.broker
        b.stats["protocol_errors"] += 1
        rc = e.reason_code
        log.info("mqtt %s (%s): %s", self.peer, self.session.cid if self.session else "-", e)
        if not self.ready:
            # Before the session exists: a 5.0 client may get a CONNACK with the reason;
            # an unsupported protocol level gets the 3.1.1 "unacceptable protocol version".
            if rc == 0x84 or self.codec.version == 5:
                try:
                    data = self.codec.send(Connack(reason_code=rc if rc in _RC_CONNACK_OK else 0x80))
                    self.t.write(data)
                except (MqttError, ValueError):
                    pass
            self._close(f"Protocol error: {e.message}", now, will=False)
            return
        self.disconnect(rc if rc in _RC_DISCONNECT_OK else 0x81, f"Protocol error: {e.message}", now)

    def disconnect(self, rc: int, reason: str, now: float, will: bool = True, keep_user: bool = False) -> None:
        """Server-initiated close: DISCONNECT with `rc` for 5.0 clients (3.1.1 has none), then close."""
        if self.closed:
            return
        if self.ready and self.version == 5:
            props = {"reason_string": reason[:200]} if reason else {}
            try:
                data = self.codec.send(Disconnect(rc, props))
            except (MqttError, ValueError):
                data = self.codec.send(Disconnect(rc))
            self.t.write(data)
        self._close(reason, now, will=will, keep_user=keep_user)

    def _close(self, reason: str, now: float, will: bool, keep_user: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.broker.clients.pop(self, None)
        self.t.close(reason)
        self._gone(now, will, keep_user, reason)

    def _gone(self, now: float, will: bool, keep_user: bool, reason: str) -> None:
        s = self.session
        if s is None or s.client is not self:
            return
        self.broker.detach(s, now, self.will if will else None, keep_user=keep_user, reason=reason)

    def connection_lost(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self.broker.clients.pop(self, None)
        self._gone(now, not self.clean_exit, False, reason or "Connection closed")

    def send_queue_full(self, now: float) -> None:
        # QoS 0 is dropped before this point (qos0_backlog); QoS 1/2 are bounded by the client's
        # receive maximum. Past twice the sendq the client is not reading at all: drop it.
        if getattr(self.t, "backlog", 0) > 2 * self.broker.core.config.limits.sendq:
            self.disconnect(0x97, "SendQ exceeded", now)

    def check(self, now: float) -> None:
        """Called by the broker's sweep timer."""
        if self.closed:
            return
        if self.session is None:
            if now - self.connected_at > self.broker.opts.connect_timeout:
                self._close("Connect timeout", now, will=False)
            return
        if self.keepalive and now - self.last_rx > 1.5 * self.keepalive:
            self.broker.stats["keepalive_timeouts"] += 1
            self.disconnect(0x8D, "Keep alive timeout", now)

    # ------------------------------------------------------------------ CONNECT
    def refuse(self, rc: int, reason: str, now: float) -> None:
        self.broker.stats["auth_failures" if rc in (0x86, 0x87) else "protocol_errors"] += 1
        log.info("mqtt %s: connection refused (0x%02X): %s", self.peer, rc, reason)
        props = {"reason_string": reason} if self.version == 5 else {}
        self.t.write(self.codec.send(Connack(False, rc, props)))
        self._close(reason, now, will=False)

    def on_connect(self, p: Connect, now: float) -> None:
        b = self.broker
        opts = b.opts
        core = b.core
        v5 = p.protocol_level == 5
        self.version = 5 if v5 else 4
        if p.protocol_level == 3:
            return self.refuse(0x84, "MQTT 3.1 is not supported; use 3.1.1 or 5.0", now)
        props = p.properties
        if v5 and "authentication_method" in props:
            return self.refuse(0x8C, "enhanced authentication is not supported", now)
        account = None
        if p.username is not None:
            acct = core.accounts.get(p.username) if p.username else None
            try:
                password = (p.password or b"").decode("utf-8")
            except UnicodeDecodeError:
                password = None
            if acct is None or p.password is None or password is None or not check_password(acct, password):
                return self.refuse(0x86, "bad user name or password", now)
            account = acct.name
        elif p.password is not None:
            return self.refuse(0x86, "password without a user name", now)
        elif not opts.allow_anonymous:
            return self.refuse(0x87, "anonymous clients are not allowed", now)
        cid = p.client_id
        assigned = None
        if not cid:
            if not v5 and not p.clean_start:
                return self.refuse(0x85, "an empty client identifier needs a clean session", now)
            cid = assigned = "auto-" + secrets.token_hex(8)
        if v5:
            expiry = props.get("session_expiry_interval", 0)
        else:
            expiry = 0 if p.clean_start else NEVER
        granted_expiry = min(expiry, opts.max_session_expiry)
        old = b.sessions.get(cid)
        if old is not None and old.account is not None and old.account != account:
            return self.refuse(0x87, "this client identifier belongs to another account", now)
        keep_user = False
        if old is not None and old.client is not None:
            b.stats["takeovers"] += 1
            keep_user = not p.clean_start and old.persistent
            old.client.disconnect(0x8E, "Session taken over", now, keep_user=keep_user)
            old = b.sessions.get(cid)
        present = False
        if old is not None and p.clean_start:
            b.end_session(old, now, "Session replaced")
            old = None
        if old is not None:
            s, present = old, True
        else:
            s = b.new_session(cid)
        if s.user is not None and not keep_user:
            b.channels.quit(s, "Session taken over", now)
        # -- accepted --
        self.session = s
        b.attach(s, self, now)
        s.version, s.username, s.account, s.expiry = self.version, account, account, granted_expiry
        s.ip = self.t.peer_host
        self.will = p.will
        ka = p.keepalive
        server_ka = None
        if opts.max_keepalive and (ka == 0 or ka > opts.max_keepalive) and v5:
            ka = server_ka = opts.max_keepalive
        self.keepalive = ka
        ack_props: dict = {}
        if v5:
            self.peer_receive_max = min(props.get("receive_maximum", 65535), opts.max_inflight)
            self.peer_max_packet = props.get("maximum_packet_size")
            self.alias_max = min(props.get("topic_alias_maximum", 0), opts.topic_alias_out_maximum)
            if granted_expiry != expiry:
                ack_props["session_expiry_interval"] = granted_expiry
            ack_props["receive_maximum"] = b.receive_maximum
            ack_props["maximum_packet_size"] = opts.max_packet_size
            if opts.topic_alias_maximum:
                ack_props["topic_alias_maximum"] = opts.topic_alias_maximum
            if assigned:
                ack_props["assigned_client_identifier"] = assigned
            if server_ka is not None:
                ack_props["server_keep_alive"] = server_ka
            ack_props["retain_available"] = 1
            ack_props["wildcard_subscription_available"] = 1
            ack_props["subscription_identifier_available"] = 1
            ack_props["shared_subscription_available"] = 1
        self.t.write(self.codec.send(Connack(present, 0, ack_props)))
        self.ready = True
        b.persist_session(s)
        if present:
            b.channels.resume(s, now)
            b.resend_inflight(s, self, now)
            b.pump(s, now)

    # ------------------------------------------------------------------ PUBLISH in
    def on_publish(self, p: Publish, now: float) -> None:
        b = self.broker
        s = self.session
        b.stats["messages_received"] += 1
        qos, pid = p.qos, p.packet_id
        if qos == 2 and pid in s.qos2_in:
            self.send(Pubrec(pid))           # a resent PUBLISH before our PUBREC arrived: once only
            return
        if qos == 2 and self.version == 5 and len(s.qos2_in) >= b.receive_maximum:
            return self.disconnect(0x93, "Receive Maximum exceeded", now)
        rc = self.check_publish(p)
        why = ""
        if rc == 0:
            props = p.properties
            fwd = {k: v for k, v in props.items() if k in FORWARD_PROPS} if props else {}
            exp = props.get("message_expiry_interval") if props else None
            msg = Message(p.topic, p.payload, qos, p.retain, fwd, now + exp if exp else None, origin=s.cid)
            if fwd.get("payload_format_indicator") == 1 and not _utf8_ok(p.payload):
                b.stats["invalid_utf8"] += 1
                rc = 0x99
            else:
                rc, why = b.channels.route(s, msg, now)
        if rc:
            b.stats["refused_publish"] += 1
        if self.closed:
            return
        if qos == 1:
            self.send_ack(Puback(pid, rc), why)
        elif qos == 2:
            if rc < 0x80 or self.version != 5:
                s.qos2_in.add(pid)
            self.send_ack(Pubrec(pid, rc), why)

    def send_ack(self, ack, why: str) -> None:
        """An ack with a 5.0 reason string, left out if it would pass the client's maximum packet size
        (MQTT-3.1.2-25): the ack itself is always sent."""
        if why and self.version == 5:
            ack.properties = {"reason_string": why[:200]}
            try:
                data = self.codec.send(ack)
            except MqttError:
                ack.properties = {}
            else:
                self.t.write(data)
                return
        self.send(ack)

    def check_publish(self, p: Publish) -> int:
        s = self.session
        if p.topic.startswith("$"):
            return 0x87
        if not self.broker.topics.may_publish(p.topic, s.username, s.cid, s.account, s.ip):
            return 0x87
        return 0

    def on_pubrel(self, p: Pubrel, now: float) -> None:
        s = self.session
        if p.packet_id in s.qos2_in:
            s.qos2_in.discard(p.packet_id)
            self.send(Pubcomp(p.packet_id))
        else:
            self.send(Pubcomp(p.packet_id, 0x92))

    # ------------------------------------------------------------------ acks of our PUBLISHes
    def on_puback(self, p: Puback, now: float) -> None:
        s = self.session
        pend = s.inflight.get(p.packet_id)
        if pend is not None and pend.qos == 1:
            self.broker.acked(s, p.packet_id, now)

    def on_pubrec(self, p: Pubrec, now: float) -> None:
        s = self.session
        pend = s.inflight.get(p.packet_id)
        if pend is None:
            self.send(Pubrel(p.packet_id, 0x92))
            return
        if p.reason_code >= 0x80:
            self.broker.acked(s, p.packet_id, now)
            return
        if self.broker.released(s, p.packet_id):
            self.send(Pubrel(p.packet_id))

    def on_pubcomp(self, p: Pubcomp, now: float) -> None:
        s = self.session
        pend = s.inflight.get(p.packet_id)
        if pend is not None and pend.state == 2:
            self.broker.acked(s, p.packet_id, now)

    # ------------------------------------------------------------------ SUBSCRIBE / UNSUBSCRIBE
    def on_subscribe(self, p: Subscribe, now: float) -> None:
        b = self.broker
        s = self.session
        v5 = self.version == 5
        sub_id = p.properties.get("subscription_identifier") if v5 else None
        codes = []
        accepted = []
        for topic_filter, o in p.subscriptions:
            sub = Sub(topic_filter, o.qos, o.no_local, o.retain_as_published, o.retain_handling, sub_id)
            rc = self.check_subscribe(sub)
            if rc == 0:
                rc = b.channels.subscribe(s, sub, now)
            if rc:
                b.stats["refused_subscribe"] += 1
                codes.append(rc if v5 else 0x80)
            else:
                codes.append(o.qos)
                accepted.append(sub)
        self.send(Suback(p.packet_id, codes))
        # Retained messages follow the SUBACK (MQTT-3.8.4-4 ordering is not required, but clients expect it).
        for sub in accepted:
            if self.closed:
                return
            b.subscribe(s, sub, now)

    def check_subscribe(self, sub: Sub) -> int:
        s = self.session
        if not self.broker.topics.may_subscribe(sub.real, s.username, s.cid, s.account, s.ip):
            return 0x87
        return 0

    def on_unsubscribe(self, p: Unsubscribe, now: float) -> None:
        b = self.broker
        s = self.session
        codes = []
        for f in p.topic_filters:
            found = b.unsubscribe(s, f, now)
            if found:
                b.channels.unsubscribed(s, f, now)
            codes.append(0 if found else 0x11)
        self.send(Unsuback(p.packet_id, codes))

    # ------------------------------------------------------------------ the rest
    def on_pingreq(self, p: Pingreq, now: float) -> None:
        self.send(Pingresp())

    def on_disconnect(self, p: Disconnect, now: float) -> None:
        s = self.session
        if self.version == 5 and "session_expiry_interval" in p.properties:
            s.expiry = min(p.properties["session_expiry_interval"], self.broker.opts.max_session_expiry)
        self.clean_exit = p.reason_code == 0   # only a normal disconnection discards the will (MQTT-3.14.4-3)
        if self.closed:
            return
        self.closed = True
        self.broker.clients.pop(self, None)
        self.t.close("Client disconnected")
        self._gone(now, not self.clean_exit, False, "Client disconnected")

    def on_auth(self, p: Auth, now: float) -> None:
        self.disconnect(0x82, "AUTH without enhanced authentication", now)


def _utf8_ok(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_HANDLERS = {
    Connect: Client.on_connect, Publish: Client.on_publish, Puback: Client.on_puback, Pubrec: Client.on_pubrec,
    Pubrel: Client.on_pubrel, Pubcomp: Client.on_pubcomp, Subscribe: Client.on_subscribe,
    Unsubscribe: Client.on_unsubscribe, Pingreq: Client.on_pingreq, Disconnect: Client.on_disconnect,
    Auth: Client.on_auth,
}
