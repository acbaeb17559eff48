"""`module load` of a module with stores while the server serves (xmpp, muc, pubsub, sip): its
stores' reads (`Schema.loads`) go through the asynchronous `Storage.read` first, no blocking query
runs on the loop, and the module starts once they are in, on the stored state (both backends)."""

from __future__ import annotations

import json

import pytest

from relay.core.config import parse
from relay.core.server import Core
from relay.core.storage import Op, Storage, WriteQueue

NOW = 1_000_000.0
MODULES = ("xmpp", "muc", "pubsub", "sip")


class LaterReads:
    """Storage.reader as the runtime's, run when the test says so; any blocking query is recorded."""

    def __init__(self, storage: Storage):
        self.storage, self.waiting, self.blocking, self.ran = storage, [], [], []
        storage.reader = lambda sql, args, done: self.waiting.append((sql, args, done))
        db = storage.db

        def blocking(sql, args=()):
            self.blocking.append(sql)
            return db.query(sql, args)
        storage.query = blocking

    def run_all(self) -> int:
        n = 0
        while self.waiting:
            sql, args, done = self.waiting.pop(0)
            self.ran.append(sql)
            done(self.storage.db.query(sql, args))
            n += 1
        return n


def config(tmp_path, modules):
    return parse({"server": {"id": "001", "name": "a.test"}, "data_dir": str(tmp_path), "shapers": {},
                  "shaper_rules": [], "modules": {m: {} for m in modules}})


def serving_core(tmp_path, db):
    """A core with no modules that serves, its reads run when the test says so."""
    storage = Storage(db, WriteQueue(), "001")
    core = Core(config(tmp_path, []), NOW, storage)
    reads = LaterReads(storage)
    core.start(NOW)
    core.started_serving(NOW)
    return core, storage, reads


def stored(db) -> None:
    """A deployment's stored state, one row or so in every store the modules open."""
    rows = {
        "xmpp_roster(account, contact, name, subscription, ask, groups, removed, stamp, stamp_server)":
            ("alice", "bob@localhost", "Bob", "both", None, '["friends"]', 0, 5.0, "001"),
        "xmpp_offline(server, account, seq, stamp, stanza)":
            ("001", "alice", 7, 6.0, "<message xmlns='jabber:client' to='alice@localhost'><body>hi</body></message>"),
        "xmpp_archive(server, account, seq, id, stamp, with_bare, with_full, outgoing, stanza)":
            ("001", "alice", 41, "arch-41", 7.0, "bob@localhost", "bob@localhost/r", 0, "<message/>"),
        "xmpp_archive_prefs(server, account, dflt)": ("001", "alice", "roster"),
        "xmpp_blocklist(account, jid, removed, stamp, stamp_server)": ("alice", "spam.example", 0, 8.0, "001"),
        "xmpp_vcard(account, vcard, photo_hash, updated)": ("alice", "<vCard xmlns='vcard-temp'/>", "abc123", 9.0),
        "xmpp_private(account, namespace, xml, updated)": ("alice", "urn:x:notes", "<notes xmlns='urn:x:notes'/>", 9.5),
        "xmpp_last(account, logout, status)": ("alice", 10.0, "gone fishing"),
        "xmpp_upload(token, account, name, size, content_type, created)":
            ("tok1", "alice", "cat.png", 3, "image/png", NOW - 10),
        "muc_rooms(server, room, config)": ("001", "#lobby", json.dumps({"name": "#lobby", "persistent": True})),
        "muc_affiliations(server, room, account, affiliation, chts, stamp, origin)":
            ("001", "#lobby", "alice", "owner", 1, 11.0, "001"),
        "muc_archive(server, room, id, time, nick, jid, body)":
            ("001", "#lobby", "m1", 12.0, "alice", "alice@localhost/r", "hello room"),
        "pubsub_nodes(server, host, node, plugin, config, created, stamp)":
            ("001", "pubsub.localhost", "news", "flat", "{}", 13.0, None),
        "sip_bindings(server, aor, contact, expires_at, call_id, cseq, transport, host, port, q, instance, reg_id)":
            ("001", "sip:alice@localhost", "sip:alice@127.0.0.1:5099", NOW + 3600, "call-1", 1, "udp", "127.0.0.1",
             5099, None, None, None),
    }
    db.execute([Op(f"INSERT INTO {table} VALUES ({', '.join('?' * len(r))})", r) for table, r in rows.items()])


