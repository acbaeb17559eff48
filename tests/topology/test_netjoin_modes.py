"""What clients see of a netjoin's merged channel: the JOINs, then one MODE line per change made by
the merge (statuses, flags, key, limit, lists), in a netjoin batch for clients with `batch`."""

import re

import pytest
from support_net import Wire


def batched(lines: list[str]) -> tuple[str, list[str]]:
    """The lines of the one netjoin batch in `lines` (its tag stripped), and its `near far`."""
    opened = [l for l in lines if " BATCH +" in l]
    assert len(opened) == 1, lines
    ref, kind, params = re.match(r":\S+ BATCH \+(\S+) (\S+) (.*)", opened[0]).groups()
    assert kind == "netjoin"
    start, end = lines.index(opened[0]), next(i for i, l in enumerate(lines) if l.endswith(f" BATCH -{ref}"))
    inside = [l.split(" ", 1) for l in lines[start + 1:end]]
    assert all(tags.startswith("@") and f"batch={ref}" in tags[1:].split(";") for tags, _ in inside), inside
    assert not any(f"batch={ref}" in l for l in lines[:start] + lines[end + 1:])
    return params, [line for _, line in inside]


def relink(w: Wire, direction: str) -> None:
    if direction == "c dials b":
        w.link("c", "b")
    else:
        w.link("b", "c")


@pytest.mark.parametrize("direction", ["c dials b", "b dials c"])
def test_ops_shown_after_a_relink_past_the_hold(tmp_path, direction):
    w = Wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    w.link("c", "b")
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("CAP REQ :batch", "JOIN #ops")
    carol.send("JOIN #ops")
    alice.send("MODE #ops +o carol")
    w.unlink("c", "b")
    w.tick(31.0)                                   # the hold expires: each side sees the other QUIT
    alice.t.out.clear()
    carol.t.out.clear()
    relink(w, direction)
    params, inside = batched(alice.t.take())
    assert params == "b.test c.test"
    assert inside == [":carol!~carol@127.0.0.1 JOIN #ops", ":a.test MODE #ops +o carol"]
    # carol has no batch cap: the same lines, untagged and unbatched.
    assert carol.t.take() == [":alice!~alice@127.0.0.1 JOIN #ops", ":c.test MODE #ops +o alice"]
    ch = w.cores["a"].net.find_channel("#ops")
    assert {u.nick: st for u, st in ch.members.items()} == {"alice": "o", "carol": "o"}
    assert len(w.digests()) == 1


@pytest.mark.parametrize("direction", ["c dials b", "b dials c"])
def test_channel_created_on_both_sides_at_the_same_second(tmp_path, direction):
    w = Wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    aop, cop = w.client("a", "aop"), w.client("c", "cop")
    aop.send("CAP REQ :batch")
    aop.send("JOIN #both", "MODE #both +m")
    cop.send("JOIN #both", "MODE #both +v cop")
    aop.t.out.clear()
    cop.t.out.clear()
    relink(w, direction)                           # equal ts: statuses and modes merge
    params, inside = batched(aop.t.take())
    assert params == "b.test c.test"
    assert inside == [":cop!~cop@127.0.0.1 JOIN #both", ":a.test MODE #both +o cop", ":a.test MODE #both +v cop"]
    assert cop.t.take() == [":aop!~aop@127.0.0.1 JOIN #both", ":c.test MODE #both +m",
                            ":c.test MODE #both +o aop"]
    assert len(w.digests()) == 1


@pytest.mark.parametrize("direction", ["c dials b", "b dials c"])
def test_younger_side_sees_its_ops_and_modes_replaced(tmp_path, direction):
    w = Wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    alice = w.client("a", "alice")
    alice.send("JOIN #m", "MODE #m +mkl akey 5", "MODE #m +b *!*@a.example")
    w.now += 100
    carol = w.client("c", "carol")
    carol.send("CAP REQ :batch server-time")
    carol.send("JOIN #m", "MODE #m +ik ckey", "MODE #m +b *!*@c.example")
    alice.t.out.clear()
    carol.t.out.clear()
    relink(w, direction)                           # a's #m is older: c's side loses
    params, inside = batched(carol.t.take())
    assert params == "c.test b.test"
    assert inside == [":alice!~alice@127.0.0.1 JOIN #m",
                      ":c.test MODE #m -i", ":c.test MODE #m -b *!*@c.example", ":c.test MODE #m -o carol",
                      ":c.test MODE #m +m", ":c.test MODE #m +k akey", ":c.test MODE #m +l 5",
                      ":c.test MODE #m +b *!*@a.example", ":c.test MODE #m +o alice"]
    assert alice.t.take() == [":carol!~carol@127.0.0.1 JOIN #m"]     # the winner's view: only the join
    for core in w.cores.values():
        ch = core.net.find_channel("#m")
        assert (ch.modes, ch.key, ch.limit) == ({"m", "n", "t"}, "akey", 5)
        assert [b.mask for b in ch.lists["b"]] == ["*!*@a.example"]
    assert len(w.digests()) == 1


def test_held_users_returning_unchanged_show_nothing(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    w.link("c", "b")
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("CAP REQ :batch", "JOIN #ops")
    carol.send("JOIN #ops")
    alice.send("MODE #ops +o carol")
    w.unlink("c", "b")
    w.now += 5                                     # inside the hold
    alice.t.out.clear()
    w.link("c", "b")
    assert alice.t.take() == []
    assert len(w.digests()) == 1
