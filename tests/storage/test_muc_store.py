"""The `muc` store on both backends: stamped affiliations and their tombstones, stamped room
configurations and retractions by network msgid come back at the next start; version 1 rows
(before stamps) migrate to the oldest stamp."""

from storagesupport import flush

from bridges.xmpp.muc.store import SCHEMA, MucStore
from relay.core.storage import Op, Storage, WriteQueue


def again(storage) -> MucStore:
    flush(storage)
    return MucStore(Storage(storage.db, WriteQueue(), "001"))


def rows(storage, sql, args=()):
    flush(storage)
    return storage.db.query(sql, args)


def test_affiliations_tombstones_and_configuration_survive_a_restart(storage):
    store = MucStore(storage)
    store.set_affiliation("#room", "alice", "owner", 100, (10.0, "001"))
    store.set_affiliation("#room", "bob", "admin", 100, (11.0, "001"))
    store.set_affiliation("#room", "bob", None, 0, (12.0, "001"))
    assert not store.merge_affiliation("#room", "bob", "admin", 100, (11.5, "002"))   # older than the removal
    store.save_room("#room", {"persistent": True, "stamp": [5.0, "001"], "name": "#room", "description": "d"})
    back = again(storage)
    assert back.affiliation("#room", "alice") == "owner" and back.affiliation("#room", "bob") is None
    assert back.stamp("#room", "bob") == (12.0, "001")
    assert sorted(back.changes("#room")) == [["alice", "owner", 100, 10.0, "001"], ["bob", "none", 0, 12.0, "001"]]
    assert back.persistent("#room") and back.rooms["#room"]["description"] == "d"
    assert not back.merge_room("#room", {"persistent": False, "stamp": [4.0, "002"], "name": "#room"})
    assert back.merge_room("#room", {"persistent": False, "stamp": [6.0, "002"], "name": "#room"})
    assert not again(back.storage).persistent("#room")


def test_a_retraction_by_msgid_marks_only_that_message(storage):
    store = MucStore(storage)
    store.archive("#room", "001-1-abc", 1.0, "n", "j", "one")
    store.archive("#room", "001-10-abd", 2.0, "n", "j", "ten")
    store.archive("#room", "001-1a-abe", 3.0, "n", "j", "other")
    store.retract("#room", "001-1")
    store.retract("#room", "001")                       # not a msgid this network makes: nothing
    store.retract("#room", "%")
    got = rows(storage, "SELECT id, retracted FROM muc_archive ORDER BY time")
    assert [(i, int(r)) for i, r in got] == [("001-1-abc", 1), ("001-10-abd", 0), ("001-1a-abe", 0)]


def test_version_1_rows_migrate(db):
    v1 = type(SCHEMA)(SCHEMA.name, SCHEMA.migrations[:1], SCHEMA.tables)
    db.migrate(v1)
    db.execute([Op("INSERT INTO muc_affiliations(server, room, account, affiliation, chts) VALUES (?,?,?,?,?)",
                   ("001", "#room", "alice", "owner", 100))])
    store = MucStore(Storage(db, WriteQueue(), "001"))
    assert store.affiliation("#room", "alice") == "owner" and store.stamp("#room", "alice") == (0.0, "")
    assert store.merge_affiliation("#room", "alice", "none", 0, (1.0, "002"))
    assert store.affiliation("#room", "alice") is None
