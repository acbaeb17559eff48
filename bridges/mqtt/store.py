"""Persistent broker state, in the server's storage (relay.core.storage): the `mqtt` store.

Every change to a persistent session (its row, its subscriptions, its queued and in-flight
QoS 1/2 messages) and to the retained messages is enqueued when it happens and committed by the
runtime's storage writer in batches: `kill -9` loses at most the last flush interval
(storage.flush_interval) of these changes; a clean stop flushes everything. QoS 0 traffic and
clean sessions never touch the database, and neither does a message delivered and acknowledged
within one flush interval (its queued writes are withdrawn before the writer takes them); a state
change (sent, released) while the message's last write is still queued rewrites that write.
Rows are per server (`server`: its id), so several
servers may share one PostgreSQL database. Read once, at start (`sessions()`, `subs()`, ...), or,
for a `module load` while serving, through the asynchronous `Storage.read` (`open_later`).

Schema (store `mqtt`, version 2; an older deployment's `<data_dir>/mqtt.db` is imported when the
store is created):

    mqtt_sessions(server, client_id, version, username, expiry, disconnected_at; PK (server, client_id))
        one row per persistent session (session expiry > 0, or 3.1.1 clean session 0)
    mqtt_subscriptions(server, client_id, filter, qos, no_local, retain_as_published,
                       retain_handling, sub_id;  PK (server, client_id, filter))
        filter is the full filter, "$share/GROUP/FILTER" included
    mqtt_messages(server, client_id, seq, state, packet_id, topic, payload, qos, retain, props,
                  expires, sub_ids;  PK (server, client_id, seq))
        a session's outgoing QoS 1/2 messages in order: state 0 queued, 1 PUBLISH sent
        (awaiting PUBACK / PUBREC), 2 PUBREL sent (awaiting PUBCOMP); qos is the granted
        QoS, retain the flag as it will be sent; props (JSON) the message's properties,
        sub_ids (JSON list) the subscription identifiers it carries
    mqtt_retained(server, topic, payload, qos, props, expires; PK (server, topic))
        expires: absolute UNIX time of the message expiry, or NULL

Version 2 drops, on PostgreSQL, the foreign key of mqtt_messages on the session: PostgreSQL checks it
with a trigger per inserted row (a query and a lock on the session's row), about 40% of the
database's CPU per stored message. This store is the only writer of the rows: it deletes a
session's messages with the session, and the broker skips a message without its session at start.
SQLite keeps the key (its check is cheap; dropping it would rebuild the table). A version 1 dump
restores as it is.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

from relay.core.storage import Op, Schema, Storage

log = logging.getLogger("relay.storage")

SCHEMA = Schema("mqtt", ("""
CREATE TABLE mqtt_sessions (
    server TEXT NOT NULL,
    client_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    username TEXT,
    expiry {int} NOT NULL,
    disconnected_at {real},
    PRIMARY KEY (server, client_id)
);
CREATE TABLE mqtt_subscriptions (
    server TEXT NOT NULL,
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL DEFAULT 0,
    retain_as_published INTEGER NOT NULL DEFAULT 0,
    retain_handling INTEGER NOT NULL DEFAULT 0,
    sub_id {int},
    PRIMARY KEY (server, client_id, filter),
    FOREIGN KEY (server, client_id) REFERENCES mqtt_sessions(server, client_id) ON DELETE CASCADE
);
CREATE TABLE mqtt_messages (
    server TEXT NOT NULL,
    client_id TEXT NOT NULL,
    seq {int} NOT NULL,
    state INTEGER NOT NULL,
    packet_id INTEGER,
    topic TEXT NOT NULL,
    payload {blob} NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    props TEXT,
    expires {real},
    sub_ids TEXT,
    PRIMARY KEY (server, client_id, seq),
    FOREIGN KEY (server, client_id) REFERENCES mqtt_sessions(server, client_id) ON DELETE CASCADE
);
CREATE TABLE mqtt_retained (
    server TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload {blob} NOT NULL,
    qos INTEGER NOT NULL,
    props TEXT,
    expires {real},
    PRIMARY KEY (server, topic)
);
""", {"sqlite": "", "postgresql": "ALTER TABLE mqtt_messages DROP CONSTRAINT IF EXISTS "
                                   "mqtt_messages_server_client_id_fkey"},
), tables=("mqtt_sessions", "mqtt_subscriptions", "mqtt_messages", "mqtt_retained"), dumps_from=1)

_SESSION = ("INSERT INTO mqtt_sessions(server, client_id, version, username, expiry, disconnected_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(server, client_id) DO UPDATE SET version = excluded.version, "
            "username = excluded.username, expiry = excluded.expiry, disconnected_at = excluded.disconnected_at")
_SUB = ("INSERT INTO mqtt_subscriptions(server, client_id, filter, qos, no_local, retain_as_published, "
        "retain_handling, sub_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(server, client_id, filter) DO UPDATE SET "
        "qos = excluded.qos, no_local = excluded.no_local, retain_as_published = excluded.retain_as_published, "
        "retain_handling = excluded.retain_handling, sub_id = excluded.sub_id")
_MESSAGE = ("INSERT INTO mqtt_messages(server, client_id, seq, state, packet_id, topic, payload, qos, retain, "
            "props, expires, sub_ids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(server, client_id, seq) DO UPDATE "
            "SET state = excluded.state, packet_id = excluded.packet_id, topic = excluded.topic, "
            "payload = excluded.payload, qos = excluded.qos, retain = excluded.retain, props = excluded.props, "
            "expires = excluded.expires, sub_ids = excluded.sub_ids")
_UPDATE = "UPDATE mqtt_messages SET state = ?, packet_id = ? WHERE server = ? AND client_id = ? AND seq = ?"
_RETAINED = ("INSERT INTO mqtt_retained(server, topic, payload, qos, props, expires) VALUES (?,?,?,?,?,?) "
             "ON CONFLICT(server, topic) DO UPDATE SET payload = excluded.payload, qos = excluded.qos, "
             "props = excluded.props, expires = excluded.expires")


def props_to_json(props: dict[str, Any] | None) -> str | None:
    """MQTT properties as JSON: bytes values (correlation data) become {"b64": ...}."""
    if not props:
        return None
    out: dict[str, Any] = {}
    for k, v in props.items():
        if isinstance(v, (bytes, bytearray)):
            out[k] = {"b64": base64.b64encode(v).decode()}
        elif k == "user_property":
            out[k] = [list(kv) for kv in v]
        else:
            out[k] = v
    return json.dumps(out, separators=(",", ":"))


def props_from_json(text: str | dict | None) -> dict[str, Any]:
    if not text:
        return {}
    data = json.loads(text) if isinstance(text, str) else text
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and "b64" in v:
            out[k] = base64.b64decode(v["b64"])
        elif k == "user_property":
            out[k] = [tuple(kv) for kv in v]
        else:
            out[k] = v
    return out


def _legacy_units(path: Path, server: str) -> Iterator[tuple[Op, ...]]:
    """An older deployment's mqtt.db (write-through SQLite, user_version 1) as writes into the store."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for r in db.execute("SELECT client_id, version, username, expiry, disconnected_at FROM sessions"):
            yield (Op(_SESSION, (server, *r)),)
        for r in db.execute("SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling, "
                            "sub_id FROM subscriptions"):
            yield (Op(_SUB, (server, *r)),)
        for r in db.execute("SELECT client_id, seq, state, packet_id, topic, payload, qos, retain, props, "
                            "expires, sub_ids FROM messages"):
            yield (Op(_MESSAGE, (server, *r[:5], bytes(r[5]), *r[6:])),)
        for r in db.execute("SELECT topic, payload, qos, props, expires FROM retained"):
            yield (Op(_RETAINED, (server, r[0], bytes(r[1]), *r[2:])),)
    finally:
        db.close()


