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
      - {proto: mqtt-ws, port: 8080}     # MQTT over WebSocket, subprotocol "mqtt"

Listener protocols `mqtt` (TCP) and `mqtt-ws`. Persistent sessions (their
subscriptions and queued QoS 1/2 messages) and retained messages are kept in
`<data_dir>/mqtt.db` and survive a restart. See broker.py (routing), channels.py
(channels and the one-path rule), federation.py (across server links), store.py (schema).
Operator commands: `mqtt stats`, `mqtt sessions`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .acl import TopicAcl
from .broker import NEVER, Broker
from .client import Client, WsClient
from .topics import valid_topic_filter


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


def setup(module) -> None:
    core = module.core
    opts: Options = module.options
    store = None
    if opts.persist:
        from .store import Store
        store = Store(core.storage, core.config.data_path / opts.db_file)
    broker = Broker(core, opts, store, module.log)
    broker.acl = TopicAcl(opts.acl, opts.acl_default,
                          lambda who, account, ip: core.acl.match(who, core.subject(account, ip)))
    now = core.now()
    try:
        broker.load(now)
    except Exception:
        if store is not None:
            store.close()
        raise
    module.state["broker"] = broker

    pending_timers: list = []

    if opts.federation:
        from .federation import Federation

        def schedule(delay, fn):
            t = core.timers.call_at(core.now() + delay, fn, owner=module.name)
            pending_timers[:] = [x for x in pending_timers if not x.cancelled and x.when > core.now()] + [t]
            return t

        fed = Federation(broker, schedule, now)
        broker.fed = fed
        module.hook("link_extension", fed.on_extension)
        module.hook("link_up", fed.on_link_up)
        # Filters of servers behind a split are kept while they are held (messages for them are
        # replayed when they return); they are forgotten once the servers are gone for good.
        module.hook("servers_gone", fed.on_servers_gone)
        fed.announce(hello=True)     # a module loaded on a server that is already linked

    module.protocol("mqtt", lambda t, listener, now: Client(broker, t, now))
    module.protocol("mqtt-ws", lambda t, listener, now: WsClient(broker, t, now))
    module.hook("filter_packet", broker.channels.tap, priority=-1000)
    module.hook("member_left", broker.channels.on_member_left)
    module.every(opts.sweep_interval, broker.sweep)
    if opts.sys_interval:
        module.every(opts.sys_interval, broker.publish_sys)
        broker.publish_sys(now)
    module.command("mqtt stats", lambda ctx: _stats(broker, ctx), syntax="mqtt stats",
                   help="MQTT broker counters: sessions, messages, drops")
    module.command("mqtt sessions", lambda ctx: _sessions(broker, ctx), syntax="mqtt sessions",
                   help="MQTT sessions: client id, user, connected, subscriptions, queued")

    def unload():
        for t in pending_timers:
            t.cancel()
        broker.close_all("Server shutting down", core.now())
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
