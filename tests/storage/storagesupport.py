"""Helpers of the storage tests."""

from __future__ import annotations

from relay.core.storage import Storage


def flush(storage: Storage) -> None:
    """What the runtime's writer does, synchronously: one transaction for everything queued."""
    q = storage.queue
    units = q.take(10**9)
    storage.db.execute([op for u in units for op in u.ops])
    q.done(len(units))
