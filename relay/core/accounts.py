"""Accounts: one account serves every protocol.

Registration stores what each protocol needs and never the clear password:
SCRAM-SHA-1 and SCRAM-SHA-256 secrets (IRC SASL, XMPP) made with scramp, and
the SIP digest HA1s (MD5 and SHA-256) for the server's realm. Storage is behind `Storage`;
SQLite is the embedded default, its schema versioned with migrations.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from scramp import ScramMechanism

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
    sip_ha1_sha256: str = ""   # RFC 8760 SHA-256 digest HA1 (empty for accounts made before it)


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


class Storage:
    """The storage API the core uses; SQLite here, other backends implement the same."""

    def create_account(self, name: str, password: str, realm: str, iterations: int, now: float) -> Account: ...
    def get_account(self, name: str) -> Account | None: ...
    def delete_account(self, name: str) -> bool: ...
    def set_password(self, name: str, password: str, realm: str, iterations: int) -> bool: ...
    def list_accounts(self) -> list[str]: ...
    def add_group(self, name: str, group: str) -> bool: ...
    def remove_group(self, name: str, group: str) -> bool: ...
    def groups(self, name: str) -> frozenset[str]: ...
    def close(self) -> None: ...


# Each migration takes the schema from version i to i+1. Append only.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE accounts (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        realm TEXT NOT NULL,
        sip_ha1 TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE scram (
        account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        mechanism TEXT NOT NULL,
        salt BLOB NOT NULL, stored_key BLOB NOT NULL, server_key BLOB NOT NULL, iterations INTEGER NOT NULL,
        PRIMARY KEY (account, mechanism)
    );
    """,
    """
    CREATE TABLE groups (
        account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE COLLATE NOCASE,
        name TEXT NOT NULL,
        PRIMARY KEY (account, name)
    );
    """,
    """
    ALTER TABLE accounts ADD COLUMN sip_ha1_sha256 TEXT NOT NULL DEFAULT '';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStorage(Storage):
    def __init__(self, path: str | Path):
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.migrate()

    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        v = self.schema_version()
        if v > SCHEMA_VERSION:
            raise AccountError(f"{self.path}: schema version {v} is newer than this server's {SCHEMA_VERSION}")
        for i in range(v, SCHEMA_VERSION):
            with self.db:
                self.db.execute("BEGIN")
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {i + 1}")

    def _write_secrets(self, name: str, password: str, realm: str, iterations: int) -> None:
        for mech in SCRAM_MECHANISMS:
            s = scram_secret(password, mech, iterations)
            self.db.execute(
                "INSERT OR REPLACE INTO scram VALUES (?, ?, ?, ?, ?, ?)",
                (name, mech, s.salt, s.stored_key, s.server_key, s.iterations))
        self.db.execute("UPDATE accounts SET sip_ha1 = ?, sip_ha1_sha256 = ?, realm = ? WHERE name = ?",
                        (sip_ha1(name, realm, password), sip_ha1_sha256(name, realm, password), realm, name))

    def create_account(self, name, password, realm, iterations, now):
        if not valid_account_name(name):
            raise AccountError(f"invalid account name {name!r}: 1-32 letters, digits or _.-[]\\`^{{|}}")
        if not password:
            raise AccountError("empty password")
        with self.db:
            self.db.execute("BEGIN")
            try:
                self.db.execute("INSERT INTO accounts (name, realm, sip_ha1, created) VALUES (?, ?, '', ?)",
                                (name, realm, now))
            except sqlite3.IntegrityError:
                raise AccountError(f"account {name} already exists") from None
            self._write_secrets(name, password, realm, iterations)
        return self.get_account(name)

    def get_account(self, name):
        row = self.db.execute("SELECT name, realm, sip_ha1, created, sip_ha1_sha256 FROM accounts WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            return None
        scram = {m: ScramSecret(bytes(s), bytes(sk), bytes(svk), it) for m, s, sk, svk, it in self.db.execute(
            "SELECT mechanism, salt, stored_key, server_key, iterations FROM scram WHERE account = ?", (row[0],))}
        return Account(row[0], scram, row[2], row[1], self.groups(row[0]), row[3], row[4])

    def delete_account(self, name):
        with self.db:
            return self.db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount > 0

    def set_password(self, name, password, realm, iterations):
        if not password:
            raise AccountError("empty password")
        row = self.db.execute("SELECT name FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            return False
        with self.db:
            self.db.execute("BEGIN")
            self._write_secrets(row[0], password, realm, iterations)
        return True

    def list_accounts(self):
        return [r[0] for r in self.db.execute("SELECT name FROM accounts ORDER BY name")]

    def add_group(self, name, group):
        row = self.db.execute("SELECT name FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            return False
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO groups VALUES (?, ?)", (row[0], group))
        return True

    def remove_group(self, name, group):
        with self.db:
            return self.db.execute("DELETE FROM groups WHERE account = ? AND name = ?", (name, group)).rowcount > 0

    def groups(self, name):
        return frozenset(r[0] for r in self.db.execute("SELECT name FROM groups WHERE account = ?", (name,)))

    def close(self):
        self.db.close()
