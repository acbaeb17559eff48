"""Rosters and subscription states (RFC 6121 §2-§3): the `xmpp_roster` store, network-wide.

Every roster is in memory (loaded at start), so no stanza waits on a database; each change updates
memory and enqueues one write. Rosters are the same on every server (bridges/xmpp/federation.py
carries each change over the tree): an item is stamped `(time, server id)` when it changes and the
newer stamp wins, so servers that changed one item apart converge on the last writer. A removal is
kept as a tombstone (a row with `removed = 1`) so that it wins over an older copy at a netjoin, for
`accounts.tombstone_lifetime` (as account removals are; `expire_tombstones`, hourly): a server apart
for longer than that may bring the item back.

The roster version (XEP-0237) is a digest of the account's items (what a client is shown), so
it is the same on every server holding the same roster: a client may log in anywhere with the
version it has. Two servers with equal versions for an account have equal rosters.

Schema (store `xmpp_roster`, version 1; an older deployment's `<data_dir>/xmpp-roster.json` is
imported when the store is created):

    xmpp_roster(account, contact, name, subscription, ask, groups (JSON list), removed,
                stamp, stamp_server;  PK (account, contact))
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from relay.core.storage import Op, Schema, Storage

SUBSCRIPTIONS = ("none", "to", "from", "both")
ASKS = (None, "subscribe")

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT account, contact, name, subscription, ask, groups, removed, stamp, stamp_server FROM xmpp_roster"

SCHEMA = Schema("xmpp_roster", ("""
CREATE TABLE xmpp_roster (
    account TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL,
    ask TEXT,
    groups TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    stamp {real} NOT NULL,
    stamp_server TEXT NOT NULL,
    PRIMARY KEY (account, contact)
);
""",), tables=("xmpp_roster",), loads=(_LOAD,))

# The newer stamp wins in the database too: several servers may write one shared database.
_PUT = ("INSERT INTO xmpp_roster(account, contact, name, subscription, ask, groups, removed, stamp, stamp_server) "
        "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(account, contact) DO UPDATE SET name = excluded.name, "
        "subscription = excluded.subscription, ask = excluded.ask, groups = excluded.groups, "
        "removed = excluded.removed, stamp = excluded.stamp, stamp_server = excluded.stamp_server "
        "WHERE excluded.stamp > xmpp_roster.stamp OR (excluded.stamp = xmpp_roster.stamp "
        "AND excluded.stamp_server > xmpp_roster.stamp_server)")

LEGACY_FILE = "xmpp-roster.json"

Stamp = tuple  # (time: float, server id: str)


def with_from(sub: str, on: bool) -> str:
    """The subscription with the contact's view of us (`from`) switched on or off."""
    has_to = sub in ("to", "both")
    return ("both" if has_to else "from") if on else ("to" if has_to else "none")


def with_to(sub: str, on: bool) -> str:
    """The subscription with our view of the contact (`to`) switched on or off."""
    has_from = sub in ("from", "both")
    return ("both" if has_from else "to") if on else ("from" if has_from else "none")


def new_item() -> dict:
    return {"name": None, "subscription": "none", "ask": None, "groups": []}


def clean_item(d) -> dict | None:
    """An item from another server or a file, with only the keys and values an item has; None if bad."""
    if not isinstance(d, dict):
        return None
    name, sub, ask, groups = d.get("name"), d.get("subscription"), d.get("ask"), d.get("groups") or []
    if sub not in SUBSCRIPTIONS or ask not in ASKS or not (name is None or isinstance(name, str)) \
            or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return None
    return {"name": name, "subscription": sub, "ask": ask, "groups": list(groups)}


def clean_stamp(v) -> Stamp | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], (int, float)) \
            and not isinstance(v[0], bool) and isinstance(v[1], str):
        return (float(v[0]), v[1])
    return None


def _digest(contact: str, item: dict) -> int:
    data = json.dumps([contact, item["name"], item["subscription"], item["ask"], sorted(item["groups"])])
    return int.from_bytes(hashlib.sha1(data.encode()).digest()[:8], "big")


def _legacy_units(path: Path) -> Iterator[tuple[Op, ...]]:
    """The JSON file of an older deployment, as writes into the store (stamped with its mtime)."""
    try:
        data = json.loads(path.read_text())
        when = os.stat(path).st_mtime
    except (OSError, ValueError):
        return
    rosters = data.get("rosters") if isinstance(data, dict) else None
    for account, items in (rosters.items() if isinstance(rosters, dict) else ()):
        for contact, d in (items.items() if isinstance(items, dict) else ()):
            item = clean_item(d)
            if item is not None and isinstance(account, str) and isinstance(contact, str):
                yield (Op(_PUT, (account, contact, item["name"], item["subscription"], item["ask"],
                                 json.dumps(item["groups"]), 0, when, "")),)