_READS = {
    "sessions": "SELECT client_id, version, username, expiry, disconnected_at FROM mqtt_sessions WHERE server = ?",
    "subs": "SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling, sub_id "
            "FROM mqtt_subscriptions WHERE server = ?",
    "messages": "SELECT client_id, seq, state, packet_id, topic, payload, qos, retain, props, expires, sub_ids "
                "FROM mqtt_messages WHERE server = ? ORDER BY client_id, seq",
    "retained": "SELECT topic, payload, qos, props, expires FROM mqtt_retained WHERE server = ?",
}


class Store:
    """The broker's persistence: reads at start, then every change one queued write."""

    def __init__(self, storage: Storage, legacy_file: Path | None = None, migrate: bool = True):
        self.storage = storage
        self.server = storage.server_id
        if migrate:
            storage.open_store(SCHEMA, (lambda: _legacy_units(legacy_file, self.server)) if legacy_file else None)
        else:                         # at its version already (open_later): only listed for backups
            storage.schemas[SCHEMA.name] = SCHEMA
        self._loaded: dict[str, list[tuple]] = {}   # rows read by open_later, handed out once
        self.writes = 0
        self.withdrawn = 0            # messages added and deleted within one flush: never written
        self.folded = 0               # state changes written by the queued write they followed
        # Queued writes of each stored message, while the writer may not have taken them:
        # client id -> seq -> units (its add, then its state changes not folded into it).
        self._unsent: dict[str, dict[int, list]] = {}

    @classmethod
    def open_later(cls, storage: Storage, legacy_file: Path | None, done: Callable[["Store | None"], None]) -> None:
        """Open the store and read what the broker loads without waiting on the database (a `module
        load` while the server serves): `done(store)` later on the loop, its reads answered from
        memory; `done(None)` if a read failed. Only a store never made or of an older schema is
        migrated in place (a blocking step, once per deployment)."""
        def versioned(rows):
            if rows is None:
                done(None)
                return
            try:
                store = cls(storage, legacy_file, migrate=not (rows and rows[0][0] == SCHEMA.version))
            except Exception as e:     # a schema newer than this code, a database gone
                log.error("mqtt store (%s): %s", getattr(storage.db, "where", "?"), e)
                done(None)
                return
            names = list(_READS)

            def next_read(rows=None, name=None):
                if name is not None:
                    if rows is None:
                        done(None)
                        return
                    store._loaded[name] = rows
                if len(store._loaded) == len(names):
                    done(store)
                    return
                n = names[len(store._loaded)]
                storage.read(_READS[n], (store.server,), lambda r, n=n: next_read(r, n))
            next_read()
        storage.read("SELECT version FROM schema_versions WHERE store = ?", (SCHEMA.name,), versioned)

    def close(self) -> None:
        """Nothing to close: the runtime owns the database (its writer flushes on a clean stop)."""

    def _x(self, sql: str, args: tuple = ()):
        self.writes += 1
        return self.storage.queue.put(Op(sql, (self.server, *args)))

    def _read(self, name: str) -> list[tuple]:
        rows = self._loaded.pop(name, None)
        return rows if rows is not None else self.storage.query(_READS[name], (self.server,))

    # ---- sessions ----
    def save_session(self, cid: str, version: int, username: str | None, expiry: int,
                     disconnected_at: float | None) -> None:
        self._x(_SESSION, (cid, version, username, expiry, disconnected_at))

    def delete_session(self, cid: str) -> None:
        self._unsent.pop(cid, None)
        self.writes += 2              # its messages too: no foreign key cascades there on PostgreSQL
        self.storage.queue.put(Op("DELETE FROM mqtt_messages WHERE server = ? AND client_id = ?", (self.server, cid)),
                               Op("DELETE FROM mqtt_sessions WHERE server = ? AND client_id = ?", (self.server, cid)))

    def sessions(self) -> list[tuple]:
        return self._read("sessions")

    # ---- subscriptions ----
    def save_sub(self, cid: str, topic_filter: str, qos: int, no_local: bool, rap: bool, rh: int,
                 sub_id: int | None) -> None:
        self._x(_SUB, (cid, topic_filter, qos, int(no_local), int(rap), rh, sub_id))

    def delete_sub(self, cid: str, topic_filter: str) -> None:
        self._x("DELETE FROM mqtt_subscriptions WHERE server = ? AND client_id = ? AND filter = ?", (cid, topic_filter))

    def subs(self) -> Iterator[tuple]:
        return iter(self._read("subs"))

    # ---- queued / in-flight messages ----
    def add_message(self, cid: str, seq: int, state: int, packet_id: int | None, topic: str, payload: bytes,
                    qos: int, retain: bool, props: dict | None, expires: float | None,
                    sub_ids: list[int] | None = None) -> None:
        u = self._x(_MESSAGE, (cid, seq, state, packet_id, topic, bytes(payload), qos, int(retain),
                               props_to_json(props), expires, json.dumps(sub_ids) if sub_ids else None))
        self._unsent.setdefault(cid, {})[seq] = [u]

    def update_message(self, cid: str, seq: int, state: int, packet_id: int | None) -> None:
        units = self._unsent.get(cid, {}).get(seq)
        if units is not None:
            # Its last write still queued (a message queued, then sent within one flush interval):
            # that write takes the new state, no UPDATE of its own.
            last = units[-1]
            op = last.ops[0] if last.ops else None
            if op is not None and last.replace(Op(op.sql, (*op.args[:3], state, packet_id, *op.args[5:])
                                                   if op.sql == _MESSAGE else (state, packet_id, *op.args[2:]))):
                self.folded += 1
                return
        self.writes += 1
        u = self.storage.queue.write(_UPDATE, (state, packet_id, self.server, cid, seq))
        if units is not None:
            units.append(u)

    def delete_message(self, cid: str, seq: int) -> None:
        units = self._unsent.get(cid, {}).pop(seq, None)
        if units is not None:
            if units[0].cancel():
                self.withdrawn += 1   # added and removed within one flush: the database never sees it
            for u in units[1:]:
                u.cancel()            # its state changes still queued: moot, the row goes
            if not units[0].ops:
                return
        self._x("DELETE FROM mqtt_messages WHERE server = ? AND client_id = ? AND seq = ?", (cid, seq))

    def delete_messages(self, cid: str) -> None:
        self._unsent.pop(cid, None)
        self._x("DELETE FROM mqtt_messages WHERE server = ? AND client_id = ?", (cid,))

    def messages(self) -> Iterator[tuple]:
        return iter(self._read("messages"))

    # ---- retained ----
    def set_retained(self, topic: str, payload: bytes, qos: int, props: dict | None, expires: float | None) -> None:
        self._x(_RETAINED, (topic, bytes(payload), qos, props_to_json(props), expires))

    def delete_retained(self, topic: str) -> None:
        self._x("DELETE FROM mqtt_retained WHERE server = ? AND topic = ?", (topic,))

    def retained(self) -> Iterator[tuple]:
        return iter(self._read("retained"))


class RetainedItems:
    """The topic service's retained-item persistence (`TopicService.persistence`) on this store."""

    def __init__(self, store: Store):
        self.store = store

    def set_retained(self, item) -> None:
        self.store.set_retained(item.topic, item.payload, item.qos, item.metadata, item.expires)

    def delete_retained(self, topic: str) -> None:
        self.store.delete_retained(topic)
