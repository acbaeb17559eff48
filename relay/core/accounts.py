"""Accounts: one account serves every protocol.

Registration stores what each protocol needs and never the clear password:
SCRAM-SHA-1 and SCRAM-SHA-256 secrets (IRC SASL, XMPP) made with scramp, and
the SIP digest HA1s (MD5 and SHA-256) for the server's realm.

Every account is in memory (`Accounts`, loaded at start), so SASL, MQTT CONNECT and the group
look-up of every ACL check never touch the database; a change updates memory at once and enqueues
its writes (one unit per change) on the storage write queue. Accounts are network-wide: the
`account_sync` module carries each change over the tree, secrets only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from scramp import ScramMechanism

from relay.core.storage import Op, Schema, Storage

SCRAM_MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.\-\[\]\\`^{|}]{1,32}")


class AccountError(Exception):
    pass


@dataclass(slots=True)
class ScramSecret:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


@dataclass(slots=True)
class Account:
    name: str
    scram: dict[str, ScramSecret]
    sip_ha1: str
    realm: str
    groups: frozenset[str]
    created: float
    updated: float = 0.0      # last change (registration, password, groups): the newer copy wins a merge
    sip_ha1_sha256: str = ""  # RFC 8760 SHA-256 digest HA1 (empty for accounts made before it was kept)


def valid_account_name(name: str) -> bool:
    return bool(_ACCOUNT_RE.fullmatch(name))


def sip_ha1(user: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def sip_ha1_sha256(user: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()


def scram_secret(password: str, mechanism: str, iterations: int) -> ScramSecret:
    salt, stored_key, server_key, it = ScramMechanism(mechanism).make_auth_info(password, iteration_count=iterations)
    return ScramSecret(salt, stored_key, server_key, it)


def check_password(account: Account, password: str) -> bool:
    """Verify a clear password (SASL PLAIN, MQTT) against the stored SCRAM-SHA-256 secret."""
    s = account.scram["SCRAM-SHA-256"]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), s.salt, s.iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), s.stored_key)


SCHEMA = Schema("accounts", (
    """
    CREATE TABLE accounts (
        key TEXT PRIMARY KEY,                 -- the name case-folded: names are case-insensitive
        name TEXT NOT NULL,
        realm TEXT NOT NULL,
        sip_ha1 TEXT NOT NULL,
        created {real} NOT NULL,
        updated {real} NOT NULL
    );
    CREATE TABLE account_secrets (
        key TEXT NOT NULL REFERENCES accounts(key) ON DELETE CASCADE,
        mechanism TEXT NOT NULL,
        salt {blob} NOT NULL, stored_key {blob} NOT NULL, server_key {blob} NOT NULL, iterations {int} NOT NULL,
        PRIMARY KEY (key, mechanism)
    );
    CREATE TABLE account_groups (
        key TEXT NOT NULL REFERENCES accounts(key) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (key, name)
    );
    """,
    """
    ALTER TABLE accounts ADD COLUMN sip_ha1_sha256 TEXT NOT NULL DEFAULT '';
    """,
    # Removals carried over the tree (account_sync), kept across restarts until they expire
    # (accounts.tombstone_lifetime): a server that missed one cannot bring the account back.
    """
    CREATE TABLE account_tombstones (
        key TEXT PRIMARY KEY,                 -- the removed account's name, case-folded
        removed {real} NOT NULL               -- when: a copy updated before this stays removed
    );
    """,
), tables=("accounts", "account_secrets", "account_groups", "account_tombstones"))

_TOMBSTONE = ("INSERT INTO account_tombstones(key, removed) VALUES (?, ?) "
              "ON CONFLICT(key) DO UPDATE SET removed = excluded.removed")

LEGACY_FILE = "accounts.db"   # before the storage layer: its own SQLite file in the data directory


def account_key(name: str) -> str:
    return name.lower()


def make_account(name: str, password: str, realm: str, iterations: int, now: float,
                 groups: frozenset[str] = frozenset(), created: float | None = None) -> Account:
    if not password:
        raise AccountError("empty password")
    scram = {m: scram_secret(password, m, iterations) for m in SCRAM_MECHANISMS}
    return Account(name, scram, sip_ha1(name, realm, password), realm, groups,
                   now if created is None else created, now, sip_ha1_sha256(name, realm, password))


def _put_ops(a: Account) -> tuple[Op, ...]:
    """The writes that make the stored account equal to `a` (one unit: all or nothing)."""
    k = account_key(a.name)
    ops = [Op("INSERT INTO accounts(key, name, realm, sip_ha1, created, updated, sip_ha1_sha256) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) "
              "ON CONFLICT(key) DO UPDATE SET name = excluded.name, realm = excluded.realm, "
              "sip_ha1 = excluded.sip_ha1, created = excluded.created, updated = excluded.updated, "
              "sip_ha1_sha256 = excluded.sip_ha1_sha256",
              (k, a.name, a.realm, a.sip_ha1, a.created, a.updated, a.sip_ha1_sha256)),
           Op("DELETE FROM account_secrets WHERE key = ?", (k,)),
           Op("DELETE FROM account_groups WHERE key = ?", (k,))]
    for mech, s in sorted(a.scram.items()):
        ops.append(Op("INSERT INTO account_secrets(key, mechanism, salt, stored_key, server_key, iterations) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (k, mech, s.salt, s.stored_key, s.server_key, s.iterations)))
    for g in sorted(a.groups):
        ops.append(Op("INSERT INTO account_groups(key, name) VALUES (?, ?)", (k, g)))
    return tuple(ops)


def _legacy_units(path: Path) -> Iterator[tuple[Op, ...]]:
    """The accounts of an older deployment's accounts.db, as writes into the new schema."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, realm, sip_ha1, created FROM accounts").fetchall()
        for name, realm, ha1, created in rows:
            scram = {m: ScramSecret(bytes(a), bytes(b), bytes(c), it) for m, a, b, c, it in db.execute(
                "SELECT mechanism, salt, stored_key, server_key, iterations FROM scram WHERE account = ?", (name,))}
            try:
                groups = frozenset(r[0] for r in db.execute("SELECT name FROM groups WHERE account = ?", (name,)))
            except sqlite3.OperationalError:
                groups = frozenset()  # schema version 1 had no groups
            yield _put_ops(Account(name, scram, ha1, realm, groups, created, created))
    finally:
        db.close()


