"""What rooms keep that channels cannot hold, in the server's storage: the `muc` store.

Affiliations and persistent rooms' configuration are loaded into memory at start and written as
`Op`s when they change; the archive is only written (one Op per message, committed in the writer's
batches) and read back with `storage.read` for MAM and for history older than memory holds.
Rows are per server (`server`: its id), so servers may share one PostgreSQL database.

    muc_affiliations(server, room, account, affiliation, chts, stamp, origin; PK (server, room, account))
        room is the folded channel name; affiliation owner, admin or member (outcasts are
        `+b $a:account` on the channel itself), or `none`: a removal kept as a tombstone; chts the
        channel's timestamp when it was granted: a grant made in a channel newer than the one that
        won a netjoin does not count (no one gains an affiliation by riding a split); stamp and
        origin (time, server id) of the change: across the tree the newest change wins, so a
        removal made during a split wins over the older grant that comes back with the netjoin
    muc_rooms(server, room, config; PK (server, room))
        a configured room's configuration (JSON: persistent, stamp [time, server id], name, title,
        description, history, modes, key, limit, topic), the same on every server: the newest stamp
        wins (MUC_ROOM across the tree); a room made temporary keeps its stamp (a tombstone), so an
        older "persistent" from behind a split does not bring it back
    muc_archive(server, room, id, time, nick, jid, body, retracted; PK (server, room, id))
        every room message this server saw; id is the network msgid (the stanza-id)
    muc_secret(server, secret; PK (server))
        the XEP-0421 occupant-id key
"""

from __future__ import annotations

import json
import secrets

from relay.core.storage import Op, Schema, Storage

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD_AFFILIATIONS = "SELECT room, account, affiliation, chts, stamp, origin FROM muc_affiliations WHERE server = ?"
_LOAD_ROOMS = "SELECT room, config FROM muc_rooms WHERE server = ?"
_LOAD_SECRET = "SELECT secret FROM muc_secret WHERE server = ?"

SCHEMA = Schema("muc", ("""
CREATE TABLE muc_affiliations (
    server TEXT NOT NULL,
    room TEXT NOT NULL,
    account TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    chts {int} NOT NULL DEFAULT 0,
    PRIMARY KEY (server, room, account)
);
CREATE TABLE muc_rooms (
    server TEXT NOT NULL,
    room TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (server, room)
);
CREATE TABLE muc_archive (
    server TEXT NOT NULL,
    room TEXT NOT NULL,
    id TEXT NOT NULL,
    time {real} NOT NULL,
    nick TEXT NOT NULL,
    jid TEXT NOT NULL,
    body TEXT NOT NULL,
    retracted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (server, room, id)
);
CREATE INDEX muc_archive_time ON muc_archive (server, room, time);
CREATE TABLE muc_secret (
    server TEXT NOT NULL,
    secret TEXT NOT NULL,
    PRIMARY KEY (server)
);
""", """
ALTER TABLE muc_affiliations ADD COLUMN stamp {real} NOT NULL DEFAULT 0;
ALTER TABLE muc_affiliations ADD COLUMN origin TEXT NOT NULL DEFAULT ''
"""), tables=("muc_affiliations", "muc_rooms", "muc_archive", "muc_secret"),
   loads=(_LOAD_AFFILIATIONS, _LOAD_ROOMS, _LOAD_SECRET))

_AFFIL = ("INSERT INTO muc_affiliations(server, room, account, affiliation, chts, stamp, origin) "
          "VALUES (?,?,?,?,?,?,?) ON CONFLICT(server, room, account) DO UPDATE SET "
          "affiliation = excluded.affiliation, chts = excluded.chts, stamp = excluded.stamp, origin = excluded.origin")
_ROOM = ("INSERT INTO muc_rooms(server, room, config) VALUES (?,?,?) "
         "ON CONFLICT(server, room) DO UPDATE SET config = excluded.config")
_RECENT = ("SELECT time, nick, jid, body, id FROM muc_archive WHERE server = ? AND room = ? AND retracted = 0 "
           "ORDER BY time DESC LIMIT ?")
