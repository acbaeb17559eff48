"""A stand-in for relay.runtime's Runtime, enough for a Connection over real sockets and the gevent
loop (tests/runtime and tools/bench/outbox.py)."""

from __future__ import annotations

import time

import gevent


class StandInRuntime:
    handshake_timeout = 5.0

    def __init__(self):
        self.hub = gevent.get_hub()
        self.connections = set()

    @staticmethod
    def now() -> float:
        return time.time()
