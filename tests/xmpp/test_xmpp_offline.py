"""XEP-0160 offline messages in memory: stored for an account with no resource, delivered at the next
initial presence with a delay, the per-account cap, carried across the tree to where the account
comes online, and kept in the storage layer across a restart."""

from __future__ import annotations

import pytest
from imsupport import SM, Client
from support_net import Wire


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a", "b"], modules={"xmpp": {"roster_file": "", "offline_max": 3, "resume_timeout": 60}})
    for core in w.cores.values():
        for name in ("alice", "bob"):
            core.register_account(name, "secret", w.now)
    return w


def test_stored_then_delivered_at_initial_presence_with_a_delay(wire):
    alice = Client(wire, "a", "alice")
    alice.chat("bob@localhost", "while you were out", id="m1")
    assert b"error" not in alice.take()
    alice.feed("<message type='headline' to='bob@localhost'><body>not kept</body></message>")
    assert b"service-unavailable" in alice.take()            # only chat and normal are kept
    alice.chat("nobody@localhost", "no such account")
    assert b"service-unavailable" in alice.take()
    bob = Client(wire, "a", "bob")
    assert b"while you were out" not in bob.take()           # binding alone is not coming online
    bob.feed("<presence><priority>-1</priority></presence>")
    assert b"while you were out" not in bob.take()           # nor is a negative priority
    other = Client(wire, "a", "bob", "phone")
    other.feed("<presence/>")
    got = [el for el in other.stanzas() if el.tag.endswith("message")]
    assert [m.findtext("{jabber:client}body") for m in got] == ["while you were out"]
    delay = got[0].find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("from") == "localhost" and delay.get("stamp").endswith("Z")
    assert got[0].get("from") == "alice@localhost/r" and got[0].get("id") == "m1"
    again = Client(wire, "a", "bob", "tablet")
    again.feed("<presence/>")
    assert b"while you were out" not in again.take()          # delivered once


def test_the_cap_per_account_refuses_with_service_unavailable(wire):
    alice = Client(wire, "a", "alice")
    for i in range(3):
        alice.chat("bob@localhost", f"m{i}")
    assert b"error" not in alice.take()
    alice.chat("bob@localhost", "one too many")
    out = alice.take()
    assert b'type="error"' in out and b"<service-unavailable" in out
    assert wire.cores["a"].services["xmpp"].offline.refused == 1


def test_carried_to_the_server_where_the_account_comes_online(wire):
    wire.link("a", "b")
    alice = Client(wire, "a", "alice")
    alice.chat("bob@localhost", "kept on a")
    bob = Client(wire, "b", "bob")
    bob.feed("<presence/>")
    out = bob.take()
    assert b"kept on a" in out and b"urn:xmpp:delay" in out
    assert not wire.cores["a"].services["xmpp"].offline.messages
    assert wire.frames("a", "b", "ENCAP") >= 1


def test_kept_in_the_store_across_a_restart(tmp_path):
    from relay.core.config import parse
    from relay.core.server import Core
    from relay.core.storage import Storage
    from relay.storage.sqlite import SqliteDatabase
    from bridges.xmpp.offline import OfflineStore
    from lxml import etree

    class Svc:
        pass
    db = SqliteDatabase(tmp_path / "x.db")
    cfg = parse({"server": {"id": "001", "name": "a.test"}, "data_dir": str(tmp_path), "modules": {}})
    core = Core(cfg, 0.0, Storage(db))
    core.register_account("bob", "secret", 0.0)
    svc = Svc()
    svc.core, svc.domain = core, "localhost"
    svc.opts = type("O", (), {"offline_max": 10})
    store = OfflineStore(svc, None)
    msg = etree.fromstring("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>hi</body></message>")
    assert store.store("bob", msg, 5.0)
    q = core.storage.queue
    units = q.take(100)
    db.execute([op for u in units for op in u.ops])
    q.done(len(units))
    again = OfflineStore(svc, None)
    assert [(stamp, "<body>hi</body>" in text) for _, stamp, text in again.messages["bob"]] == [(5.0, True)]