def check(core, name: str) -> None:
    """The stored state arrived and is what the module uses."""
    if name == "xmpp":
        svc = core.services["xmpp"]
        assert svc.roster.item("alice", "bob@localhost") is not None
        assert [seq for seq, _, _ in svc.offline.messages["alice"]] == [7]
        assert svc.blocking.lists == {"alice": {"spam.example"}}
        assert svc.mam.seq == 41 and svc.mam.prefs == {"alice": "roster"}
        assert svc.vcards.hashes == {"alice": "abc123"} and svc.private.counts == {"alice": 1}
        assert "tok1" in svc.uploads.slots
    elif name == "muc":
        muc = core.services["muc"]
        assert muc.store.affiliations == {"#lobby": {"alice": ("owner", 1)}} and "#lobby" in muc.store.rooms
    elif name == "pubsub":
        assert core.services["pubsub"].tree.get("pubsub.localhost", "news") is not None
    elif name == "sip":
        assert [b.contact for b in core.services["sip"].store.get("sip:alice@localhost", NOW)] == \
            ["sip:alice@127.0.0.1:5099"]


@pytest.mark.parametrize("name", MODULES)
def test_a_module_loaded_while_serving_reads_its_stores_without_a_blocking_query(tmp_path, db, name):
    first = Core(config(tmp_path, MODULES), NOW, Storage(db, WriteQueue(), "001"))
    first.start(NOW)                 # at start: the stores are made, their reads block (nobody is served yet)
    first.stop(NOW)
    stored(db)
    needs = ["xmpp"] if name in ("muc", "pubsub") else []     # they serve on XMPP's service
    core, storage, reads = serving_core(tmp_path, db)
    for m in needs + [name]:         # one after the other, at once: each starts after the one before
        out = core.modules.load(m)
        assert any("reading the stored state" in n for n in out.notes)
    assert not set(needs + [name]) & set(core.modules.loaded) and reads.waiting   # nothing read on the spot
    assert reads.run_all() >= 2
    assert reads.blocking == [], "a blocking query while serving"
    declared = {sql for m in needs + [name] for s in core.modules.loaded[m].pymod.SCHEMAS for sql in s.loads}
    assert declared and declared <= set(reads.ran)          # every store's load, read the asynchronous way
    assert set(needs + [name]) <= set(core.modules.loaded)
    for m in needs + [name]:
        check(core, m)
    assert storage.preloaded == {} and storage.current == set()
    if name == "muc":                # a persistent room's history came the same way, after the room
        room = core.services["muc"].rooms["#lobby"]
        assert [h[3] for h in room.history] == ["hello room"]
    # Unloaded and loaded again: the same, and an unload while its reads run means it never starts.
    core.modules.unload(name)
    core.modules.load(name)
    core.modules.unload(name)
    reads.run_all()
    assert name not in core.modules.loaded and reads.blocking == []
    core.modules.load(name)
    reads.run_all()
    check(core, name)
    assert reads.blocking == []
    # A stop while a load reads: it never starts on the stopped server.
    core.modules.unload(name)
    core.modules.load(name)
    core.stop(NOW)
    reads.run_all()
    assert core.modules.loaded == {} and core.modules.loading == {}


def test_at_start_the_same_stores_load_with_blocking_reads(tmp_path, db):
    """Before the server serves, a load reads as it always did (the module manager does not wait)."""
    first = Core(config(tmp_path, MODULES), NOW, Storage(db, WriteQueue(), "001"))
    first.start(NOW)
    first.stop(NOW)
    stored(db)
    core = Core(config(tmp_path, MODULES), NOW, Storage(db, WriteQueue(), "001"))
    core.start(NOW)
    assert set(MODULES) <= set(core.modules.loaded)
    for m in MODULES:
        check(core, m)
    assert [h[3] for h in core.services["muc"].rooms["#lobby"].history] == ["hello room"]


