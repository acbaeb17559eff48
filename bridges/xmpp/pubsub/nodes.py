"""Nodes, items, subscriptions and affiliations, and the node plugins that keep them (ejabberd's
node_flat and node_pep): below the router, they know no access rules and no stanzas; each change
is kept in memory and written through the store (`store.py`, or `NO_STORE` for virtual nodes).

A module adds a node plugin with `module.add_item("pubsub-node-plugin", MyPlugin())`: an object of
the `NodePlugin` protocol whose `name` is then a valid `pubsub#type`-like plugin name in the
`modules: {pubsub: {plugins: [...]}}` option and in `create` (`<create node='n' type='name'/>`
is not XEP-0060; the service's `node_plugin` option picks the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")


@dataclass(slots=True)
class Item:
    id: str
    payload: bytes          # the payload element's XML, or an MQTT payload byte for byte
    publisher: str          # a JID, or an MQTT client id
    published: float
    origin: str = ""        # the server it was published on
    expires: float | None = None


@dataclass(slots=True)
class Subscription:
    jid: str                # as subscribed: a bare or a full JID
    subid: str
    state: str = "subscribed"    # subscribed, pending, unconfigured
    options: dict = field(default_factory=dict)
    stamp: tuple = (0.0, "")


@dataclass(slots=True)
class Node:
    host: str               # the service's domain, or the account's bare JID (PEP)
    name: str
    plugin: str
    config: dict
    created: float = 0.0
    affiliations: dict[str, str] = field(default_factory=dict)     # bare JID -> affiliation
    subscriptions: dict[str, Subscription] = field(default_factory=dict)   # subid -> subscription
    items: dict[str, Item] = field(default_factory=dict)   # item id -> item, oldest first
    stamp: tuple = (0.0, "")     # (time, server) of the last configuration change (convergence)
    stored: bool = True     # False: a virtual node, nothing written
    # What a netjoin must not bring back (federation.py): item id -> (time, server) of its retract,
    # and the stamp of the last purge. In memory.
    retracted: dict[str, tuple] = field(default_factory=dict)
    purged: tuple = (0.0, "")

    @property
    def is_collection(self) -> bool:
        return self.config.get("node_type") == "collection"

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")

    def owners(self) -> list[str]:
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def subscriptions_of(self, jid: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.jid == jid]

    def last_item(self) -> Item | None:
        return next(reversed(self.items.values()), None) if self.items else None


class Writes(Protocol):
    """What a node plugin writes through (store.PubsubStore, or NO_STORE)."""

    def put_node(self, node: Node) -> None: ...
    def delete_node(self, host: str, name: str) -> None: ...
    def put_item(self, node: Node, item: Item) -> None: ...
    def delete_items(self, node: Node, ids: list[str]) -> None: ...
    def purge(self, node: Node) -> None: ...
    def put_affiliation(self, node: Node, jid: str, affiliation: str) -> None: ...
    def put_subscription(self, node: Node, sub: Subscription) -> None: ...
    def delete_subscription(self, node: Node, subid: str) -> None: ...


class _NoStore:
    def __getattr__(self, name):
        return lambda *args: None


NO_STORE = _NoStore()


@runtime_checkable
class NodePlugin(Protocol):
    """A node plugin: the nodes of one kind, at the level of data (ejabberd's gen_pubsub_node)."""

    name: str
    features: tuple[str, ...]      # pubsub#... features it supports (disco#info, and the router's check)

    def default_config(self, base: dict) -> dict:
        """This kind's default node configuration, from the service's."""

    def create_node(self, node: Node, owner: str | None, store: Writes) -> None: ...
    def delete_node(self, node: Node, store: Writes) -> None: ...

    def publish_item(self, node: Node, item: Item, store: Writes) -> list[Item]:
        """Keep `item` (replacing one of the same id); returns the items dropped past max_items."""

    def retract_item(self, node: Node, item_id: str, store: Writes) -> Item | None: ...
    def purge_node(self, node: Node, store: Writes) -> list[Item]: ...
    def get_items(self, node: Node, now: float) -> list[Item]:
        """The live items, newest first (expired ones are not returned)."""

    def set_affiliation(self, node: Node, jid: str, affiliation: str, store: Writes) -> None: ...
    def set_subscription(self, node: Node, sub: Subscription, store: Writes) -> None: ...
    def remove_subscription(self, node: Node, subid: str, store: Writes) -> Subscription | None: ...


FLAT_FEATURES = (
    "access-authorize", "access-open", "access-presence", "access-roster", "access-whitelist",
    "auto-create", "auto-subscribe", "collections", "config-node", "create-and-configure", "create-nodes",
    "delete-items", "delete-nodes", "filtered-notifications", "get-pending", "instant-nodes", "item-ids",
    "last-published", "manage-affiliations", "manage-subscriptions", "member-affiliation", "modify-affiliations",
    "multi-items", "multi-subscribe", "outcast-affiliation", "persistent-items", "presence-notifications",
    "presence-subscribe", "publish", "publish-only-affiliation", "publish-options", "publisher-affiliation",
    "purge-nodes", "retract-items", "retrieve-affiliations", "retrieve-default", "retrieve-items",
    "retrieve-subscriptions", "subscribe", "subscription-options", "subscription-notifications", "rsm",
)


class FlatNode:
    """ejabberd's node_flat: every node on its own, items kept up to max_items."""

    name = "flat"
    features = FLAT_FEATURES

    def default_config(self, base: dict) -> dict:
        return dict(base)

    def create_node(self, node: Node, owner: str | None, store: Writes) -> None:
        if owner:
            node.affiliations[owner] = "owner"
        store.put_node(node)
        if owner:
            store.put_affiliation(node, owner, "owner")

    def delete_node(self, node: Node, store: Writes) -> None:
        store.delete_node(node.host, node.name)

    def publish_item(self, node: Node, item: Item, store: Writes) -> list[Item]:
        items = node.items
        items.pop(item.id, None)
        if not node.config.get("persist_items", True) and int(node.config.get("max_items", 1) or 0) == 0:
            return []
        items[item.id] = item
        limit = int(node.config.get("max_items", 1) or 0)
        dropped = []
        while len(items) > max(limit, 1):
            oldest = next(iter(items))
            dropped.append(items.pop(oldest))
        store.put_item(node, item)
        if dropped:
            store.delete_items(node, [i.id for i in dropped])
        return dropped

    def retract_item(self, node: Node, item_id: str, store: Writes) -> Item | None:
        item = node.items.pop(item_id, None)
        if item is not None:
            store.delete_items(node, [item_id])
        return item

    def purge_node(self, node: Node, store: Writes) -> list[Item]:
        gone = list(node.items.values())
        node.items.clear()
        store.purge(node)
        return gone

    def get_items(self, node: Node, now: float) -> list[Item]:
        return [i for i in reversed(node.items.values()) if i.expires is None or i.expires > now]

    def set_affiliation(self, node: Node, jid: str, affiliation: str, store: Writes) -> None:
        if affiliation == "none":
            node.affiliations.pop(jid, None)
        else:
            node.affiliations[jid] = affiliation
        store.put_affiliation(node, jid, affiliation)

    def set_subscription(self, node: Node, sub: Subscription, store: Writes) -> None:
        node.subscriptions[sub.subid] = sub
        store.put_subscription(node, sub)

    def remove_subscription(self, node: Node, subid: str, store: Writes) -> Subscription | None:
        sub = node.subscriptions.pop(subid, None)
        if sub is not None:
            store.delete_subscription(node, subid)
        return sub


class PepNode(FlatNode):
    """ejabberd's node_pep: the nodes of one account (its bare JID is the host and the owner);
    presence access, the last item sent on subscription and on presence."""

    name = "pep"
    features = FLAT_FEATURES

    def default_config(self, base: dict) -> dict:
        return {**base, "access_model": "presence", "max_items": 1, "send_last_published_item": "on_sub_and_presence",
                "presence_based_delivery": True, "notify_retract": True}
