"""The core's topic service (relay/core/topic_service.py): time passed in, no sockets.

One core for matching, retained items, expiry, persistence, access and shared groups;
several in-memory cores (support_net.Wire) for the federation over the tree: a publish
crosses each link once and only towards servers with matching subscribers, a late
joiner gets the retained items, a held split and its return lose nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from support_net import Wire

from relay.core.config import parse
from relay.core.interfaces import TopicSubscriber
from relay.core.server import Core
from relay.core.topic_acl import TopicAcl
from relay.core.topics import TopicItem

T0 = 1_000_000.0


class Probe(TopicSubscriber):
    """A test-only protocol's subscriber: records what it is handed."""

    def __init__(self, name: str, online: bool = True, refuse: set[str] | None = None):
        self.name, self.online, self.refuse = name, online, refuse or set()
        self.got: list[tuple[str, bytes, list, float]] = []

    def accepts(self, item) -> bool:
        return item.topic not in self.refuse

    def item_published(self, item, options, now):
        self.got.append((item.topic, item.payload, list(options), now))

    def topics(self) -> list[str]:
        return [g[0] for g in self.got]

    def __repr__(self) -> str:
        return f"<Probe {self.name}>"


class MemoryPersistence:
    def __init__(self):
        self.rows: dict[str, bytes] = {}

    def set_retained(self, item):
        self.rows[item.topic] = item.payload

    def delete_retained(self, topic):
        self.rows.pop(topic, None)


@pytest.fixture
def core(tmp_path):
    c = Core(parse({"server": {"id": "001", "name": "a.test"}, "data_dir": str(tmp_path)}), T0)
    yield c
    c.storage.close()


def test_the_core_provides_the_service(core):
    assert core.services["topics"] is core.topics


def test_a_subscriber_matching_through_several_filters_gets_one_call_with_every_option(core):
    svc = core.topics
    p, q = Probe("p"), Probe("q")
    assert svc.subscribe("a/+", p, "plus") is True
    assert svc.subscribe("a/#", p, "hash") is True
    assert svc.subscribe("a/#", p, "hash2") is False        # replaced, not added
    svc.subscribe("b/#", q, None)
    n = svc.publish(TopicItem("a/x", b"1"), T0 + 1)
    assert n == 1
    assert [(t, pl, sorted(o), at) for t, pl, o, at in p.got] == [("a/x", b"1", ["hash2", "plus"], T0 + 1)]
    assert q.got == []
    assert svc.filter_refs == {"a/+": 1, "a/#": 1, "b/#": 1}
    assert svc.unsubscribe("a/+", p) and not svc.unsubscribe("a/+", p)
    svc.publish(TopicItem("a/y", b"2"), T0 + 2)
    assert p.got[1][2] == ["hash2"]
    assert "a/+" not in svc.filter_refs


def test_dollar_topics_are_not_matched_by_leading_wildcards(core):
    p = Probe("p")
    core.topics.subscribe("#", p)
    core.topics.publish(TopicItem("$SYS/x", b"1"), T0)
    assert p.got == []


def test_retained_items_last_item_per_topic_expiry_and_persistence(core):
    svc = core.topics
    store = svc.persistence = MemoryPersistence()
    svc.publish(TopicItem("r/1", b"old", retain=True), T0)
    svc.publish(TopicItem("r/1", b"new", retain=True), T0)
    svc.publish(TopicItem("r/2", b"short", retain=True, expires=T0 + 5), T0)
    svc.publish(TopicItem("$SYS/up", b"1", retain=True), T0)      # local: kept, never stored
    assert store.rows == {"r/1": b"new", "r/2": b"short"}
    assert [(t, i.payload) for t, i in sorted(svc.retained_matching("r/#", T0 + 1))] == [
        ("r/1", b"new"), ("r/2", b"short")]
    assert svc.retained.get("r/1").retain is True
    # Expired: dropped when asked for it, and by the sweep.
    assert [t for t, _ in svc.retained_matching("r/#", T0 + 5)] == ["r/1"]
    assert "r/2" not in store.rows
    svc.publish(TopicItem("r/3", b"x", retain=True, expires=T0 + 7), T0 + 6)
    svc.expire_retained(T0 + 6.5)
    assert "r/3" in svc.retained
    svc.expire_retained(T0 + 7)
    assert "r/3" not in svc.retained and "r/3" not in store.rows
    # An empty payload clears the topic.
    svc.publish(TopicItem("r/1", b"", retain=True), T0 + 8)
    assert "r/1" not in svc.retained and store.rows == {}
    assert "$SYS/up" in svc.retained
    # Read back from storage: not written again; an expired one is refused.
    assert svc.restore_retained(TopicItem("s/1", b"kept", retain=True), T0 + 9)
    assert not svc.restore_retained(TopicItem("s/2", b"gone", retain=True, expires=T0), T0 + 9)
    assert "s/1" in svc.retained and "s/2" not in svc.retained and store.rows == {}


