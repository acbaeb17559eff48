"""The XMPP IM stores on both backends: xmpp_offline, xmpp_blocklist and xmpp_archive (the MAM query's
SQL, with its window functions and id subqueries, run as the archive runs it)."""

from types import SimpleNamespace

from lxml import etree
from storagesupport import flush

from bridges.xmpp.blocking import Blocklists
from bridges.xmpp.mam import Archive
from bridges.xmpp.offline import OfflineStore
from relay.core.storage import Storage, WriteQueue


def _svc(storage, **opts):
    core = SimpleNamespace(storage=storage, accounts=SimpleNamespace(get=lambda name: object()), now=lambda: 0.0,
                           net=None)
    return SimpleNamespace(core=core, domain="localhost", roster=SimpleNamespace(item=lambda a, c: None),
                           opts=SimpleNamespace(offline_max=10, mam_max_page=100, **opts))


def _msg(body: str, frm: str = "alice@localhost/r") -> etree._Element:
    return etree.fromstring(f"<message xmlns='jabber:client' type='chat' from='{frm}' to='bob@localhost'>"
                            f"<body>{body}</body></message>")


def test_offline_and_blocklist_come_back_at_the_next_start(storage):
    off = OfflineStore(_svc(storage), None)
    assert off.store("bob", _msg("one"), 1.5) and off.store("bob", _msg("two"), 2.5)
    lists = Blocklists(_svc(storage))
    storage.queue.put(lists._local("bob", "mallory@localhost", True, 1.0))    # the write of a block
    flush(storage)
    again = Storage(storage.db, WriteQueue(), "001")
    kept = OfflineStore(_svc(again), None).messages["bob"]
    assert [(stamp, "one" in text) for _, stamp, text in kept] == [(1.5, True), (2.5, False)]
    assert Blocklists(_svc(again)).lists == {"bob": {"mallory@localhost"}}
    OfflineStore(_svc(again), None).take("bob")
    flush(again)
    assert OfflineStore(_svc(Storage(storage.db, WriteQueue(), "001")), None).messages == {}


def test_the_archive_query_pages_on_both_backends(storage):
    arch = Archive(_svc(storage))
    ids = [arch.add("bob", _msg(f"m{i}", "alice@localhost/r" if i % 2 else "carol@localhost/x"),
                    "alice@localhost/r" if i % 2 else "carol@localhost/x", False, 100.0 + i) for i in range(6)]
    flush(storage)
    assert Archive(_svc(Storage(storage.db, WriteQueue(), "001"))).seq == 6

    def run(xml: str):
        q = etree.fromstring(f"<query xmlns='urn:xmpp:mam:2'>{xml}</query>")
        sql, args, page = arch.sql("bob", q)
        rows = storage.db.query(sql, args)
        bodies = [etree.fromstring(r[3]).findtext("{jabber:client}body") for r in rows]
        return bodies, [int(r[4]) for r in rows][:1], [int(r[5]) for r in rows]

    rsm = "<set xmlns='http://jabber.org/protocol/rsm'>%s</set>"
    assert run(rsm % "<max>2</max>") == (["m0", "m1", "m2"], [6], [0, 1, 2])         # max + 1: is there more
    assert run(rsm % f"<max>2</max><after>{ids[2]}</after>") == (["m3", "m4", "m5"], [6], [3, 4, 5])
    assert run(rsm % "<max>2</max><before/>") == (["m5", "m4", "m3"], [6], [5, 4, 3])
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='with'><value>alice@localhost</value></field>"
            f"<field var='after-id'><value>{ids[1]}</value></field></x>")
    assert run(form) == (["m3", "m5"], [2], [0, 1])
    assert run(rsm % "<after>nope</after>")[0] == []


def test_a_version_1_blocklist_store_one_list_per_server_is_merged_into_one(db):
    from bridges.xmpp.blocking import SCHEMA
    from relay.core.storage import Op, Schema
    db.migrate(Schema("xmpp_blocklist", SCHEMA.migrations[:1], tables=SCHEMA.tables))
    db.execute([Op("INSERT INTO xmpp_blocklist(server, account, jid) VALUES (?,?,?)", row) for row in
                (("001", "bob", "mallory@localhost"), ("002", "bob", "mallory@localhost"),
                 ("002", "bob", "spam.example"), ("001", "alice", "x@y"))])
    storage = Storage(db, WriteQueue(), "001")
    assert Blocklists(_svc(storage)).lists == {"bob": {"mallory@localhost", "spam.example"}, "alice": {"x@y"}}
    assert db.query("SELECT count(*) FROM xmpp_blocklist")[0][0] == 3
