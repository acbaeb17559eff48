"""Issue 15 with aioxmpp as the real client (its own services, each scenario a client process of
aiox/im.py): STARTTLS + SCRAM-SHA-256 and -PLUS (tls-server-end-point, tls-unique), roster and presence subscription, chat both ways,
offline delivery, MAM with RSM paging, carbons with two resources, blocking, vCard, private storage,
ad-hoc ping and XEP-0199 ping."""

from __future__ import annotations

import pytest
from aioxmpp_support import aioxmpp_server, need_aioxmpp, run

from support import wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    need_aioxmpp()
    s = aioxmpp_server(tmp_path_factory.mktemp("aioxmpp-im") / "srv", {"xmpp": {}})
    yield s
    s.stop()


def test_starttls_scram_sha_256_and_plus_logins_and_wrong_passwords(srv):
    plain = run(srv, "login")
    assert plain == {"mechanisms": ["SCRAM-SHA-256"], "jid": "alice@localhost/login", "tls": "TLSv1.3"}
    plus = run(srv, "login", binding="tls-server-end-point")
    assert plus == {"mechanisms": ["SCRAM-SHA-256-PLUS"], "jid": "alice@localhost/login", "tls": "TLSv1.3"}
    unique = run(srv, "login", binding="tls-unique")                    # aiosasl's own, over TLS 1.2
    assert unique == {"mechanisms": ["SCRAM-SHA-256-PLUS"], "jid": "alice@localhost/login", "tls": "TLSv1.2"}
    wrong = run(srv, "login", password="not it")
    assert "jid" not in wrong and set(wrong["mechanisms"]) == {"SCRAM-SHA-256"}
    wrong = run(srv, "login", binding="tls-server-end-point", password="not it")
    assert "jid" not in wrong and "not-authorized" in wrong["refused"]
    # a binding this server cannot give (Python's ssl exports no keying material) is refused cleanly
    other = run(srv, "login", binding="tls-exporter")
    assert "jid" not in other and "unsupported-channel-binding-type" in other["refused"]
    assert srv.status()["pid"]


def test_roster_subscription_presence_and_chat_both_ways(srv):
    # alice adds bob (name, group), both subscribe; bob's presence, away, then unavailable
    got = run(srv, "roster_presence_chat")
    assert got == {"alice_item": {"name": "Bob", "groups": ["friends"], "subscription": "both"},
                   "bob_item": "both", "bob_seen_as": "bob@localhost/b",
                   "from_alice": "alice@localhost/a", "from_bob": "bob@localhost/b",
                   "away_status": "brb", "bob_after": None}          # unavailable once bob's client stopped


def test_offline_delivery_at_the_next_login(srv):
    kept = srv.call("xmpp", "stats")["offline_kept"]
    run(srv, "send_chat", sender="alice@localhost/a", to="erin@localhost", bodies=["while away", "and again"])
    wait_for(lambda: srv.call("xmpp", "stats")["offline_kept"] == kept + 2, 30, what="the two stored messages")
    got = run(srv, "receive", address="erin@localhost/e", bodies=["while away", "and again"])["got"]
    assert got == [{"body": b, "from": "alice@localhost/a", "delayed": True} for b in ("while away", "and again")]


def test_mam_query_with_rsm_paging(srv):
    pages = run(srv, "mam_paging", partner="carol@localhost", owner="erin@localhost", count=5, page=2)["pages"]
    assert [p["bodies"] for p in pages] == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert [p["complete"] for p in pages] == [False, False, True]
    assert {p["count"] for p in pages} == {5} and all(p["from"] == ["carol@localhost"] for p in pages)


def test_carbons_with_two_resources(srv):
    got = run(srv, "carbons")
    assert got == {"received_from": "bob@localhost", "received_inner_to": "bob@localhost/phone",
                   "sent_inner_from": "bob@localhost/phone", "alice_carbons": []}


def test_blocking_and_unblocking(srv):
    got = run(srv, "blocking")
    assert got == {"listed": ["carol@localhost"], "blocked_delivered": False, "refused": "not-acceptable",
                   "after_unblock": [], "carol_got": []}


def test_vcard_private_storage_adhoc_ping_and_xep_0199(srv):
    got = run(srv, "vcard_private_adhoc_ping")
    assert got["fn"] == "Alice Liddell" and got["photo"] == "image/png"
    assert got["color"] == "teal"
    assert got["foreign_private"] in ("forbidden", "service-unavailable")    # not alice's data to bob
    assert "ping" in got["commands"]
    assert got["ping_status"] == "completed" and got["ping_notes"] == ["Pong"]
