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