class RosterStore:
    """account -> {contact bare JID: {"name", "subscription", "ask", "groups"}}, with stamps and tombstones.

    `changed(account, contact, item or None, stamp)` is called after every local change (the
    federation sends it on); changes from other servers come in through `apply`."""

    def __init__(self, storage: Storage | None, server_id: str = "001", legacy_file: Path | None = None):
        self.storage = storage
        self.server = server_id
        self.rosters: dict[str, dict[str, dict]] = {}
        self.stamps: dict[tuple[str, str], Stamp] = {}      # live items and tombstones
        self.removed: dict[str, dict[str, Stamp]] = {}      # account -> contact -> stamp of the removal
        self.digests: dict[str, int] = {}
        self.changed: Callable[[str, str, dict | None, Stamp], None] | None = None
        self.forgotten_before = 0.0      # removals stamped before this are forgotten (expire_tombstones)
        if storage is not None:
            legacy = (lambda: _legacy_units(legacy_file)) if legacy_file is not None and legacy_file.exists() else None
            storage.open_store(SCHEMA, legacy)
            self._load()

    def _load(self) -> None:
        for account, contact, name, sub, ask, groups, removed, t, sid in self.storage.load(_LOAD):
            try:
                g = json.loads(groups)
            except ValueError:
                g = []
            item = clean_item({"name": name, "subscription": sub, "ask": ask, "groups": g})
            if item is None:
                continue
            self._set(account, contact, None if removed else item, (float(t), sid))

    # ---------------------------------------------------------------- reading
    def items(self, account: str) -> dict[str, dict]:
        return self.rosters.get(account, {})

    def item(self, account: str, contact: str) -> dict | None:
        return self.rosters.get(account, {}).get(contact)

    def version(self, account: str) -> str:
        """XEP-0237: equal on every server that holds the same items for `account`."""
        return format(self.digests.get(account, 0), "x")

    def accounts(self) -> set[str]:
        return set(self.rosters) | set(self.removed)

    def entries(self, account: str) -> list[list]:
        """Every item and tombstone of `account`, as the federation carries them."""
        out = [[account, c, item, list(self.stamps[(account, c)])] for c, item in self.rosters.get(account, {}).items()]
        out += [[account, c, None, list(st)] for c, st in self.removed.get(account, {}).items()]
        return out

    # ---------------------------------------------------------------- local changes
    def put(self, account: str, contact: str, now: float, **changes) -> dict:
        """Create or update an item; returns it."""
        old = self.item(account, contact)
        item = dict(old) if old is not None else new_item()
        item.update(changes)
        item["groups"] = list(item.get("groups") or [])
        self._local(account, contact, item, now)
        return item

    def remove(self, account: str, contact: str, now: float) -> bool:
        if self.item(account, contact) is None:
            return False
        self._local(account, contact, None, now)
        return True

    def _local(self, account: str, contact: str, item: dict | None, now: float) -> None:
        # A local change always wins over what it replaces, whatever the clocks say.
        old = self.stamps.get((account, contact))
        t = now if old is None or now > old[0] else old[0] + 0.001
        stamp = (t, self.server)
        self._set(account, contact, item, stamp)
        self._write(account, contact, item, stamp)
        if self.changed is not None:
            self.changed(account, contact, item, stamp)

    # ---------------------------------------------------------------- from other servers
    def newer(self, account: str, contact: str, stamp: Stamp) -> bool:
        old = self.stamps.get((account, contact))
        return old is None or stamp > old

    def apply(self, account: str, contact: str, item: dict | None, stamp: Stamp) -> bool:
        """Another server's copy of an item (None: removed): taken if its stamp is newer. True if taken."""
        if not self.newer(account, contact, stamp):
            return False
        if item is None and stamp[0] < self.forgotten_before and (account, contact) not in self.stamps:
            return False        # a removal this server has forgotten already: nothing to remove
        self._set(account, contact, item, stamp)
        self._write(account, contact, item, stamp)
        return True

    def expire_tombstones(self, before: float) -> int:
        """Forget the removals stamped before `before` (memory and database); how many."""
        self.forgotten_before = max(self.forgotten_before, before)
        n = 0
        for account in list(self.removed):
            gone = self.removed[account]
            for contact in [c for c, st in gone.items() if st[0] < before]:
                del gone[contact]
                del self.stamps[(account, contact)]
                n += 1
            if not gone:
                del self.removed[account]
        if n and self.storage is not None:
            self.storage.queue.write("DELETE FROM xmpp_roster WHERE removed = 1 AND stamp < ?", (before,))
        return n

    # ---------------------------------------------------------------- memory and disk
    def _set(self, account: str, contact: str, item: dict | None, stamp: Stamp) -> None:
        items = self.rosters.setdefault(account, {})
        old = items.get(contact)
        if old is not None:
            self.digests[account] = self.digests.get(account, 0) ^ _digest(contact, old)
        if item is None:
            items.pop(contact, None)
            self.removed.setdefault(account, {})[contact] = stamp
        else:
            items[contact] = item
            self.digests[account] = self.digests.get(account, 0) ^ _digest(contact, item)
            gone = self.removed.get(account)
            if gone is not None:
                gone.pop(contact, None)
                if not gone:
                    del self.removed[account]
        if not items:
            del self.rosters[account]
        self.stamps[(account, contact)] = stamp

    def _write(self, account: str, contact: str, item: dict | None, stamp: Stamp) -> None:
        if self.storage is None:
            return
        i = item or new_item()
        self.storage.queue.put(Op(_PUT, (account, contact, i["name"], i["subscription"], i["ask"],
                                         json.dumps(i["groups"]), 0 if item is not None else 1, *stamp)))