def test_one_access_check_for_every_protocol(core):
    svc = core.topics
    assert svc.may_publish("any/thing", None, "c", None, None)      # no rules configured: allowed
    rules = [SimpleNamespace(action="subscribe", topic="users/%u/#", allow=True, who="all"),
             SimpleNamespace(action="all", topic="users/#", allow=False, who="all")]
    svc.acl = TopicAcl(rules, True, lambda who, account, ip: True)
    assert svc.may_subscribe("users/ann/inbox", "ann", "c1", "ann", None)
    assert not svc.may_subscribe("users/bob/inbox", "ann", "c1", "ann", None)
    assert not svc.may_publish("users/ann/inbox", "ann", "c1", "ann", None)
    assert svc.may_publish("news/x", "ann", "c1", "ann", None)


def test_topic_published_hook_sees_every_item(core):
    seen = []
    core.hooks.add("topic_published", lambda item, origin, now: seen.append((item.topic, origin, now)))
    core.topics.publish(TopicItem("h/1", b"x"), T0 + 3)
    assert seen == [("h/1", None, T0 + 3)]


def test_shared_group_round_robin_prefers_online_members_and_skips_refusing_ones(core):
    svc = core.topics
    a, b, off = Probe("a"), Probe("b"), Probe("off", online=False)
    for p in (a, off, b):
        svc.subscribe("$share/g/jobs/#", p, p.name)
    assert svc.filter_refs == {"$share/g/jobs/#": 3}
    for i in range(4):
        svc.publish(TopicItem(f"jobs/{i}", b"j"), T0)
    assert len(a.got) == 2 and len(b.got) == 2 and off.got == []
    b.refuse.add("jobs/x")
    a.refuse.add("jobs/x")
    svc.publish(TopicItem("jobs/x", b"j"), T0)      # only the offline member is left: it gets it
    assert off.topics() == ["jobs/x"]
    for p in (a, off, b):
        svc.unsubscribe("$share/g/jobs/#", p)
    assert svc.shared == {} and svc.filter_refs == {} and len(svc.tree) == 0


def test_invalid_filters_are_refused(core):
    with pytest.raises(ValueError):
        core.topics.subscribe("a/#/b", Probe("p"))
    with pytest.raises(ValueError):
        core.topics.subscribe("$share//x", Probe("p"))


# ---------------------------------------------------------------------- across the tree

def chain(tmp_path, names=("a", "b", "c"), **overrides) -> Wire:
    w = Wire(tmp_path, list(names), **overrides)
    for core in w.cores.values():
        core.topics.enable_federation(w.now)
    return w


def encap(w: Wire) -> dict[tuple[str, str], int]:
    """Module frames sent on every link so far, per (from, to)."""
    out = {}
    for a in w.cores:
        for b in w.cores:
            if a != b:
                try:
                    out[(a, b)] = w.frames(a, b, "ENCAP")
                except StopIteration:
                    pass
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def test_a_publish_crosses_each_link_once_and_only_towards_subscribers(tmp_path):
    w = chain(tmp_path, ("a", "b", "c", "d"))
    w.link("a", "b")
    w.link("b", "c")
    w.link("b", "d")
    far = Probe("far")
    w.cores["c"].topics.subscribe("sensors/+/temp", far, "opt")
    w.tick(0.3)                                      # the debounced filter-set announcement
    assert w.cores["a"].topics.fed.sets["003"][1] == {"sensors/+/temp"}
    before = encap(w)
    w.cores["a"].topics.publish(TopicItem("sensors/1/temp", b"21.5", qos=1), w.now)
    w.pump()
    assert delta(before, encap(w)) == {("a", "b"): 1, ("b", "c"): 1}     # not towards d
    assert [(t, p, o) for t, p, o, _ in far.got] == [("sensors/1/temp", b"21.5", ["opt"])]
    before = encap(w)
    w.cores["a"].topics.publish(TopicItem("other/x", b"nobody"), w.now)
    w.pump()
    assert delta(before, encap(w)) == {}
    # A subscriber on b as well: still once per link, b delivers and c too.
    near = Probe("near")
    w.cores["b"].topics.subscribe("sensors/#", near)
    w.tick(0.3)
    before = encap(w)
    w.cores["a"].topics.publish(TopicItem("sensors/2/temp", b"22"), w.now)
    w.pump()
    assert delta(before, encap(w)) == {("a", "b"): 1, ("b", "c"): 1}
    assert near.topics() == ["sensors/2/temp"] and far.topics() == ["sensors/1/temp", "sensors/2/temp"]
    # Unsubscribed: nothing is forwarded any more.
    w.cores["c"].topics.unsubscribe("sensors/+/temp", far)
    w.cores["b"].topics.unsubscribe("sensors/#", near)
    w.tick(0.3)
    before = encap(w)
    w.cores["a"].topics.publish(TopicItem("sensors/3/temp", b"x"), w.now)
    w.pump()
    assert delta(before, encap(w)) == {}


