"""Per-source rate limits, like Kamailio's pike: a token bucket of requests and one of failed
authentications per source address. Time is passed in; state is bounded (`max_sources`)."""

from __future__ import annotations


class TokenBuckets:
    """`allow(key, now)`: take a token from key's bucket (rate per second, `burst` deep)."""

    def __init__(self, rate: float, burst: float, max_sources: int = 10000):
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: dict[str, list[float]] = {}   # key -> [tokens, last update]

    def _bucket(self, key: str, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                self.prune(now)
                if len(self._buckets) >= self.max_sources:   # still full: forget the oldest
                    del self._buckets[next(iter(self._buckets))]
            b = self._buckets[key] = [self.burst, now]
        else:
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        return b

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        b = self._bucket(key, now)
        if b[0] < cost:
            return False
        b[0] -= cost
        return True

    def empty(self, key: str, now: float) -> bool:
        """True when key has no token left (without taking one)."""
        return self._bucket(key, now)[0] < 1.0

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled (they are as good as new)."""
        full = self.burst / self.rate if self.rate > 0 else float("inf")
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < full}

    def __len__(self) -> int:
        return len(self._buckets)
