"""Accounts keep SCRAM secrets and the SIP HA1, never the password; they live in memory and reach the
database through the write queue; the `accounts` store is versioned; an old accounts.db is imported."""

import hashlib
import sqlite3

import pytest
from storagesupport import flush
from scramp import ScramClient, ScramException, ScramMechanism

from relay.core.accounts import LEGACY_FILE, SCHEMA, AccountError, Accounts, check_password
from relay.core.storage import Schema, Storage, StorageError, WriteQueue


@pytest.fixture
def accounts(storage):
    a = Accounts(storage, "relay.test", 4096)
    a.load()
    return a


def reloaded(storage) -> Accounts:
    flush(storage)
    a = Accounts(Storage(storage.db, WriteQueue(), "001"), "relay.test", 4096)
    a.load()
    return a


def scram_login(accounts, mech, user, password) -> bool:
    def auth_fn(name):
        s = accounts.get(name).scram[mech]
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
    return True


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_login_with_scramp_client_after_a_reload(accounts, storage, mech):
    accounts.create("alice", "wonderland", 1.0)
    again = reloaded(storage)
    assert scram_login(again, mech, "alice", "wonderland")
    assert not scram_login(again, mech, "alice", "wrong")


def test_sip_ha1_for_realm_and_no_clear_password(accounts, storage, tmp_path):
    accounts.create("bob", "builder-pw", 1.0)
    acct = reloaded(storage).get("BOB")  # names are case-insensitive
    assert acct.name == "bob"
    assert acct.sip_ha1 == hashlib.md5(b"bob:relay.test:builder-pw").hexdigest()
    from relay.storage.dump import write_dump
    import io
    out = io.StringIO()
    write_dump(storage.db, [SCHEMA], out)
    assert "bob" in out.getvalue() and "builder-pw" not in out.getvalue()
    if storage.db.backend == "sqlite":
        assert b"builder-pw" not in (tmp_path / "relay.db").read_bytes()


def test_plain_password_check_and_passwd(accounts, storage):
    accounts.create("carol", "one", 1.0)
    assert check_password(accounts.get("carol"), "one")
    assert accounts.set_password("carol", "two", 2.0) is not None
    for a in (accounts, reloaded(storage)):
        acct = a.get("carol")
        assert check_password(acct, "two") and not check_password(acct, "one")
        assert acct.sip_ha1 == hashlib.md5(b"carol:relay.test:two").hexdigest()
        assert acct.updated == 2.0 and acct.created == 1.0
    assert accounts.set_password("nobody", "x", 3.0) is None


def test_duplicates_invalid_names_and_delete(accounts, storage):
    accounts.create("dave", "pw", 1.0)
    with pytest.raises(AccountError, match="already exists"):
        accounts.create("DAVE", "pw", 1.0)
    with pytest.raises(AccountError, match="invalid account name"):
        accounts.create("bad name", "pw", 1.0)
    with pytest.raises(AccountError, match="empty password"):
        accounts.create("erin", "", 1.0)
    assert accounts.delete("dave")
    assert accounts.get("dave") is None
    assert not accounts.delete("dave")
    assert reloaded(storage).get("dave") is None


def test_groups_in_memory_and_stored(accounts, storage):
    accounts.create("fay", "pw", 1.0)
    assert accounts.add_group("fay", "ops", 2.0) and accounts.add_group("fay", "staff", 3.0)
    assert accounts.groups("FAY") == {"ops", "staff"}
    assert accounts.remove_group("fay", "ops", 4.0)
    assert accounts.remove_group("fay", "ops", 5.0) is None
    assert accounts.get("fay").groups == {"staff"}
    assert accounts.add_group("nobody", "ops", 6.0) is None
    again = reloaded(storage)
    assert again.groups("fay") == {"staff"} and again.names() == ["fay"]


def test_reads_never_touch_the_database(accounts, storage):
    accounts.create("gil", "pw", 1.0)
    flush(storage)
    storage.db.close()          # a database gone away: logins and group look-ups still answer
    assert check_password(accounts.get("gil"), "pw") and accounts.groups("gil") == frozenset()


def test_a_change_is_one_unit_committed_whole(accounts, storage):
    accounts.create("hal", "pw", 1.0)
    accounts.add_group("hal", "g", 2.0)
    assert len(storage.queue) == 2            # the account with its secrets; then the group change
    assert all(len(u.ops) >= 3 for u in storage.queue.units)


def test_sha256_sip_ha1_is_kept_beside_md5_and_reset_with_the_password(accounts, storage):
    """RFC 8760: SIP digest with SHA-256 needs its own HA1, made at registration (never from a stored hash)."""
    accounts.create("alice", "pw1", 1.0)
    acct = reloaded(storage).get("alice")
    assert acct.sip_ha1 == hashlib.md5(b"alice:relay.test:pw1").hexdigest()
    assert acct.sip_ha1_sha256 == hashlib.sha256(b"alice:relay.test:pw1").hexdigest()
    accounts.set_password("alice", "pw2", 2.0)
    assert reloaded(storage).get("alice").sip_ha1_sha256 == hashlib.sha256(b"alice:relay.test:pw2").hexdigest()


