"""pubsub: XEP-0060 PubSub at `pubsub.<domain>` and XEP-0163 PEP on every account, one namespace
with MQTT (loaded by default, after `xmpp`).

    modules:
      pubsub:
        host: ""                  # the service's domain; "" = pubsub.<xmpp domain>
        nodetree: dag             # tree | virtual | dag (XEP-0248 collections)
        node_plugin: flat         # the service's node plugin (a module may add one: pubsub-node-plugin)
        default_access_model: open
        default_max_items: 10
        max_items_limit: 10000
        mqtt: true                # node a/b/c is MQTT topic a/b/c (through the topic service)
        fetch_timeout: 5          # seconds to wait for other servers' items of a node (federation.py)

Operator command: `pubsub stats`. Hooks run: `pubsub_publish_item(host, node, item, now)`,
`pubsub_create_node(host, node, owner, now)`, `pubsub_delete_node(host, node, now)`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from relay.core.admin import Reply

from ..jid import JidError, prep_domain
from ..routing import XmppHost
from .federation import PubsubFederation
from .host import ServiceHost
from .pep import Caps, install
from .service import PubsubService
from .store import SCHEMA, PubsubStore
from .topics import TopicBridge

SCHEMAS = (SCHEMA,)   # the stores this module keeps (relayctl restore reads them)

COMMANDS = {"pubsub stats": "PubSub nodes, items and subscriptions on this server"}  # syntax: help


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = ""
    nodetree: Literal["tree", "virtual", "dag"] = "dag"
    node_plugin: str = "flat"
    pep: bool = True
    default_access_model: Literal["open", "presence", "roster", "authorize", "whitelist"] = "open"
    default_publish_model: Literal["publishers", "subscribers", "open"] = "publishers"
    default_max_items: Annotated[int, Field(ge=1)] = 10
    max_items_limit: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_payload_size: Annotated[int, Field(ge=0)] = 65536     # bytes of one item's payload; 0: no limit
    auto_create: bool = True
    instant_nodes: bool = True
    create_access: Literal["all", "local", "none"] = "local"   # who may create nodes on the service
    multi_subscribe: bool = False
    persist: bool = True                  # nodes and items in the server's storage (tree and dag)
    mqtt: bool = True                     # one namespace with the topic service
    mqtt_autocreate: bool = True          # an MQTT publish to a topic without a node creates it
    # Topic prefixes that are not nodes; None: the mqtt module's channel_prefix and direct_prefix
    # (channel messages and direct messages are chats, not items to keep).
    mqtt_skip: list[str] | None = None
    federation: bool = True
    caps_cache: Annotated[int, Field(ge=16)] = 10_000
    expiry_interval: Annotated[float, Field(gt=0)] = 5.0
    fetch_timeout: Annotated[float, Field(gt=0)] = 5.0    # seconds to wait for other servers' items


def xmpp_domain(core) -> str:
    xmpp = core.services.get("xmpp")
    if xmpp is not None:
        return xmpp.domain
    section = core.config.section("xmpp")
    return section.domain if section is not None else "localhost"


def setup(module) -> None:
    core, opts = module.core, module.options
    domain = xmpp_domain(core)
    try:
        host = prep_domain(opts.host) if opts.host else f"pubsub.{domain}"
    except JidError as e:
        raise ValueError(f"pubsub host {opts.host!r}: {e}") from None
    store = PubsubStore(core.storage) if opts.persist else None
    svc = PubsubService(core, opts, store)
    svc.domain, svc.xmpp_domain = host, domain
    if store is not None:
        for node in store.load():
            svc.tree_of(node.host).add(node)
            node.stored = svc.tree_of(node.host).stored
    module.provide("pubsub", svc)
    module.add_item("xmpp-host", XmppHost(host, ServiceHost(svc), "PubSub", "pubsub", "service"))

    if opts.pep:
        caps = Caps(svc, opts.caps_cache)
        install(module, svc, caps)
        module.state["caps"] = caps

    topics = core.services.get("topics")
    bridge = None
    if opts.mqtt and topics is not None:
        skip = opts.mqtt_skip
        if skip is None:
            m = (core.config.modules.get("mqtt") or {}) if "mqtt" in core.config.modules else {}
            skip = [p for p in (m.get("channel_prefix", "chan/"), m.get("direct_prefix", "users/")) if p]
        bridge = svc.topics = TopicBridge(svc, topics, tuple(skip))
        module.hook("topic_published", bridge.published)
        svc.changed_subscriptions = lambda: refresh()
        module.every(1.0, lambda now: refresh())  # accounts bind and leave: whose subscriptions are here
    if opts.federation:
        fed = svc.fed = PubsubFederation(svc, core, module.timer, opts.fetch_timeout)
        module.hook("link_extension", fed.on_extension)
        module.hook("link_up", fed.link_up)
        if topics is not None and opts.mqtt:
            topics.enable_federation(core.now())

    def refresh():
        bridge.refresh()
        if svc.fed is not None:
            svc.fed.prune_synced()
    if bridge is not None:
        refresh()
    module.every(opts.expiry_interval, svc.expire)
    module.command("pubsub stats", lambda ctx: _stats(svc))

    def unload():
        if bridge is not None:
            bridge.detach()
    module.on_unload(unload)


def _stats(svc: PubsubService) -> Reply:
    data = svc.stats()
    if svc.fed is not None:
        data["frames"] = dict(svc.fed.stats)
    topics = svc.core.services.get("topics")
    if topics is not None:
        # server id -> how many topic filters it announced (pubsub's subscriptions there included)
        data["topic_servers"] = topics.fed.status()["servers"]
    return Reply("\n".join(f"{k}: {v}" for k, v in data.items()), data)
