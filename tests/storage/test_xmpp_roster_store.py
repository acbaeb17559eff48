"""The `xmpp_roster` store on both backends: what is written comes back at the next start with the
same version, the newer stamp wins (in memory and in a database two servers share), removals are
kept as tombstones, and the JSON file of an older deployment is imported once."""

import json
import os

from storagesupport import flush

from bridges.xmpp.roster import RosterStore, with_from, with_to
from relay.core.storage import Storage, WriteQueue


def again(storage, server="001", legacy=None) -> RosterStore:
    flush(storage)
    return RosterStore(Storage(storage.db, WriteQueue(), server), server, legacy)


def test_the_roster_store_survives_a_restart(storage):
    store = RosterStore(storage)
    store.put("alice", "bob@localhost", 10.0, subscription="to", name="Bob", groups=["Friends", "Ünï"])
    store.put("alice", "carol@localhost", 11.0, ask="subscribe")
    store.put("alice", "dave@localhost", 12.0)
    store.remove("alice", "dave@localhost", 13.0)
    v = store.version("alice")
    back = again(storage)
    assert back.item("alice", "bob@localhost") == {"name": "Bob", "subscription": "to", "ask": None,
                                                   "groups": ["Friends", "Ünï"]}
    assert back.item("alice", "carol@localhost")["ask"] == "subscribe"
    assert back.item("alice", "dave@localhost") is None and back.version("alice") == v != "0"
    assert back.entries("alice")[-1] == ["alice", "dave@localhost", None, [13.0, "001"]]   # the tombstone
    assert with_from("to", True) == "both" and with_from("both", False) == "to"
    assert with_to("none", True) == "to" and with_to("from", True) == "both" and with_to("both", False) == "from"


def test_the_version_is_the_content_wherever_it_was_made(storage):
    a, b = RosterStore(None, "001"), RosterStore(None, "002")
    a.put("alice", "bob@localhost", 5.0, subscription="both")
    a.put("alice", "carol@localhost", 6.0, name="C")
    b.put("alice", "carol@localhost", 1.0, name="C")
    b.put("alice", "bob@localhost", 2.0, subscription="both")
    assert a.version("alice") == b.version("alice")
    b.put("alice", "carol@localhost", 3.0, name="changed")
    assert a.version("alice") != b.version("alice")
    b.remove("alice", "carol@localhost", 4.0)
    a.remove("alice", "carol@localhost", 7.0)
    assert a.version("alice") == b.version("alice")


def test_the_newer_stamp_wins_and_a_local_change_wins_over_what_it_replaces(storage):
    store = RosterStore(storage)
    assert store.apply("alice", "bob@localhost", {"name": "new", "subscription": "both", "ask": None, "groups": []},
                       (100.0, "002"))
    assert not store.apply("alice", "bob@localhost", {"name": "old", "subscription": "none", "ask": None,
                                                      "groups": []}, (99.0, "003"))
    assert not store.apply("alice", "bob@localhost", None, (100.0, "001"))     # equal time: the server id decides
    assert store.apply("alice", "bob@localhost", None, (100.0, "009"))
    assert store.item("alice", "bob@localhost") is None
    store.put("alice", "bob@localhost", 50.0, name="mine")                    # our clock is behind: still ours
    assert store.stamps[("alice", "bob@localhost")] > (100.0, "009")
    assert again(storage).item("alice", "bob@localhost")["name"] == "mine"


def test_two_servers_sharing_one_database_keep_the_newer_row(storage):
    a = RosterStore(storage, "001")
    b_storage = Storage(storage.db, WriteQueue(), "002")
    b = RosterStore(b_storage, "002")
    b.put("alice", "bob@localhost", 20.0, name="newer")
    flush(b_storage)
    a.put("alice", "bob@localhost", 10.0, name="older")       # written after, but older
    assert again(storage).item("alice", "bob@localhost")["name"] == "newer"


def test_the_json_file_of_an_older_deployment_is_imported_once(storage, tmp_path):
    path = tmp_path / "xmpp-roster.json"
    path.write_text(json.dumps({"rosters": {"alice": {"bob@localhost": {"name": "Bob", "subscription": "both",
                                                                        "ask": None, "groups": ["g"]},
                                                      "bad@localhost": {"subscription": "sideways"}}},
                                "versions": {"alice": 7}}))
    os.utime(path, (1000, 1000))
    store = RosterStore(storage, "001", path)
    assert store.item("alice", "bob@localhost") == {"name": "Bob", "subscription": "both", "ask": None,
                                                    "groups": ["g"]}
    assert store.item("alice", "bad@localhost") is None and store.stamps[("alice", "bob@localhost")][0] == 1000.0
    store.remove("alice", "bob@localhost", 2000.0)
    assert again(storage, legacy=path).item("alice", "bob@localhost") is None    # not imported a second time


def test_a_damaged_json_file_is_not_the_servers_death(storage, tmp_path):
    path = tmp_path / "xmpp-roster.json"
    path.write_text("not json")
    assert RosterStore(storage, "001", path).items("alice") == {}


def test_roster_tombstones_older_than_the_lifetime_are_forgotten_in_memory_and_on_disk(storage):
    store = RosterStore(storage)
    store.put("alice", "bob@localhost", 10.0, name="Bob")
    store.put("alice", "old@localhost", 10.0)
    store.remove("alice", "old@localhost", 20.0)
    store.put("alice", "new@localhost", 10.0)
    store.remove("alice", "new@localhost", 80.0)
    store.put("carol", "gone@localhost", 10.0)
    store.remove("carol", "gone@localhost", 30.0)
    v = store.version("alice")
    assert store.expire_tombstones(50.0) == 2
    assert [e[1] for e in store.entries("alice")] == ["bob@localhost", "new@localhost"]
    assert store.entries("carol") == [] and "carol" not in store.accounts() and store.version("alice") == v
    assert store.expire_tombstones(50.0) == 0
    # a removal already forgotten, heard of again from a server that kept it: nothing to store
    assert not store.apply("carol", "gone@localhost", None, (30.0, "002"))
    assert store.apply("carol", "other@localhost", None, (60.0, "002"))      # newer: kept
    # an item this server holds still goes when an old removal newer than it comes in
    store.apply("alice", "stale@localhost", {"name": None, "subscription": "none", "ask": None, "groups": []},
                (5.0, "002"))
    assert store.apply("alice", "stale@localhost", None, (40.0, "002"))
    back = again(storage)
    assert [e[1] for e in back.entries("alice")] == ["bob@localhost", "new@localhost", "stale@localhost"]
    assert [e[1] for e in back.entries("carol")] == ["other@localhost"]
    rows = storage.db.query("SELECT account, contact FROM xmpp_roster WHERE removed = 1 ORDER BY contact")
    assert rows == [("alice", "new@localhost"), ("carol", "other@localhost"), ("alice", "stale@localhost")]


def test_the_xmpp_module_forgets_roster_removals_after_accounts_tombstone_lifetime(tmp_path):
    from relay.core.config import parse
    from relay.core.server import Core
    core = Core(parse({"data_dir": str(tmp_path), "accounts": {"tombstone_lifetime": 100},
                       "modules": {"xmpp": {}}}), now=1000.0)
    core.start(1000.0)
    roster = core.services["xmpp"].roster
    roster.put("alice", "bob@localhost", 1000.0)
    roster.remove("alice", "bob@localhost", 1000.0)
    core.tick(1099.0)
    assert [e[1] for e in roster.entries("alice")] == ["bob@localhost"]
    core.tick(1101.0)                                       # the hourly timer, or the lifetime if shorter
    assert roster.entries("alice") == [] and roster.accounts() == set()
