"""The runtime's storage writer on both backends: batches in one transaction per flush, waits only
where asked (operator commands), retries an unreachable database, drops only a write that fails on
its own, pushes back when the queue is full, and flushes everything on stop."""

from __future__ import annotations

import threading

import gevent
import pytest

from relay.core.storage import Op, WriteQueue
from relay.runtime.storage_writer import StorageWriter

T = "CREATE TABLE IF NOT EXISTS w (k {int} PRIMARY KEY, v TEXT)"


class Counting:
    """A database wrapper: counts transactions, can fail or stall on demand."""

    def __init__(self, db):
        self.db, self.backend, self.where = db, db.backend, db.where
        self.transactions = 0
        self.fail_next: list[Exception] = []
        self.gate: threading.Event | None = None

    def execute(self, ops):
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.transactions += 1
        self.db.execute(ops)

    def query(self, sql, args=()):
        return self.db.query(sql, args)


@pytest.fixture
def table(db):
    from relay.core.storage import Schema
    db.migrate(Schema("wtest", (T,), ("w",)))
    return db


def ins(k: int) -> Op:
    return Op("INSERT INTO w(k, v) VALUES (?, ?)", (k, f"v{k}"))


def keys(db) -> list[int]:
    return [r[0] for r in db.query("SELECT k FROM w ORDER BY k")]


def test_many_writes_one_transaction_per_flush(table):
    db = Counting(table)
    q = WriteQueue(10_000)
    w = StorageWriter(db, q, flush_interval=0.05)
    w.start()
    for k in range(300):
        q.put(ins(k))
    assert w.wait_committed(q.mark(), 30)
    assert keys(table) == list(range(300))
    assert 1 <= db.transactions <= 3 and q.committed == 300
    w.stop()


def test_a_waiting_caller_does_not_wait_for_the_interval(table):
    q = WriteQueue()
    w = StorageWriter(Counting(table), q, flush_interval=3600)   # only a waiter makes it flush
    w.start()
    q.put(ins(1))
    assert w.wait_committed(q.mark(), 30)
    assert keys(table) == [1]
    w.stop()


def test_an_unreachable_database_is_retried_and_nothing_is_lost(table):
    db = Counting(table)
    db.fail_next = [OSError("connection refused"), OSError("connection refused")]
    q = WriteQueue()
    w = StorageWriter(db, q, flush_interval=0.01)
    w.start()
    for k in range(5):
        q.put(ins(k))
    assert w.wait_committed(q.mark(), 30)
    assert keys(table) == [0, 1, 2, 3, 4] and w.failures == 2
    w.stop()


def test_only_the_write_that_fails_on_its_own_is_dropped(table, caplog):
    q = WriteQueue()
    w = StorageWriter(Counting(table), q, flush_interval=0.01)
    w.start()
    q.put(ins(1))
    q.put(ins(1))              # a duplicate key: fails whatever happens
    q.put(ins(2), ins(3))
    assert w.wait_committed(q.mark(), 30)
    assert keys(table) == [1, 2, 3]
    assert "dropped a write" in caplog.text
    w.stop()


def test_a_full_queue_pushes_back_until_the_writer_catches_up(table):
    db = Counting(table)
    db.gate = threading.Event()          # the database stalls
    q = WriteQueue(limit=10)
    w = StorageWriter(db, q, flush_interval=0.01)
    drained = []
    w.on_drained = lambda: drained.append(len(q))
    w.start()
    q.put(ins(0))
    gevent.sleep(0.05)                   # the writer is now inside a stalled flush
    for k in range(1, 12):
        q.put(ins(k))
    assert q.full and w.check_full()     # the runtime stops reading clients here
    db.gate.set()
    assert w.wait_committed(q.mark(), 30)
    assert not w.congested and drained and keys(table) == list(range(12))
    w.stop()


def test_stop_flushes_everything(table):
    q = WriteQueue()
    w = StorageWriter(Counting(table), q, flush_interval=3600)
    w.start()
    for k in range(50):
        q.put(ins(k))
    w.stop()
    assert keys(table) == list(range(50))


def test_an_asynchronous_read_sees_the_writes_before_it_and_does_not_block_the_loop(table):
    from relay.core.storage import Storage
    q = WriteQueue(10_000)
    db = Counting(table)
    gate = threading.Event()
    slow_query = db.query
    db.query = lambda sql, args=(): gate.wait(30) and slow_query(sql, args)   # held until released
    w = StorageWriter(db, q, flush_interval=3600)   # only the read makes it flush
    w.start()
    storage = Storage(table, q, reader=w.read)
    for k in range(5):
        q.put(ins(k))
    got = []
    storage.read("SELECT k FROM w WHERE k >= ? ORDER BY k", (2,), got.append)
    assert got == []                      # not called within read()
    with gevent.Timeout(30):
        while q.committed < 5:            # the read made the writer flush what came before it
            gevent.sleep(0.001)
        ticks = 0
        while ticks < 20:                 # the loop runs while the query waits in the thread pool
            gevent.sleep(0.001)
            ticks += 1
        assert got == []
        gate.set()
        while not got:
            gevent.sleep(0.001)
    assert got == [[(2,), (3,), (4,)]]
    w.stop()


def test_a_failed_read_calls_back_with_none(table, caplog):
    from relay.core.storage import Storage
    q = WriteQueue(10_000)
    w = StorageWriter(Counting(table), q, flush_interval=0.01)
    w.start()
    got = []
    Storage(table, q, reader=w.read).read("SELECT nope FROM missing_table", (), got.append)
    with gevent.Timeout(30):
        while not got:
            gevent.sleep(0.001)
    assert got == [None]
    assert "read failed" in caplog.text
    w.stop()


def test_without_a_database_a_read_answers_at_once():
    from relay.core.storage import Storage
    got = []
    Storage.none().read("SELECT 1", (), got.append)
    assert got == [[]]
