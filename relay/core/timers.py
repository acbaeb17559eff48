"""The one timer queue. The core schedules; the runtime calls `run_due(now)`.

Time is always passed in, so tests drive timers without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Callable

log = logging.getLogger("relay.timers")


class Timer:
    __slots__ = ("when", "fn", "interval", "owner", "cancelled", "seq")

    def __init__(self, when: float, fn: Callable[[float], None], interval: float | None, owner: str, seq: int):
        self.when, self.fn, self.interval, self.owner, self.seq = when, fn, interval, owner, seq
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self.wakeup: Callable[[], None] | None = None  # set by the runtime: an earlier deadline appeared

    def call_at(self, when: float, fn: Callable[[float], None], owner: str = "core") -> Timer:
        return self._push(Timer(when, fn, None, owner, next(self._seq)))

    def every(self, interval: float, fn: Callable[[float], None], now: float, owner: str = "core") -> Timer:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        return self._push(Timer(now + interval, fn, interval, owner, next(self._seq)))

    def _push(self, t: Timer) -> Timer:
        earliest = self._heap[0].when if self._heap else None
        heapq.heappush(self._heap, t)
        if self.wakeup is not None and (earliest is None or t.when < earliest):
            self.wakeup()
        return t

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due at `now`; returns how many ran."""
        ran = 0
        heap = self._heap
        while heap and heap[0].when <= now:
            t = heapq.heappop(heap)
            if t.cancelled:
                continue
            if t.interval is not None:
                # Stay on the original grid so the timer does not drift; periods missed
                # while the server was busy are skipped, not run in a burst.
                t.when += t.interval
                if t.when <= now:
                    t.when = now + t.interval
                heapq.heappush(heap, t)
            ran += 1
            try:
                t.fn(now)
            except Exception:
                log.exception("timer of %s raised; skipped", t.owner)
        return ran

    def pending(self, owner: str | None = None) -> int:
        return sum(1 for t in self._heap if not t.cancelled and (owner is None or t.owner == owner))
