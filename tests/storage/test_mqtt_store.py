"""The `mqtt` store on both backends: what the broker writes comes back at the next start, rows are
per server (two servers may share one PostgreSQL database), and an old mqtt.db is imported."""

import sqlite3

import pytest

from storagesupport import flush

from bridges.mqtt.store import Store
from relay.core.storage import Storage, WriteQueue


def fill(st: Store) -> None:
    st.save_session("c1", 5, "rita", 3600, 10.5)
    st.save_session("c2", 4, None, 0xFFFFFFFF, None)
    st.save_sub("c1", "a/+", 1, True, False, 2, 7)
    st.save_sub("c1", "$share/g/b", 2, False, True, 0, None)
    st.save_sub("c1", "a/+", 2, False, False, 0, 8)            # a re-subscription replaces
    st.add_message("c1", 1, 0, None, "a/x", b"\x00bin\xff", 1, False, {"correlation_data": b"\x01"}, None, [7])
    st.add_message("c1", 2, 0, None, "a/y", b"two", 2, True, None, 99.5)
    st.update_message("c1", 2, 1, 42)
    st.add_message("c1", 3, 0, None, "a/z", b"gone", 1, False, None, None)
    st.delete_message("c1", 3)
    st.set_retained("r/1", b"kept", 1, {"content_type": "text/plain"}, None)
    st.set_retained("r/2", b"soon", 0, None, 50.0)
    st.delete_retained("r/2")


def test_everything_written_is_read_back(storage):
    fill(Store(storage))
    flush(storage)
    st = Store(Storage(storage.db, WriteQueue(), "001"))
    assert sorted(st.sessions()) == [("c1", 5, "rita", 3600, 10.5), ("c2", 4, None, 0xFFFFFFFF, None)]
    assert sorted(st.subs()) == [("c1", "$share/g/b", 2, 0, 1, 0, None), ("c1", "a/+", 2, 0, 0, 0, 8)]
    msgs = list(st.messages())
    assert [(m[1], m[2], m[3], m[4], bytes(m[5])) for m in msgs] == [(1, 0, None, "a/x", b"\x00bin\xff"),
                                                                    (2, 1, 42, "a/y", b"two")]
    from bridges.mqtt.store import props_from_json
    assert props_from_json(msgs[0][8]) == {"correlation_data": b"\x01"} and msgs[0][10] == "[7]"
    assert [(t, bytes(p)) for t, p, *_ in st.retained()] == [("r/1", b"kept")]


def test_deleting_a_session_takes_its_subscriptions_and_messages(storage):
    st = Store(storage)
    fill(st)
    st.delete_session("c1")
    flush(storage)
    assert [r[0] for r in st.sessions()] == ["c2"]
    assert list(st.subs()) == [] and list(st.messages()) == []


def test_on_postgresql_stored_messages_have_no_foreign_key_and_a_version_1_store_loses_it(storage, pg_cluster):
    """Version 2: PostgreSQL checks the key with a trigger per stored message; the store deletes a
    session's messages itself (the test above), and the broker skips one without its session."""
    from bridges.mqtt.store import SCHEMA
    from relay.core.storage import Schema
    from relay.storage.postgresql import PostgresDatabase
    fks = "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' ORDER BY 1"
    if storage.db.backend != "postgresql":
        pytest.skip("SQLite keeps the key")
    Store(storage)
    assert storage.db.query(fks) == [("mqtt_subscriptions",)]
    old = PostgresDatabase(pg_cluster.new_database(), 1)
    try:
        old.migrate(Schema(SCHEMA.name, SCHEMA.migrations[:1], SCHEMA.tables))      # a version 1 deployment
        assert old.query(fks) == [("mqtt_messages",), ("mqtt_subscriptions",)]
        st = Store(Storage(old, WriteQueue(), "001"))
        assert old.query(fks) == [("mqtt_subscriptions",)]
        assert old.query("SELECT version FROM schema_versions WHERE store = 'mqtt'") == [(2,)]
        st.save_session("c1", 5, None, 60, None)
        st.add_message("c1", 1, 0, None, "t", b"x", 1, False, None, None)
        st.delete_session("c1")
        flush(st.storage)
        assert old.query("SELECT count(*) FROM mqtt_messages") == [(0,)]
    finally:
        old.close()