class Accounts:
    """Every account in memory; changes write through the storage queue (`mark()` to wait for them)."""

    def __init__(self, storage: Storage, realm: str, iterations: int):
        self.storage = storage
        self.realm = realm
        self.iterations = iterations
        self.by_key: dict[str, Account] = {}
        self.tombstones: dict[str, float] = {}    # account key -> when it was removed (network-wide)

    def load(self, legacy_dir: Path | None = None) -> None:
        st = self.storage
        st.open_store(SCHEMA, (lambda: _legacy_units(legacy_dir / LEGACY_FILE)) if legacy_dir else None)
        by_key: dict[str, Account] = {}
        for key, name, realm, ha1, created, updated, ha1_256 in st.query(
                "SELECT key, name, realm, sip_ha1, created, updated, sip_ha1_sha256 FROM accounts"):
            by_key[key] = Account(name, {}, ha1, realm, frozenset(), created, updated, ha1_256)
        for key, mech, salt, sk, svk, it in st.query(
                "SELECT key, mechanism, salt, stored_key, server_key, iterations FROM account_secrets"):
            if key in by_key:
                by_key[key].scram[mech] = ScramSecret(bytes(salt), bytes(sk), bytes(svk), it)
        groups: dict[str, set[str]] = {}
        for key, g in st.query("SELECT key, name FROM account_groups"):
            groups.setdefault(key, set()).add(g)
        for key, gs in groups.items():
            if key in by_key:
                by_key[key].groups = frozenset(gs)
        self.by_key = by_key
        self.tombstones = {k: float(t) for k, t in st.query("SELECT key, removed FROM account_tombstones")}

    # ---- reads (memory only)
    def get(self, name: str) -> Account | None:
        return self.by_key.get(account_key(name))

    def names(self) -> list[str]:
        return sorted((a.name for a in self.by_key.values()), key=str.lower)

    def groups(self, name: str) -> frozenset[str]:
        a = self.by_key.get(account_key(name))
        return a.groups if a is not None else frozenset()

    def __len__(self) -> int:
        return len(self.by_key)

    # ---- changes: memory now, the database through the queue
    def put(self, a: Account) -> None:
        """Store `a` as it is (a registration, or a copy that came over a link); its tombstone goes."""
        k = account_key(a.name)
        self.by_key[k] = a
        ops = _put_ops(a)
        if self.tombstones.pop(k, None) is not None:
            ops += (Op("DELETE FROM account_tombstones WHERE key = ?", (k,)),)
        self.storage.queue.put(*ops)

    def create(self, name: str, password: str, now: float) -> Account:
        if not valid_account_name(name):
            raise AccountError(f"invalid account name {name!r}: 1-32 letters, digits or _.-[]\\`^{{|}}")
        if self.get(name) is not None:
            raise AccountError(f"account {name} already exists")
        a = make_account(name, password, self.realm, self.iterations, now)
        self.put(a)
        return a

    def delete(self, name: str, removed: float | None = None) -> bool:
        """Remove an account; with `removed` (when), its tombstone is stored with it, in one unit."""
        k = account_key(name)
        a = self.by_key.pop(k, None)
        if a is None:
            return False
        ops = (Op("DELETE FROM accounts WHERE key = ?", (k,)),)
        if removed is not None:
            self.tombstones[k] = removed
            ops += (Op(_TOMBSTONE, (k, removed)),)
        self.storage.queue.put(*ops)
        return True

    def bury(self, name: str, removed: float) -> None:
        """Remember a removal heard of for an account this server does not have."""
        k = account_key(name)
        self.tombstones[k] = removed
        self.storage.queue.write(_TOMBSTONE, (k, removed))

    def expire_tombstones(self, before: float) -> int:
        """Forget the removals made before `before`; how many."""
        old = [k for k, t in self.tombstones.items() if t < before]
        for k in old:
            del self.tombstones[k]
        if old:
            self.storage.queue.write("DELETE FROM account_tombstones WHERE removed < ?", (before,))
        return len(old)

    def set_password(self, name: str, password: str, now: float) -> Account | None:
        a = self.get(name)
        if not password:
            raise AccountError("empty password")
        if a is None:
            return None
        b = make_account(a.name, password, self.realm, self.iterations, now, a.groups, a.created)
        self.put(b)
        return b

    def add_group(self, name: str, group: str, now: float) -> Account | None:
        a = self.get(name)
        if a is None:
            return None
        b = replace(a, groups=a.groups | {group}, updated=now)
        self.put(b)
        return b

    def remove_group(self, name: str, group: str, now: float) -> Account | None:
        a = self.get(name)
        if a is None or group not in a.groups:
            return None
        b = replace(a, groups=a.groups - {group}, updated=now)
        self.put(b)
        return b
