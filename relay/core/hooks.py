"""Named hooks with priorities, like ejabberd's run/run_fold and Prosody's events.

Handlers run highest priority first; equal priorities run in registration order.
`run` stops at the first handler that returns something other than None.
`fold` threads a value through the handlers: a handler returns a new value
(or None to keep it); returning `Stop(value)` ends the chain with that value.
A raising handler is logged with its owner's name and skipped.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from typing import Any, Callable

log = logging.getLogger("relay.hooks")

CORE_HOOKS = (
    "filter_packet", "user_send_packet", "user_receive_packet",
    "channel_message", "local_channel_message",
    "account_registered", "account_removed",
    "channel_created", "channel_destroyed", "member_joined", "member_left",
    "link_up", "link_down", "netsplit", "netjoin", "servers_gone", "link_extension",
    "serving", "config_reloaded", "module_loaded", "module_unloaded",
    "client_connected", "client_disconnected", "nick_changed",
    "topic_published",
    "pubsub_publish_item", "pubsub_create_node", "pubsub_delete_node",
)


class Stop:
    """Returned by a fold handler to end the chain with `value`."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Handler:
    __slots__ = ("hook", "fn", "priority", "owner", "order")

    def __init__(self, hook: str, fn: Callable, priority: int, owner: str, order: int) -> None:
        self.hook, self.fn, self.priority, self.owner, self.order = hook, fn, priority, owner, order

    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.order)


class HookBus:
    def __init__(self) -> None:
        self._chains: dict[str, list[Handler]] = {}
        self._keys: dict[str, list[tuple[int, int]]] = {}
        self._order = itertools.count()
        self.errors = 0

    def add(self, hook: str, fn: Callable, priority: int = 0, owner: str = "core") -> Handler:
        h = Handler(hook, fn, priority, owner, next(self._order))
        keys = self._keys.setdefault(hook, [])
        i = bisect.bisect_right(keys, h.sort_key())
        keys.insert(i, h.sort_key())
        # Copy-on-write: a handler that (un)registers during a run never disturbs the loop.
        chain = list(self._chains.get(hook, ()))
        chain.insert(i, h)
        self._chains[hook] = chain
        return h

    def remove(self, h: Handler) -> None:
        chain = self._chains.get(h.hook)
        if not chain or h not in chain:
            return
        i = chain.index(h)
        self._chains[h.hook] = chain[:i] + chain[i + 1:]
        del self._keys[h.hook][i]
        if not self._chains[h.hook]:
            del self._chains[h.hook], self._keys[h.hook]

    def has(self, hook: str) -> bool:
        return hook in self._chains

    def handlers(self, hook: str) -> list[Handler]:
        return list(self._chains.get(hook, ()))

    def run(self, hook: str, *args: Any) -> Any:
        for h in self._chains.get(hook, ()):
            try:
                r = h.fn(*args)
            except Exception:
                self._crashed(h)
                continue
            if r is not None:
                return r
        return None

    def fold(self, hook: str, value: Any, *args: Any) -> Any:
        for h in self._chains.get(hook, ()):
            try:
                r = h.fn(value, *args)
            except Exception:
                self._crashed(h)
                continue
            if r is None:
                continue
            if type(r) is Stop:
                return r.value
            value = r
        return value

    def _crashed(self, h: Handler) -> None:
        self.errors += 1
        log.exception("hook %s: handler %s of module %s raised; skipped",
                      h.hook, getattr(h.fn, "__qualname__", h.fn), h.owner)
