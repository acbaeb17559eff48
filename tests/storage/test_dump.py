"""The portable dump is the same for both backends: what one backs up, either restores."""

import json

import pytest
from storagesupport import flush

from bridges.mqtt.store import SCHEMA as MQTT, Store
from bridges.xmpp.blocking import Blocklists
from relay.core.accounts import SCHEMA as ACCOUNTS, Accounts, check_password
from relay.core.storage import Storage, StorageError, WriteQueue
from relay.storage import dump
from relay.storage.sqlite import SqliteDatabase
from test_xmpp_im_stores import _svc


def populated(storage) -> None:
    a = Accounts(storage, "r", 4096)
    a.load()
    a.create("alice", "pw-a", 1.0)
    a.add_group("alice", "ops", 2.0)
    a.create("gone", "pw-g", 1.0)
    a.delete("gone", removed=3.0)          # a tombstone
    st = Store(storage)
    st.save_session("c1", 5, "alice", 60, None)
    st.add_message("c1", 1, 0, None, "t", b"\x00\x01", 1, False, None, None)
    st.set_retained("r", b"\xff", 0, None, None)
    flush(storage)


def everything(db) -> dict:
    return {t: sorted(map(list, db.dump_table(t)[1])) for s in (ACCOUNTS, MQTT) for t in s.tables}


@pytest.fixture
def target(request, tmp_path, pg_cluster):
    if request.param == "sqlite":
        d = SqliteDatabase(str(tmp_path / "restored.db"))
    else:
        from relay.storage.postgresql import PostgresDatabase
        d = PostgresDatabase(pg_cluster.new_database(), 1)
    yield d
    d.close()


@pytest.mark.parametrize("target", ["sqlite", "postgresql"], indirect=True)
def test_backup_then_restore_onto_either_backend(storage, target, tmp_path):
    populated(storage)
    path = tmp_path / "backup.jsonl"
    res = dump.backup(storage.db, [ACCOUNTS, MQTT], path)
    assert res["rows"]["accounts"] == 1 and res["rows"]["mqtt_messages"] == 1
    header = json.loads(path.read_text().splitlines()[0])
    # accounts 2: the SHA-256 HA1; 3: the tombstones; mqtt 2: no foreign key on messages (PostgreSQL)
    assert header == {"format": "relaynet-dump", "version": 1, "stores": {"accounts": 3, "mqtt": 2}}
    assert res["rows"]["account_tombstones"] == 1
    assert "pw-a" not in path.read_text()
    dump.load_dump(target, [ACCOUNTS, MQTT], path)
    assert everything(target) == everything(storage.db)
    again = Accounts(Storage(target, WriteQueue(), "001"), "r", 4096)
    again.load()
    assert check_password(again.get("alice"), "pw-a") and again.groups("alice") == {"ops"}
    assert again.tombstones == {"gone": 3.0} and again.get("gone") is None
    # A restore replaces: restoring twice leaves one copy.
    dump.load_dump(target, [ACCOUNTS, MQTT], path)
    assert everything(target) == everything(storage.db)


