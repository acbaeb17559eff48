"""The core: network state, hooks, modules, operator commands, storage. Knows no protocol.

Synchronous and never yielding; every entry point takes `now`. The runtime
owns sockets and the clock and calls in here; tests call in directly.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import psutil

from relay import __version__
from relay.core import builtin_admin
from relay.core.accounts import Account, AccountError, Accounts
from relay.core.acl import Acl, Subject
from relay.core.admin import AdminTable
from relay.core.config import Config
from relay.core.hooks import HookBus
from relay.core.http_routes import HttpRoutes
from relay.core.modules import ItemRegistry, ModuleManager
from relay.core.storage import Storage
from relay.core.timers import TimerQueue

log = logging.getLogger("relay.core")


class Transport:
    """What a protocol handler may do with its connection (the runtime implements it)."""

    peer_host: str = "?"
    peer_port: int = 0
    tls: bool = False
    proto: str = "?"

    def write(self, data: bytes) -> None: ...
    def close(self, reason: str = "") -> None: ...
    @property
    def closing(self) -> bool: ...


class Core:
    def __init__(self, config: Config, now: float, storage: Storage | None = None,
                 clock: Callable[[], float] | None = None):
        self.config = config
        self.started = now
        self._clock = clock
        self._now = now
        self.hooks = HookBus()
        self.timers = TimerQueue()
        self.admin = AdminTable()
        self.items = ItemRegistry(self.hooks)
        self.services: dict[str, Any] = {}   # name -> object a module provides (module.provide)
        self.modules = ModuleManager(self)
        self.protocols: dict[str, tuple[Callable, str]] = {}
        self.protocols_changed: Callable[[], None] | None = None  # runtime: open/close listeners
        # The runtime serves clients (`serving()`, the `serving` hook): from then on a store loaded
        # (`module load`) reads through `storage.read`, never a blocking `storage.query` on the loop.
        self.serving = False
        self.datagram_protocols: dict[str, tuple[Callable, str]] = {}  # `transport: udp` listeners
        self.http = HttpRoutes()  # routes of the `http` listener (relay/core/http_routes.py)
        # Set by the runtime: dialer(host, port, factory, proto, tls=, on_fail=) -> handle with cancel().
        self.dialer: Callable | None = None
        self.runtime_info: Callable[[], dict] | None = None
        self.shutdown_requested: Callable[[str], None] | None = None
        self.set_log_level: Callable[[str], None] | None = None
        self.reload_requested: Callable[[], Any] | None = None
        self.acl = Acl.from_config(config.acl, config.access_rules, config.shapers, config.shaper_rules)
        # No storage given (a bare core in tests): nothing is loaded and writes are discarded.
        self.storage = storage if storage is not None else Storage.none(config.server.id)
        self.accounts = Accounts(self.storage, config.realm, config.accounts.scram_iterations)
        self.accounts.load(config.data_path if storage is not None else None)
        from relay.core.network import Network
        self.net = Network(self)
        from relay.core.links import LinkLayer
        self.links = LinkLayer(self)
        from relay.core.account_sync import AccountSync
        self.account_sync = AccountSync(self)
        # The topic service is the core's own (not a module's): protocols come and go on top of it.
        from relay.core.topic_service import TopicService
        self.topics = TopicService(self)
        self.services["topics"] = self.topics
        builtin_admin.install(self)
        self.add_protocol("http", self.http.listener(), owner="core")
        self.add_protocol("link", self.links.accept, owner="core")

    # Time: the runtime passes `now` into every call; modules scheduling timers ask here.
    def now(self) -> float:
        return self._clock() if self._clock else self._now

    def tick(self, now: float) -> None:
        self._now = now
        self.timers.run_due(now)

    def start(self, now: float) -> None:
        self._now = now
        from relay.core.modules import CORE_MODULES
        for name in CORE_MODULES:
            self.modules.load(name)
        for name, opts in self.config.modules.items():
            self.modules.load(name, opts)

    def started_serving(self, now: float) -> None:
        """The runtime: the listeners are open and the loop serves clients."""
        self._now = now
        self.serving = True
        self.hooks.run("serving")

    def stop(self, now: float, reason: str = "Server shutting down") -> None:
        self._now = now
        self.net.shutdown(reason, now)
        self.links.shutdown(reason, now)
        self.modules.unload_all()

    # Listener protocols (irc is built in; modules add mqtt, link, ...).
    def add_protocol(self, proto: str, factory: Callable, owner: str) -> None:
        if proto in self.protocols:
            raise ValueError(f"protocol {proto!r} is already provided by {self.protocols[proto][1]}")
        self.protocols[proto] = (factory, owner)
        if self.protocols_changed:
            self.protocols_changed()

    def remove_protocol(self, proto: str, owner: str) -> None:
        if self.protocols.get(proto, (None, None))[1] == owner:
            del self.protocols[proto]
            if self.protocols_changed:
                self.protocols_changed()

    # Datagram protocols (`listen` entries with `transport: udp`).
    def add_datagram_protocol(self, proto: str, factory: Callable, owner: str) -> None:
        if proto in self.datagram_protocols:
            raise ValueError(f"datagram protocol {proto!r} is already provided by "
                             f"{self.datagram_protocols[proto][1]}")
        self.datagram_protocols[proto] = (factory, owner)
        if self.protocols_changed:
            self.protocols_changed()

    def remove_datagram_protocol(self, proto: str, owner: str) -> None:
        if self.datagram_protocols.get(proto, (None, None))[1] == owner:
            del self.datagram_protocols[proto]
            if self.protocols_changed:
                self.protocols_changed()

    # Accounts: memory at once, the database through the write queue, every server over the tree.
    def register_account(self, name: str, password: str, now: float) -> Account:
        acct = self.accounts.create(name, password, now)
        self.account_sync.changed(acct)
        self.hooks.run("account_registered", acct)
        return acct

    def unregister_account(self, name: str, now: float | None = None) -> None:
        when = self.now() if now is None else now
        if not self.accounts.delete(name, removed=when):     # with its tombstone, in one unit
            raise AccountError(f"no account {name}")
        self.account_sync.removed(name, when)
        self.hooks.run("account_removed", name)

    def change_account(self, acct: Account | None) -> Account | None:
        """After a password or group change: tell the other servers."""
        if acct is not None:
            self.account_sync.changed(acct)
        return acct

    def subject(self, account: str | None, ip: str | None, ident: str | None = None) -> Subject:
        groups = self.accounts.groups(account) if account else frozenset()
        return Subject(account=account, groups=groups, server=self.config.server.id,
                       server_name=self.config.server.name, ip=ip, ident=ident)

    def status(self, now: float) -> dict:
        proc = psutil.Process(os.getpid())
        info = self.runtime_info() if self.runtime_info else {}
        return {
            "version": __version__,
            "server": {"id": self.config.server.id, "name": self.config.server.name},
            "uptime": round(now - self.started, 3),
            "pid": os.getpid(),
            "memory_rss": proc.memory_info().rss,
            "listeners": info.get("listeners", []),
            "connections": info.get("connections", {}),
            "open_files_limit": info.get("open_files_limit"),
            "links": self.net.links_summary(),
            "users": self.net.counts(),
            "modules": sorted(self.modules.loaded),
            "storage": {"backend": self.config.storage.backend if self.storage.db is not None else "none",
                        "accounts": len(self.accounts), "queued": len(self.storage.queue),
                        "committed": self.storage.queue.committed},
        }
