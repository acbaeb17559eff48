"""RPL_TOPICWHOTIME (333) names the setter by its full mask, on the setter's server and on every other:
the topic crosses links (live and in the burst) with the mask, in memory (tests/support_net.py)."""

from support_net import Wire


def _whotime(client, channel: str) -> list[str]:
    client.t.out.clear()
    client.send(f"TOPIC {channel}")
    return next(l for l in client.t.take() if " 333 " in l).split()[3:5]


def test_topicwhotime_carries_the_setters_mask_here_and_across_links(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"])
    alice = w.client("a", "alice")
    alice.send("JOIN #t", "TOPIC #t :set before the link")
    bob = w.client("b", "bob")
    w.link("a", "b")                      # the burst carries the topic
    bob.send("JOIN #t")
    assert _whotime(alice, "#t") == ["#t", "alice!~alice@127.0.0.1"]
    assert _whotime(bob, "#t") == ["#t", "alice!~alice@127.0.0.1"]
    alice.send("MODE #t -t")         # bob is no op
    w.pump()
    bob.send("TOPIC #t :set live by bob")  # a live TOPIC frame
    assert _whotime(alice, "#t") == ["#t", "bob!~bob@127.0.0.1"]
    carol = w.client("c", "carol")
    w.link("c", "b")                      # a burst relayed by b
    carol.send("JOIN #t")
    lines = carol.t.take()
    assert next(l for l in lines if " 333 " in l).split()[3:5] == ["#t", "bob!~bob@127.0.0.1"]
    assert len(w.digests()) == 1
