"""xmpp: the XMPP client service (RFC 6120/6121), as a module.

    xmpp:
      domain: localhost            # one XMPP domain for the whole tree
      require_starttls: true
    listen:
      - {proto: xmpp, port: 5222}              # c2s, STARTTLS (required by default)
      - {proto: xmpp, port: 5223, tls: true}   # XEP-0368 direct TLS
      - {proto: xmpp-component, port: 5347}    # XEP-0114, with xmpp.components: {domain: secret}
    modules:
      xmpp: {}

A bound account is a network member (nick from its localpart, shown as `xmpp` in WHOIS);
every other network user is `nick@domain`. See session.py (streams, SASL, binding),
service.py (accounts and names), routing.py (the stanza table), roster.py (the `xmpp_roster`
store), federation.py (rosters, resources, stanzas and presence across the tree), component_net.py
(XEP-0114 component domains across the tree).
The services clients rely on are one file each, hooked into the table: sm.py (XEP-0198), csi.py
(XEP-0352), offline.py (XEP-0160), carbons.py (XEP-0280), mam.py (XEP-0313), blocking.py (XEP-0191),
vcard.py (XEP-0054/0153), private.py (XEP-0049), last.py (XEP-0012), register.py (XEP-0077),
adhoc.py (XEP-0050), upload.py (XEP-0363, `/upload` on the http listener), websocket.py (RFC 7395,
`/xmpp-websocket`), bosh.py (XEP-0124/0206, `/http-bind`). Operator command: `xmpp stats`.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import adhoc, blocking, bosh, carbons, csi, last, mam, offline, private, register, sm, upload, vcard, websocket
from .component_net import ComponentDomains
from .federation import XmppFederation
from .jid import JidError, prep_domain
from .roster import LEGACY_FILE, RosterStore
from .roster import SCHEMA as ROSTER_SCHEMA
from .routing import PING, Router
from .service import XmppService
from .stanza import element

# Each file's install(module, svc) hooks its stanza names, items and routes (undone on unload).
EXTENSIONS = (vcard, private, last, register, adhoc, upload, websocket, bosh)
# The stores (relayctl restore): the roster's and each extension's.
SCHEMAS = (ROSTER_SCHEMA, offline.SCHEMA, mam.SCHEMA, blocking.SCHEMA, vcard.SCHEMA, private.SCHEMA, last.SCHEMA,
           upload.SCHEMA)

CONFIG_SECTION = True   # options come from the top-level xmpp: section

COMMANDS = {"xmpp stats": "XMPP accounts and sessions on this server"}  # syntax: help


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: str = "localhost"
    require_starttls: bool = True
    max_stanza_bytes: Annotated[int, Field(ge=4096)] = 256 * 1024
    max_stanza_bytes_preauth: Annotated[int, Field(ge=1024)] = 16 * 1024
    max_depth: Annotated[int, Field(ge=4, le=1000)] = 64
    max_auth_failures: Annotated[int, Field(ge=1)] = 3
    ping_interval: Annotated[float, Field(gt=0)] = 300.0     # seconds of silence before we ping (XEP-0199)
    ping_timeout: Annotated[float, Field(gt=0)] = 60.0       # then seconds without an answer before closing
    negotiation_timeout: Annotated[float, Field(gt=0)] = 30.0  # seconds from connect to a bound resource
    roster_file: str = LEGACY_FILE     # before the storage layer (data_dir): imported once into xmpp_roster
    components: dict[str, str] = Field(default_factory=dict)  # XEP-0114: domain -> shared secret
    resume_timeout: Annotated[float, Field(ge=0)] = 300.0    # XEP-0198: seconds a cut session is held
    ack_every: Annotated[int, Field(ge=1)] = 5               # XEP-0198: <r/> after this many unacked stanzas
    ack_seconds: Annotated[float, Field(gt=0)] = 30.0        # ... or once one has waited this long
    offline_max: Annotated[int, Field(ge=0)] = 1000          # XEP-0160: stored messages per account
    mam_max_page: Annotated[int, Field(ge=1)] = 100          # XEP-0313: most results one query returns
    mam_tree_timeout: Annotated[float, Field(gt=0)] = 5.0    # seconds a query waits for the other servers
    # The services of vcard.py, private.py, last.py, register.py, adhoc.py, upload.py, websocket.py:
    vcard_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024             # XEP-0054, serialised
    private_max_bytes: Annotated[int, Field(ge=256)] = 64 * 1024            # XEP-0049, one namespace's
    private_max_items: Annotated[int, Field(ge=1)] = 100                    # namespaces per account
    adhoc_admin_rule: str = "admin"          # XEP-0050: the access rule of who runs operator commands
    upload_max_bytes: Annotated[int, Field(ge=1)] = 10 * 1024 * 1024   # XEP-0363 (and http.max_body_bytes)
    upload_quota_bytes: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024  # per account: files + open slots
    upload_slot_ttl: Annotated[float, Field(gt=0)] = 300.0              # seconds a slot may be PUT to
    upload_url: str = ""                     # the slots' base URL; "" = from the first http listener
    http_secure: bool = False                # plain ws/http (WebSocket, BOSH) count as TLS from anywhere
    bosh_max_wait: Annotated[int, Field(ge=1, le=3600)] = 60    # XEP-0124 longest hold of a request, seconds
    bosh_inactivity: Annotated[float, Field(gt=0)] = 60.0      # seconds without a request that end a session
    bosh_max_sessions: Annotated[int, Field(ge=1)] = 10000

    @field_validator("components")
    @classmethod
    def _components(cls, v: dict) -> dict:
        out = {}
        for domain, secret in v.items():
            try:
                out[prep_domain(domain)] = secret
            except JidError as e:
                raise ValueError(f"{domain!r} is not a valid component domain: {e}") from None
        return out

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        try:
            return prep_domain(v)
        except JidError as e:
            raise ValueError(f"not a valid XMPP domain: {e}") from None


def merged_options(core, given: Options) -> Options:
    """The xmpp: section, with what `modules: {xmpp: {...}}` sets explicitly on top."""
    section = core.config.section("xmpp")
    if section is None:
        return given
    return Options.model_validate({**section.model_dump(), **given.model_dump(include=given.model_fields_set)})


TOMBSTONE_EXPIRE_EVERY = 3600.0    # seconds between looks for expired roster tombstones


def setup(module) -> None:
    core = module.core
    opts = merged_options(core, module.options)
    legacy = core.config.data_path / opts.roster_file if opts.roster_file else None
    svc = XmppService(core, opts, RosterStore(core.storage, core.config.server.id, legacy))
    svc.router = Router(svc)
    svc.federation = XmppFederation(svc, module)
    svc.component_domains = ComponentDomains(svc, module)
    module.provide("xmpp", svc)
    module.protocol("xmpp", svc.new_session)
    module.protocol("xmpp-component", svc.new_component)
    module.every(min(opts.ping_interval, opts.ping_timeout, opts.negotiation_timeout) / 4,
                 lambda now: sweep(svc, now))
    module.command("xmpp stats", lambda ctx: _stats(svc))
    lifetime = core.config.accounts.tombstone_lifetime     # roster removals live as long as account removals

    def expire_roster_tombstones(now: float) -> None:
        n = svc.roster.expire_tombstones(now - lifetime)
        if n:
            module.log.info("xmpp: %d roster removal(s) older than %gs forgotten", n, lifetime)
    expire_roster_tombstones(core.now())
    module.every(min(TOMBSTONE_EXPIRE_EVERY, lifetime), expire_roster_tombstones)
    for extension in (sm, csi, offline, carbons, mam, blocking):    # IM extensions, each in its file
        extension.setup(module, svc)
    for ext in EXTENSIONS:
        ext.install(module, svc)

    def unload():
        for s in list(svc.pending):
            s.stream_error("system-shutdown", "XMPP module unloaded")
        for acct in list(svc.accounts.values()):
            acct.server_closing("XMPP module unloaded", core.now())
        for c in list(svc.components.values()):
            c.stream_error("system-shutdown", "XMPP module unloaded")
        svc.roster.changed = None
    module.on_unload(unload)


def _stats(svc: XmppService):
    from relay.core.admin import Reply
    data = {**svc.stats(), **svc.sm.stats(), **svc.offline.stats()}
    return Reply("\n".join(f"{k}: {v}" for k, v in data.items()), data)


def sweep(svc: XmppService, now: float) -> None:
    """A stream not bound in time is closed; XEP-0199 from the server: a silent client is pinged,
    and closed if it stays silent."""
    o = svc.opts
    for s in [s for s in svc.pending if now - s.started > o.negotiation_timeout]:
        svc.pending.discard(s)
        s.stream_error("connection-timeout", "negotiation took too long")
    for acct in list(svc.accounts.values()):
        for s in list(acct.resources.values()):
            if s.sm is not None and s.sm.held:
                continue                    # no connection: sm.py ends it when the resume time is up
            idle = now - s.last_read
            if idle > o.ping_interval + o.ping_timeout:
                s.stream_error("connection-timeout", "no answer to ping")
            elif idle > o.ping_interval and not s.pinged:
                s.pinged = True
                iq = element("iq", {"type": "get", "id": "ping-" + secrets.token_hex(4), "from": svc.domain,
                                    "to": str(s.jid)})
                etree.SubElement(iq, "{%s}ping" % PING, nsmap={None: PING})
                s.send(iq)
