"""The topic service across server links: subscription-aware routing over the spanning tree.

Moved from bridges/mqtt/federation.py; the frames keep their MQTT_* names and payloads so
servers of either version interoperate. `props` carries the item's metadata (MQTT 5.0
properties today), encoded by `metadata_codec`.

Interface used (the link layer implements it): `core.net.router.send_extension(ftype,
payload, servers, exclude_link=None)` (servers None: every server; a frame crosses each
link at most once), and the hooks `link_extension(ftype, origin_server_id, payload,
from_link)` (return non-None to claim a frame), `link_up(peer_id)` and
`link_down(peer_id, lost_server_ids)` (`netsplit(sid, lost, reason)` is honoured too).

Frames:

    MQTT_SUB {server, filters: [...], ver: [epoch, n]}
        The full set of distinct filters with subscribers on `server` ("$share/G/F"
        included). Sent when the set changes (debounced: a timer sends the full set at
        most every 0.2 s) and, on link_up, for every set this server knows (its own and
        the ones it learned), so both sides of a new link learn the whole network.
        `ver` orders a server's announcements (epoch = that server's start time), so a
        relayed older set never replaces a newer one. When the module starts on a server
        that is already linked, its first announcement carries `hello: true` and every
        server answers with its own set.
    MQTT_PUB {topic, payload_b64, qos, retain, props, expiry, shares: {server: [...]}}
        One application message. It goes only to the servers whose filter set matches
        the topic (a TopicTree keyed by server id), and a retained message to every
        server, so each keeps a copy. `props` are the forwardable 5.0 properties (bytes
        as {"b64": ...}); `expiry` is the remaining message expiry in seconds or null.
        A receiving server delivers to its own subscribers with the subscriber's QoS
        (min of publish and subscription QoS) and never forwards again: the origin
        already addressed every server that needed it.

Shared subscriptions network-wide: only the server where a message is published picks
the member of a group. The candidates are its own local members of the group plus one
slot per remote server whose filter set contains "$share/GROUP/FILTER"; it rotates round
robin over those slots (local members by session, remote servers by id). When a remote
slot is chosen, the frame lists the group under that server in `shares`, and that server
hands the item to one of its local members (its own round robin). A server never
delivers to a shared group on its own initiative for a message that came from a link.

QoS 1/2 across links rely on the link layer's replay window; `$SYS` topics are local to
each server and are neither announced nor forwarded.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Callable

from relay.core.topics import TopicItem, TopicTree, parse_shared, valid_topic_name

log = logging.getLogger("relay.topics")

SUB_FRAME = "MQTT_SUB"
PUB_FRAME = "MQTT_PUB"
DEBOUNCE = 0.2


def metadata_to_json(meta: dict[str, Any]) -> dict | None:
    """Metadata as JSON values: bytes become {"b64": ...}, tuples lists."""
    if not meta:
        return None
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, (bytes, bytearray)):
            out[k] = {"b64": base64.b64encode(v).decode()}
        elif isinstance(v, (list, tuple)):
            out[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        else:
            out[k] = v
    return out


def metadata_from_json(data: dict | None) -> dict[str, Any]:
    if not data:
        return {}
    return {k: base64.b64decode(v["b64"]) if isinstance(v, dict) and "b64" in v else v for k, v in data.items()}


DEFAULT_METADATA_CODEC = (metadata_to_json, metadata_from_json)


class TopicFederation:
    def __init__(self, service, core):
        """`service` is the TopicService (its filter_refs, retained store and publish)."""
        self.svc = service
        self.core = core
        self.me = core.config.server.id
        self.enabled = False
        self.epoch = 0.0
        self.n = 0
        self.sets: dict[str, tuple[list, frozenset[str]]] = {}   # server id -> (ver, filters)
        self.tree = TopicTree()         # plain filters -> key server id
        self.shared = TopicTree()       # real filter of "$share/G/F" -> key (server id, group)
        self.sent: frozenset[str] | None = None
        self.timer = None
        self.last_sent = -1e9
        self.stats = {"pub_out": 0, "pub_in": 0, "sub_out": 0, "sub_in": 0}
        # (to_json, from_json) for item metadata; a protocol with typed metadata installs its own.
        self.metadata_codec: tuple[Callable, Callable] = DEFAULT_METADATA_CODEC
        core.hooks.add("link_extension", self.on_extension, owner="topics")
        core.hooks.add("link_up", self.on_link_up, owner="topics")
        # Filters of servers behind a split are kept while they are held (items for them are
        # replayed when they return); they are forgotten once the servers are gone for good.
        core.hooks.add("servers_gone", self.on_servers_gone, owner="topics")

    def enable(self, now: float) -> None:
        if self.enabled:
            return
        self.enabled = True
        self.epoch = round(now, 6)
        self.announce(hello=True)     # started on a server that is already linked

    @property
    def router(self):
        return getattr(self.core.net, "router", None) if self.enabled else None

    @property
    def active(self) -> bool:
        """Other servers are known (they announced a filter set, possibly empty)."""
        return bool(self.sets) and self.router is not None

    @property
    def remote_subscribers(self) -> bool:
        """Some other server has a subscriber (a filter, shared or not): publishing can reach someone."""
        return (len(self.tree) > 0 or len(self.shared) > 0) and self.router is not None  # cheap test first

    # ------------------------------------------------------------------ our filter set
    def local_filters(self) -> frozenset[str]:
        return frozenset(f for f in self.svc.filter_refs if not f.startswith("$SYS"))

    def filters_changed(self) -> None:
        if self.timer is None and self.enabled:
            now = self.core.now()
            delay = max(0.0, self.last_sent + DEBOUNCE - now)
            self.timer = self.core.timers.call_at(now + delay, self._flush, owner="topics")

    def announce_now(self, now: float) -> None:
        """Our filter set now if it changed, not after the debounce: a caller about to ask the other
        servers for what they hold wants them routing to us before they answer (frames keep order)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.router is not None and self.local_filters() != self.sent:
            self.announce(None, now)

    def _flush(self, now: float) -> None:
        self.timer = None
        filters = self.local_filters()
        if filters == self.sent:
            return
        self.announce(filters, now)

    def announce(self, filters: frozenset[str] | None = None, now: float | None = None,
                 hello: bool = False) -> None:
        router = self.router
        if router is None:
            return
        if filters is None:
            filters = self.local_filters()
        self.n += 1
        self.sent = filters
        self.last_sent = now if now is not None else self.core.now()
        self.stats["sub_out"] += 1
        payload = {"server": self.me, "filters": sorted(filters), "ver": [self.epoch, self.n]}
        if hello:
            payload["hello"] = True
        router.send_extension(SUB_FRAME, payload, None)

    # ------------------------------------------------------------------ hooks
    def on_link_up(self, peer_id: str, *rest) -> None:
        router = self.router
        if router is None:
            return None
        self.announce()
        for sid, (ver, filters) in list(self.sets.items()):
            router.send_extension(SUB_FRAME, {"server": sid, "filters": sorted(filters), "ver": ver}, None)
        # Retained items: a server that joins learns the ones it lacks ("sync": stored where the
        # topic has none, never delivered as a publish). Where both sides retained a different item
        # on one topic during a split, each keeps its own until the next retained publish there.
        now = self.core.now()
        for topic, item in list(self.svc.retained.items()):
            if topic.startswith("$SYS"):
                continue
            router.send_extension(PUB_FRAME, {**self._payload(item, now), "retain": True, "sync": True}, None)
        return None

    def on_servers_gone(self, gone) -> None:
        for sid in gone:
            self.forget(sid)
        return None

    def forget(self, sid: str) -> None:
        old = self.sets.pop(sid, None)
        if old is None:
            return
        self._apply(sid, old[1], frozenset())

    def on_extension(self, ftype: str, origin: str, payload: dict, from_link=None):
        if not self.enabled:
            return None
        if ftype == SUB_FRAME:
            self._on_sub(payload)
            return True
        if ftype == PUB_FRAME:
            self._on_pub(origin, payload)
            return True
        return None

    # ------------------------------------------------------------------ frames in
    def _on_sub(self, p: dict) -> None:
        sid = p.get("server")
        if not isinstance(sid, str) or sid == self.me:
            return
        ver = list(p.get("ver") or [0, 0])
        old = self.sets.get(sid)
        if old is not None and old[0] >= ver:
            return
        self.stats["sub_in"] += 1
        filters = frozenset(f for f in p.get("filters") or () if isinstance(f, str))
        self._apply(sid, old[1] if old else frozenset(), filters)
        self.sets[sid] = (ver, filters)
        if p.get("hello"):
            # A server whose service just started federating: it does not know our set yet.
            self.announce()

    def _apply(self, sid: str, old: frozenset[str], new: frozenset[str]) -> None:
        for f in old - new:
            sh = _shared(f)
            if sh is None:
                self.tree.unsubscribe(f, sid)
            else:
                self.shared.unsubscribe(sh[1], (sid, sh[0]))
        for f in new - old:
            try:
                sh = _shared(f)
                if sh is None:
                    self.tree.subscribe(f, sid)
                else:
                    self.shared.subscribe(sh[1], (sid, sh[0]), sh[1])
            except ValueError:
                log.info("topics: server %s announced an invalid filter %r; ignored", sid, f)

    def _on_pub(self, origin: str, p: dict) -> None:
        try:
            topic = p["topic"]
            payload = base64.b64decode(p.get("payload_b64") or "")
            qos = int(p.get("qos") or 0)
            retain = bool(p.get("retain"))
            meta = self.metadata_codec[1](p.get("props"))
            if not isinstance(topic, str) or not valid_topic_name(topic):
                raise ValueError(topic)
        except (KeyError, TypeError, ValueError, AttributeError):
            log.info("topics: malformed %s from %s dropped", PUB_FRAME, origin)
            return
        self.stats["pub_in"] += 1
        now = self.core.now()
        expiry = p.get("expiry")
        item = TopicItem(topic, payload, min(max(qos, 0), 2), retain, meta,
                         now + expiry if isinstance(expiry, (int, float)) and expiry else None,
                         item_id=p.get("id") if isinstance(p.get("id"), str) else None)
        svc = self.svc
        if p.get("sync"):
            if svc.retained.get(topic) is None:
                svc.set_retained(item)
            return
        shares = p.get("shares")
        shares = shares.get(self.me) if isinstance(shares, dict) else None
        if not isinstance(shares, list) or not all(isinstance(x, str) for x in shares):
            shares = None
        svc.publish(item, now, origin=origin, shares=shares)

    # ------------------------------------------------------------------ frames out
    def shared_candidates(self, topic: str) -> dict[tuple[str, str], list[str]]:
        """(group, real filter) -> remote servers with members, for groups matching `topic`."""
        out: dict[tuple[str, str], list[str]] = {}
        if not self.sets:
            return out
        for (sid, group), real in self.shared.match(topic):
            out.setdefault((group, real), []).append(sid)
        return out

    def _payload(self, item, now: float) -> dict:
        p = {"topic": item.topic, "payload_b64": base64.b64encode(item.payload).decode("ascii"),
             "qos": item.qos, "retain": item.retain,
             "props": self.metadata_codec[0](item.metadata), "expiry": item.remaining(now)}
        if item.item_id is not None:
            p["id"] = item.item_id
        return p

    def forward(self, item, shares: dict[str, list[str]], now: float) -> None:
        topic = item.topic
        if topic.startswith("$SYS"):
            return
        router = self.router
        if router is None:
            return
        if item.retain:
            servers = None
        else:
            servers = {sid for sid, _ in self.tree.match(topic)}
            servers.update(shares)
            servers.discard(self.me)
            if not servers:
                return
        payload = self._payload(item, now)
        if shares:
            payload["shares"] = shares
        self.stats["pub_out"] += 1
        router.send_extension(PUB_FRAME, payload, servers)

    def status(self) -> dict:
        return {"servers": {sid: len(f) for sid, (_, f) in self.sets.items()}, **self.stats}


def _shared(f: str) -> tuple[str, str] | None:
    try:
        return parse_shared(f)
    except ValueError:
        return None