def test_a_failed_read_leaves_the_module_unloaded_and_the_next_one_starts(tmp_path, db, caplog):
    Core(config(tmp_path, MODULES), NOW, Storage(db, WriteQueue(), "001")).start(NOW)
    core, storage, reads = serving_core(tmp_path, db)
    core.modules.load("sip")
    core.modules.load("xmpp")
    while reads.waiting:
        sql, args, done = reads.waiting.pop(0)
        done(None if "sip_bindings" in sql else db.query(sql, args))
    assert "sip" not in core.modules.loaded and "xmpp" in core.modules.loaded
    assert "module sip: not loaded: its stored state could not be read" in caplog.text
    assert reads.blocking == []


def test_module_load_sip_on_a_running_server_reads_its_bindings_without_stalling(tmp_path, storage_section):
    """The runtime's way: `relayctl module load sip` answers at once; on PostgreSQL, with the bindings
    table locked meanwhile, IRC and the control socket answer and the module waits for the lock; then
    it starts on the binding stored while it was unloaded."""
    import time

    from support import RawClient, Server, server_config, wait_for
    srv = Server(tmp_path / "s", server_config(storage=storage_section, modules={"sip": {}}))
    srv.start()
    blocker = None
    try:
        srv.ctl("module", "unload", "sip")
        row = ("001", "sip:alice@test.relay.local", "sip:alice@127.0.0.1:5099", time.time() + 3600, "call-1", 1,
               "udp", "127.0.0.1", 5099, None, None, None)
        insert = "INSERT INTO sip_bindings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        if storage_section["backend"] == "postgresql":
            import psycopg
            with psycopg.connect(storage_section["dsn"], autocommit=True) as c:
                c.execute(insert.replace("?", "%s"), row)
            blocker = psycopg.connect(storage_section["dsn"])
            blocker.execute("LOCK TABLE sip_bindings IN ACCESS EXCLUSIVE MODE")
        else:
            import sqlite3
            with sqlite3.connect(srv.data_dir / "relay.db") as c:
                c.execute(insert, row)
        out = srv.ctl("module", "load", "sip", timeout=20).stdout
        assert out.startswith("module sip loaded") and "reading the stored state of sip" in out
        if blocker is not None:
            irc = RawClient(srv.irc_port)           # the loop serves meanwhile
            irc.register("watcher")
            irc.send("PING :still-here")
            irc.read_until(lambda l: "still-here" in l and "PONG" in l)
            irc.close()
            assert "sip" not in {m["name"] for m in srv.call("module", "list")}     # not before its state is in
            blocker.close()
            blocker = None
        wait_for(lambda: "sip:alice@127.0.0.1:5099" in srv.ctl("sip", "bindings", check=False).stdout,
                 timeout=20, what="sip started on the stored binding")
        assert "not loaded" not in srv.log()
    finally:
        if blocker is not None:
            blocker.close()
        srv.stop()


def test_a_store_of_an_older_version_is_migrated_in_place_before_its_reads(tmp_path, db):
    """The blocklist at version 1 (one list per server) when xmpp is loaded while serving: migrated
    first (once per deployment), then read the asynchronous way like the stores at their version."""
    from bridges.xmpp.blocking import SCHEMA as BLOCKLIST
    Core(config(tmp_path, ["xmpp"]), NOW, Storage(db, WriteQueue(), "001")).start(NOW)
    db.execute([Op("DROP TABLE xmpp_blocklist"), Op("UPDATE schema_versions SET version = 1 WHERE store = ?",
                                                    (BLOCKLIST.name,))]
               + [Op(s) for s in BLOCKLIST.statements(db.backend, 0)]
               + [Op("INSERT INTO xmpp_blocklist(server, account, jid) VALUES (?,?,?)", r)
                  for r in (("001", "alice", "spam.example"), ("002", "alice", "spam.example"))])
    core, storage, reads = serving_core(tmp_path, db)
    core.modules.load("xmpp")
    reads.run_all()
    assert reads.blocking == [] and "xmpp" in core.modules.loaded
    assert core.services["xmpp"].blocking.lists == {"alice": {"spam.example"}}
    assert db.query("SELECT version FROM schema_versions WHERE store = ?", (BLOCKLIST.name,)) == [(2,)]
