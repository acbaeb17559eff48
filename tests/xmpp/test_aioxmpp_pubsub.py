"""Issue 17 with aioxmpp.pubsub as the real client (aiox/pubsub.py, one client process): create,
configure, publish, retrieve, subscribe and the notification, retract, affiliations, purge, delete,
and the error cases (conflict, item-not-found, forbidden, not-acceptable, not-allowed, a precondition
not met, unexpected-request); and PEP through aioxmpp.avatar (XEP-0084) between two contacts."""

from __future__ import annotations

import pytest
from aioxmpp_support import aioxmpp_server, need_aioxmpp, run

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    need_aioxmpp()
    s = aioxmpp_server(tmp_path_factory.mktemp("aioxmpp-pubsub") / "srv", {"xmpp": {}, "pubsub": {}})
    yield s
    s.stop()


def test_every_operation_and_its_errors(srv):
    got = run(srv, "every_operation", node="news")
    assert got == {
        "features": ["create-nodes", "delete-nodes", "modify-affiliations", "publish", "purge-nodes",
                     "retract-items", "subscribe"],
        "create": "news", "create_again": "conflict", "instant": True,
        "max_items_default": "10", "configured": ["3", "News"],
        "subscription": "subscribed",
        "published_id": "one", "notification": ["pubsub.localhost", "news", "one", "first"],
        "items": [["second", "second"], ["one", "first"]], "max_items_1": [True],
        "by_id": ["first"], "missing_item": "item-not-found",
        "retracted": ["one", [True]],
        "affiliations": [["alice@localhost", "owner"], ["carol@localhost", "publisher"]],
        "carol_publishes": "ok", "outcast_reads": "forbidden", "outcast_publishes": "forbidden",
        "subscribers": ["bob@localhost"],
        "bob_publishes": "forbidden", "bob_purges": "forbidden", "bob_deletes": "forbidden",
        "missing_node": "item-not-found", "bad_config": "not-acceptable",
        "bob_subscriptions": [["news", "subscribed"]],
        "closed_subscribe": "not-allowed", "precondition": "conflict", "unsubscribe_closed": "unexpected-request",
        "purged": "news", "after_purge": [],
        "deleted": "news", "after_delete": "item-not-found",
    }
    assert srv.status()["pid"]


def test_pep_avatar_published_and_fetched_by_a_contact(srv):
    # aioxmpp publishes on PEP only where the account's disco#info has the pubsub/pep identity
    got = run(srv, "pep_avatar")
    assert got == {"notified": ["image/png"], "id": True, "image": True, "nbytes": 56}
