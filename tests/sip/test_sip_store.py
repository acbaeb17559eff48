"""The `sip` store on both backends: bindings written come back at the next start, expired ones are
deleted, rows are per server, and the JSON file of an older deployment is imported once."""

from __future__ import annotations

import json

import pytest

from bridges.sip.bindings import Binding, BindingStore, RemoteBinding
from relay.core.storage import Storage, WriteQueue


@pytest.fixture
def db(storage_section, tmp_path):
    if storage_section["backend"] == "sqlite":
        from relay.storage.sqlite import SqliteDatabase
        d = SqliteDatabase(str(tmp_path / "relay.db"))
    else:
        from relay.storage.postgresql import PostgresDatabase
        d = PostgresDatabase(storage_section["dsn"], 2)
    yield d
    d.close()


def flush(storage: Storage) -> None:
    """What the runtime's writer does, synchronously: one transaction for everything queued."""
    units = storage.queue.take(10**9)
    storage.db.execute([op for u in units for op in u.ops])
    storage.queue.done(len(units))


def reopen(db, server="001", legacy=None) -> BindingStore:
    s = BindingStore(Storage(db, WriteQueue(), server), legacy)
    s.load(0)
    return s


def test_refresh_remove_expire_and_read_back(db):
    st = Storage(db, WriteQueue(), "001")
    s = BindingStore(st)
    s.load(0)
    s.update("alice", Binding("sip:a@1.1.1.1", 100.0, "c1", 1, ("UDP", "1.1.1.1", 5060)))
    s.update("alice", Binding("sip:a@2.2.2.2", 50.0, "c1", 2, ("TCP", "2.2.2.2", 40000), 0.5, "<urn:x>", 1))
    s.update("alice", Binding("sip:a@1.1.1.1", 200.0, "c1", 3, ("UDP", "1.1.1.1", 5060)))  # refresh
    s.update("bob", Binding("sip:b@3.3.3.3", 300.0, "c2", 1, ("UDP", "3.3.3.3", 5060)))
    s.update("bob", Binding("sip:b@3.3.3.3", 0.0, "c2", 2, ("UDP", "3.3.3.3", 5060)))       # expires=0
    assert sorted((b.contact, b.expires_at) for b in s.get("alice", 0)) == [("sip:a@1.1.1.1", 200.0),
                                                                           ("sip:a@2.2.2.2", 50.0)]
    flush(st)
    t = reopen(db)
    assert sorted((b.contact, b.flow, b.cseq, b.q, b.instance, b.reg_id) for b in t.get("alice", 0)) == [
        ("sip:a@1.1.1.1", ("UDP", "1.1.1.1", 5060), 3, None, None, None),
        ("sip:a@2.2.2.2", ("TCP", "2.2.2.2", 40000), 2, 0.5, "<urn:x>", 1)]
    assert t.aors() == ["alice"]
    assert t.expire(60) == ["alice"] and [b.contact for b in t.get("alice", 0)] == ["sip:a@1.1.1.1"]
    flush(t.storage)
    assert [b.contact for b in reopen(db).get("alice", 0)] == ["sip:a@1.1.1.1"]
    late = BindingStore(Storage(db, WriteQueue(), "001"))
    late.load(500)                       # a start after everything expired: deleted, not served
    flush(late.storage)
    assert late.aors() == [] and reopen(db).aors() == []


def test_outbound_instance_replaces_its_old_contact_and_contact_star_removes_all(db):
    st = Storage(db, WriteQueue(), "001")
    s = BindingStore(st)
    s.update("alice", Binding("sip:a@1.1.1.1:1000", 100.0, "c1", 1, ("TCP", "1.1.1.1", 1000), None, "<urn:i>", 1))
    s.update("alice", Binding("sip:a@1.1.1.1:2000", 100.0, "c1", 2, ("TCP", "1.1.1.1", 2000), None, "<urn:i>", 1))
    flush(st)
    assert [b.contact for b in reopen(db).get("alice", 0)] == ["sip:a@1.1.1.1:2000"]
    s.remove_all("alice")
    flush(st)
    assert reopen(db).aors() == []


def test_rows_are_per_server(db):
    a_st, b_st = Storage(db, WriteQueue(), "001"), Storage(db, WriteQueue(), "002")
    a, b = BindingStore(a_st), BindingStore(b_st)
    a.update("alice", Binding("sip:a@1.1.1.1", 100.0, "c1", 1, ("UDP", "1.1.1.1", 5060)))
    b.update("alice", Binding("sip:a@9.9.9.9", 100.0, "c9", 1, ("UDP", "9.9.9.9", 5060)))
    flush(a_st)
    flush(b_st)
    assert [x.contact for x in reopen(db, "001").get("alice", 0)] == ["sip:a@1.1.1.1"]
    assert [x.contact for x in reopen(db, "002").get("alice", 0)] == ["sip:a@9.9.9.9"]


def test_the_legacy_json_file_is_imported_when_the_store_is_created(db, tmp_path):
    legacy = tmp_path / "sip-bindings.json"
    legacy.write_text(json.dumps({"aors": {"erin": [
        {"contact": "sip:e@1.2.3.4", "expires_at": 900.0, "call_id": "x", "cseq": 4,
         "flow": ["UDP", "1.2.3.4", 5062], "q": None, "instance": None, "reg_id": None}]}}))
    s = reopen(db, legacy=legacy)
    assert [(b.contact, b.flow) for b in s.get("erin", 0)] == [("sip:e@1.2.3.4", ("UDP", "1.2.3.4", 5062))]
    legacy.write_text(json.dumps({"aors": {"late": []}}))
    assert reopen(db, legacy=legacy).aors() == ["erin"]      # once: the store exists now


def test_a_damaged_legacy_file_costs_the_bindings_not_the_server(db, tmp_path):
    legacy = tmp_path / "sip-bindings.json"
    legacy.write_text("{not json")
    assert reopen(db, legacy=legacy).aors() == []


def test_remote_bindings_expire_and_go_with_their_server():
    s = BindingStore()
    s.set_remote("bob", "002", [RemoteBinding("002", "sip:b@1.1.1.1", 100.0)])
    s.set_remote("bob", "003", [RemoteBinding("003", "sip:b@2.2.2.2", 50.0)])
    assert sorted(s.remote_get("bob", 0)) == ["002", "003"]
    s.expire(60)
    assert sorted(s.remote_get("bob", 0)) == ["002"]
    s.forget_server("002")
    assert s.remote_get("bob", 0) == {} and s.remote == {}
