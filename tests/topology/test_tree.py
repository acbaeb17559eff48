"""topology.tree and topology.fanout."""

import pytest
from hypothesis import given, strategies as st

from topology.fanout import links_for, links_for_all
from topology.tree import LoopDetected, Tree, UnknownServer, render_map

#   001 hub
#   |- 002 a
#   |  |- 004 c
#   |  `- 005 d
#   |     `- 007 f
#   `- 003 b
#      `- 006 e


def seven() -> Tree:
    t = Tree("001", "hub.test")
    for sid, name, parent in [("002", "a.test", "001"), ("003", "b.test", "001"), ("004", "c.test", "002"),
                              ("005", "d.test", "002"), ("006", "e.test", "003"), ("007", "f.test", "005")]:
        t.add_server(sid, name, parent, t.server(parent).depth + 1, f"server {name}")
    return t


def test_structure():
    t = seven()
    assert len(t) == 7 and t.servers()[0] == "001"
    assert t.neighbours() == ["002", "003"]
    assert t.children("002") == ["004", "005"] and t.children("007") == []
    assert t.server("007").depth == 3 and t.server("007").parent == "005"
    assert t.by_name("F.TEST").id == "007" and t.by_name("nope.test") is None
    assert "004" in t and "099" not in t


def test_routes():
    t = seven()
    assert t.link_of("001") is None
    assert {s: t.link_of(s) for s in t.servers()[1:]} == {
        "002": "002", "003": "003", "004": "002", "005": "002", "006": "003", "007": "002"}
    with pytest.raises(UnknownServer):
        t.link_of("099")


def test_path():
    t = seven()
    assert t.path("004", "006") == ["004", "002", "001", "003", "006"]
    assert t.path("007", "004") == ["007", "005", "002", "004"]
    assert t.path("001", "007") == ["001", "002", "005", "007"]
    assert t.path("005", "005") == ["005"]


@pytest.mark.parametrize("sid, name", [("004", "new.test"), ("001", "new.test"), ("0ZZ", "C.Test"),
                                       ("0ZZ", "hub.test")])
def test_loop_detected(sid, name):
    t = seven()
    with pytest.raises(LoopDetected, match="already exists") as err:
        t.add_server(sid, name, "006", 3)
    assert err.value.server_id == sid
    assert len(t) == 7


def test_add_under_unknown_parent():
    with pytest.raises(UnknownServer):
        seven().add_server("0ZZ", "z.test", "099", 1)


def test_remove_subtree_leaves_first():
    t = seven()
    removed = t.remove_subtree("002")
    assert sorted(removed) == ["002", "004", "005", "007"]
    assert removed[-1] == "002" and removed.index("007") < removed.index("005")
    assert t.servers() == ["001", "003", "006"] and t.neighbours() == ["003"]
    for sid in removed:
        assert sid not in t
        with pytest.raises(UnknownServer):
            t.link_of(sid)
    # The names are free again: the same servers may rejoin.
    t.add_server("0AA", "c.test", "006", 3)
    assert t.link_of("0AA") == "003"


def test_remove_leaf_and_refusals():
    t = seven()
    assert t.remove_subtree("007") == ["007"] and t.children("005") == []
    with pytest.raises(ValueError):
        t.remove_subtree("001")
    with pytest.raises(UnknownServer):
        t.remove_subtree("007")


def test_map():
    root = seven().map()
    assert (root.id, root.name, root.depth, [c.id for c in root.children]) == ("001", "hub.test", 0, ["002", "003"])
    f = root.children[0].children[1].children[0]
    assert (f.id, f.name, f.hops, f.depth, f.description) == ("007", "f.test", 3, 3, "server f.test")
    assert render_map(root) == "\n".join([
        "hub.test [001] hops 0",
        "|- a.test [002] hops 1",
        "|  |- c.test [004] hops 2",
        "|  `- d.test [005] hops 2",
        "|     `- f.test [007] hops 3",
        "`- b.test [003] hops 1",
        "   `- e.test [006] hops 2",
    ])


def test_map_sorts_children_by_name():
    t = Tree("001", "hub.test")
    t.add_server("002", "z.test", "001", 1)
    t.add_server("003", "a.test", "001", 1)
    assert [c.name for c in t.map().children] == ["a.test", "z.test"]


def test_fanout():
    t = seven()
    assert links_for(["004", "007", "005"], t) == {"002"}
    assert links_for(["004", "006", "001"], t) == {"002", "003"}
    assert links_for(["004", "006"], t, exclude_link="002") == {"003"}
    assert links_for(["007"], t, exclude_link="002") == set()
    assert links_for(["001"], t) == set() and links_for([], t) == set()
    assert links_for_all(t) == {"002", "003"}
    assert links_for_all(t, exclude_link="003") == {"002"}
    with pytest.raises(UnknownServer):
        links_for(["099"], t)


def sid(i: int) -> str:
    return f"{i // 100}{i // 10 % 10}{i % 10}"


@st.composite
def trees(draw):
    """A random tree: server i > 1 hangs under a random earlier one."""
    n = draw(st.integers(1, 40))
    t = Tree(sid(1), "s1.test")
    for i in range(2, n + 1):
        parent = sid(draw(st.integers(1, i - 1)))
        t.add_server(sid(i), f"s{i}.test", parent, t.server(parent).depth + 1)
    return t


@given(trees())
def test_route_is_first_hop_of_path(t):
    for s in t.servers():
        p = t.path(t.me, s)
        assert t.link_of(s) == (p[1] if len(p) > 1 else None)
        assert t.path(s, t.me) == p[::-1]
        assert len(p) == t.server(s).depth + 1


@given(trees(), st.data())
def test_remove_subtree_keeps_the_rest_intact(t, data):
    others = t.servers()[1:]
    if not others:
        return
    victim = data.draw(st.sampled_from(others))
    behind = {s for s in t.servers() if victim in t.path(t.me, s)}
    before = {s: t.link_of(s) for s in t.servers()}
    parent = {s: t.server(s).parent for s in behind}
    removed = t.remove_subtree(victim)
    assert set(removed) == behind and len(removed) == len(behind)
    # Leaves first: every server comes before its parent.
    position = {s: i for i, s in enumerate(removed)}
    assert all(position[s] < position[parent[s]] for s in behind - {victim})
    assert {s: t.link_of(s) for s in t.servers()} == {s: r for s, r in before.items() if s not in behind}
    assert sum(len(t.children(s)) for s in t.servers()) == len(t) - 1


@given(trees(), st.data())
def test_fanout_matches_paths(t, data):
    needing = data.draw(st.lists(st.sampled_from(t.servers())))
    exclude = data.draw(st.sampled_from([None, *t.neighbours()]))
    links = links_for(needing, t, exclude)
    assert exclude not in links
    assert links == {t.path(t.me, s)[1] for s in needing if s != t.me} - {exclude}
    assert links <= set(t.neighbours())