def test_rows_are_per_server_in_one_database(storage):
    a = Store(storage)
    b_storage = Storage(storage.db, WriteQueue(), "002")
    b = Store(b_storage)
    a.save_session("same-id", 5, "x", 60, None)
    b.save_session("same-id", 4, "y", 120, None)
    a.set_retained("t", b"from a", 0, None, None)
    flush(storage)
    flush(b_storage)
    assert a.sessions() == [("same-id", 5, "x", 60, None)]
    assert b.sessions() == [("same-id", 4, "y", 120, None)]
    assert list(b.retained()) == []


def test_an_old_mqtt_db_is_imported_when_the_store_is_created(storage, tmp_path):
    old = tmp_path / "mqtt.db"
    db = sqlite3.connect(old)
    db.executescript("""
        CREATE TABLE sessions (client_id TEXT PRIMARY KEY, version INTEGER NOT NULL, username TEXT,
                               expiry INTEGER NOT NULL, disconnected_at REAL);
        CREATE TABLE subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
            no_local INTEGER NOT NULL DEFAULT 0, retain_as_published INTEGER NOT NULL DEFAULT 0,
            retain_handling INTEGER NOT NULL DEFAULT 0, sub_id INTEGER, PRIMARY KEY (client_id, filter));
        CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
            packet_id INTEGER, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
            retain INTEGER NOT NULL, props TEXT, expires REAL, sub_ids TEXT, PRIMARY KEY (client_id, seq));
        CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL, props TEXT,
                               expires REAL);
        INSERT INTO sessions VALUES ('old', 5, 'u', 3600, 1.5);
        INSERT INTO subscriptions VALUES ('old', 'x/#', 1, 0, 0, 0, NULL);
        INSERT INTO messages VALUES ('old', 1, 0, NULL, 'x/1', X'00FF', 1, 0, NULL, NULL, NULL);
        INSERT INTO retained VALUES ('x/r', X'6B', 0, NULL, NULL);
        PRAGMA user_version = 1;
    """)
    db.close()
    st = Store(storage, old)
    assert st.sessions() == [("old", 5, "u", 3600, 1.5)]
    assert list(st.subs()) == [("old", "x/#", 1, 0, 0, 0, None)]
    assert [bytes(m[5]) for m in st.messages()] == [b"\x00\xff"]
    assert [(t, bytes(p)) for t, p, *_ in st.retained()] == [("x/r", b"k")]
    st.delete_session("old")
    flush(storage)
    assert Store(Storage(storage.db, WriteQueue(), "001"), old).sessions() == []   # imported once only


def test_a_message_acknowledged_within_one_flush_never_reaches_the_database(storage):
    st = Store(storage)
    st.save_session("c", 5, None, 60, None)
    st.add_message("c", 1, 0, None, "t", b"quick", 1, False, None, None)
    st.update_message("c", 1, 1, 7)
    st.delete_message("c", 1)                      # acknowledged before the writer took anything
    st.add_message("c", 2, 0, None, "t", b"slow", 1, False, None, None)
    assert st.withdrawn == 1
    assert sum(len(u.ops) for u in storage.queue.units) == 2   # the session row and message 2
    flush(storage)
    st.update_message("c", 2, 1, 8)                # message 2 is stored: its changes must be written
    st.delete_message("c", 2)
    assert st.withdrawn == 1
    flush(storage)
    assert list(st.messages()) == [] and [r[0] for r in st.sessions()] == ["c"]


