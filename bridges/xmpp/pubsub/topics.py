"""One namespace with MQTT, through the core's topic service: node `a/b/c` of the service is topic
`a/b/c` (PEP nodes are not topics).

* An item published by XMPP here goes into the topic service (QoS 1, payload = its bytes, item id
  kept as the TopicItem's id, metadata `pubsub: {server, id, publisher}`): MQTT subscribers get
  the payload, and the topic federation carries it to the servers with subscribers.
* Every item the topic service routes here that pubsub did not publish itself (an MQTT publish, or
  an XMPP publish of another server routed here) is a published item (`topic_published` hook):
  kept in its node (auto-created with the default configuration unless `mqtt_autocreate: false`;
  id from the item, else generated), and notified to the node's XMPP subscribers and the
  collections above it. A retained MQTT message is stored as the node's last item; an empty
  retained message (MQTT's "clear") purges the node. MQTT's channel and direct-message topics
  (`chan/`, `users/`: the `mqtt_skip` option) are chats, not nodes.
* The service subscribes to the topic service (as one `TopicSubscriber`) for the nodes with
  subscribers bound here (a collection subscription: `name/#` for depth all, `name/+` for depth 1),
  so items published elsewhere are routed to this server only when someone here wants them.

Access is one rule set: the router asks the topic ACL (`may_publish` / `may_subscribe`) for nodes
that are topics, as MQTT does.
"""

from __future__ import annotations

from relay.core.topics import TopicItem, valid_topic_filter, valid_topic_name

from .nodes import Item, Node
from .service import PubsubService


class TopicBridge:
    online = True

    def __init__(self, svc: PubsubService, topics, skip: tuple[str, ...] = ()):
        self.svc, self.topics = svc, topics
        self.skip = skip            # topic prefixes that are not nodes (MQTT's channels and inboxes)
        self.filters: set[str] = set()

    # ---------------------------------------------------------------- TopicSubscriber
    def item_published(self, item: TopicItem, options: list, now: float) -> None:
        # Runs before the topic service forwards the item: an MQTT publish gets its id here, so every
        # server that stores it uses the same one.
        if item.item_id is None and "pubsub" not in item.metadata:
            item.item_id = self.svc.new_item_id()

    def accepts(self, item) -> bool:
        return True

    # ---------------------------------------------------------------- out
    def routes(self, node: Node) -> bool:
        """The node's items travel through the topic service (only to servers that want them)."""
        return (not self.svc.is_pep(node.host) and not node.name.startswith(("$", *self.skip))
                and valid_topic_name(node.name))

    def wanted_here(self, node: Node) -> bool:
        """Someone here (MQTT, or pubsub's own filters) subscribes to the node's topic: it is routed here."""
        return any(self.topics.tree.match_values(node.name))

    def publish(self, node: Node, item: Item, now: float) -> bool:
        """An XMPP item into the topic service; False if the node is not a topic."""
        if not self.routes(node):
            return False
        meta = {"pubsub": {"server": self.svc.me, "id": item.id, "publisher": item.publisher}}
        self.topics.publish(TopicItem(node.name, item.payload, 1, False, meta, item.expires, item.publisher,
                                      item.id), now)
        return True

    # ---------------------------------------------------------------- in
    def published(self, item: TopicItem, origin, now: float):
        """Hook topic_published: an item of the namespace that pubsub did not publish here."""
        topic = item.topic
        if topic.startswith(("$", *self.skip)):
            return None
        meta = item.metadata.get("pubsub") if isinstance(item.metadata, dict) else None
        if isinstance(meta, dict) and meta.get("server") == self.svc.me:
            return None
        svc = self.svc
        node = svc.get(svc.domain, topic, now)
        if not item.payload:
            if item.retain and node is not None:
                svc.purge(node, now, replicate=False)
            return None
        if node is None:
            if not svc.opts.mqtt_autocreate:
                return None
            # A topic's node: no owner, anyone the topic ACL lets publish may (as in MQTT).
            node = svc.create(svc.domain, topic, None, {"publish_model": "open"}, svc.opts.node_plugin, now,
                              replicate=origin is None)
        if node.is_collection:
            return None
        meta = meta if isinstance(meta, dict) else {}
        iid = item.item_id or meta.get("id") or svc.new_item_id()
        publisher = meta.get("publisher") or item.publisher or ""
        svc.publish(node, Item(str(iid), bytes(item.payload), str(publisher), now,
                               str(meta.get("server") or origin or svc.me), item.expires), now, via="topics")
        return None

    # ---------------------------------------------------------------- our subscriptions
    def wanted(self) -> set[str]:
        svc = self.svc
        xmpp = svc.core.services.get("xmpp")
        here = {str(b) for b in xmpp.accounts} if xmpp is not None else set()
        out: set[str] = set()
        for node in svc.tree.nodes(svc.domain):
            for s in node.subscriptions.values():
                if s.jid.split("/", 1)[0] not in here:
                    continue
                name = node.name
                if valid_topic_name(name) and not name.startswith("$"):
                    out.add(name)
                if svc.tree.collections:
                    depth = str(s.options.get("subscription_depth", "1"))
                    f = name + ("/#" if depth == "all" else "/+")
                    if valid_topic_filter(f) and not name.startswith("$"):
                        out.add(f)
        return out

    def refresh(self, now: float | None = None) -> None:
        want = {f for f in self.wanted() if not f.startswith(self.skip)} if self.skip else self.wanted()
        for f in self.filters - want:
            self.topics.unsubscribe(f, self)
            self.filters.discard(f)
        for f in want - self.filters:
            try:
                self.topics.subscribe(f, self, None)
            except ValueError:
                continue
            self.filters.add(f)

    def detach(self) -> None:
        for f in self.filters:
            self.topics.unsubscribe(f, self)
        self.filters = set()
