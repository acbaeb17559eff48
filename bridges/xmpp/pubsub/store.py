"""The `pubsub` store (relay.core.storage): nodes, affiliations, subscriptions and items, per server
(`server`: its id, so servers may share one PostgreSQL database). Loaded whole at start; every change
is an `Op` on the write queue afterwards.

    pubsub_nodes(server, host, node, plugin, config JSON, created, stamp JSON; PK (server, host, node))
    pubsub_affiliations(server, host, node, jid, affiliation; PK (server, host, node, jid))
    pubsub_subscriptions(server, host, node, subid, jid, state, options JSON, stamp JSON; PK (..., subid))
    pubsub_items(server, host, node, item_id, seq, payload, publisher, published, origin, expires;
                 PK (server, host, node, item_id)); `seq` orders a node's items (oldest first)
"""

from __future__ import annotations

import json
import itertools

from relay.core.storage import Op, Schema, Storage

from .nodes import Item, Node, Subscription

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD_NODES = "SELECT host, node, plugin, config, created, stamp FROM pubsub_nodes WHERE server = ?"
_LOAD_AFFILIATIONS = "SELECT host, node, jid, affiliation FROM pubsub_affiliations WHERE server = ?"
_LOAD_SUBSCRIPTIONS = "SELECT host, node, subid, jid, state, options, stamp FROM pubsub_subscriptions WHERE server = ?"
_LOAD_ITEMS = ("SELECT host, node, item_id, seq, payload, publisher, published, origin, expires FROM pubsub_items "
               "WHERE server = ? ORDER BY seq")

SCHEMA = Schema("pubsub", ("""
CREATE TABLE pubsub_nodes (
    server TEXT NOT NULL,
    host TEXT NOT NULL,
    node TEXT NOT NULL,
    plugin TEXT NOT NULL,
    config TEXT NOT NULL,
    created {real} NOT NULL,
    stamp TEXT,
    PRIMARY KEY (server, host, node)
);
CREATE TABLE pubsub_affiliations (
    server TEXT NOT NULL,
    host TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (server, host, node, jid)
);
CREATE TABLE pubsub_subscriptions (
    server TEXT NOT NULL,
    host TEXT NOT NULL,
    node TEXT NOT NULL,
    subid TEXT NOT NULL,
    jid TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT,
    stamp TEXT,
    PRIMARY KEY (server, host, node, subid)
);
CREATE TABLE pubsub_items (
    server TEXT NOT NULL,
    host TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq {int} NOT NULL,
    payload {blob} NOT NULL,
    publisher TEXT NOT NULL,
    published {real} NOT NULL,
    origin TEXT,
    expires {real},
    PRIMARY KEY (server, host, node, item_id)
);
""",), tables=("pubsub_nodes", "pubsub_affiliations", "pubsub_subscriptions", "pubsub_items"),
   loads=(_LOAD_NODES, _LOAD_AFFILIATIONS, _LOAD_SUBSCRIPTIONS, _LOAD_ITEMS))

_NODE = ("INSERT INTO pubsub_nodes(server, host, node, plugin, config, created, stamp) VALUES (?,?,?,?,?,?,?) "
         "ON CONFLICT(server, host, node) DO UPDATE SET plugin = excluded.plugin, config = excluded.config, "
         "stamp = excluded.stamp")
_AFF = ("INSERT INTO pubsub_affiliations(server, host, node, jid, affiliation) VALUES (?,?,?,?,?) "
        "ON CONFLICT(server, host, node, jid) DO UPDATE SET affiliation = excluded.affiliation")
_SUB = ("INSERT INTO pubsub_subscriptions(server, host, node, subid, jid, state, options, stamp) "
        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(server, host, node, subid) DO UPDATE SET jid = excluded.jid, "
        "state = excluded.state, options = excluded.options, stamp = excluded.stamp")