def test_a_message_taken_by_the_writer_is_deleted_for_real(storage):
    st = Store(storage)
    st.save_session("c", 5, None, 60, None)
    st.add_message("c", 1, 0, None, "t", b"x", 1, False, None, None)
    units = storage.queue.take(10)                 # the writer has it (in flight)
    st.delete_message("c", 1)
    assert st.withdrawn == 0 and len(storage.queue) == 3
    storage.db.execute([op for u in units for op in u.ops])
    storage.queue.done(len(units))
    flush(storage)
    assert list(st.messages()) == []


def test_a_state_change_within_one_flush_is_written_by_the_queued_write(storage):
    """Queued (state 0), then sent (1) and, QoS 2, released (2) before the writer takes anything: one
    INSERT with the last state; once the INSERT is taken, one UPDATE, itself rewritten while queued."""
    st = Store(storage)
    st.save_session("c", 5, None, 60, None)
    st.add_message("c", 1, 0, None, "t", b"q2", 2, False, None, None)
    st.update_message("c", 1, 1, 7)
    st.update_message("c", 1, 2, 7)
    assert st.folded == 2 and sum(len(u.ops) for u in storage.queue.units) == 2   # the session and one insert
    taken = storage.queue.take(100)
    assert [op.args[3:5] for u in taken for op in u.ops if "mqtt_messages" in op.sql] == [(2, 7)]
    storage.db.execute([op for u in taken for op in u.ops])
    storage.queue.done(len(taken))
    st.add_message("c", 2, 0, None, "t", b"later", 1, False, None, None)
    flush(storage)                                  # message 2 stored as queued
    st.update_message("c", 2, 1, 8)                 # a real UPDATE...
    st.update_message("c", 2, 2, 8)                 # ...that takes this one too
    assert st.folded == 3 and len(storage.queue) == 1
    flush(storage)
    assert [(m[1], m[2], m[3]) for m in st.messages()] == [(1, 2, 7), (2, 2, 8)]
    st.update_message("c", 1, 1, 9)                 # an UPDATE queued, then the row deleted: only the delete
    st.delete_message("c", 1)
    assert sum(len(u.ops) for u in storage.queue.units) == 1
    flush(storage)
    assert [(m[1], m[2], m[3]) for m in Store(Storage(storage.db, WriteQueue(), "001")).messages()] == [(2, 2, 8)]


class LaterReads:
    """Storage.reader as the runtime's: the read runs (on the database) when the test says so."""

    def __init__(self, storage, fail: str | None = None):
        self.storage, self.fail, self.waiting = storage, fail, []
        storage.reader = lambda sql, args, done: self.waiting.append((sql, args, done))

    def run_all(self) -> None:
        while self.waiting:
            sql, args, done = self.waiting.pop(0)
            done(None if self.fail and self.fail in sql else self.storage.db.query(sql, args))


def test_open_later_reads_everything_without_waiting_and_answers_from_memory(storage):
    fill(Store(storage))
    flush(storage)
    fresh = Storage(storage.db, WriteQueue(), "001")
    reads = LaterReads(fresh)
    got = []
    Store.open_later(fresh, None, got.append)
    assert got == [] and len(reads.waiting) == 1         # nothing read on the spot
    reads.run_all()
    (st,) = got
    fresh.db = None                                        # every read now comes from memory
    assert sorted(s[0] for s in st.sessions()) == ["c1", "c2"]
    assert len(list(st.subs())) == 2 and len(list(st.messages())) == 2 and len(list(st.retained())) == 1
    assert fresh.schemas["mqtt"].name == "mqtt"           # listed for backups


def test_open_later_reports_a_failed_read(storage):
    Store(storage)
    flush(storage)
    fresh = Storage(storage.db, WriteQueue(), "001")
    reads = LaterReads(fresh, fail="mqtt_messages")
    got = []
    Store.open_later(fresh, None, got.append)
    reads.run_all()
    assert got == [None]
