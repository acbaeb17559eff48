"""The account store keeps the SHA-256 digest HA1 beside the MD5 one (RFC 8760), set and reset with the
password, and an older database gains the column by migration."""

import hashlib
import sqlite3

from relay.core.accounts import SqliteStorage


def test_sha256_ha1_is_stored_at_registration_and_password_change(tmp_path):
    store = SqliteStorage(tmp_path / "accounts.db")
    store.create_account("alice", "pw1", "relay.test", 4096, 1.0)
    acct = store.get_account("alice")
    assert acct.sip_ha1_sha256 == hashlib.sha256(b"alice:relay.test:pw1").hexdigest()
    assert acct.sip_ha1 == hashlib.md5(b"alice:relay.test:pw1").hexdigest()
    store.set_password("alice", "pw2", "relay.test", 4096)
    assert store.get_account("alice").sip_ha1_sha256 == hashlib.sha256(b"alice:relay.test:pw2").hexdigest()
    store.close()


def test_an_older_database_gains_the_column_empty(tmp_path):
    path = tmp_path / "accounts.db"
    store = SqliteStorage(path)
    store.create_account("bob", "pw", "r", 4096, 1.0)
    store.close()
    db = sqlite3.connect(path)  # back to the schema before the SHA-256 HA1
    db.execute("ALTER TABLE accounts DROP COLUMN sip_ha1_sha256")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = SqliteStorage(path)
    assert store.get_account("bob").sip_ha1_sha256 == ""  # set again at the next password change
    store.close()
