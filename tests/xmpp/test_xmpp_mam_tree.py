"""XEP-0313 across the tree (mam_tree.py), on three linked cores in memory, each with its own SQLite
archive: a query on one server finds what the account archived on the others, merged in time order
with the duplicates of a message archived on two servers removed, paged forward and backward with
RSM; a server that does not answer in time is left out and the result is not complete."""

from __future__ import annotations

import pytest
from test_xmpp_federation import of, online, stanzas
from test_xmpp_routing import Xmpp

from relay.core.config import parse
from relay.core.server import Core
from relay.core.storage import Storage
from relay.storage.sqlite import SqliteDatabase
from support_net import SECRET, Wire

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "{urn:xmpp:sid:0}stanza-id"
NAMES = ("a", "b", "c")


def stored_tree(tmp_path, modules: dict, plain=()) -> Wire:
    """Wire's cores, each with a SQLite database whose reads come after the queued writes (the
    servers named in `plain` without modules)."""
    w = Wire(tmp_path, [])
    for i, n in enumerate(NAMES, 1):
        (tmp_path / n).mkdir()
        db = SqliteDatabase(str(tmp_path / n / "relay.db"))
        storage = Storage(db, server_id=f"{i:03d}")

        def reader(sql, args, done, storage=storage, db=db):
            units = storage.queue.take(100_000)
            db.execute([op for u in units for op in u.ops])
            storage.queue.done(len(units))
            done(db.query(sql, args))
        storage.reader = reader
        links = [{"name": f"{m}.test", "id": f"{j:03d}", "port": 7000 + j, "secret": SECRET}
                 for j, m in enumerate(NAMES, 1) if m != n]
        cfg = parse({"server": {"id": f"{i:03d}", "name": f"{n}.test"}, "data_dir": str(tmp_path / n),
                     "links": links, "shapers": {}, "shaper_rules": [], "modules": {} if n in plain else modules})
        core = Core(cfg, w.now, storage)
        core.start(w.now)
        core.links.dial = w._dialer(n)
        w.cores[n] = core
        for name in ("alice", "bob", "carol") if n not in plain else ():
            core.register_account(name, "secret", w.now)
    w.link("a", "b")
    w.link("b", "c")
    return w


@pytest.fixture
def wire(tmp_path):
    return stored_tree(tmp_path, {"xmpp": {"roster_file": "", "mam_max_page": 10}})


def query(c: Xmpp, rsm: str = "") -> tuple[list[str], dict]:
    """(bodies, fin) of a MAM query, in the order the results came."""
    c.take()
    c.feed(f"<iq type='set' id='q'><query xmlns='{MAM}' queryid='Q'>"
           + (f"<set xmlns='{RSM}'>{rsm}</set>" if rsm else "") + "</query></iq>")
    got = stanzas(c)
    results = [el.find(f"{{{MAM}}}result") for el in got if el.find(f"{{{MAM}}}result") is not None]
    bodies = [r.find("{urn:xmpp:forward:0}forwarded").find("{jabber:client}message").findtext("{jabber:client}body")
              for r in results]
    iq = of(got, "iq", id="q")
    assert iq and iq[0].get("type") == "result", got
    fin = iq[0].find(f"{{{MAM}}}fin")
    rset = fin.find(f"{{{RSM}}}set")
    return bodies, {"complete": fin.get("complete") == "true", "first": rset.findtext(f"{{{RSM}}}first"),
                    "last": rset.findtext(f"{{{RSM}}}last"), "count": int(rset.findtext(f"{{{RSM}}}count")),
                    "ids": [r.get("id") for r in results]}


def conversation(wire: Wire) -> Xmpp:
    """bob archives on a and on c: one chat reaches both (one id), others reach one server each."""
    bob_a, bob_c = online(wire, "a", "bob", "a"), online(wire, "c", "bob", "c")
    alice, carol = online(wire, "a", "alice", "r"), online(wire, "c", "carol", "r")
    alice.feed("<message type='chat' to='bob@localhost'><body>m0 to both</body></message>")
    wire.tick(1)
    carol.feed("<message type='chat' to='bob@localhost/c'><body>m1 on c</body></message>")
    wire.tick(1)
    alice.feed("<message type='chat' to='bob@localhost/a'><body>m2 on a</body></message>")
    wire.tick(1)
    bob_c.feed("<message type='chat' to='carol@localhost'><body>m3 sent on c</body></message>")
    wire.tick(1)
    carol.feed("<message type='chat' to='bob@localhost'><body>m4 to both</body></message>")
    wire.tick(1)
    got_a = [m.find(SID).get("id") for m in of(stanzas(bob_a), "message") if m.find(SID) is not None]
    got_c = [m.find(SID).get("id") for m in of(stanzas(bob_c), "message") if m.find(SID) is not None]
    assert got_a[0] == got_c[0] and got_a[-1] == got_c[-1]           # one message, one id on both servers
    return Xmpp(wire, "b", "bob", "b")                                # bob on a server without an archive of his


