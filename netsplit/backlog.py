"""Message frames for servers held behind a split, resent when those servers return.

A frame that could not be routed because some of its destination servers were held is kept
here for them, within the replay window (`replay.max_age` seconds, at most `replay.max_frames`
frames). It is resent once they are back (their netjoin ended), also when their hold expired
meanwhile: their users then see it after their rejoin, in per-origin order. What the window
pushes out is reported by `prune` (the caller logs and counts it), never dropped silently.
"""

from __future__ import annotations

from collections import deque
from typing import Callable


class SplitBacklog:
    def __init__(self, max_frames: int, max_age: float):
        self.max_frames = max_frames
        self.max_age = max_age
        # [time kept, servers still waiting for it, origin, seq, type, payload], oldest first
        self.entries: deque[list] = deque()

    def __len__(self) -> int:
        return len(self.entries)

    def keep(self, now: float, servers: frozenset, origin: str, seq: int, ftype: str, payload: dict) -> None:
        self.entries.append([now, set(servers), origin, seq, ftype, payload])

    def prune(self, now: float) -> dict[str, list[tuple[str, int]]]:
        """Drop frames past the window (too old, or beyond the count); per server that will not get
        them, the (origin, seq) dropped."""
        lost: dict[str, list[tuple[str, int]]] = {}
        oldest = now - self.max_age
        e = self.entries
        while e and (len(e) > self.max_frames or e[0][0] < oldest):
            _, servers, origin, seq, _, _ = e.popleft()
            for sid in servers:
                lost.setdefault(sid, []).append((origin, seq))
        return lost

    def take(self, back: Callable[[str], bool]) -> list[tuple[set[str], str, int, str, dict]]:
        """The frames for servers that are `back`, in order, and which of their servers are; what
        other servers still wait for stays."""
        out, keep = [], deque()
        for entry in self.entries:
            servers = entry[1]
            now_back = {s for s in servers if back(s)}
            if now_back:
                out.append((now_back, *entry[2:]))
                servers -= now_back
            if servers:
                keep.append(entry)
        self.entries = keep
        return out
