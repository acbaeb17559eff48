"""Outbound links: dial a configured peer, back off after failures, autoconnect.

Exponential backoff with jitter (`retry_min` doubling up to `retry_max`, times
0.5-1.5) so servers that lost each other do not redial in lockstep. The
runtime supplies `dial(block, factory, on_fail)`; the owner says who is linked.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Iterable, Protocol

log = logging.getLogger("relay.links")


class LinkBlock(Protocol):
    """A `links:` entry, as the dialer reads it."""
    name: str
    host: str
    port: int
    autoconnect: bool


class RetryTimers(Protocol):
    retry_min: float
    retry_max: float


class Dialer:
    """`blocks()`: the configured links; `linked(name)`: a session to it is up; `session(block)`: the
    factory the runtime calls with (transport, listener, now) once connected."""

    def __init__(self, blocks: Callable[[], Iterable[Any]], timers: Callable[[], RetryTimers],
                 linked: Callable[[str], bool], session: Callable[[Any], Callable], now: Callable[[], float],
                 last_error: dict[str, str]):
        self._blocks, self._timers, self._linked, self._session, self._now = blocks, timers, linked, session, now
        self.last_error = last_error
        self.dial: Callable | None = None           # runtime: dial(block, factory, on_fail)
        self.connecting: set[str] = set()           # link names being dialled
        self.retry: dict[str, tuple[int, float]] = {}  # link name -> (failures, next attempt)
        self.suppressed: set[str] = set()           # unlinked by an operator: no autoconnect

    def block(self, name: str):
        return next((b for b in self._blocks() if b.name == name), None)

    def connect(self, name: str, now: float) -> str:
        """Dial a configured peer now (operator `link`, or autoconnect)."""
        b = self.block(name)
        if b is None:
            raise KeyError(f"no link named {name} in the config's links: section")
        self.suppressed.discard(name)
        if self._linked(name):
            return f"already linked to {name}"
        if name in self.connecting:
            return f"already connecting to {name}"
        if self.dial is None:
            raise RuntimeError("this server cannot dial")
        self.connecting.add(name)
        self.dial(b, self._session(b), lambda reason: self._failed(name, reason))
        return f"connecting to {name} ({b.host}:{b.port})"

    def _failed(self, name: str, reason: str) -> None:
        self.connecting.discard(name)
        self.last_error[name] = reason
        log.info("link %s: cannot connect: %s", name, reason)
        self.backoff(name, self._now())

    def backoff(self, name: str, now: float) -> None:
        lk = self._timers()
        fails, _ = self.retry.get(name, (0, 0.0))
        delay = min(lk.retry_max, lk.retry_min * (2 ** fails)) * random.uniform(0.5, 1.5)
        self.retry[name] = (fails + 1, now + delay)

    def succeeded(self, name: str) -> None:
        self.retry.pop(name, None)

    def sweep(self, now: float) -> None:
        """Autoconnect: dial every autoconnect link that is down, not suppressed and due."""
        for b in self._blocks():
            if not b.autoconnect or b.name in self.suppressed or b.name in self.connecting:
                continue
            if self._linked(b.name):
                continue
            if now >= self.retry.get(b.name, (0, 0.0))[1] and self.dial is not None:
                self.connect(b.name, now)
