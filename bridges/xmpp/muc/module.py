"""muc: XMPP multi-user chat (XEP-0045) where a room is a network channel.

    modules:
      muc:
        domain: ""                 # default conference.<xmpp domain>
        history_length: 20         # recent messages kept in memory per room, for joins
        history_default: 20        # sent on join when the client asks for no limit
        max_users_presence: 1000   # past this, only moderators' joins and leaves are broadcast
        archive: persistent        # room messages into the muc_archive store (MAM): persistent | all | off
        occupant_id_secret: ""     # XEP-0421 HMAC key, the same on every server (default: one per server)
        catchup_wait: 3.0          # seconds a join (or room MAM query) waits for other servers' history

`name@conference.<domain>` is `#name` (names.py says which names map); every server renders the
network's channel events to its own XMPP occupants (service.py), so rooms span the tree and hold
IRC, MQTT and SIP members too. The stanza table is table.py. Needs the xmpp module (loaded first).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..jid import JidError, prep_domain
from ..routing import XmppHost
from .service import MucService
from .store import SCHEMA, MucStore
from . import features
from .table import dispatch

SCHEMAS = (SCHEMA,)   # the stores this module keeps (relayctl restore reads them)

MUC_FEATURES = ("http://jabber.org/protocol/muc",)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: str = ""
    history_length: Annotated[int, Field(ge=0, le=10_000)] = 20
    history_default: Annotated[int, Field(ge=0, le=10_000)] = 20
    max_users_presence: Annotated[int, Field(ge=1)] = 1000
    # Which rooms' messages go into the muc_archive store (MAM, history after a restart). Every
    # channel is a room, so `all` stores each message of a busy IRC network; the recent history of
    # every room is in memory either way. False/True (older configs) are off/all.
    archive: Literal["persistent", "all", "off"] = "persistent"

    @field_validator("archive", mode="before")
    @classmethod
    def _archive(cls, v):
        return {False: "off", True: "all"}.get(v, v) if isinstance(v, bool) else v
    occupant_id_secret: str = ""   # XEP-0421 key; set one for the whole tree (default: this server's, stored)
    # How long a join or room MAM query waits for the history of servers that had members while this
    # one had none (catchup.py); past it, what arrived is sent.
    catchup_wait: Annotated[float, Field(gt=0, le=60)] = 3.0

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not v:
            return v
        try:
            return prep_domain(v)
        except JidError as e:
            raise ValueError(f"not a valid XMPP domain: {e}") from None


def setup(module) -> None:
    """Attaches to the xmpp service now or when it loads (config order does not matter)."""
    core = module.core
    store = MucStore(core.storage)
    held: dict = {"muc": None, "host": None, "history": None}

    def attach() -> None:
        xmpp = core.services.get("xmpp")
        if xmpp is None or held["muc"] is not None:
            return
        muc = held["muc"] = MucService(core, xmpp, module.options, store)
        core.services["muc"] = muc
        # Every channel message, on every server with members: the service's own method, no wrapper.
        held["history"] = module.hook("channel_message", muc.channel_message)
        xmpp.channel_events = muc
        held["host"] = module.add_item("xmpp-host", XmppHost(
            muc.domain, lambda s, el, to, now: dispatch(muc, s, el, to, now), "Chatrooms", "conference", "text"))

    def detach(name: str) -> None:
        if name == "xmpp" and held["muc"] is not None:
            core.items.remove("xmpp-host", held["host"])
            module.unhook(held["history"])
            held["muc"].xmpp.channel_events = None
            core.services.pop("muc", None)
            held["muc"] = None

    def via(method: str):
        def call(*args):
            muc = held["muc"]
            return getattr(muc, method)(*args) if muc is not None else None
        return call

    module.hook("module_loaded", lambda name: attach() if name == "xmpp" else None)
    module.hook("module_unloaded", detach)
    module.hook("xmpp_member_event", via("on_event"))
    module.hook("xmpp_resource_unbound", via("resource_unbound"))
    module.hook("channel_destroyed", via("channel_destroyed"))
    module.hook("link_extension", via("link_extension"))
    module.hook("link_up", via("link_up"))
    module.hook("member_joined", lambda u, ch: held["muc"].catchup.member_joined(u, ch) if held["muc"] else None)
    module.hook("member_left", lambda u, ch, r: held["muc"].catchup.member_left(u, ch) if held["muc"] else None)
    module.hook("message/bare", lambda xev: features.direct_invitation(held["muc"], xev) if held["muc"] else None)
    def unload() -> None:
        core.services.pop("muc", None)
        if held["muc"] is not None:
            held["muc"].xmpp.channel_events = None
    module.on_unload(unload)
    attach()
