"""Accounts keep SCRAM secrets and the SIP HA1, never the password; SCRAM verifies with scramp's client."""

import hashlib
import sqlite3

import pytest
from scramp import ScramClient, ScramException, ScramMechanism

from relay.core.accounts import SCHEMA_VERSION, AccountError, SqliteStorage, check_password


@pytest.fixture
def store(tmp_path):
    s = SqliteStorage(tmp_path / "accounts.db")
    yield s
    s.close()


def scram_login(store, mech, user, password) -> bool:
    acct = store.get_account(user)

    def auth_fn(name):
        s = store.get_account(name).scram[mech]
        return s.salt, s.stored_key, s.server_key, s.iterations

    server = ScramMechanism(mech).make_server(auth_fn)
    client = ScramClient([mech], user, password)
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    try:
        server.set_client_final(client.get_client_final())
    except ScramException:
        return False
    client.set_server_final(server.get_server_final())
    return acct is not None


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_login_with_scramp_client(store, mech):
    store.create_account("alice", "wonderland", "relay.test", 4096, 1.0)
    assert scram_login(store, mech, "alice", "wonderland")
    assert not scram_login(store, mech, "alice", "wrong")


def test_sip_ha1_for_realm_and_no_clear_password(store, tmp_path):
    store.create_account("bob", "builder-pw", "relay.test", 4096, 1.0)
    acct = store.get_account("BOB")  # names are case-insensitive
    assert acct.name == "bob"
    assert acct.sip_ha1 == hashlib.md5(b"bob:relay.test:builder-pw").hexdigest()
    raw = (tmp_path / "accounts.db").read_bytes()
    assert b"builder-pw" not in raw


def test_plain_password_check_and_passwd(store):
    store.create_account("carol", "one", "r", 4096, 1.0)
    assert check_password(store.get_account("carol"), "one")
    assert store.set_password("carol", "two", "r", 4096)
    acct = store.get_account("carol")
    assert check_password(acct, "two") and not check_password(acct, "one")
    assert acct.sip_ha1 == hashlib.md5(b"carol:r:two").hexdigest()
    assert not store.set_password("nobody", "x", "r", 4096)


def test_duplicates_invalid_names_and_delete(store):
    store.create_account("dave", "pw", "r", 4096, 1.0)
    with pytest.raises(AccountError, match="already exists"):
        store.create_account("DAVE", "pw", "r", 4096, 1.0)
    with pytest.raises(AccountError, match="invalid account name"):
        store.create_account("bad name", "pw", "r", 4096, 1.0)
    with pytest.raises(AccountError, match="empty password"):
        store.create_account("erin", "", "r", 4096, 1.0)
    assert store.delete_account("dave")
    assert store.get_account("dave") is None
    assert not store.delete_account("dave")


def test_groups(store):
    store.create_account("fay", "pw", "r", 4096, 1.0)
    assert store.add_group("fay", "ops") and store.add_group("fay", "staff")
    assert store.groups("fay") == {"ops", "staff"}
    assert store.remove_group("fay", "ops")
    assert store.get_account("fay").groups == {"staff"}
    assert not store.add_group("nobody", "ops")


def test_schema_is_versioned_and_migrations_apply_from_any_version(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    from relay.core.accounts import MIGRATIONS
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO accounts VALUES ('old', 'r', 'x', 0)")
    db.commit()
    db.close()
    s = SqliteStorage(path)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.get_account("old") is not None  # data survives the migration
    s.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(AccountError, match="newer"):
        SqliteStorage(path)
