"""sip: a SIP registrar and proxy, as a module, mapped onto the network (issue 18).

    listen:
      - {proto: sip, transport: udp, port: 5060}
      - {proto: sip, port: 5060}               # TCP
      - {proto: sip, port: 5061, tls: true}    # TLS
      - {proto: http, port: 8080}              # SIP over WebSocket (RFC 7118) at /sip, subprotocol "sip"
    sip:                                       # or modules: {sip: {...}}
      domain: example.org                      # default: the xmpp: domain if there is one, else localhost
      aliases: [sip.example.org]               # the server's own addresses and name count too

A registered account is a network member (nick from the account; WHOIS shows SIP); MESSAGE to
sip:nick@<domain> is a direct message to that user, whatever its protocol; direct messages to a SIP user
reach its contacts as MESSAGE. Bindings are kept in the server's storage (the `sip` store, bindings.py)
and survive a restart; an older deployment's `<data_dir>/<bindings_file>` is imported once.

Across the tree (federation.py): every server learns every other server's bindings (SIP_BIND frames), and
a request for a user registered elsewhere is carried to that server (SIP_REQ / SIP_RSP), which proxies
it to its contacts; in-dialog requests follow the Record-Route back over the same servers.

What is per server: this registrar's bindings (stored; other servers' are learned again from the burst
after a restart), transactions, conference dialogs (conference.py), presence subscriptions and
connections. See service.py (routing), registrar.py, proxy.py, mapping.py, ratelimit.py, stun.py (RFC 5626
keepalives over UDP).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.core.http_routes import Framing

from .bindings import SCHEMA, BindingStore
from .service import SipService
from .transport import TcpFlow, UdpFlow, WsFlow

SCHEMAS = (SCHEMA,)   # the stores this module keeps (relayctl restore reads them)

CONFIG_SECTION = True   # options come from the top-level sip: section (or modules: {sip: {...}})

COMMANDS = {
    "sip stats": "SIP counters: requests, drops (rate, amplification), failed authentications, bindings",
    "sip bindings": "SIP registrations: account, contact, seconds left, flow",
}

TICK = 0.25   # seconds between transaction timer runs (T1 is 0.5 s)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: str | None = None
    aliases: list[str] = Field(default_factory=list)
    conference_domain: str | None = None              # INVITE/MESSAGE sip:NAME@<it>: #NAME; default conference.<domain>
    min_expires: Annotated[int, Field(ge=1)] = 60
    max_expires: Annotated[int, Field(ge=1)] = 7200
    default_expires: Annotated[int, Field(ge=1)] = 3600
    max_contacts: Annotated[int, Field(ge=1)] = 10                   # bindings per account
    algorithms: list[Literal["MD5", "SHA-256"]] = ["MD5", "SHA-256"]  # challenge order: sipsak knows MD5 only
    nonce_lifetime: Annotated[float, Field(gt=0)] = 300.0
    requests_per_second: Annotated[float, Field(gt=0)] = 100.0       # per source address
    request_burst: Annotated[float, Field(ge=1)] = 200.0
    auth_failures_per_minute: Annotated[float, Field(gt=0)] = 10.0   # per source address
    auth_failures_burst: Annotated[float, Field(ge=1)] = 10.0
    amplification_limit: Annotated[float, Field(ge=1)] = 3.0        # UDP error answer size / request size
    force_rport: bool = False
    tcp_first_message_timeout: Annotated[float, Field(gt=0)] = 10.0
    tcp_idle_timeout: Annotated[float, Field(gt=0)] = 900.0
    persist: bool = True
    bindings_file: str = "sip-bindings.json"         # the legacy file, imported once into storage
    # RFC 2069 digest (no qop, so no nonce-count replay check) for user agents that know nothing else
    # (pyVoIP); their digest uri may differ from the Request-URI in its parameters. Weaker: off by default.
    allow_digest_without_qop: bool = False
    # A request from a UDP source address and port that holds a live binding of its From user counts as
    # that user's, unchallenged (connections always do). Weaker: UDP sources can be forged. Off by default.
    trust_registered_udp_source: bool = False
    # Who may SUBSCRIBE to a user's presence: anyone (open, no challenge), any authenticated user
    # (registered), or only users sharing a channel with it, and the user itself (channels); else 403.
    presence: Literal["open", "registered", "channels"] = "registered"
    min_se: Annotated[int, Field(ge=90)] = 90         # RFC 4028 Min-SE (seconds)
    dialog_keepalive: Annotated[float, Field(gt=0)] = 60.0   # in-dialog OPTIONS to conference members

    @model_validator(mode="after")
    def _expiry_bounds(self) -> "Options":
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        if not self.algorithms:
            raise ValueError("algorithms: at least one")
        return self


NO_LISTENER = ("no SIP listener is configured, so SIP clients cannot reach this server. Add under `listen:`:\n"
               "  - {proto: sip, transport: udp, host: 127.0.0.1, port: 5060}\n"
               "  - {proto: sip, host: 127.0.0.1, port: 5060}")


def _options(module) -> Options:
    section = module.core.config.section("sip")
    if section is not None and not module.core.config.modules.get("sip"):
        return section
    return module.options


def _domain(core, opts: Options) -> str:
    if opts.domain:
        return opts.domain
    xmpp = core.config.section("xmpp")
    return getattr(xmpp, "domain", None) or "localhost"


def setup(module) -> None:
    core = module.core
    opts = _options(module)
    if not any(l.proto == "sip" for l in core.config.listen):
        module.note(NO_LISTENER)
    store = BindingStore(core.storage, core.config.data_path / opts.bindings_file) if opts.persist else BindingStore()
    svc = SipService(core, opts, _domain(core, opts), store, module.log)
    module.provide("sip", svc)
    module.datagram_protocol("sip", lambda endpoint, listener, now: UdpFlow(svc, endpoint, listener, now))
    module.protocol("sip", lambda transport, listener, now: TcpFlow(svc, transport, listener, now))
    # RFC 7118: subprotocol "sip" required; each of our messages one text frame, theirs either kind, each
    # one whole SIP message.
    module.websocket_route("/sip", {"sip": Framing(send_text=True, receive=frozenset({"text", "binary"}),
                                                   messages=True)},
                           lambda transport, listener, now: WsFlow(svc, transport, listener, now))
    module.every(TICK, svc.tick)
    for name, fn in svc.federation.hooks() + svc.presence.hooks():
        module.hook(name, fn)
    svc.restore(core.now())

    from relay.core.admin import Reply

    def stats(ctx):
        data = {**svc.stats, "bindings": sum(len(store.get(a, core.now())) for a in store.aors()),
                "transactions": len(svc.transactions), **{f"link_{k}": v for k, v in svc.federation.stats.items()}}
        return Reply("\n".join(f"{k}: {v}" for k, v in data.items()), data)

    def bindings(ctx):
        now = ctx.now
        me = svc.federation.me
        rows = [{"account": a, "contact": b.contact, "expires": b.remaining(now), "flow": list(b.flow),
                 "server": me} for a in store.aors() for b in store.get(a, now)]
        rows += [{"account": a, "contact": b.contact, "expires": b.remaining(now), "flow": ["LINK", sid, 0],
                  "server": sid} for a in list(store.remote) for sid, bs in store.remote_get(a, now).items()
                 for b in bs]
        return Reply("\n".join(f"{r['account']} {r['contact']} {r['expires']}s {'/'.join(map(str, r['flow']))}"
                                for r in rows) or "no bindings", rows)

    module.command("sip stats", stats)
    module.command("sip bindings", bindings)
    module.on_unload(lambda: svc.close(core.now()))