def test_a_query_on_another_server_finds_every_servers_archive_once(wire):
    bob = conversation(wire)
    bodies, fin = query(bob)
    assert bodies == ["m0 to both", "m1 on c", "m2 on a", "m3 sent on c", "m4 to both"]
    assert fin["complete"] and fin["count"] == 5 and fin["first"] == fin["ids"][0] and fin["last"] == fin["ids"][-1]
    # the same on a server that has a part of it
    there = Xmpp(wire, "c", "bob", "c2")
    assert query(there)[0] == bodies


def test_rsm_pages_forward_and_backward_across_servers(wire):
    bob = conversation(wire)
    seen, after = [], None
    while True:
        bodies, fin = query(bob, "<max>2</max>" + (f"<after>{after}</after>" if after else ""))
        seen += bodies
        after = fin["last"]
        if fin["complete"]:
            break
        assert len(bodies) == 2
    assert seen == ["m0 to both", "m1 on c", "m2 on a", "m3 sent on c", "m4 to both"]
    bodies, fin = query(bob, "<max>2</max><before/>")                 # the last page
    assert bodies == ["m3 sent on c", "m4 to both"] and not fin["complete"]
    bodies, fin = query(bob, f"<max>2</max><before>{fin['first']}</before>")
    assert bodies == ["m1 on c", "m2 on a"] and not fin["complete"]
    bodies, fin = query(bob, f"<max>2</max><before>{fin['first']}</before>")
    assert bodies == ["m0 to both"] and fin["complete"]


def test_a_server_that_does_not_answer_in_time_is_left_out_and_the_result_is_incomplete(wire):
    bob = conversation(wire)
    wire.cores["c"].hooks.add("link_extension", lambda ftype, *rest: True if ftype == "XMPP_MAM_QUERY" else None,
                              priority=100)                           # c swallows the query
    bob.take()
    bob.feed(f"<iq type='set' id='q'><query xmlns='{MAM}' queryid='Q'/></iq>")
    assert of(stanzas(bob), "iq", id="q") == []                       # waiting for c, not answered yet
    wire.tick(6)                                                      # past mam_tree_timeout (5 s)
    got = stanzas(bob)
    iq = of(got, "iq", id="q")[0]
    fin = iq.find(f"{{{MAM}}}fin")
    assert fin.get("complete") != "true"
    bodies = [m.find(f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
              .findtext("{jabber:client}body") for m in of(got, "message")]
    assert bodies == ["m0 to both", "m2 on a", "m4 to both"]           # what a has
    assert wire.cores["b"].services["xmpp"].mam.tree.pending == {}


def test_hostile_mam_frames_are_ignored(wire):
    links = wire.cores["a"].net.router
    for payload in ({"qid": 5}, {"qid": "x", "account": "bob", "spec": {"with": ["stanza; DROP TABLE", "x"],
                                                                         "backward": False, "limit": 1}},
                    {"qid": "x", "account": "bob", "spec": {"backward": "no", "limit": 1}},
                    {"qid": "x", "account": "bob", "spec": {"backward": False, "limit": -1}},
                    {"qid": "x", "account": "bob", "spec": {"backward": False, "limit": 1, "after": [1, 2]}}):
        links.send_extension("XMPP_MAM_QUERY", payload, {"003"})
    links.send_extension("XMPP_MAM_ROWS", {"qid": "nobody", "rows": [[1, "x", "<m/>"]], "total": 1}, {"003"})
    wire.pump()
    assert wire.cores["c"].services["xmpp"].mam.tree.stats["mam_tree_answered"] == 0
    bob = conversation(wire)
    assert len(query(bob)[0]) == 5


def test_a_server_without_xmpp_is_not_asked(tmp_path):
    w = stored_tree(tmp_path, {"xmpp": {"roster_file": ""}}, plain=("b",))
    bob_a, alice = online(w, "a", "bob", "a"), online(w, "a", "alice", "r")
    alice.feed("<message type='chat' to='bob@localhost'><body>on a</body></message>")
    there = Xmpp(w, "c", "bob", "c")
    bodies, fin = query(there)                                        # answered at once, b not waited for
    assert bodies == ["on a"] and fin["complete"]
    assert w.cores["c"].services["xmpp"].component_domains.xmpp_servers() == {"001"}
