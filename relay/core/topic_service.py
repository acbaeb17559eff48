"""The network's topic service: one namespace of published items for every protocol.

Synchronous and sans-IO: every entry point takes `now`. Created by the core
(`core.services["topics"]`, like the account sync) so that it exists before any
protocol module loads and outlives their reloads; MQTT is its first protocol,
PubSub will be the second.

* Publishers of any protocol publish a `TopicItem` with `publish(item, now)`.
* Local subscribers register per protocol: `subscribe(filter, subscriber, options)`,
  where `subscriber` is a `TopicSubscriber` (relay/core/interfaces.py) and `options`
  are the protocol's own (handed back untouched). A subscriber matching through
  several filters gets one call with every matching `options` (a tuple).
* Shared subscriptions ("$share/GROUP/FILTER") hand an item to one member of the
  group network-wide, round robin, preferring online members (see topic_federation.py).
* The retained (last) item per topic is kept here (`RetainedStore`); persistence goes
  through `persistence`, an object with `set_retained(item)` / `delete_retained(topic)`
  that the protocol owning the storage installs (MQTT's store today).
* Federation over the tree (`fed`, topic_federation.py) starts with `enable_federation`.
* Access: `may_publish` / `may_subscribe` ask one rule set (`acl`, a TopicAcl), so every
  protocol on the namespace obeys the same rules.
* Hook `topic_published(item, origin_server, now)` runs after each delivery.

Topics under a `local_prefixes` entry ("$SYS") stay on this server: neither stored nor forwarded.
"""

from __future__ import annotations

import heapq
from typing import Any

from relay.core.topic_federation import TopicFederation
from relay.core.topics import RetainedStore, TopicItem, TopicTree, parse_shared

__all__ = ["TopicService", "TopicItem", "SharedGroup", "LOCAL_PREFIXES"]

LOCAL_PREFIXES = ("$SYS",)


class SharedGroup:
    """Local members of "$share/GROUP/REAL": subscriber -> options."""

    __slots__ = ("group", "real", "members", "rr")

    def __init__(self, group: str, real: str):
        self.group, self.real = group, real
        self.members: dict[Any, Any] = {}
        self.rr = 0

    @property
    def name(self) -> str:
        return f"$share/{self.group}/{self.real}"


def is_local(topic: str) -> bool:
    return topic.startswith(LOCAL_PREFIXES)


