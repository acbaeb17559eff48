"""The storage writer: commits the core's write queue in batches, off the event loop.

Every `flush_interval` (or at once when a caller waits) it takes what is queued, runs it in
gevent's thread pool as one transaction (the drivers block: sqlite3 and psycopg release the GIL),
and marks it committed. The loop serves everyone meanwhile.

Back-pressure: past `queue_limit` units the queue is full; the runtime then stops reading from
client connections (links keep flowing) until the writer has brought it under half the limit, so
MQTT publishers wait (their QoS 1/2 acknowledgements with them) instead of memory growing. A line
is logged when the database falls behind (the queue over a quarter of the limit, or a flush slower
than a second), at most every 10 s.

A failed flush: if the database is unreachable (an operational error) the batch is kept and
retried with backoff; any other error is retried unit by unit and a unit that fails alone is
dropped with an error line (a bug, not a reason to stop storing everything else).
"""

from __future__ import annotations

import logging
import time

import gevent
import gevent.event

from relay.core.storage import Database, WriteQueue

log = logging.getLogger("relay.storage")

MAX_BATCH = 10000         # ops per transaction
BEHIND_LOG_EVERY = 10.0
RETRY_MAX = 5.0


def _transient(e: BaseException) -> bool:
    name = type(e).__name__
    return name in ("OperationalError", "InterfaceError", "ConnectionTimeout") or isinstance(e, OSError)


class StorageWriter:
    def __init__(self, db: Database, queue: WriteQueue, flush_interval: float):
        self.db, self.queue, self.interval = db, queue, flush_interval
        self.pool = gevent.get_hub().threadpool
        self._wake = gevent.event.Event()
        self._committed = gevent.event.Event()
        self._drained = gevent.event.Event()
        self._drained.set()
        self.on_drained = None                # runtime: resume the client connections it paused
        self.greenlet = None
        self.stopping = False
        self.flushes = 0
        self.failures = 0
        self.ops_written = 0                  # statements the database ran (withdrawn units cost none)
        self.paused = 0                       # times the queue filled and clients were read no more
        self._last_behind_log = 0.0
        self._urgent = False
        queue.wakeup = self._wake.set

    def start(self) -> None:
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        q, delay, last = self.queue, 0.0, 0.0
        while True:
            if not q.units:
                if self.stopping:
                    return
                self._wake.clear()
                self._wake.wait()          # the first write of a batch, or a caller that waits
                last = time.monotonic()    # a batch gathers from its first write
                continue
            # At most one flush per interval (a batch gathers meanwhile, and what is undone within it
            # is withdrawn), but no pause when behind: the interval counts from the last flush's start.
            left = last + self.interval - time.monotonic()
            if left > 0 and not (self._urgent or q.full or self.stopping):
                self._wake.clear()
                self._wake.wait(left)      # cut short by a waiting caller or a full queue
            self._urgent = False
            last = time.monotonic()
            if self.flush_once():
                delay = 0.0
            else:
                delay = min(RETRY_MAX, max(0.1, delay * 2))
                gevent.sleep(delay)

    def flush_once(self) -> bool:
        """One transaction of queued units; False if the database failed and the batch stays queued."""
        q = self.queue
        units = q.take(MAX_BATCH)
        if not units:
            return True
        ops = [op for u in units for op in u.ops]
        if not ops:                       # every unit was cancelled
            q.done(len(units))
            self._after_commit()
            return True
        t0 = time.monotonic()
        try:
            self.pool.apply(self.db.execute, (ops,))
        except Exception as e:
            self.failures += 1
            if _transient(e):
                log.error("storage (%s): flush of %d writes failed, will retry: %s", self.db.where, len(ops),
                          " ".join(str(e).split()))
                return False
            log.error("storage (%s): flush failed (%s); retrying write by write", self.db.where,
                      " ".join(str(e).split()))
            for u in units:
                try:
                    if u.ops:
                        self.pool.apply(self.db.execute, (list(u.ops),))
                except Exception as e2:
                    if _transient(e2):
                        return False
                    log.error("storage: dropped a write that fails on its own: %s %r: %s", u.ops[0].sql[:60],
                              u.ops[0].args[:3], " ".join(str(e2).split()))
                q.done(1)
                self._after_commit()
            return True
        took = time.monotonic() - t0
        q.done(len(units))
        self.flushes += 1
        self.ops_written += len(ops)
        self._after_commit()
        now = time.monotonic()
        if (len(q) > q.limit / 4 or took > 1.0) and now - self._last_behind_log > BEHIND_LOG_EVERY:
            self._last_behind_log = now
            log.warning("storage (%s) is falling behind: %d writes queued (limit %d), last flush of %d took "
                        "%.2fs", self.db.where, len(q), q.limit, len(ops), took)
        return True

    def _after_commit(self) -> None:
        self._committed.set()
        self._committed = gevent.event.Event()
        if self.congested and len(self.queue) <= self.queue.limit // 2:
            self._drained.set()
            if self.on_drained is not None:
                self.on_drained()

    @property
    def congested(self) -> bool:
        return not self._drained.is_set()

    def check_full(self) -> bool:
        """Called by the runtime after feeding a client: True if it must stop reading (queue full)."""
        if self.queue.full and self._drained.is_set():
            self._drained.clear()
            self.paused += 1
        return self.congested

    def wait_committed(self, position: int, timeout: float | None = None) -> bool:
        """Block this greenlet (never the core) until everything up to `position` is committed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.queue.committed < position:
            self._urgent = True
            self._wake.set()
            ev = self._committed
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            ev.wait(left)
        return True

    def read(self, sql: str, args: tuple, done) -> None:
        """Storage.reader: in a greenlet, wait for the writes enqueued so far, run the query in the
        thread pool, and hand the rows (None on failure) to `done` on the loop."""
        gevent.spawn(self._read, self.queue.mark(), sql, args, done)

    def _read(self, position: int, sql: str, args: tuple, done) -> None:
        rows = None
        try:
            self.wait_committed(position, timeout=30.0)
            rows = self.pool.apply(self.db.query, (sql, args))
        except Exception as e:
            log.error("storage (%s): read failed: %s: %s", self.db.where, sql[:60], " ".join(str(e).split()))
        try:
            done(rows)
        except Exception:
            log.exception("storage: the callback of a read raised")

    def wait_drained(self) -> None:
        self._drained.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush everything (a clean stop loses nothing), then stop."""
        self.stopping = True
        self.wait_committed(self.queue.enqueued, timeout)
        self._wake.set()
        if self.greenlet is not None:
            self.greenlet.join(1.0)
            self.greenlet.kill()