def test_an_accounts_store_of_schema_1_gains_an_empty_sha256_ha1(db):
    from relay.core.storage import Op
    v1 = Schema("accounts", SCHEMA.migrations[:1], SCHEMA.tables)
    db.migrate(v1)
    db.execute([Op("INSERT INTO accounts(key, name, realm, sip_ha1, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                   ("bob", "bob", "r", "md5", 1.0, 1.0))])
    db.migrate(SCHEMA)
    assert db.query("SELECT name, sip_ha1, sip_ha1_sha256 FROM accounts") == [("bob", "md5", "")]


def test_tombstones_are_stored_with_the_deletion_and_go_with_a_new_registration(accounts, storage):
    accounts.create("tom", "pw", 1.0)
    accounts.create("ann", "pw", 1.0)
    flush(storage)
    accounts.delete("tom", removed=5.0)
    assert len(storage.queue) == 1              # the deletion and its tombstone: one unit
    accounts.bury("zed", 7.0)                   # a removal heard of, for an account never seen here
    again = reloaded(storage)
    assert again.tombstones == {"tom": 5.0, "zed": 7.0} and again.get("tom") is None
    again.create("Tom", "pw2", 9.0)             # registered again: no longer removed
    again.delete("ann")                         # no time given: no tombstone
    assert reloaded(again.storage).tombstones == {"zed": 7.0}


def test_expired_tombstones_are_forgotten_in_memory_and_stored(accounts, storage):
    for name, t in (("a1", 10.0), ("a2", 20.0), ("a3", 30.0)):
        accounts.bury(name, t)
    assert accounts.expire_tombstones(25.0) == 2 and accounts.tombstones == {"a3": 30.0}
    assert accounts.expire_tombstones(25.0) == 0
    assert reloaded(storage).tombstones == {"a3": 30.0}


def test_an_accounts_store_of_schema_2_gains_an_empty_tombstone_table(db):
    from relay.core.storage import Op
    db.migrate(Schema("accounts", SCHEMA.migrations[:2], SCHEMA.tables[:3]))
    db.execute([Op("INSERT INTO accounts(key, name, realm, sip_ha1, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                   ("bob", "bob", "r", "md5", 1.0, 1.0))])
    assert db.migrate(SCHEMA) == 2
    a = Accounts(Storage(db, WriteQueue(), "001"), "r", 4096)
    a.load()
    assert a.get("bob") is not None and a.tombstones == {}


def test_schema_is_versioned_and_migrations_apply_from_any_version(db):
    v2 = Schema("demo", ("CREATE TABLE demo_a (k TEXT PRIMARY KEY, v {blob})",
                         "CREATE TABLE demo_b (k TEXT PRIMARY KEY, n {int}); ALTER TABLE demo_a ADD COLUMN r {real}"),
                ("demo_a", "demo_b"))
    v1 = Schema("demo", v2.migrations[:1], ("demo_a",))
    assert db.migrate(v1) == 0
    db.execute([__import__("relay.core.storage", fromlist=["Op"]).Op(
        "INSERT INTO demo_a(k, v) VALUES (?, ?)", ("old", b"\x00\xff"))])
    assert db.migrate(v2) == 1
    assert db.migrate(v2) == 2                 # nothing left to do
    assert db.query("SELECT k, v, r FROM demo_a") == [("old", b"\x00\xff", None)]   # data survives


def test_newer_schema_is_refused(db):
    newer = Schema("accounts", SCHEMA.migrations + ("CREATE TABLE later (x INTEGER)",), SCHEMA.tables)
    db.migrate(newer)
    with pytest.raises(StorageError, match="newer than this server"):
        db.migrate(SCHEMA)


def _old_accounts_db(path, with_groups=True):
    """An accounts.db as the server wrote it before the storage layer (user_version 2)."""
    from relay.core.accounts import make_account
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE accounts (name TEXT PRIMARY KEY COLLATE NOCASE, realm TEXT NOT NULL, sip_ha1 TEXT NOT NULL,
                               created REAL NOT NULL);
        CREATE TABLE scram (account TEXT NOT NULL, mechanism TEXT NOT NULL, salt BLOB NOT NULL,
                            stored_key BLOB NOT NULL, server_key BLOB NOT NULL, iterations INTEGER NOT NULL,
                            PRIMARY KEY (account, mechanism));
    """ + ("CREATE TABLE groups (account TEXT NOT NULL COLLATE NOCASE, name TEXT NOT NULL);" if with_groups else ""))
    a = make_account("Olga", "old-pw", "relay.test", 4096, 5.0)
    db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (a.name, a.realm, a.sip_ha1, a.created))
    for m, s in a.scram.items():
        db.execute("INSERT INTO scram VALUES (?, ?, ?, ?, ?, ?)", (a.name, m, s.salt, s.stored_key, s.server_key,
                                                                 s.iterations))
    if with_groups:
        db.execute("INSERT INTO groups VALUES ('Olga', 'ops')")
    db.execute(f"PRAGMA user_version = {2 if with_groups else 1}")
    db.commit()
    db.close()


@pytest.mark.parametrize("with_groups", [True, False], ids=["v2", "v1"])
def test_an_old_accounts_db_is_imported_on_first_start(storage, tmp_path, with_groups):
    old = tmp_path / "old-data"
    old.mkdir()
    _old_accounts_db(old / LEGACY_FILE, with_groups)
    a = Accounts(storage, "relay.test", 4096)
    a.load(old)
    acct = a.get("olga")
    assert acct is not None and check_password(acct, "old-pw")
    assert acct.groups == ({"ops"} if with_groups else set())
    # Imported once: a later start does not bring back what was removed since.
    a.delete("olga")
    flush(storage)
    b = Accounts(Storage(storage.db, WriteQueue(), "001"), "relay.test", 4096)
    b.load(old)
    assert b.get("olga") is None
