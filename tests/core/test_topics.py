"""Topic names/filters, shared subscriptions, TopicTree and RetainedStore (MQTT 4.7, 4.8.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.topics import (
    RetainedStore, TopicTree, parse_shared, valid_topic_filter, valid_topic_name,
)


def naive_match(topic_filter: str, topic: str) -> bool:
    """Reference matcher straight from the spec's wording."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True                    # includes the parent level: i == len(t)
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


# -- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("f", ["#", "sport/tennis/#", "sport/#", "+", "+/tennis/#", "sport/+/player1",
                               "sport/+", "/+", "+/+", "/", "a//b", "$SYS/#", "$share/g/a",
                               "Accounts payable", "\u00e9/\U0002A6D4"])
def test_valid_filters(f):
    assert valid_topic_filter(f)


@pytest.mark.parametrize("f", ["", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "#/a",
                               "a/b+", "++", "a/##", "a\x00b", "x" * 65536, "a/\ud800"])
def test_invalid_filters(f):
    assert not valid_topic_filter(f)


@pytest.mark.parametrize("t", ["a", "/", "/finance", "sport/tennis/player1", "$SYS/x", "a b",
                               "x" * 65535])
def test_valid_names(t):
    assert valid_topic_name(t)


@pytest.mark.parametrize("t", ["", "a/+", "#", "a/#", "a\x00", "x" * 65536, "\u00e9" * 40000])
def test_invalid_names(t):
    assert not valid_topic_name(t)


# -- shared subscriptions ---------------------------------------------------------------------


@pytest.mark.parametrize("f,expected", [
    ("$share/consumer1/sport/tennis/+", ("consumer1", "sport/tennis/+")),
    ("$share/consumer2/sport/tennis/+", ("consumer2", "sport/tennis/+")),
    ("$share/g/#", ("g", "#")),
    ("$share/g//a", ("g", "/a")),
    ("$share/g/$SYS/x", ("g", "$SYS/x")),
    ("sport/tennis", None),
    ("$share", None),
    ("$shared/g/a", None),
    ("$SYS/#", None),
])
def test_parse_shared(f, expected):
    assert parse_shared(f) == expected


@pytest.mark.parametrize("f", ["$share/", "$share/g", "$share/g/", "$share//a", "$share/g+/a",
                               "$share/#/a", "$share/g/a/#/b", "$share/g/a+"])
def test_parse_shared_invalid(f):
    with pytest.raises(ValueError):
        parse_shared(f)


# -- TopicTree --------------------------------------------------------------------------------

# (filter, topic, matches) from MQTT 5.0 4.7.1.2, 4.7.1.3, 4.7.2 and 4.7.3
SPEC_TABLE = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/#", "sport", True),
    ("#", "sport/tennis/player1", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player2", False),
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("+", "$SYS", False),
    ("a/$SYS/#", "a/$SYS/x", True),
    ("+/$x", "a/$x", True),
    ("ACCOUNTS", "Accounts", False),
    ("Accounts payable", "Accounts payable", True),
    ("a/#", "a/", True),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("/", "/", True),
    ("+/+", "/", True),
]


@pytest.mark.parametrize("f,topic,expected", SPEC_TABLE)
def test_spec_table(f, topic, expected):
    assert naive_match(f, topic) == expected      # the reference agrees with the spec...
    tree = TopicTree()
    tree.subscribe(f, "k", 1)
    tree.subscribe("unrelated/filter", "other", 2)
    assert (tree.match(topic) == [("k", 1)]) == expected   # ...and so does the tree
    store = RetainedStore()
    store.set(topic, "v")
    store.set("unrelated/topic", "w")
    assert ((topic, "v") in store.match(f)) == expected
    assert (("unrelated/topic", "w") in store.match(f)) == naive_match(f, "unrelated/topic")


def test_subscribe_replace_unsubscribe_prune():
    tree = TopicTree()
    assert tree.subscribe("a/+/c", "c1", 0)
    assert not tree.subscribe("a/+/c", "c1", 1)    # replaced, not added
    assert tree.subscribe("a/+/c", "c2", 2)
    assert tree.subscribe("a/#", "c1", 3)
    assert len(tree) == 3
    assert sorted(tree.match("a/b/c")) == [("c1", 1), ("c1", 3), ("c2", 2)]
    assert tree.get("a/+/c", "c2") == 2
    assert tree.subscribers("a/+/c") == {"c1": 1, "c2": 2}
    assert sorted(tree.items()) == [("a/#", "c1", 3), ("a/+/c", "c1", 1), ("a/+/c", "c2", 2)]
    assert tree.unsubscribe("a/+/c", "c1")
    assert not tree.unsubscribe("a/+/c", "c1")
    assert not tree.unsubscribe("x/y", "c1")
    assert tree.unsubscribe("a/+/c", "c2")
    assert tree.unsubscribe("a/#", "c1")
    assert len(tree) == 0
    assert tree._root.children == {}               # no dead nodes left behind
    assert tree.match("a/b/c") == []


