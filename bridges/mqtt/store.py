"""Persistent broker state in SQLite (stdlib): `<data_dir>/mqtt.db`.

Write-through: every change to a persistent session (its row, its subscriptions, its
queued and in-flight QoS 1/2 messages) and to the retained messages is written when it
happens, so a crash loses nothing that was acknowledged. QoS 0 traffic and clean
sessions never touch the database. WAL with synchronous=NORMAL: a commit is an append
to the log, not an fsync.

Schema (PRAGMA user_version 1; MIGRATIONS below move older files forward):

    sessions(client_id PK, version, username, expiry, disconnected_at)
        one row per persistent session (session expiry > 0, or 3.1.1 clean session 0)
    subscriptions(client_id, filter, qos, no_local, retain_as_published,
                  retain_handling, sub_id;  PK (client_id, filter))
        filter is the full filter, "$share/GROUP/FILTER" included
    messages(client_id, seq, state, packet_id, topic, payload, qos, retain, props,
             expires, sub_ids;  PK (client_id, seq))
        a session's outgoing QoS 1/2 messages in order: state 0 queued, 1 PUBLISH sent
        (awaiting PUBACK / PUBREC), 2 PUBREL sent (awaiting PUBCOMP); qos is the granted
        QoS, retain the flag as it will be sent; props (JSON) the message's properties,
        sub_ids (JSON list) the subscription identifiers it carries
    retained(topic PK, payload, qos, props, expires)
        expires: absolute UNIX time of the message expiry, or NULL
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

# Each migration takes the schema from version i to i+1 (PRAGMA user_version). Append only.
MIGRATIONS: list[str] = ["""
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    username TEXT,
    expiry INTEGER NOT NULL,
    disconnected_at REAL
);
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL REFERENCES sessions(client_id) ON DELETE CASCADE,
    filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL DEFAULT 0,
    retain_as_published INTEGER NOT NULL DEFAULT 0,
    retain_handling INTEGER NOT NULL DEFAULT 0,
    sub_id INTEGER,
    PRIMARY KEY (client_id, filter)
);
CREATE TABLE messages (
    client_id TEXT NOT NULL REFERENCES sessions(client_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,
    packet_id INTEGER,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    props TEXT,
    expires REAL,
    sub_ids TEXT,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    props TEXT,
    expires REAL
);
"""]
SCHEMA_VERSION = len(MIGRATIONS)


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


class Store:
    """Write-through persistence; every method is one short autocommitted statement."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.migrate()
        self.writes = 0

    def migrate(self) -> None:
        v = self.db.execute("PRAGMA user_version").fetchone()[0]
        if v > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {v} is newer than this code ({SCHEMA_VERSION})")
        for i in range(v, SCHEMA_VERSION):
            self.db.executescript("BEGIN;" + MIGRATIONS[i] + f"PRAGMA user_version = {i + 1}; COMMIT;")

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass

    def _x(self, sql: str, args: tuple = ()) -> None:
        self.writes += 1
        self.db.execute(sql, args)

    # ---- sessions ----
    def save_session(self, cid: str, version: int, username: str | None, expiry: int,
                     disconnected_at: float | None) -> None:
        self._x("INSERT INTO sessions(client_id, version, username, expiry, disconnected_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(client_id) DO UPDATE SET version=excluded.version, username=excluded.username, "
                "expiry=excluded.expiry, disconnected_at=excluded.disconnected_at",
                (cid, version, username, expiry, disconnected_at))

    def delete_session(self, cid: str) -> None:
        self._x("DELETE FROM sessions WHERE client_id = ?", (cid,))

    def sessions(self) -> list[tuple]:
        return self.db.execute("SELECT client_id, version, username, expiry, disconnected_at FROM sessions").fetchall()

    # ---- subscriptions ----
    def save_sub(self, cid: str, topic_filter: str, qos: int, no_local: bool, rap: bool, rh: int,
                 sub_id: int | None) -> None:
        self._x("INSERT OR REPLACE INTO subscriptions VALUES (?,?,?,?,?,?,?)",
                (cid, topic_filter, qos, int(no_local), int(rap), rh, sub_id))

    def delete_sub(self, cid: str, topic_filter: str) -> None:
        self._x("DELETE FROM subscriptions WHERE client_id = ? AND filter = ?", (cid, topic_filter))

    def subs(self) -> Iterator[tuple]:
        return iter(self.db.execute(
            "SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling, sub_id "
            "FROM subscriptions").fetchall())

    # ---- queued / in-flight messages ----
    def add_message(self, cid: str, seq: int, state: int, packet_id: int | None, topic: str, payload: bytes,
                    qos: int, retain: bool, props: dict | None, expires: float | None,
                    sub_ids: list[int] | None = None) -> None:
        self._x("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (cid, seq, state, packet_id, topic, payload, qos, int(retain), props_to_json(props), expires,
                 json.dumps(sub_ids) if sub_ids else None))

    def update_message(self, cid: str, seq: int, state: int, packet_id: int | None) -> None:
        self._x("UPDATE messages SET state = ?, packet_id = ? WHERE client_id = ? AND seq = ?",
                (state, packet_id, cid, seq))

    def delete_message(self, cid: str, seq: int) -> None:
        self._x("DELETE FROM messages WHERE client_id = ? AND seq = ?", (cid, seq))

    def delete_messages(self, cid: str) -> None:
        self._x("DELETE FROM messages WHERE client_id = ?", (cid,))

    def messages(self) -> Iterator[tuple]:
        return iter(self.db.execute(
            "SELECT client_id, seq, state, packet_id, topic, payload, qos, retain, props, expires, sub_ids "
            "FROM messages ORDER BY client_id, seq").fetchall())

    # ---- retained ----
    def set_retained(self, topic: str, payload: bytes, qos: int, props: dict | None, expires: float | None) -> None:
        self._x("INSERT OR REPLACE INTO retained VALUES (?,?,?,?,?)",
                (topic, payload, qos, props_to_json(props), expires))

    def delete_retained(self, topic: str) -> None:
        self._x("DELETE FROM retained WHERE topic = ?", (topic,))

    def retained(self) -> Iterator[tuple]:
        return iter(self.db.execute("SELECT topic, payload, qos, props, expires FROM retained").fetchall())