_ITEM = ("INSERT INTO pubsub_items(server, host, node, item_id, seq, payload, publisher, published, origin, "
         "expires) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(server, host, node, item_id) DO UPDATE SET "
         "seq = excluded.seq, payload = excluded.payload, publisher = excluded.publisher, "
         "published = excluded.published, origin = excluded.origin, expires = excluded.expires")


class PubsubStore:
    """The node plugins' `Writes` on the storage write queue, and the load at start."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.server = storage.server_id
        self.seq = itertools.count(1)
        storage.open_store(SCHEMA)

    def load(self) -> list[Node]:
        st = self.storage
        nodes: dict[tuple[str, str], Node] = {}
        for host, name, plugin, config, created, stamp in st.load(_LOAD_NODES):
            nodes[host, name] = Node(host, name, plugin, json.loads(config), created,
                                     stamp=tuple(json.loads(stamp)) if stamp else (0.0, ""))
        for host, name, jid, aff in st.load(_LOAD_AFFILIATIONS):
            n = nodes.get((host, name))
            if n is not None and aff != "none":
                n.affiliations[jid] = aff
        for host, name, subid, jid, state, options, stamp in st.load(_LOAD_SUBSCRIPTIONS):
            n = nodes.get((host, name))
            if n is not None:
                n.subscriptions[subid] = Subscription(jid, subid, state, json.loads(options) if options else {},
                                                      tuple(json.loads(stamp)) if stamp else (0.0, ""))
        top = 0
        for host, name, iid, seq, payload, publisher, published, origin, expires in st.load(_LOAD_ITEMS):
            n = nodes.get((host, name))
            top = max(top, seq)
            if n is not None:
                n.items[iid] = Item(iid, bytes(payload), publisher, published, origin or "", expires)
        self.seq = itertools.count(top + 1)
        return list(nodes.values())

    def _put(self, *ops: Op) -> None:
        self.storage.queue.put(*ops)

    def put_node(self, node: Node) -> None:
        self._put(Op(_NODE, (self.server, node.host, node.name, node.plugin, json.dumps(node.config), node.created,
                             json.dumps(list(node.stamp)))))

    def delete_node(self, host: str, name: str) -> None:
        args = (self.server, host, name)
        self._put(*(Op(f"DELETE FROM {t} WHERE server = ? AND host = ? AND node = ?", args)
                    for t in ("pubsub_items", "pubsub_subscriptions", "pubsub_affiliations", "pubsub_nodes")))

    def put_item(self, node: Node, item: Item) -> None:
        self._put(Op(_ITEM, (self.server, node.host, node.name, item.id, next(self.seq), item.payload,
                             item.publisher, item.published, item.origin, item.expires)))

    def delete_items(self, node: Node, ids: list[str]) -> None:
        self._put(*(Op("DELETE FROM pubsub_items WHERE server = ? AND host = ? AND node = ? AND item_id = ?",
                       (self.server, node.host, node.name, i)) for i in ids))

    def purge(self, node: Node) -> None:
        self._put(Op("DELETE FROM pubsub_items WHERE server = ? AND host = ? AND node = ?",
                     (self.server, node.host, node.name)))

    def put_affiliation(self, node: Node, jid: str, affiliation: str) -> None:
        if affiliation == "none":
            self._put(Op("DELETE FROM pubsub_affiliations WHERE server = ? AND host = ? AND node = ? AND jid = ?",
                         (self.server, node.host, node.name, jid)))
        else:
            self._put(Op(_AFF, (self.server, node.host, node.name, jid, affiliation)))

    def put_subscription(self, node: Node, sub: Subscription) -> None:
        self._put(Op(_SUB, (self.server, node.host, node.name, sub.subid, sub.jid, sub.state,
                            json.dumps(sub.options), json.dumps(list(sub.stamp)))))

    def delete_subscription(self, node: Node, subid: str) -> None:
        self._put(Op("DELETE FROM pubsub_subscriptions WHERE server = ? AND host = ? AND node = ? AND subid = ?",
                     (self.server, node.host, node.name, subid)))
