"""The broker's data: application messages, subscriptions, pending deliveries, sessions.

Plain state with no routing of its own, so that broker.py, client.py and channels.py all
import it and none of them imports another's module the other way round.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from typing import Any

from .codec import PublishTemplate, Will
from relay.core.topics import TopicItem, parse_shared

NEVER = 0xFFFFFFFF  # session expiry interval: the session does not expire
# Properties a broker passes on from publisher to subscribers (MQTT 5.0 3.3.2.3).
FORWARD_PROPS = ("payload_format_indicator", "content_type", "response_topic", "correlation_data",
                 "user_property")



_UNSET = object()


class Message(TopicItem):
    """An application message inside the broker: a topic item whose metadata are its forwardable
    MQTT 5.0 properties and whose publisher is the client id; encoded at most once per (version, QoS)."""

    __slots__ = ()

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 props: dict[str, Any] | None = None, expires: float | None = None, origin: str | None = None):
        TopicItem.__init__(self, topic, payload, qos, retain, props, expires, origin)

    @property
    def props(self) -> dict[str, Any]:
        return self.metadata

    @property
    def origin(self) -> str | None:
        return self.publisher

    @staticmethod
    def of(item: TopicItem) -> "Message":
        """An item another protocol (or a link) published, as a Message (made once per item)."""
        if type(item) is Message:
            return item
        m = item.cache.get("mqtt")
        if m is None:
            props = {k: v for k, v in item.metadata.items() if k in FORWARD_PROPS}
            m = item.cache["mqtt"] = Message(item.topic, item.payload, item.qos, item.retain, props,
                                             item.expires, item.publisher)
        return m

    def props_at(self, now: float) -> dict[str, Any]:
        if self.expires is None:
            return self.metadata
        return {**self.metadata, "message_expiry_interval": self.remaining(now)}

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


class Session:
    """MQTT session state; lives across connections when the session expiry allows.

    It is also the network `User`'s session for a member of channels (it renders
    network events: `deliver`), so it answers what the core asks of a session.
    """

    proto = "mqtt"

    def __init__(self, broker: Any, cid: str):
        self.broker = broker
        self.cid = cid
        self.item_published = functools.partial(broker.deliver_matches, self)
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
        self.client: Any = None              # client.Client while connected
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

    # ---- what the topic service asks of a subscriber ----
    @property
    def online(self) -> bool:
        return self.client is not None

    def accepts(self, item: TopicItem) -> bool:
        """Not for a channel's members: those get channel messages through the channel path."""
        ex = item.cache.get("mqtt.members", _UNSET)
        if ex is _UNSET:
            ex = self.members_of(item)
        return not (ex and self.cid in ex)

    def members_of(self, item: TopicItem) -> set[str] | None:
        """The client ids of the local members of the item's channel (once per item)."""
        b = self.broker
        ex = item.cache["mqtt.members"] = (b.channels.member_cids(item.topic)
                                           if item.topic.startswith(b.chan_prefix) else None)
        return ex

    def item_published(self, item: TopicItem, options: list, now: float) -> None:
        """Replaced per instance by a partial of Broker.deliver_matches (one call less per recipient)."""
        self.broker.deliver_matches(self, item, options, now)

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
