"""Replay buffer and per-origin dedupe: how a short split loses and duplicates nothing.

Every message frame carries (origin server, per-origin sequence number); an
origin numbers its message frames 1, 2, 3, ... A server keeps the recent
message frames it originated or forwarded (bounded by count and age), with the
links it sent each on. When a link comes back, each side first tells the other
what it has seen from each origin (its vector); the other replays the frames
after that point that it had sent on that link (lost in flight with it), inside
its burst and before any live traffic, so per-origin order holds. Frames that
could not be sent at all, their destinations being held, are the split
backlog's (netsplit.backlog). `SeenWindow` drops duplicates. Frames already
pushed out of the buffer are reported as a gap (log line and counter), never
silently.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator


class SeenWindow:
    """Which sequence numbers of one origin were delivered: all <= low, plus `above`."""

    __slots__ = ("low", "above")
    MAX_ABOVE = 65536

    def __init__(self, low: int = 0):
        self.low = low
        self.above: set[int] = set()

    def accept(self, seq: int) -> bool:
        """True the first time `seq` is seen; False for a duplicate."""
        if seq <= self.low or seq in self.above:
            return False
        above = self.above
        if seq == self.low + 1:
            self.low = seq
        else:
            above.add(seq)
            if len(above) <= self.MAX_ABOVE:
                return True
            # A hole that will never fill (a frame of that origin routed elsewhere, or lost for
            # good): move past it, then past the run behind it, so the next frames are cheap again.
            self.low = min(above)
            above.discard(self.low)
        while self.low + 1 in above:
            self.low += 1
            above.discard(self.low)
        return True


class ReplayBuffer:
    """Recent message frames in arrival order, bounded by `max_frames` and `max_age` seconds."""

    def __init__(self, max_frames: int, max_age: float):
        self.max_frames = max_frames
        self.max_age = max_age
        self.frames: deque[tuple[float, str, int, str, dict, frozenset]] = deque()  # ..., links sent on
        self.evicted_upto: dict[str, int] = {}  # origin -> highest seq pushed out of the buffer
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.frames)

    def record(self, now: float, origin: str, seq: int, ftype: str, payload: dict,
               links: frozenset = frozenset()) -> None:
        self.frames.append((now, origin, seq, ftype, payload, links))
        if len(self.frames) > self.max_frames:
            self._evict_one()

    def expire(self, now: float) -> None:
        limit = now - self.max_age
        while self.frames and self.frames[0][0] < limit:
            self._evict_one()

    def _evict_one(self) -> None:
        origin, seq = self.frames.popleft()[1:3]
        self.evicted += 1
        self.evicted_upto[origin] = seq

    def since(self, vector: dict[str, int], link: str | None = None) -> tuple[list[tuple[str, int, str, dict]],
                                                                           dict[str, int]]:
        """Frames after `vector` for the origins it names (that were sent on `link`, if given), and per
        origin the highest seq that the peer has not seen but that is no longer buffered (the gap ends
        there)."""
        out = [(o, s, t, p) for _, o, s, t, p, sent in self.frames
               if o in vector and s > vector[o] and (link is None or link in sent)]
        gaps = {o: upto for o, upto in self.evicted_upto.items() if o in vector and upto > vector[o]}
        return out, gaps

    def __iter__(self) -> Iterator:
        return iter(self.frames)