_ARCHIVE = ("INSERT INTO muc_archive(server, room, id, time, nick, jid, body) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(server, room, id) DO NOTHING")


def stamp_of(config: dict | None) -> tuple:
    """(time, server id) of a configuration; rows from before stamps are the oldest."""
    st = config.get("stamp") if isinstance(config, dict) else None
    if isinstance(st, list) and len(st) == 2 and isinstance(st[0], (int, float)) and isinstance(st[1], str):
        return (float(st[0]), st[1])
    return (-1.0, "")


class MucStore:
    def __init__(self, storage: Storage):
        self.storage = storage
        self.server = storage.server_id
        storage.open_store(SCHEMA)
        self.affiliations: dict[str, dict[str, tuple[str, int]]] = {}   # room -> account -> (affiliation, chts)
        # room -> account -> (time, server id) of the last change, removals (tombstones) included
        self.stamps: dict[str, dict[str, tuple[float, str]]] = {}
        for room, account, aff, chts, stamp, origin in storage.load(_LOAD_AFFILIATIONS):
            if aff != "none":
                self.affiliations.setdefault(room, {})[account] = (aff, int(chts))
            self.stamps.setdefault(room, {})[account] = (float(stamp), origin)
        self.rooms: dict[str, dict] = {}                      # persistent rooms' configuration
        for room, config in storage.load(_LOAD_ROOMS):
            try:
                self.rooms[room] = json.loads(config)
            except ValueError:
                continue
        rows = storage.load(_LOAD_SECRET)
        if rows:
            self.secret = rows[0][0]
        else:
            self.secret = secrets.token_hex(32)
            self._w("INSERT INTO muc_secret(server, secret) VALUES (?,?) ON CONFLICT(server) DO NOTHING",
                    (self.secret,))

    def _w(self, sql: str, args: tuple) -> None:
        self.storage.queue.put(Op(sql, (self.server, *args)))

    # ---------------------------------------------------------------- affiliations
    def affiliation(self, room: str, account: str, ts: float | None = None) -> str | None:
        """The account's affiliation; with `ts` (the channel's), only a grant made in that channel or before."""
        a = self.affiliations.get(room)
        got = a.get(account) if a else None
        if got is None or (ts is not None and got[1] > ts):
            return None
        return got[0]

    def with_affiliation(self, room: str, affiliation: str, ts: float | None = None) -> list[str]:
        return sorted(acct for acct, (a, chts) in self.affiliations.get(room, {}).items()
                      if a == affiliation and (ts is None or chts <= ts))

    def stamp(self, room: str, account: str) -> tuple[float, str]:
        return self.stamps.get(room, {}).get(account, (-1.0, ""))

    def set_affiliation(self, room: str, account: str, affiliation: str | None, chts: float = 0,
                        stamp: tuple[float, str] = (0.0, "")) -> bool:
        """This server's change, stamped (time, server id); True if it changed. A removal stays as
        a tombstone (its stamp) so that an older grant from another server does not bring it back."""
        if affiliation in (None, "none", "outcast"):
            if self.affiliations.get(room, {}).pop(account, None) is None:
                return False
            self.stamps.setdefault(room, {})[account] = stamp
            self._w(_AFFIL, (room, account, "none", 0, stamp[0], stamp[1]))
            return True
        value = (affiliation, int(chts))
        if self.affiliations.get(room, {}).get(account) == value:
            return False
        self.affiliations.setdefault(room, {})[account] = value
        self.stamps.setdefault(room, {})[account] = stamp
        self._w(_AFFIL, (room, account, affiliation, int(chts), stamp[0], stamp[1]))
        return True

    def merge_affiliation(self, room: str, account: str, affiliation: str, chts: float,
                          stamp: tuple[float, str]) -> bool:
        """Another server's change: kept if newer than what this server holds (True)."""
        if stamp <= self.stamp(room, account):
            return False
        if affiliation == "none" and account not in self.affiliations.get(room, {}):
            self.stamps.setdefault(room, {})[account] = stamp       # a tombstone for a grant not seen yet
            self._w(_AFFIL, (room, account, "none", 0, stamp[0], stamp[1]))
            return True
        return self.set_affiliation(room, account, affiliation, chts, stamp)

    def changes(self, room: str) -> list:
        """Every grant and tombstone of `room` as MUC_AFFIL items [account, affiliation, chts, time, server]."""
        held = self.affiliations.get(room, {})
        return [[acct, *held.get(acct, ("none", 0)), st[0], st[1]] for acct, st in self.stamps.get(room, {}).items()]

    def forget_room(self, room: str) -> None:
        """A temporary room ended: its affiliations go (a persistent room keeps them)."""
        had = self.affiliations.pop(room, None) is not None
        if self.stamps.pop(room, None) is not None or had:
            self._w("DELETE FROM muc_affiliations WHERE server = ? AND room = ?", (room,))

    # ---------------------------------------------------------------- room configuration
    def persistent(self, room: str) -> bool:
        c = self.rooms.get(room)
        return c is not None and c.get("persistent", True) is True     # rows before stamps were persistent

    def save_room(self, room: str, config: dict) -> None:
        self.rooms[room] = config
        self._w(_ROOM, (room, json.dumps(config, separators=(",", ":"), sort_keys=True)))

    def merge_room(self, room: str, config: dict) -> bool:
        """Another server's configuration of `room`: kept if its stamp is newer than ours (True)."""
        if stamp_of(config) <= stamp_of(self.rooms.get(room)):
            return False
        self.save_room(room, config)
        return True

    def drop_room(self, room: str) -> None:
        if self.rooms.pop(room, None) is not None:
            self._w("DELETE FROM muc_rooms WHERE server = ? AND room = ?", (room,))

    # ---------------------------------------------------------------- archive
    def recent(self, room: str, n: int) -> list[tuple]:
        """At start only: a persistent room's last `n` messages (time, nick, jid, body, id), oldest first."""
        return self.storage.query(_RECENT, (self.server, room, n))[::-1]

    def recent_later(self, room: str, n: int, done) -> None:
        """The same while serving: `done(rows)` later (None if the read failed), never waiting."""
        self.storage.read(_RECENT, (self.server, room, n), lambda rows: done(None if rows is None else rows[::-1]))

    def archive(self, room: str, msgid: str, t: float, nick: str, jid: str, body: str) -> None:
        self._w(_ARCHIVE, (room, msgid, t, nick, jid, body))

    def retract(self, room: str, msgid: str) -> None:
        """The message `msgid` (a network msgid `<server>-<n>`, or a whole stanza-id) is retracted."""
        if msgid.count("-") != 1:                        # a stanza-id (or nothing this network made)
            self._w("UPDATE muc_archive SET retracted = 1, body = '' WHERE server = ? AND room = ? AND id = ?",
                    (room, msgid))
            return
        self._w("UPDATE muc_archive SET retracted = 1, body = '' WHERE server = ? AND room = ? "
                "AND (id = ? OR substr(id, 1, ?) = ?)", (room, msgid, len(msgid) + 1, msgid + "-"))

    def query(self, room: str, start: float | None, end: float | None, after: str | None,
              before: str | None, limit: int, done) -> None:
        """Archived messages of `room` in time order (`before`: the last `limit` before that id),
        `done(rows)` later: rows of (id, time, nick, jid, body, retracted), or None if the read failed."""
        sql = "SELECT id, time, nick, jid, body, retracted FROM muc_archive WHERE server = ? AND room = ?"
        args: list = [self.server, room]
        if start is not None:
            sql += " AND time >= ?"
            args.append(start)
        if end is not None:
            sql += " AND time <= ?"
            args.append(end)
        if after is not None:
            sql += " AND time > (SELECT time FROM muc_archive WHERE server = ? AND room = ? AND id = ?)"
            args += [self.server, room, after]
        if before is not None:
            sql += " AND time < (SELECT time FROM muc_archive WHERE server = ? AND room = ? AND id = ?)"
            args += [self.server, room, before]
        desc = before is not None
        sql += f" ORDER BY time {'DESC' if desc else 'ASC'}, id LIMIT ?"
        args.append(limit + 1)

        def got(rows):
            if rows is not None and desc:
                rows = rows[::-1]
            done(rows)
        self.storage.read(sql, tuple(args), got)