def test_subscribe_rejects_invalid_filter():
    with pytest.raises(ValueError):
        TopicTree().subscribe("a/#/b", "k")


def test_shared_filter_is_a_plain_filter_to_the_tree():
    # The broker stores '$share/g/f' under f (see parse_shared); stored verbatim it only
    # matches the literal topic, which proves the tree does not special-case it.
    tree = TopicTree()
    group, real = parse_shared("$share/g/s/+")
    tree.subscribe(real, ("g", "client"), None)
    assert tree.match("s/x") == [(("g", "client"), None)]


class _CountingDict(dict):
    """A trie node's children, counting the lookups match() makes (the nodes it visits)."""
    lookups = 0

    def get(self, key, default=None):
        _CountingDict.lookups += 1
        return super().get(key, default)


def _instrument(root) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        node.children = _CountingDict(node.children)
        stack.extend(node.children.values())


def test_match_is_not_a_linear_scan():
    tree = TopicTree()
    for i in range(20000):
        tree.subscribe(f"dev/{i}/temp", i)
        tree.subscribe(f"dev/{i}/+", i)
    tree.subscribe("dev/#", "all")
    _instrument(tree._root)
    _CountingDict.lookups = 0
    for i in range(200):
        assert len(tree.match(f"dev/{i}/temp")) == 3
    # Per match: at most '#', the literal level and '+' at each of the few nodes on the
    # topic's path (about a dozen lookups), whatever the 40001 stored filters.
    assert _CountingDict.lookups <= 200 * 15


# -- RetainedStore ----------------------------------------------------------------------------


def test_retained_store_basics():
    store = RetainedStore()
    store.set("a/b", 1)
    store.set("a/b", 2)
    store.set("a", 3)
    store.set("$SYS/x", 4)
    assert len(store) == 3 and "a/b" in store and "a/c" not in store
    assert store.get("a/b") == 2 and store.get("zz", "d") == "d"
    assert sorted(store.match("#")) == [("a", 3), ("a/b", 2)]
    assert sorted(store.match("a/#")) == [("a", 3), ("a/b", 2)]
    assert store.match("+/b") == [("a/b", 2)]
    assert store.match("$SYS/+") == [("$SYS/x", 4)]
    assert store.delete("a/b")
    assert not store.delete("a/b")
    assert not store.delete("nope")
    assert store.match("a/#") == [("a", 3)]
    assert store.delete("a") and store.delete("$SYS/x")
    assert len(store) == 0 and store._root.children == {}
    assert list(store.items()) == []


def test_retained_store_rejects_wildcard_topic():
    with pytest.raises(ValueError):
        RetainedStore().set("a/+", 1)


def test_retained_none_value_is_a_value():
    store = RetainedStore()
    store.set("a", None)
    assert "a" in store and store.match("a") == [("a", None)]


# -- property tests against the naive reference -------------------------------------------------

LEVELS = ["a", "b", "", "$SYS", "$x", "c"]
topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join).filter(bool)
filters = st.builds(
    lambda levels, tail: "/".join(levels + (["#"] if tail else [])) or "#",
    st.lists(st.sampled_from(LEVELS + ["+", "+"]), max_size=4), st.booleans(),
).filter(valid_topic_filter)


@settings(max_examples=300, deadline=None)
@given(subs=st.lists(st.tuples(filters, st.integers(0, 4)), max_size=25),
       unsubs=st.lists(st.tuples(filters, st.integers(0, 4)), max_size=10),
       probe=st.lists(topics, min_size=1, max_size=8))
def test_tree_matches_reference(subs, unsubs, probe):
    tree = TopicTree()
    model: dict[tuple[str, int], str] = {}
    for f, key in subs:
        tree.subscribe(f, key, f)
        model[(f, key)] = f
    for f, key in unsubs:
        assert tree.unsubscribe(f, key) == ((f, key) in model)
        model.pop((f, key), None)
    assert len(tree) == len(model)
    for topic in probe:
        want = sorted((key, f) for (f, key) in model if naive_match(f, topic))
        assert sorted(tree.match(topic)) == want, topic


@settings(max_examples=300, deadline=None)
@given(stored=st.lists(topics, max_size=25), deleted=st.lists(topics, max_size=10),
       probe=st.lists(filters, min_size=1, max_size=8))
def test_retained_matches_reference(stored, deleted, probe):
    store = RetainedStore()
    model: dict[str, int] = {}
    for i, topic in enumerate(stored):
        store.set(topic, i)
        model[topic] = i
    for topic in deleted:
        assert store.delete(topic) == (topic in model)
        model.pop(topic, None)
    assert len(store) == len(model) and sorted(store.items()) == sorted(model.items())
    for f in probe:
        want = sorted((t, v) for t, v in model.items() if naive_match(f, t))
        assert sorted(store.match(f)) == want, f