class TopicService:
    def __init__(self, core):
        self.core = core
        # filter -> {subscriber: (options,)}: the 1-tuple is what item_published gets when the item
        # matches one filter of the subscriber (the common case), made once at subscribe time.
        self.tree = TopicTree()
        self.group_tree = TopicTree()    # real filter -> {SharedGroup: None}
        self.shared: dict[tuple[str, str], SharedGroup] = {}
        self.filter_refs: dict[str, int] = {}     # distinct filters with local subscribers
        self.retained = RetainedStore()
        self.retained_expiry: list[tuple[float, str]] = []   # heap of retained items that expire
        self.persistence = None          # set_retained(item) / delete_retained(topic), or None
        self.acl = None                  # relay.core.topic_acl.TopicAcl, or None: everything allowed
        self.remote_rr: dict[tuple[str, str], int] = {}
        self.fed = TopicFederation(self, core)
        self.stats = {"published": 0, "delivered": 0}

    # ------------------------------------------------------------------ access
    def may_publish(self, topic: str, username: str | None, client_id: str, account: str | None,
                    ip: str | None) -> bool:
        acl = self.acl
        return acl is None or acl.allowed("publish", topic, username, client_id, account, ip)

    def may_subscribe(self, topic_filter: str, username: str | None, client_id: str, account: str | None,
                      ip: str | None) -> bool:
        acl = self.acl
        return acl is None or acl.allowed("subscribe", topic_filter, username, client_id, account, ip)

    # ------------------------------------------------------------------ federation
    def enable_federation(self, now: float) -> None:
        """Start federating (idempotent); a protocol that wants its topics network-wide calls it."""
        self.fed.enable(now)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, topic_filter: str, subscriber, options: Any = None) -> bool:
        """Add or replace `subscriber`'s subscription on `topic_filter` ("$share/G/F" joins group G);
        True if it is new. Raises ValueError for an invalid filter."""
        shared = parse_shared(topic_filter)
        if shared is None:
            new = self.tree.subscribe(topic_filter, subscriber, (options,))
        else:
            g = self.shared.get(shared)
            if g is None:
                g = self.shared[shared] = SharedGroup(*shared)
                self.group_tree.subscribe(g.real, g)
            new = subscriber not in g.members
            g.members[subscriber] = options
        if new:
            self._ref(topic_filter, 1)
        return new

    def unsubscribe(self, topic_filter: str, subscriber) -> bool:
        shared = parse_shared(topic_filter) if topic_filter.startswith("$share/") else None
        if shared is None:
            found = self.tree.unsubscribe(topic_filter, subscriber)
        else:
            g = self.shared.get(shared)
            found = g is not None and g.members.pop(subscriber, None) is not None
            if g is not None and not g.members:
                del self.shared[shared]
                self.group_tree.unsubscribe(g.real, g)
        if found:
            self._ref(topic_filter, -1)
        return found

    def _ref(self, topic_filter: str, d: int) -> None:
        n = self.filter_refs.get(topic_filter, 0) + d
        if n > 0:
            self.filter_refs[topic_filter] = n
            if n == 1 and d > 0:
                self.fed.filters_changed()
        else:
            self.filter_refs.pop(topic_filter, None)
            self.fed.filters_changed()

    # ------------------------------------------------------------------ retained (last item per topic)
    def set_retained(self, item: TopicItem) -> None:
        """Keep `item` as its topic's last item; an empty payload clears the topic."""
        topic = item.topic
        store = self.persistence if not is_local(topic) else None
        if not item.payload:
            if self.retained.delete(topic) and store is not None:
                store.delete_retained(topic)
            return
        self.retained.set(topic, item.as_retained())
        if item.expires is not None:
            heapq.heappush(self.retained_expiry, (item.expires, topic))
        if store is not None:
            store.set_retained(item)

    def restore_retained(self, item: TopicItem, now: float) -> bool:
        """A retained item read back from storage (not written again); False if it has expired."""
        if item.expired(now):
            return False
        self.retained.set(item.topic, item)
        if item.expires is not None:
            heapq.heappush(self.retained_expiry, (item.expires, item.topic))
        return True

    def _drop_retained(self, topic: str) -> None:
        self.retained.delete(topic)
        if self.persistence is not None and not is_local(topic):
            self.persistence.delete_retained(topic)

    def retained_matching(self, topic_filter: str, now: float) -> list[tuple[str, TopicItem]]:
        """The live retained items a new subscription on `topic_filter` is given (expired ones dropped)."""
        out = []
        for topic, item in self.retained.match(topic_filter):
            if item.expired(now):
                self._drop_retained(topic)
            else:
                out.append((topic, item))
        return out

    def expire_retained(self, now: float) -> None:
        heap = self.retained_expiry
        while heap and heap[0][0] <= now:
            _, topic = heapq.heappop(heap)
            item = self.retained.get(topic)
            if item is not None and item.expired(now):
                self._drop_retained(topic)

    # ------------------------------------------------------------------ publishing
    def publish(self, item: TopicItem, now: float, origin: str | None = None,
                shares: list[str] | None = None) -> int:
        """Route one item to the local subscribers and the servers that need it; returns how many
        local subscribers it was handed to. `origin` is the server it came from (None: here);
        `shares` the shared groups that server picked us for. Access is the caller's check."""
        topic = item.topic
        if item.retain:
            self.set_retained(item)
        found = self.tree.match_values(topic)
        if len(found) == 1:
            targets = list(found[0].items())     # a copy: a delivery may change the tree
        else:
            merged: dict[Any, tuple] = {}
            for values in found:
                for key, opts in values.items():
                    had = merged.get(key)
                    merged[key] = opts if had is None else had + opts
            targets = list(merged.items())
        groups = [g for g, _ in self.group_tree.match(topic)] if self.shared else ()
        fed = self.fed if origin is None and self.fed.active else None
        remote_shares: dict[str, list[str]] = {}
        shared_to: list[tuple[Any, Any]] = []
        if origin is None:
            rgroups = fed.shared_candidates(topic) if fed is not None else {}
            for g in groups:
                pick = self._pick_shared(g, rgroups.pop((g.group, g.real), ()), item)
                if type(pick) is str:
                    remote_shares.setdefault(pick, []).append(g.name)
                elif pick is not None:
                    shared_to.append(pick)
            for gk, sids in rgroups.items():
                n = self.remote_rr.get(gk, 0)
                self.remote_rr[gk] = n + 1
                sids = sorted(sids)
                remote_shares.setdefault(sids[n % len(sids)], []).append(f"$share/{gk[0]}/{gk[1]}")
        elif shares:
            mine = set(shares)
            for g in groups:
                if g.name in mine:
                    pick = self._pick_shared(g, (), item)
                    if pick is not None and type(pick) is not str:
                        shared_to.append(pick)
        for sub, opts in targets:
            sub.item_published(item, opts, now)
        for sub, opt in shared_to:
            sub.item_published(item, (opt,), now)
        if fed is not None:
            fed.forward(item, remote_shares, now)
        n = len(targets) + len(shared_to)
        self.stats["published"] += 1
        self.stats["delivered"] += n
        hooks = self.core.hooks
        if hooks.has("topic_published"):
            hooks.run("topic_published", item, origin, now)
        return n

    def _pick_shared(self, g: SharedGroup, remote, item: TopicItem):
        """Round robin over the local members that accept the item and the remote servers with
        members; an online local member (or a remote server) is preferred over an offline one.
        Returns (subscriber, options), a server id for a remote slot, or None."""
        slots: list[tuple[bool, Any]] = [(True, s) for s in g.members if s.accepts(item)]
        slots.extend((False, sid) for sid in sorted(remote))
        n = len(slots)
        if not n:
            return None
        fallback = None
        for i in range(n):
            local, k = slots[(g.rr + i) % n]
            if not local:
                g.rr += i + 1
                return k
            if not k.online:
                if fallback is None:
                    fallback = (i, (k, g.members[k]))
                continue
            g.rr += i + 1
            return k, g.members[k]
        if fallback is not None:
            g.rr += fallback[0] + 1
            return fallback[1]
        return None

    def status(self) -> dict:
        return {"subscriptions": len(self.tree) + len(self.group_tree), "filters": len(self.filter_refs),
                "retained": len(self.retained), **self.stats}
