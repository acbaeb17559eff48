"""The PubSub state of one server: the service's nodes (at `pubsub.<domain>`, in the configured
nodetree) and every account's PEP nodes (host = the bare JID, `pep` plugin, `tree` nodetree); the
access checks the router asks; the changes (create, publish, retract, purge, delete, configure,
affiliations, subscriptions) with their notifications, hooks, topic-service publishes and
federation frames. Synchronous: every entry point takes `now`.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from lxml import etree

from ..stanza import element
from .nodes import NO_STORE, FlatNode, Item, Node, NodePlugin, PepNode, Subscription
from .nodetree import NODETREES, TreeNodetree

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
SHIM = "http://jabber.org/protocol/shim"
MQTT_PAYLOAD = "urn:relaynet:mqtt:0"     # an MQTT payload that is not namespaced XML, shown to XMPP
TOMBSTONES_PER_NODE = 1000                # retracted item ids a node remembers (at least its max_items)

_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                        remove_comments=True, remove_pis=True)


def q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def payload_element(data: bytes) -> etree._Element | None:
    """How an item's bytes look to XMPP: the element when they are one namespaced XML element (no DTD),
    else `<mqtt xmlns='urn:relaynet:mqtt:0' encoding='utf-8|base64'>`; None for no payload."""
    if not data:
        return None
    if data.lstrip()[:1] == b"<" and b"<!" not in data:
        try:
            el = etree.fromstring(data, _SAFE)
            if etree.QName(el).namespace:
                return el
        except (etree.XMLSyntaxError, ValueError):
            pass
    import base64
    el = etree.Element(q(MQTT_PAYLOAD, "mqtt"), nsmap={None: MQTT_PAYLOAD})
    try:
        text = data.decode("utf-8")
        if any(c < " " and c not in "\t\n\r" for c in text) or "\ufffe" in text or "\uffff" in text:
            raise ValueError
        el.set("encoding", "utf-8")
        el.text = text
    except ValueError:
        el.set("encoding", "base64")
        el.text = base64.b64encode(data).decode()
    return el


def payload_bytes(el: etree._Element) -> bytes:
    """An item's payload element as the bytes MQTT subscribers get (the MQTT wrapper is unwrapped)."""
    if el.tag == q(MQTT_PAYLOAD, "mqtt"):
        import base64
        text = el.text or ""
        return base64.b64decode(text) if el.get("encoding") == "base64" else text.encode("utf-8")
    el = etree.fromstring(etree.tostring(el))      # a copy with its inherited namespaces declared
    el.tail = None
    return etree.tostring(el)


