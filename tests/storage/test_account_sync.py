"""The ACCOUNT / ACCOUNTS link frames: secrets only, the newer copy wins, hostile payloads are
refused with the bad field named and never break the server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.account_sync import from_wire, to_wire
from relay.core.accounts import AccountError, check_password, make_account
from relay.core.config import parse
from relay.core.server import Core


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return Core(parse({"data_dir": str(tmp_path_factory.mktemp("d"))}), now=1000.0)


def test_the_wire_form_carries_secrets_never_the_password():
    a = make_account("ann", "sekrit-pw", "r", 4096, 5.0, frozenset({"ops"}))
    wire = to_wire(a)
    assert "sekrit-pw" not in json.dumps(wire)
    b = from_wire(json.loads(json.dumps(wire)))
    assert b == a and check_password(b, "sekrit-pw")


@pytest.mark.parametrize("change, field", [
    (lambda w: w.pop("name"), "name"),
    (lambda w: w.update(name="bad name"), "name"),
    (lambda w: w.update(created=True), "created"),
    (lambda w: w["scram"]["SCRAM-SHA-256"].update(salt="%%%"), "SCRAM-SHA-256"),
    (lambda w: w["scram"].pop("SCRAM-SHA-256"), "SCRAM-SHA-256 is missing"),
    (lambda w: w.update(groups=[1]), "groups"),
])
def test_a_bad_field_is_named(change, field):
    w = to_wire(make_account("bea", "pw", "r", 4096, 1.0))
    change(w)
    with pytest.raises(AccountError, match=field):
        from_wire(w)


def test_the_newer_copy_wins(core):
    sync = core.account_sync
    old = make_account("cid", "old-pw", "r", 4096, 10.0)
    new = make_account("cid", "new-pw", "r", 4096, 20.0)
    sync._frame("ACCOUNT", "002", {"op": "put", "account": to_wire(new)}, "002")
    sync._frame("ACCOUNT", "003", {"op": "put", "account": to_wire(old)}, "003")   # late and older: ignored
    assert check_password(core.accounts.get("cid"), "new-pw")
    sync._frame("ACCOUNT", "003", {"op": "del", "name": "cid", "updated": 15.0}, "003")  # older than the copy
    assert core.accounts.get("cid") is not None
    sync._frame("ACCOUNT", "002", {"op": "del", "name": "cid", "updated": 25.0}, "002")
    assert core.accounts.get("cid") is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                      max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(ftype=st.sampled_from(["ACCOUNT", "ACCOUNTS"]), payload=json_values,
       op=st.sampled_from(["put", "del", "x"]))
def test_hostile_payloads_never_raise(core, ftype, payload, op):
    before = set(core.accounts.by_key)
    for p in (payload, {"op": op, "account": payload, "name": payload}, {"accounts": [payload]}):
        assert core.account_sync._frame(ftype, "002", p, "002") is True
    assert set(core.accounts.by_key) == before     # refused (logged), nothing stored


def test_a_removal_is_not_undone_by_an_older_copy_and_crosses_a_netjoin(core):
    sync = core.account_sync
    old = make_account("dee", "pw", "r", 4096, 30.0)
    sync._frame("ACCOUNT", "002", {"op": "put", "account": to_wire(old)}, "002")
    core.unregister_account("dee", 40.0)
    # A server that was apart still has the copy of 30: its snapshot does not bring it back ...
    sync._frame("ACCOUNTS", "003", {"accounts": [to_wire(old)], "removed": {}}, "003")
    assert core.accounts.get("dee") is None
    # ... and a newer registration does.
    new = make_account("dee", "pw2", "r", 4096, 50.0)
    sync._frame("ACCOUNTS", "003", {"accounts": [to_wire(new)]}, "003")
    assert check_password(core.accounts.get("dee"), "pw2")
    # A snapshot's removal newer than our copy removes it.
    sync._frame("ACCOUNTS", "003", {"accounts": [], "removed": {"dee": 60.0}}, "003")
    assert core.accounts.get("dee") is None and sync.tombstones["dee"] == 60.0


def test_tombstones_expire_after_the_configured_lifetime(tmp_path):
    """A removal is remembered `accounts.tombstone_lifetime` seconds (checked by a timer and at a
    link's start); a removal heard of that is already older than that is not kept."""
    core = Core(parse({"data_dir": str(tmp_path), "accounts": {"tombstone_lifetime": 100}}), now=1000.0)
    sync = core.account_sync
    old = make_account("eve", "pw", "r", 4096, 900.0)
    sync._frame("ACCOUNT", "002", {"op": "put", "account": to_wire(old)}, "002")
    core.unregister_account("eve", 1000.0)
    sync._frame("ACCOUNT", "003", {"op": "del", "name": "fay", "updated": 950.0}, "003")
    sync._frame("ACCOUNT", "003", {"op": "del", "name": "gus", "updated": 850.0}, "003")   # older than 100 s
    assert sync.tombstones == {"eve": 1000.0, "fay": 950.0}
    core.tick(1060.0)
    sync._frame("ACCOUNTS", "003", {"accounts": [to_wire(old)]}, "003")
    assert core.accounts.get("eve") is None                 # still removed
    core.tick(1101.0)                                        # the timer: eve's removal is 101 s old
    assert sync.tombstones == {}
    sync._frame("ACCOUNTS", "003", {"accounts": [to_wire(old)]}, "003")
    assert core.accounts.get("eve") is not None             # forgotten: the stale copy is taken again
