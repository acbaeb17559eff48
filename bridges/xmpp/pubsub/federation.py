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
  back unless it was changed after the delete. A retract or purge made during the split on one
  side does not remove an item the other side still has (it comes back; a known limit).
  The link layer numbers, replays (after a short split) and deduplicates the frames.
"""

from __future__ import annotations

import base64
import logging

from .nodes import Item, Node, Subscription
from .service import PubsubService

log = logging.getLogger("relay.mod.pubsub")

NODE, DELETE, ITEM, RETRACT, PURGE = "PUBSUB_NODE", "PUBSUB_DELETE", "PUBSUB_ITEM", "PUBSUB_RETRACT", "PUBSUB_PURGE"
FRAMES = (NODE, DELETE, ITEM, RETRACT, PURGE)
CHUNK = 200
TOMBSTONES = 10_000        # deleted nodes remembered (in memory) so a netjoin does not bring them back


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


class PubsubFederation:
    def __init__(self, svc: PubsubService, core):
        self.svc, self.core = svc, core
        self.stats = {"out": 0, "in": 0}
        self.deleted: dict[tuple[str, str], tuple] = {}     # (host, node) -> stamp of its delete

    @property
    def router(self):
        return getattr(self.core.net, "router", None)

    def send(self, ftype: str, payload: dict) -> None:
        router = self.router
        if router is None:
            return
        self.stats["out"] += 1
        router.send_extension(ftype, payload, None)

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

    def items_retracted(self, node: Node, ids: list[str]) -> None:
        self.send(RETRACT, {"host": node.host, "node": node.name, "ids": ids})

    def node_purged(self, node: Node) -> None:
        self.send(PURGE, {"host": node.host, "node": node.name})

    def link_up(self, peer_id: str, *rest):
        """A netjoin (or a new server): everything we hold, so both sides converge."""
        for (host, name), stamp in list(self.deleted.items()):
            self.send(DELETE, {"host": host, "node": name, "stamp": list(stamp)})
        for node in list(self.svc.all_nodes()):
            if not node.stored and not node.items:
                continue
            items = [item_json(i) for i in node.items.values()]
            first = True
            while first or items:
                chunk, items = items[:CHUNK], items[CHUNK:]
                self.send(NODE, {**state_json(node), "items": chunk, "sync": True})
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
        if ftype == NODE:
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
            svc.retract(node, [str(i) for i in p["ids"]], bool(node.config.get("notify_retract", True)), now,
                        replicate=False)
        elif ftype == PURGE and node is not None:
            svc.purge(node, now, replicate=False)

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
        if p.get("items"):
            plugin, w = svc.plugin_of(node), svc.writes(node)
            incoming = sorted((item_of(d) for d in p["items"]), key=_order)
            for it in incoming:
                if it.id not in node.items:
                    plugin.publish_item(node, it, w)
            # Keep the items in publish order (the newest last), whichever side they came from.
            if incoming:
                ordered = sorted(node.items.values(), key=_order)
                node.items.clear()
                node.items.update((i.id, i) for i in ordered)


def _order(i: Item) -> tuple:
    """Items by publish time; the same order on every server when times are equal."""
    return (i.published, i.origin, i.id)