@pytest.mark.parametrize("target", ["sqlite", "postgresql"], indirect=True)
def test_a_dump_of_an_older_version_with_the_same_tables_restores(storage, target, tmp_path):
    """mqtt 2 changed no table's columns: a backup made at version 1 restores as it is; older or newer not."""
    populated(storage)
    path = tmp_path / "backup.jsonl"
    dump.backup(storage.db, [ACCOUNTS, MQTT], path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    for v, ok in [(1, True), (2, True), (0, False), (3, False), ("2", False)]:
        header["stores"]["mqtt"] = v
        path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
        if ok:
            dump.load_dump(target, [ACCOUNTS, MQTT], path)
            assert everything(target) == everything(storage.db)
        else:
            with pytest.raises(StorageError, match="store mqtt is at schema version"):
                dump.load_dump(target, [ACCOUNTS, MQTT], path)


def test_a_broken_dump_is_refused_with_its_line(storage, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    with pytest.raises(StorageError, match="not a relaynet dump"):
        dump.load_dump(storage.db, [ACCOUNTS], bad)
    bad.write_text(json.dumps({"format": "relaynet-dump", "version": 1, "stores": {"accounts": 1}}) + "\n{oops\n")
    with pytest.raises(StorageError, match=":2: not JSON"):
        dump.load_dump(storage.db, [ACCOUNTS], bad)
    bad.write_text(json.dumps({"format": "relaynet-dump", "version": 1, "stores": {"accounts": 9}}) + "\n")
    with pytest.raises(StorageError, match="schema version 9"):
        dump.load_dump(storage.db, [ACCOUNTS], bad)


def test_every_store_of_the_shipped_modules_is_declared_for_restore(tmp_path):
    """`relayctl restore` runs without a server: it knows the stores from the modules' `SCHEMAS`, so a
    module that opens a store must declare it there (or a restore would skip that store's rows)."""
    from relay.core.accounts import SCHEMA as ACCOUNTS
    from relay.core.module_names import import_module, shipped
    from support_net import Wire

    declared = {ACCOUNTS.name} | {s.name for m in shipped() for s in getattr(import_module(m), "SCHEMAS", ())}
    w = Wire(tmp_path, ["a"], modules={m: {} for m in ("mqtt", "xmpp", "pubsub", "sip", "muc", "filter")})
    opened = set(w.cores["a"].storage.schemas)
    assert opened <= declared, f"stores opened but not declared in SCHEMAS: {sorted(opened - declared)}"
    assert {"accounts", "mqtt", "muc", "pubsub", "sip", "xmpp_roster"} <= opened


@pytest.mark.parametrize("target", ["sqlite", "postgresql"], indirect=True)
def test_a_version_1_blocklist_dump_restores_merged_as_the_migration_merges(db, target, tmp_path):
    """xmpp_blocklist 2 changed its table (one list for every server, stamped): a version 1 dump
    restores through the schema's converter into the rows the migration makes of the same data."""
    from bridges.xmpp.blocking import SCHEMA as BLOCKLIST
    from relay.core.storage import Op, Schema
    v1 = Schema(BLOCKLIST.name, BLOCKLIST.migrations[:1], tables=BLOCKLIST.tables)
    db.migrate(v1)
    db.execute([Op("INSERT INTO xmpp_blocklist(server, account, jid) VALUES (?,?,?)", row) for row in
                (("002", "bob", "mallory@localhost"), ("001", "bob", "mallory@localhost"),
                 ("002", "bob", "spam.example"), ("001", "alice", "x@y"))])
    path = tmp_path / "v1.jsonl"
    dump.backup(db, [v1], path)
    assert json.loads(path.read_text().splitlines()[0])["stores"] == {"xmpp_blocklist": 1}
    res = dump.load_dump(target, [BLOCKLIST], path)
    assert res["rows"] == {"xmpp_blocklist": 3}
    db.migrate(BLOCKLIST)                    # the same rows, migrated in place
    rows = sorted(map(list, target.dump_table("xmpp_blocklist")[1]))
    assert rows == sorted(map(list, db.dump_table("xmpp_blocklist")[1]))
    assert rows == [["alice", "x@y", 0, 0.0, "001"], ["bob", "mallory@localhost", 0, 0.0, "001"],
                    ["bob", "spam.example", 0, 0.0, "002"]]
    # What the store then reads: one list, the entries unblocked by nobody.
    lists = Blocklists(_svc(Storage(target, WriteQueue(), "003")))
    assert lists.lists == {"bob": {"mallory@localhost", "spam.example"}, "alice": {"x@y"}}
    # Older than the converter reaches, or newer than this code: refused.
    lines = path.read_text().splitlines()
    for v in (0, 3):
        header = json.loads(lines[0])
        header["stores"]["xmpp_blocklist"] = v
        path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
        with pytest.raises(StorageError, match="store xmpp_blocklist is at schema version"):
            dump.load_dump(target, [BLOCKLIST], path)
