"""mqtt: an MQTT 3.1.1 / 5.0 broker, as a module.

    modules:
      mqtt:
        allow_anonymous: true
        channel_prefix: "chan/"          # chan/NAME is channel #NAME
        direct_prefix: "users/"          # direct messages on users/<username>/inbox
        acl:                             # first match wins; none: acl_default
          - {action: subscribe, topic: "users/%u/#", allow: true, who: all}
          - {action: all, topic: "users/#", allow: false}
    listen:
      - {proto: mqtt, port: 1883}
      - {proto: http, port: 8080}        # MQTT over WebSocket at /mqtt, subprotocol "mqtt"

The built-in default loads it and listens `{proto: mqtt, port: 1883}` on loopback;
loaded with no MQTT listener, it says what to add (NO_LISTENER).
Listener protocol `mqtt` (TCP); MQTT over WebSocket is the `/mqtt` route of the
`http` listener (binary frames; a text frame closes with 1003, MQTT-6.0.0-1).
`proto: mqtt-ws` still works: a listener serving that route alone, at any path. Persistent sessions (their
subscriptions and queued QoS 1/2 messages) and retained messages are kept in
`<data_dir>/mqtt.db` and survive a restart. See broker.py (routing), channels.py
(channels and the one-path rule), relay/core/topic_service.py and topic_federation.py (the topic
service it publishes through, across server links), store.py (schema).
Operator commands: `mqtt stats`, `mqtt sessions`.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.core.http_routes import BINARY_STREAM
from relay.core.topic_acl import TopicAcl
from relay.core.topic_federation import DEFAULT_METADATA_CODEC
from relay.core.topics import valid_topic_filter

from .broker import NEVER, Broker
from .client import Client
from .store import SCHEMA, RetainedItems, Store, props_from_json, props_to_json

SCHEMAS = (SCHEMA,)   # the stores this module keeps (relayctl restore reads them)

# Operator commands, syntax: help (read by relayctl without a server; setup() binds the handlers).
COMMANDS = {
    "mqtt stats": "MQTT broker counters: sessions, messages, drops",
    "mqtt sessions": "MQTT sessions: client id, user, connected, subscriptions, queued",
}


class AclRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["subscribe", "publish", "all"] = "all"
    topic: str
    allow: bool = True
    who: str = "all"

    @field_validator("topic")
    @classmethod
    def _filter(cls, v: str) -> str:
        if not valid_topic_filter(v.replace("%u", "u").replace("%c", "c")):
            raise ValueError(f"not a valid topic filter: {v!r}")
        return v


def _prefix(v: str) -> str:
    if v and (not v.endswith("/") or "+" in v or "#" in v or v.startswith("$")):
        raise ValueError("must be empty or a topic prefix ending with '/' without wildcards or a leading '$'")
    return v


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_anonymous: bool = True
    channel_prefix: str = "chan/"
    direct_prefix: str = "users/"
    acl: list[AclRule] = Field(default_factory=list)
    acl_default: bool = True
    max_packet_size: Annotated[int, Field(ge=128, le=268_435_455)] = 1024 * 1024
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 100       # what clients may have in flight to us
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100          # cap of our in-flight QoS 1/2 per client
    topic_alias_maximum: Annotated[int, Field(ge=0, le=65535)] = 10    # aliases clients may use towards us
    topic_alias_out_maximum: Annotated[int, Field(ge=0, le=65535)] = 10  # aliases we use towards clients
    max_keepalive: Annotated[int, Field(ge=0, le=65535)] = 0           # 0: the client's value is kept
    max_session_expiry: Annotated[int, Field(ge=0, le=NEVER)] = NEVER
    max_queued: Annotated[int, Field(ge=1)] = 1000                     # queued QoS 1/2 messages per session
    qos0_backlog: Annotated[int, Field(ge=0)] = 0                      # QoS 0 shed past this backlog; 0: limits.sendq
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    sweep_interval: Annotated[float, Field(gt=0)] = 1.0
    sys_interval: Annotated[float, Field(ge=0)] = 10.0                 # 0: no $SYS topics
    persist: bool = True
    db_file: str = "mqtt.db"
    federation: bool = True

    @field_validator("channel_prefix", "direct_prefix")
    @classmethod
    def _prefixes(cls, v: str) -> str:
        return _prefix(v)


# What `module load mqtt` (and the log) says when nothing would serve MQTT clients.
NO_LISTENER = ("no MQTT listener is configured, so MQTT clients cannot connect here. To serve MQTT, add this "
               "under `listen:` in the config file and restart the server:\n"
               "  - {proto: mqtt, host: 127.0.0.1, port: 1883}\n"
               "  - {proto: http, host: 127.0.0.1, port: 8080}    # optional: MQTT over WebSocket at /mqtt")


def setup(module) -> None:
    core = module.core
    opts: Options = module.options
    if not any(l.proto in ("mqtt", "mqtt-ws", "http") for l in core.config.listen):
        module.note(NO_LISTENER)
    legacy = core.config.data_path / opts.db_file
    # Loaded while the server serves (the runtime's listeners are open): the stored state is read
    # without stalling the loop, and MQTT clients are accepted (the protocol provided) once it is in.
    if opts.persist and core.serving:
        pending = {"unloaded": False}
        module.on_unload(lambda: pending.update(unloaded=True))
        module.note("reading the stored MQTT state: MQTT clients are accepted once it is in")

        def loaded(store: Store | None) -> None:
            if pending["unloaded"]:
                return
            if store is None:
                module.log.error("mqtt: the stored state could not be read (see above); not serving MQTT: "
                                 "`module reload mqtt` to try again")
                return
            try:
                _serve(module, store)
            except Exception:
                module.log.exception("mqtt: failed to start on the stored state; not serving MQTT")
                return
            module.log.info("mqtt: stored state read; serving MQTT clients")
        Store.open_later(core.storage, legacy, loaded)
        return
    _serve(module, Store(core.storage, legacy) if opts.persist else None)


def _serve(module, store: Store | None) -> None:
    """Everything but reading the store: the broker on its loaded state, its protocols, hooks and commands."""
    core = module.core
    opts: Options = module.options
    topics = core.services["topics"]
    broker = Broker(core, opts, store, module.log)
    # The one rule set of the topic namespace (PubSub asks the same service).
    topics.acl = TopicAcl(opts.acl, opts.acl_default,
                          lambda who, account, ip: core.acl.match(who, core.subject(account, ip)))
    now = core.now()
    try:
        broker.load(now)
    except Exception:
        broker.detach_topics()      # the sessions restored so far subscribed already
        topics.acl = None
        if store is not None:
            store.close()
        raise
    if store is not None:
        topics.persistence = RetainedItems(store)
    module.state["broker"] = broker

    if opts.federation:
        # Across the tree through the topic service (MQTT_SUB / MQTT_PUB frames); item metadata are
        # MQTT 5.0 properties, whose user properties are pairs.
        topics.fed.metadata_codec = (_props_json, props_from_json)
        broker.fed = topics.fed
        topics.enable_federation(now)

    module.protocol("mqtt", lambda t, listener, now: Client(broker, t, now))
    # MQTT over WebSocket: frames are a byte stream to the codec, which bounds packet sizes. A client
    # offering no subprotocol is served too (older clients), one offering only others is refused.
    module.websocket_route("/mqtt", {"mqtt": BINARY_STREAM, None: BINARY_STREAM},
                           lambda t, listener, now: Client(broker, t, now))
    module.protocol("mqtt-ws", core.http.listener(only="/mqtt"))   # the old own-port listener
    module.hook("local_channel_message", broker.channels.tap)
    module.hook("member_left", broker.channels.on_member_left)
    module.every(opts.sweep_interval, broker.sweep)
    if opts.sys_interval:
        module.every(opts.sys_interval, broker.publish_sys)
        broker.publish_sys(now)
    module.command("mqtt stats", lambda ctx: _stats(broker, ctx))
    module.command("mqtt sessions", lambda ctx: _sessions(broker, ctx))

    def unload():
        broker.close_all("Server shutting down", core.now())
        broker.detach_topics()
        topics.acl = None
        if broker.fed is not None:
            topics.fed.metadata_codec = DEFAULT_METADATA_CODEC
        if store is not None:
            for s in broker.sessions.values():
                if s.stored and s.client is None:
                    store.save_session(s.cid, s.version, s.username, s.expiry, s.disconnected_at)
            store.close()

    module.on_unload(unload)


def _stats(broker: Broker, ctx):
    from relay.core.admin import Reply
    data = broker.status(ctx.now)
    if broker.fed is not None:
        data["federation"] = broker.fed.status()
    text = "\n".join(f"{k}: {v}" for k, v in data.items())
    return Reply(text, data)


def _sessions(broker: Broker, ctx):
    from relay.core.admin import Reply
    rows = []
    for s in broker.sessions.values():
        rows.append({"client_id": s.cid, "username": s.username, "connected": s.client is not None,
                     "persistent": s.persistent, "subscriptions": sorted(s.subs), "queued": len(s.queue),
                     "inflight": len(s.inflight), "will_pending": s.will is not None,
                     "nick": s.user.nick if s.user is not None else None})
    text = "\n".join(f"{r['client_id']} user={r['username'] or '-'} "
                     f"{'online' if r['connected'] else 'offline'} subs={len(r['subscriptions'])} "
                     f"queued={r['queued']} inflight={r['inflight']}" for r in rows) or "no sessions"
    return Reply(text, rows)


def _props_json(props: dict) -> dict | None:
    text = props_to_json(props)
    return json.loads(text) if text is not None else None
