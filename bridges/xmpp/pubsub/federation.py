"""PubSub across the tree: every server keeps a replica of every node; items go where they are wanted.

* Items of the service's nodes that are topics travel through the topic service's federation
  (topics.py): once per link, only towards servers whose filter set wants the topic (servers
  with subscribers of that node bound there, or MQTT subscribers). Each server notifies its own
  subscribers.
* Items of PEP nodes and of nodes that are not topic names go to every server in a `PUBSUB_ITEM`
  frame (a PEP event's audience is every contact, wherever it is connected).
* Node state (configuration, affiliations, subscriptions) is one `PUBSUB_NODE` frame with the whole
  state and a stamp (time, server id) to every server on each change; a server takes it when the
  stamp is newer than its own (last writer wins, per node). `PUBSUB_DELETE` (with its stamp: a
  node changed after the delete survives it), `PUBSUB_RETRACT`, `PUBSUB_PURGE`.
* Convergence after a netsplit: on `link_up` each side sends every node's state and its items
  (`PUBSUB_NODE` with `items`, in chunks); the receiver takes newer node states and adds the
  items it lacks (without notifying: they are history), trimmed to max_items by publish time.
  So after the netjoin both sides hold the newest configuration, affiliations and subscriptions
  and the union of the items. A deleted node is remembered (a tombstone, in memory: the last
  10,000) and its `PUBSUB_DELETE` sent again at each link_up, so a netjoin does not bring it
  back unless it was changed after the delete. Retracts and purges are stamped too: a node keeps
  its retracted ids with their stamps and the stamp of its last purge (in memory), they travel
  with its items, and an item published before a retract of its id or a purge of its node is
  dropped on either side, so neither comes back.
* A server without subscribers of a topic node never got its items. Before it answers an items
  retrieval or sends the last item to a new subscriber, it asks every server (`PUBSUB_FETCH`);
  each answers to it alone with what it holds (`PUBSUB_HELD`, chunks, the last one `last`); the
  client is answered once all have, or after `fetch_timeout` with what came. While someone here
  keeps subscribing to the topic, the items keep coming: the node is `synced` and not asked again.
  The link layer numbers, replays (after a short split) and deduplicates the frames.
"""

from __future__ import annotations

import base64
import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable

from .nodes import Item, Node, Subscription
from .service import PubsubService

log = logging.getLogger("relay.mod.pubsub")

NODE, DELETE, ITEM, RETRACT, PURGE = "PUBSUB_NODE", "PUBSUB_DELETE", "PUBSUB_ITEM", "PUBSUB_RETRACT", "PUBSUB_PURGE"
FETCH, HELD = "PUBSUB_FETCH", "PUBSUB_HELD"
FRAMES = (NODE, DELETE, ITEM, RETRACT, PURGE, FETCH, HELD)
CHUNK = 200
TOMBSTONES = 10_000        # deleted nodes remembered (in memory) so a netjoin does not bring them back
MAX_WAITING = 1000         # requests waiting for one node's fetch


def item_json(i: Item) -> dict:
    return {"id": i.id, "payload_b64": base64.b64encode(i.payload).decode(), "publisher": i.publisher,
            "published": i.published, "origin": i.origin, "expires": i.expires}


def item_of(d: dict) -> Item:
    return Item(str(d["id"]), base64.b64decode(d.get("payload_b64") or ""), str(d.get("publisher") or ""),
                float(d.get("published") or 0), str(d.get("origin") or ""),
                float(d["expires"]) if d.get("expires") is not None else None)


def state_json(n: Node) -> dict:
    return {"host": n.host, "node": n.name, "plugin": n.plugin, "config": n.config, "created": n.created,
            "stamp": list(n.stamp), "affiliations": n.affiliations,
            "subscriptions": [[s.jid, s.subid, s.state, s.options] for s in n.subscriptions.values()]}


def history_json(n: Node) -> dict:
    return {"retracted": {i: list(st) for i, st in n.retracted.items()}, "purged": list(n.purged)}


@dataclass
class Fetch:
    """The items of one node asked of the other servers; `then` run when they are in."""
    req: str
    waiting: set[str]                       # servers yet to answer
    then: list[Callable[[float], None]] = field(default_factory=list)
    timer: object = None


