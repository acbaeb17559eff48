"""The interfaces between the layers, written down in one place.

Each is a `typing.Protocol`: the runtime implements Transport; protocol
modules implement ProtocolHandler, DatagramHandler, MemberSession and TopicSubscriber; the link
layer implements Router; the netsplit module implements SplitPolicy; storage
backends implement the storage API of relay.core.storage. `CoreServices` is
what the core offers a module. The core checks these by calling them, never
with `hasattr`: a method a protocol does not need has a default here or in a
small base class next to its users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

# Only the leaves of relay.core are imported here, so that every other module can import this one.
if TYPE_CHECKING:
    from relay.core.acl import Acl, Subject
    from relay.core.admin import AdminTable
    from relay.core.config import Config
    from relay.core.hooks import HookBus
    from relay.core.model import Channel, Event, MessageSent, User
    from relay.core.timers import TimerQueue


# ---------------------------------------------------------------------- runtime -> protocols

@runtime_checkable
class Transport(Protocol):
    """One stream connection as the runtime gives it to a protocol handler.

    Writes are queued to a bounded outbox and flushed in batches; past
    `limits.sendq` the handler's `send_queue_full` decides (or the connection
    is aborted). Nothing here blocks.
    """

    proto: str
    peer_host: str
    peer_port: int
    tls: bool
    closing: bool

    def write(self, data: bytes) -> None: ...

    def close(self, reason: str = "") -> None:
        """Flush what is queued, then close."""

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding the outbox."""

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet sent."""

    def start_tls(self, on_done: Callable[[bool, str], None]) -> None:
        """Upgrade a plain connection to TLS (STARTTLS) in place, with its listener's certificate.

        What is queued now leaves in plaintext first; nothing more is read in plaintext. Writes
        made during the handshake leave encrypted. `on_done(ok, reason)` is called (never from
        inside this call) when the handshake ends; on failure the connection is then closed, and
        where no certificate is available it is refused and the connection goes on in plaintext.
        After the upgrade `tls` is True and `channel_bindings()` gives tls-server-end-point."""


class SharedRunTransport(Transport, Protocol):
    """A transport that can queue runs of bytes shared with other connections (relay.core.fanout)."""

    congested: bool

    def write_shared(self, run: Any) -> None: ...


class ProtocolHandler(Protocol):
    """What a listener protocol's factory returns: `factory(transport, listener, now)`."""

    def data_received(self, data: bytes, now: float) -> None: ...

    def connection_lost(self, reason: str, now: float) -> None: ...


class DatagramSender(Protocol):
    def send_to(self, data: bytes, addr: tuple[str, int]) -> None: ...


class DatagramHandler(Protocol):
    """A datagram protocol (SIP over UDP): one handler per listening socket."""

    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> None: ...


# ---------------------------------------------------------------------- network -> protocols

class MemberSession(Protocol):
    """The session of a local member: how network events reach it in its protocol.

    `deliver` renders the event (caching the bytes on `ev.cache` per rendering
    profile, so a message is serialised once per protocol and profile).
    """

    proto: str

    def deliver(self, ev: "Event") -> None: ...

    def direct_refusal(self) -> str | None:
        """Why a direct message to this member would be dropped now (an MQTT client with no inbox
        subscription), said to the sender; None when it would be delivered."""

    def server_closing(self, reason: str, now: float) -> None:
        """The server stops: say goodbye in the protocol and close."""


class SharingMemberSession(MemberSession, Protocol):
    """A session whose channel messages can share runs of bytes with other members."""

    shares_runs: bool
    profile: Any
    t: SharedRunTransport

    def run_ready(self) -> bool: ...

    @staticmethod
    def render_shared(ev: "MessageSent", profile: Any) -> bytes | None: ...


# ---------------------------------------------------------------------- topic service -> protocols

class TopicSubscriber(Protocol):
    """A local subscriber of the topic service (relay/core/topic_service.py), in its protocol.

    `item_published` gets every `options` the subscriber registered with a filter matching
    the item, as a tuple, in one call (the protocol picks QoS, identifiers...). For shared groups the
    service asks `accepts` (may it be handed this item at all) and `online` (preferred
    over offline members) before picking one member.
    """

    online: bool

    def item_published(self, item: Any, options: tuple, now: float) -> None: ...

    def accepts(self, item: Any) -> bool:
        return True


# ---------------------------------------------------------------------- network -> links

class Router(Protocol):
    """Where the network hands every change for the rest of the tree (the link layer)."""

    def user_introduced(self, u: "User") -> None: ...
    def user_quit(self, u: "User", reason: str) -> None: ...
    def nick_changed(self, u: "User") -> None: ...
    def user_updated(self, u: "User", what: str) -> None: ...
    def member_joined(self, u: "User", ch: "Channel", created: bool) -> None: ...
    def member_left(self, u: "User", ch: "Channel", reason: str) -> None: ...
    def member_kicked(self, source: "User | str", ch: "Channel", target: "User", reason: str) -> None: ...
    def topic_changed(self, source: "User | str", ch: "Channel") -> None: ...
    def modes_changed(self, source: "User | str", ch: "Channel", changes: list) -> None: ...
    def user_invited(self, source: "User", target: "User", ch: "Channel") -> None: ...
    def channel_message(self, ev: "MessageSent") -> None: ...
    def direct_message(self, ev: "MessageSent") -> None: ...
    def summary(self) -> list[dict]: ...


class SplitPolicy(Protocol):
    """What happens on splits and netjoins (installed by the netsplit module into the link layer)."""

    held: dict

    def split(self, sid: str, reason: str, now: float, exclude: str | None) -> Any: ...
    def server_returned(self, sid: str) -> None: ...
    def user_returned(self, held: Any, payload: dict, now: float) -> bool: ...
    def resolve_nick(self, nick: str, ts: float, uid: str, now: float) -> str: ...
    def merge_channel(self, payload: dict, now: float) -> Any: ...
    def burst_ended(self, session: Any, now: float) -> None: ...
    def vector(self) -> dict: ...
    def replay_to(self, session: Any, vector: dict, now: float) -> None: ...
    def accept(self, origin: str, seq: int) -> bool: ...
    def record(self, now: float, origin: str, seq: int, ftype: str, payload: dict) -> None: ...
    def keep_for_held(self, servers: list[str], *frame: Any) -> None: ...


# ---------------------------------------------------------------------- core -> modules

class CoreServices(Protocol):
    """What the core offers modules and protocol handlers. Prefer passing one of its parts."""

    config: "Config"
    hooks: "HookBus"
    timers: "TimerQueue"
    admin: "AdminTable"
    acl: "Acl"
    net: Any        # relay.core.network.Network
    items: Any      # relay.core.modules.ItemRegistry
    services: dict[str, Any]
    modules: Any    # relay.core.modules.ModuleManager
    storage: Any    # relay.core.storage
    links: Any      # relay.core.links.LinkLayer

    def now(self) -> float: ...
    def subject(self, account: str | None, ip: str | None, ident: str | None = None) -> "Subject": ...
    def register_account(self, name: str, password: str, now: float) -> Any: ...
    def add_protocol(self, proto: str, factory: Callable, owner: str) -> None: ...
    def remove_protocol(self, proto: str, owner: str) -> None: ...