class PubsubService:
    def __init__(self, core, opts, store=None):
        self.core, self.opts = core, opts
        self.me = core.config.server.id
        self.store = store if store is not None else NO_STORE
        self.tree = NODETREES[opts.nodetree]()          # the service's nodes
        self.pep = TreeNodetree()                       # PEP nodes: host = the account's bare JID
        self.builtin: dict[str, NodePlugin] = {"flat": FlatNode(), "pep": PepNode()}
        self.domain = ""                                # the service's domain, set by the module
        self.xmpp_domain = ""
        self.notifiers: list[Callable] = []             # fn(node, now) -> full JIDs (PEP +notify)
        self.fed = None                                 # federation.PubsubFederation
        self.topics = None                              # topics.TopicBridge
        self.changed_subscriptions: Callable[[], None] = lambda: None

    # ---------------------------------------------------------------- plugins and trees
    def plugin(self, name: str) -> NodePlugin | None:
        for p in self.core.items.get("pubsub-node-plugin"):
            if p.name == name:
                return p
        return self.builtin.get(name)

    def plugin_of(self, node: Node) -> NodePlugin:
        return self.plugin(node.plugin) or self.builtin["flat"]

    def is_pep(self, host: str) -> bool:
        return host != self.domain

    def tree_of(self, host: str):
        return self.pep if self.is_pep(host) else self.tree

    def writes(self, node: Node):
        return self.store if node.stored else NO_STORE

    def base_config(self) -> dict:
        o = self.opts
        return {"access_model": o.default_access_model, "publish_model": o.default_publish_model,
                "max_items": o.default_max_items, "persist_items": True, "deliver_payloads": True,
                "deliver_notifications": True, "notify_config": False, "notify_delete": True,
                "notify_retract": True, "notify_sub": False, "presence_based_delivery": False,
                "send_last_published_item": "on_sub", "item_expire": 0, "max_payload_size": o.max_payload_size,
                "node_type": "leaf", "collection": [], "roster_groups_allowed": [], "title": "",
                "type": "", "subscribe": True}

    def default_config(self, plugin: str) -> dict:
        p = self.plugin(plugin) or self.builtin["flat"]
        return p.default_config(self.base_config())

    def get(self, host: str, name: str, now: float) -> Node | None:
        """The node, or a virtual node on a `virtual` tree (kept once used)."""
        tree = self.tree_of(host)
        node = tree.get(host, name)
        if node is None and tree.implicit and name:
            node = Node(host, name, self.opts.node_plugin, self.default_config(self.opts.node_plugin), now,
                        stored=False)
            tree.add(node)
        return node

    def all_nodes(self):
        yield from self.tree.all()
        yield from self.pep.all()

    # ---------------------------------------------------------------- access
    def roster_item(self, account_bare: str, contact_bare: str) -> dict | None:
        """`contact_bare` in the roster of the local account `account_bare` (None when unknown)."""
        xmpp = self.core.services.get("xmpp")
        local, _, domain = account_bare.partition("@")
        if xmpp is None or domain != self.xmpp_domain:
            return None
        return xmpp.roster.item(local, contact_bare)

    def presence_ok(self, owner: str, bare: str) -> bool:
        """`bare` may see `owner`'s presence (either roster says so: rosters are kept per server)."""
        mine = self.roster_item(owner, bare)
        if mine is not None and mine["subscription"] in ("from", "both"):
            return True
        theirs = self.roster_item(bare, owner)
        return theirs is not None and theirs["subscription"] in ("to", "both")

    def access(self, node: Node, bare: str) -> tuple[str, str, str | None] | None:
        """Why `bare` may not subscribe to or retrieve `node` ((type, condition, pubsub#errors
        condition)), or None. `authorize` is decided by the caller (pending subscriptions)."""
        aff = node.affiliation(bare)
        if aff == "outcast":
            return ("auth", "forbidden", None)
        owners = node.owners() or ([node.host] if self.is_pep(node.host) else [])
        if aff in ("owner", "publisher", "member") or bare in owners:
            return None
        model = node.config.get("access_model", "open")
        if model == "open" or model == "authorize":
            return None
        if model == "presence":
            if any(self.presence_ok(o, bare) for o in owners):
                return None
            return ("auth", "not-authorized", "presence-subscription-required")
        if model == "roster":
            allowed = set(node.config.get("roster_groups_allowed") or ())
            for o in owners:
                item = self.roster_item(o, bare)
                if item is not None and allowed.intersection(item.get("groups") or ()):
                    return None
            return ("auth", "not-authorized", "not-in-roster-group")
        return ("cancel", "not-allowed", "closed-node")     # whitelist

    def may_create(self, bare: str) -> bool:
        o = self.opts.create_access
        return o == "all" or (o == "local" and bare.endswith("@" + self.xmpp_domain))

    def may_publish(self, node: Node, bare: str) -> bool:
        aff = node.affiliation(bare)
        if aff == "outcast":
            return False
        if aff in ("owner", "publisher", "publish-only") or (self.is_pep(node.host) and bare == node.host):
            return True
        model = node.config.get("publish_model", "publishers")
        if model == "open":
            return True
        if model == "subscribers":
            return any(s.state == "subscribed" and _bare(s.jid) == bare for s in node.subscriptions.values())
        return False

    # ---------------------------------------------------------------- changes
    def stamp(self, now: float) -> tuple:
        return (round(now, 6), self.me)

    def create(self, host: str, name: str, owner: str | None, config: dict, plugin: str, now: float,
               replicate: bool = True) -> Node:
        tree = self.tree_of(host)
        node = Node(host, name, plugin, {**self.default_config(plugin), **config}, now, stamp=self.stamp(now),
                    stored=tree.stored)
        tree.add(node)
        self.plugin_of(node).create_node(node, owner, self.writes(node))
        hooks = self.core.hooks
        if hooks.has("pubsub_create_node"):
            hooks.run("pubsub_create_node", host, name, owner, now)
        if replicate and self.fed is not None:
            self.fed.node_changed(node)
        return node

    def node_changed(self, node: Node, now: float) -> None:
        """Its configuration, affiliations or subscriptions changed: stored, and told to the tree."""
        node.stamp = self.stamp(now)
        self.writes(node).put_node(node)
        if self.fed is not None:
            self.fed.node_changed(node)

    def delete(self, node: Node, redirect: str | None, now: float, replicate: bool = True) -> None:
        if node.config.get("notify_delete", True):
            ev = etree.Element(q(EVENT, "delete"), node=node.name)
            if redirect:
                etree.SubElement(ev, q(EVENT, "redirect"), uri=redirect)
            self.notify_subscribers(node, ev, now)
        self.tree_of(node.host).remove(node.host, node.name)
        self.plugin_of(node).delete_node(node, self.writes(node))
        hooks = self.core.hooks
        if hooks.has("pubsub_delete_node"):
            hooks.run("pubsub_delete_node", node.host, node.name, now)
        if replicate and self.fed is not None:
            self.fed.node_deleted(node, now)
        self.changed_subscriptions()

    def with_items(self, node: Node, now: float, then: Callable[[float], None]) -> None:
        """`then(now)` once this server holds the node's items (federation.py may ask for them)."""
        if self.fed is None:
            then(now)
        else:
            self.fed.with_items(node, now, then)

    def new_item_id(self) -> str:
        return secrets.token_hex(8)

    def publish(self, node: Node, item: Item, now: float, via: str = "xmpp") -> None:
        """Keep and notify `item`; `via` is where it came from: "xmpp" (a client here: it also goes
        into the topic service and across the tree), "topics" (an MQTT publish, or an item another
        server routed here through the topic service) or "link" (a federation frame)."""
        expire = int(node.config.get("item_expire") or 0)
        if expire and item.expires is None:
            item.expires = item.published + expire
        self.plugin_of(node).publish_item(node, item, self.writes(node))
        self.notify_items(node, [item], now)
        hooks = self.core.hooks
        if hooks.has("pubsub_publish_item"):
            hooks.run("pubsub_publish_item", node.host, node.name, item, now)
        if via == "xmpp":
            routed = self.topics is not None and not self.is_pep(node.host) and self.topics.publish(node, item, now)
            if not routed and self.fed is not None:
                self.fed.item_published(node, item)

    def retract(self, node: Node, ids: list[str], notify: bool, now: float, replicate: bool = True,
                stamp: tuple | None = None, tombstone: bool = True) -> list[str]:
        """`stamp`: the retract's, when another server made it (its ids are remembered even where the
        items never were); `tombstone=False` for expiry, which every server does on its own."""
        plugin, gone, remote = self.plugin_of(node), [], stamp is not None
        for i in ids:
            item = node.items.get(i)
            if remote and item is not None and item.published > stamp[0]:
                continue                               # published again after that retract
            if plugin.retract_item(node, i, self.writes(node)) is not None:
                gone.append(i)
        stamp = stamp or self.stamp(now)
        if tombstone:
            self.tombstone(node, ids if remote else gone, stamp)
        if gone and notify:
            items = etree.Element(q(EVENT, "items"), node=node.name)
            for i in gone:
                etree.SubElement(items, q(EVENT, "retract"), id=i)
            self.notify_subscribers(node, items, now, pep=True)
        if gone and replicate and self.fed is not None:
            self.fed.items_retracted(node, gone, stamp)
        return gone

    def tombstone(self, node: Node, ids: list[str], stamp: tuple) -> None:
        t = node.retracted
        for i in ids:
            if stamp > t.get(i, (0.0, "")):
                t.pop(i, None)
                t[i] = stamp                            # the newest last
        while len(t) > max(TOMBSTONES_PER_NODE, int(node.config.get("max_items") or 0)):
            del t[next(iter(t))]

    def purge(self, node: Node, now: float, replicate: bool = True, stamp: tuple | None = None) -> None:
        """`stamp`: another server's purge (replayed after a split, say): what was published here
        after it stays."""
        plugin = self.plugin_of(node)
        if stamp is not None and any(i.published > stamp[0] for i in node.items.values()):
            for iid in [i.id for i in node.items.values() if i.published <= stamp[0]]:
                plugin.retract_item(node, iid, self.writes(node))
        else:
            plugin.purge_node(node, self.writes(node))
        node.purged = max(node.purged, stamp or self.stamp(now))
        self.notify_subscribers(node, etree.Element(q(EVENT, "purge"), node=node.name), now)
        if replicate and self.fed is not None:
            self.fed.node_purged(node, node.purged)

    def set_subscription(self, node: Node, sub: Subscription, now: float) -> None:
        sub.stamp = self.stamp(now)
        self.plugin_of(node).set_subscription(node, sub, self.writes(node))
        self.node_changed(node, now)
        self.changed_subscriptions()
        if node.config.get("notify_sub"):
            ev = etree.Element(q(EVENT, "subscription"), node=node.name, jid=sub.jid, subscription=sub.state,
                               subid=sub.subid)
            self.notify_owners(node, ev, now)

    def remove_subscription(self, node: Node, subid: str, now: float) -> Subscription | None:
        sub = self.plugin_of(node).remove_subscription(node, subid, self.writes(node))
        if sub is not None:
            self.node_changed(node, now)
            self.changed_subscriptions()
            if node.config.get("notify_sub"):
                ev = etree.Element(q(EVENT, "subscription"), node=node.name, jid=sub.jid, subscription="none")
                self.notify_owners(node, ev, now)
        return sub

    def set_affiliation(self, node: Node, jid: str, affiliation: str, now: float) -> None:
        self.plugin_of(node).set_affiliation(node, jid, affiliation, self.writes(node))
        if affiliation == "outcast":
            for sub in [s for s in node.subscriptions.values() if _bare(s.jid) == jid]:
                self.plugin_of(node).remove_subscription(node, sub.subid, self.writes(node))
            self.changed_subscriptions()
        self.node_changed(node, now)

    def expire(self, now: float) -> None:
        """Items past their pubsub#item_expire are dropped (without notifications)."""
        for node in list(self.all_nodes()):
            if not node.config.get("item_expire"):
                continue
            old = [i.id for i in node.items.values() if i.expires is not None and i.expires <= now]
            if old:
                self.retract(node, old, False, now, replicate=False, tombstone=False)

    # ---------------------------------------------------------------- notifications
    def item_element(self, item: Item, payload: bool, ns: str = EVENT) -> etree._Element:
        el = etree.Element(q(ns, "item"), id=item.id)
        if payload:
            p = payload_element(item.payload)
            if p is not None:
                el.append(p)
        if item.publisher and ns == EVENT:
            el.set("publisher", item.publisher)
        return el

    def subscribers(self, node: Node, items: bool = True) -> dict[str, list[tuple[Subscription, str | None]]]:
        """JID -> (subscription, collection it came through or None) for every subscription that gets
        an event of `node`: its own, and the collections above it (dag) with the right type and depth."""
        out: dict[str, list] = {}
        for s in node.subscriptions.values():
            if s.state == "subscribed" and s.options.get("deliver", True):
                out.setdefault(s.jid, []).append((s, None))
        tree = self.tree_of(node.host)
        for name, depth in tree.ancestors(node).items():
            coll = tree.get(node.host, name)
            for s in coll.subscriptions.values():
                if s.state != "subscribed" or not s.options.get("deliver", True):
                    continue
                if (s.options.get("subscription_type", "items") == "items") != items:
                    continue
                if str(s.options.get("subscription_depth", "1")) == "1" and depth > 1:
                    continue
                out.setdefault(s.jid, []).append((s, name))
        return out

    def message(self, node: Node, to: str, event_child: etree._Element, collection: str | None = None,
                subids: list[str] | None = None) -> etree._Element:
        msg = element("message", {"from": node.host if self.is_pep(node.host) else self.domain, "to": to,
                                  "type": "headline" if not self.is_pep(node.host) else None,
                                  "id": secrets.token_hex(6)})
        ev = etree.SubElement(msg, q(EVENT, "event"), nsmap={None: EVENT})
        ev.append(event_child)
        if collection or (subids and len(subids) > 1):
            h = etree.SubElement(msg, q(SHIM, "headers"), nsmap={None: SHIM})
            if collection:
                etree.SubElement(h, q(SHIM, "header"), name="Collection").text = collection
            for sid in subids or ():
                etree.SubElement(h, q(SHIM, "header"), name="SubId").text = sid
        return msg

    def deliver(self, msg: etree._Element, now: float) -> bool:
        xmpp = self.core.services.get("xmpp")
        if xmpp is None or xmpp.router is None:
            return False
        return xmpp.router.deliver(msg, now)

    def notify_items(self, node: Node, items: list[Item], now: float) -> None:
        if not node.config.get("deliver_notifications", True):
            return
        payload = bool(node.config.get("deliver_payloads", True))
        done = set()
        for jid, via in self.subscribers(node).items():
            done.add(jid)
            ev = etree.Element(q(EVENT, "items"), node=node.name)
            for it in items:
                ev.append(self.item_element(it, payload))
            self.deliver(self.message(node, jid, ev, via[0][1], [s.subid for s, _ in via]), now)
        for fn in self.notifiers:                       # PEP: contacts with +notify
            for jid in fn(node, now):
                if jid in done or _bare(jid) in done:
                    continue
                done.add(jid)
                ev = etree.Element(q(EVENT, "items"), node=node.name)
                for it in items:
                    ev.append(self.item_element(it, payload))
                self.deliver(self.message(node, jid, ev), now)

    def notify_subscribers(self, node: Node, child: etree._Element, now: float, pep: bool = False) -> None:
        done = set()
        for jid in self.subscribers(node, items=True):
            done.add(jid)
            self.deliver(self.message(node, jid, _copy(child)), now)
        if pep:
            for fn in self.notifiers:
                for jid in fn(node, now):
                    if jid not in done and _bare(jid) not in done:
                        done.add(jid)
                        self.deliver(self.message(node, jid, _copy(child)), now)

    def notify_owners(self, node: Node, child: etree._Element, now: float) -> None:
        for o in node.owners():
            self.deliver(self.message(node, o, _copy(child)), now)

    def send_last(self, node: Node, jid: str, now: float) -> None:
        items = self.plugin_of(node).get_items(node, now)
        if not items:
            return
        ev = etree.Element(q(EVENT, "items"), node=node.name)
        ev.append(self.item_element(items[0], bool(node.config.get("deliver_payloads", True))))
        self.deliver(self.message(node, jid, ev), now)

    def stats(self) -> dict[str, Any]:
        nodes = list(self.tree.all())
        pep = list(self.pep.all())
        return {"nodes": len(nodes), "pep_nodes": len(pep), "items": sum(len(n.items) for n in nodes + pep),
                "subscriptions": sum(len(n.subscriptions) for n in nodes + pep), "nodetree": self.tree.name}


def _bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))