class PubsubFederation:
    def __init__(self, svc: PubsubService, core, timer: Callable | None = None, fetch_timeout: float = 5.0):
        self.svc, self.core = svc, core
        self.stats = {"out": 0, "in": 0, "fetches": 0}
        self.deleted: dict[tuple[str, str], tuple] = {}     # (host, node) -> stamp of its delete
        self.timer = timer or (lambda delay, fn: core.timers.call_at(core.now() + delay, fn, owner="pubsub"))
        self.fetch_timeout = fetch_timeout
        self.fetches: dict[tuple[str, str], Fetch] = {}
        self.synced: set[tuple[str, str]] = set()      # topic nodes whose items are routed here, all in
        self.reqs = itertools.count(1)

    @property
    def router(self):
        return getattr(self.core.net, "router", None)

    def send(self, ftype: str, payload: dict, servers: set[str] | None = None) -> None:
        router = self.router
        if router is None:
            return
        self.stats["out"] += 1
        router.send_extension(ftype, payload, servers)

    # ---------------------------------------------------------------- out
    def node_changed(self, node: Node) -> None:
        if node.stored or node.subscriptions or node.affiliations:
            self.send(NODE, state_json(node))

    def node_deleted(self, node: Node, now: float) -> None:
        stamp = (round(now, 6), self.svc.me)
        self.tombstone(node.host, node.name, stamp)
        self.send(DELETE, {"host": node.host, "node": node.name, "stamp": list(stamp)})

    def tombstone(self, host: str, name: str, stamp: tuple) -> None:
        key = (host, name)
        if stamp > self.deleted.get(key, (0.0, "")):
            self.deleted[key] = stamp
        while len(self.deleted) > TOMBSTONES:
            del self.deleted[next(iter(self.deleted))]

    def item_published(self, node: Node, item: Item) -> None:
        self.send(ITEM, {"host": node.host, "node": node.name, "item": item_json(item)})

    def items_retracted(self, node: Node, ids: list[str], stamp: tuple) -> None:
        self.send(RETRACT, {"host": node.host, "node": node.name, "ids": ids, "stamp": list(stamp)})

    def node_purged(self, node: Node, stamp: tuple) -> None:
        self.send(PURGE, {"host": node.host, "node": node.name, "stamp": list(stamp)})

    # ---------------------------------------------------------------- items this server never got
    def others(self) -> list[str]:
        router = self.router
        return [sid for sid in router.tree.servers() if sid != self.svc.me] if router is not None else []

    def holds(self, node: Node) -> bool:
        """This server has every item of `node`: they go to every server, or only to servers that want
        them and this one has since it asked for the earlier ones."""
        bridge = self.svc.topics
        if bridge is None or node.is_collection or not bridge.routes(node) or not self.others():
            return True
        return (node.host, node.name) in self.synced and bridge.wanted_here(node)

    def with_items(self, node: Node, now: float, then: Callable[[float], None]) -> None:
        """Run `then(now)` once this server holds `node`'s items: at once, or once the other servers
        answered (or `fetch_timeout` passed). The loop never waits: `then` is the continuation."""
        if self.holds(node):
            then(now)
            return
        key = (node.host, node.name)
        bridge = self.svc.topics
        f = self.fetches.get(key)
        if f is None:
            f = self.fetches[key] = Fetch(f"{self.svc.me}.{next(self.reqs)}", set(self.others()))
            f.timer = self.timer(self.fetch_timeout, lambda t, key=key, req=f.req: self.fetched(key, req, t))
            self.stats["fetches"] += 1
            # Our topic filters first (frames keep their order): items published after a server
            # answers are then routed here.
            bridge.topics.fed.announce_now(now)
            self.send(FETCH, {"host": node.host, "node": node.name, "req": f.req})
        if len(f.then) >= MAX_WAITING:
            then(now)                        # a flood of requests for one node: answered with what is here
            return
        f.then.append(then)

    def fetched(self, key: tuple[str, str], req: str, now: float, complete: bool = False) -> None:
        f = self.fetches.get(key)
        if f is None or f.req != req:
            return
        del self.fetches[key]
        if f.timer is not None:
            f.timer.cancel()
        node = self.svc.tree_of(key[0]).get(*key)
        if complete and node is not None and self.svc.topics is not None and self.svc.topics.wanted_here(node):
            self.synced.add(key)
        for fn in f.then:
            try:
                fn(now)
            except Exception:
                log.exception("pubsub: answering after a fetch of %s raised", key[1])

    def prune_synced(self, now: float | None = None) -> None:
        """Nodes nobody here subscribes to any more: their items stop coming, so ask again next time."""
        bridge, svc = self.svc.topics, self.svc
        for key in list(self.synced):
            node = svc.tree_of(key[0]).get(*key)
            if node is None or bridge is None or not bridge.wanted_here(node):
                self.synced.discard(key)

    def answer_fetch(self, origin: str, p: dict) -> None:
        host, name = str(p["host"]), str(p["node"])
        node = self.svc.tree_of(host).get(host, name)
        head = {"host": host, "node": name, "req": str(p["req"])}
        items = [item_json(i) for i in node.items.values()] if node is not None else []
        first = True
        while first or items:
            chunk, items = items[:CHUNK], items[CHUNK:]
            frame = {**head, "items": chunk, "last": not items}
            if first and node is not None:
                frame.update(history_json(node))
            self.send(HELD, frame, {origin})
            first = False

    def link_up(self, peer_id: str, *rest):
        """A netjoin (or a new server): everything we hold, so both sides converge."""
        for (host, name), stamp in list(self.deleted.items()):
            self.send(DELETE, {"host": host, "node": name, "stamp": list(stamp)})
        for node in list(self.svc.all_nodes()):
            if not node.stored and not node.items and not node.retracted and not node.purged[0]:
                continue
            items = [item_json(i) for i in node.items.values()]
            first = True
            while first or items:
                chunk, items = items[:CHUNK], items[CHUNK:]
                frame = {**state_json(node), "items": chunk, "sync": True}
                if first:
                    frame.update(history_json(node))
                self.send(NODE, frame)
                first = False
        return None

    # ---------------------------------------------------------------- in
    def on_extension(self, ftype: str, origin: str, p: dict, from_link=None):
        if ftype not in FRAMES:
            return None
        try:
            self.apply(ftype, origin, p)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.info("pubsub: malformed %s from %s dropped (%s)", ftype, origin, e)
        return True

    def apply(self, ftype: str, origin: str, p: dict) -> None:
        svc, now = self.svc, self.core.now()
        self.stats["in"] += 1
        host, name = str(p["host"]), str(p["node"])
        tree = svc.tree_of(host)
        node = tree.get(host, name)
        if ftype == FETCH:
            self.answer_fetch(origin, p)
        elif ftype == HELD:
            if node is not None:
                self.merge_history(node, p)
            f = self.fetches.get((host, name))
            if p.get("last") and f is not None and f.req == str(p["req"]):
                f.waiting.discard(origin)
                if not f.waiting:
                    self.fetched((host, name), f.req, now, complete=True)
        elif ftype == NODE:
            self.take_state(node, p, now)
        elif ftype == DELETE:
            self.tombstone(host, name, tuple(p["stamp"]))
            if node is not None and tuple(node.stamp) <= tuple(p["stamp"]):
                svc.delete(node, None, now, replicate=False)
        elif ftype == ITEM:
            if node is None:
                node = svc.create(host, name, host if svc.is_pep(host) else None, {},
                                  "pep" if svc.is_pep(host) else svc.opts.node_plugin, now, replicate=False)
                node.stamp = (0.0, "")
            svc.publish(node, item_of(p["item"]), now, via="link")
        elif ftype == RETRACT and node is not None:
            stamp = tuple(p["stamp"]) if p.get("stamp") else (round(now, 6), origin)
            svc.retract(node, [str(i) for i in p["ids"]], bool(node.config.get("notify_retract", True)), now,
                        replicate=False, stamp=stamp)
        elif ftype == PURGE and node is not None:
            svc.purge(node, now, replicate=False, stamp=tuple(p["stamp"]) if p.get("stamp") else None)

    def take_state(self, node: Node | None, p: dict, now: float) -> None:
        svc = self.svc
        stamp = tuple(p["stamp"])
        host, name = str(p["host"]), str(p["node"])
        if node is None and self.deleted.get((host, name), (0.0, "")) >= stamp:
            return                      # deleted after this state was made
        if node is None:
            node = svc.create(host, name, None, dict(p["config"]), str(p["plugin"]), float(p["created"]),
                              replicate=False)
            node.stamp = (0.0, "")
        if stamp > tuple(node.stamp):
            node.config = dict(p["config"])
            node.stamp = stamp
            plugin, w = svc.plugin_of(node), svc.writes(node)
            affs = {str(j): str(a) for j, a in p["affiliations"].items()}
            for j in set(node.affiliations) - set(affs):
                plugin.set_affiliation(node, j, "none", w)
            for j, a in affs.items():
                if node.affiliations.get(j) != a:
                    plugin.set_affiliation(node, j, a, w)
            subs = {str(s[1]): Subscription(str(s[0]), str(s[1]), str(s[2]), dict(s[3]), stamp)
                    for s in p["subscriptions"]}
            for sid in set(node.subscriptions) - set(subs):
                plugin.remove_subscription(node, sid, w)
            for sid, s in subs.items():
                plugin.set_subscription(node, s, w)
            w.put_node(node)
            svc.changed_subscriptions()
        self.merge_history(node, p)

    def merge_history(self, node: Node, p: dict) -> None:
        """Another server's items of `node` with its retracts and last purge: the items we lack are
        added (history: nobody is notified), and an item published before a retract of its id or
        before the last purge goes, on whichever side it was."""
        svc = self.svc
        plugin, w = svc.plugin_of(node), svc.writes(node)
        for iid, st in dict(p.get("retracted") or {}).items():
            svc.tombstone(node, [str(iid)], tuple(st))
        if p.get("purged"):
            node.purged = max(node.purged, tuple(p["purged"]))
        if p.get("retracted") or p.get("purged"):
            for iid in [i.id for i in node.items.values() if _gone(node, i)]:
                plugin.retract_item(node, iid, w)
        incoming = sorted((item_of(d) for d in p.get("items") or ()), key=_order)
        added = False
        for it in incoming:
            if it.id not in node.items and not _gone(node, it):
                plugin.publish_item(node, it, w)
                added = True
        # Keep the items in publish order (the newest last), whichever side they came from.
        if added:
            ordered = sorted(node.items.values(), key=_order)
            node.items.clear()
            node.items.update((i.id, i) for i in ordered)


def _gone(node: Node, i: Item) -> bool:
    """Published before its node's last purge or before a retract of its id."""
    return (0 < node.purged[0] and i.published <= node.purged[0]) or i.published <= node.retracted.get(
        i.id, (-1.0, ""))[0]


def _order(i: Item) -> tuple:
    """Items by publish time; the same order on every server when times are equal."""
    return (i.published, i.origin, i.id)