def test_item_metadata_and_ids_cross_the_tree(tmp_path):
    w = chain(tmp_path, ("a", "b"))
    w.link("a", "b")
    p = Probe("p")
    got = []
    p.item_published = lambda item, options, now: got.append(item)
    w.cores["b"].topics.subscribe("m/#", p)
    w.tick(0.3)
    w.cores["a"].topics.publish(TopicItem("m/1", b"\x00\xff", 1, False, {"corr": b"\x01\x02", "n": 3},
                                          expires=w.now + 60, publisher="alice", item_id="it-1"), w.now)
    w.pump()
    [item] = got
    assert (item.payload, item.qos, item.metadata, item.item_id) == (b"\x00\xff", 1, {"corr": b"\x01\x02", "n": 3},
                                                                      "it-1")
    assert item.expires == pytest.approx(w.now + 60, abs=1)


def test_retained_items_reach_a_server_that_joins_later(tmp_path):
    w = chain(tmp_path)
    w.link("a", "b")
    w.cores["a"].topics.publish(TopicItem("state/door", b"open", retain=True), w.now)
    w.pump()
    assert w.cores["b"].topics.retained.get("state/door").payload == b"open"
    assert w.cores["c"].topics.retained.get("state/door") is None
    late = Probe("late")
    w.link("c", "b")
    # Stored as c's last item, never delivered as a publish; a new subscriber there gets it.
    w.cores["c"].topics.subscribe("state/#", late)
    assert late.got == []
    assert [(t, i.payload) for t, i in w.cores["c"].topics.retained_matching("state/#", w.now)] == [
        ("state/door", b"open")]


def test_a_held_split_keeps_the_filters_and_the_return_delivers_what_was_published(tmp_path):
    w = chain(tmp_path, split_hold=30)
    w.link("a", "b")
    w.link("c", "b")
    far = Probe("far")
    w.cores["c"].topics.subscribe("news/#", far)
    w.tick(0.3)
    w.unlink("c", "b")
    assert "003" in w.cores["a"].topics.fed.sets         # held: kept while c may return
    w.cores["a"].topics.publish(TopicItem("news/1", b"during"), w.now)
    w.pump()
    for _ in range(5):
        w.tick(1.0)
    assert far.got == []
    w.link("c", "b")
    assert far.topics() == ["news/1"]                  # replayed once on return
    for _ in range(5):
        w.tick(1.0)
    assert far.topics() == ["news/1"]
    w.cores["a"].topics.publish(TopicItem("news/2", b"after"), w.now)
    w.pump()
    assert far.topics() == ["news/1", "news/2"]


def test_servers_gone_for_good_are_forgotten(tmp_path):
    w = chain(tmp_path, split_hold=2, replay={"max_frames": 10000, "max_age": 5})
    w.link("a", "b")
    far = Probe("far")
    w.cores["b"].topics.subscribe("news/#", far)
    w.tick(0.3)
    assert "002" in w.cores["a"].topics.fed.sets
    w.unlink("a", "b")
    for _ in range(5):
        w.tick(1.0)
    assert "002" not in w.cores["a"].topics.fed.sets
    assert w.cores["a"].topics.fed.tree.match("news/x") == []


@pytest.mark.parametrize("payload", [
    {},                                                   # no topic
    {"topic": 7, "payload_b64": ""},
    {"topic": "", "payload_b64": ""},
    {"topic": "t/1", "payload_b64": "!!not base64!!"},
    {"topic": "t/1", "qos": "high"},
    {"topic": "t/1", "qos": [1]},
    {"topic": "t/1", "props": "not an object"},
    {"topic": "t/1", "props": {"x": {"b64": "%%%"}}},
    {"topic": "t/1", "shares": ["not", "a", "map"]},
    {"topic": "t/1", "shares": {"001": "not-a-list"}},
    {"topic": "t/1", "shares": {"001": [1, 2]}},
    {"topic": "t/1", "expiry": "soon"},
    {"topic": "a/#/b"},                                   # not a topic name
])
def test_malformed_frames_from_a_peer_are_dropped_and_the_service_keeps_running(core, payload):
    svc = core.topics
    svc.enable_federation(T0)
    p = Probe("p")
    svc.subscribe("t/#", p)
    svc.subscribe("$share/g/t/#", Probe("member"))
    wild = Probe("wild")
    svc.subscribe("a/#", wild)
    assert svc.fed.on_extension("MQTT_PUB", "002", payload) is True
    assert wild.got == []                                  # a wildcard is no topic name
    assert svc.fed.on_extension("MQTT_SUB", "002", {"server": "002", "filters": [1, "a/#/b", "ok/#"],
                                                    "ver": [1.0, 1]}) is True
    assert svc.fed.sets["002"][1] == {"a/#/b", "ok/#"} and svc.fed.tree.match("ok/1") == [("002", None)]
    svc.publish(TopicItem("t/2", b"fine"), T0)
    assert p.topics()[-1] == "t/2"
