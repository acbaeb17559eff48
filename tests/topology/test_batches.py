"""Netsplit and netjoin batches are neutral events (relay.core.model.Batch) that IRC renders as BATCH."""

import re

from support_net import Wire

from relay.core.model import NETSPLIT, Batch, BatchEnded, BatchStarted, UserQuit


def test_a_netsplit_batch_opens_holds_the_quits_and_closes(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"], split_hold=0)
    w.link("a", "b")
    w.link("c", "b")
    alice, plain, carol = w.client("a", "alice"), w.client("a", "plain"), w.client("c", "carol")
    alice.send("CAP REQ :batch", "JOIN #s")
    plain.send("JOIN #s")
    carol.send("JOIN #s")
    alice.t.out.clear()
    plain.t.out.clear()
    w.unlink("b", "c")
    lines = alice.t.take()
    assert len(lines) == 3, lines
    ref = re.fullmatch(r":a\.test BATCH \+(NSc[0-9a-f]+) netsplit b\.test c\.test", lines[0]).group(1)
    assert lines[1:] == [f"@batch={ref} :carol!~carol@127.0.0.1 QUIT :b.test c.test", f":a.test BATCH -{ref}"]
    # Without the batch capability: the quit alone.
    assert plain.t.take() == [":carol!~carol@127.0.0.1 QUIT :b.test c.test"]


def test_the_events_name_the_batch_and_other_sessions_just_see_events(tmp_path):
    w = Wire(tmp_path, ["a", "b"], split_hold=0)
    w.link("a", "b")
    alice, bob = w.client("a", "alice"), w.client("b", "bob")
    alice.send("JOIN #s")
    bob.send("JOIN #s")
    seen = []
    alice.session.deliver = seen.append          # a session of any protocol: it is told the events
    w.unlink("a", "b")
    kinds = [type(e) for e in seen]
    assert kinds == [BatchStarted, UserQuit, BatchEnded], seen
    b = seen[0].batch
    assert isinstance(b, Batch) and (b.kind, b.near, b.far) == (NETSPLIT, "a.test", "b.test")
    assert seen[1].batch is b and seen[2].batch is b


def test_a_netjoin_batch_is_only_for_clients_with_batch(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    alice, plain, bob = w.client("a", "alice"), w.client("a", "plain"), w.client("b", "bob")
    alice.send("CAP REQ :batch", "JOIN #j")
    plain.send("JOIN #j")
    bob.send("JOIN #j")
    alice.t.out.clear()
    plain.t.out.clear()
    w.link("a", "b")
    lines = alice.t.take()
    ref = re.fullmatch(r":a\.test BATCH \+(NJ[0-9a-f]+) netjoin a\.test b\.test", lines[0]).group(1)
    # Created at the same second on both sides: the statuses merge, so bob is an operator too.
    assert lines[1:] == [f"@batch={ref} :bob!~bob@127.0.0.1 JOIN #j", f"@batch={ref} :a.test MODE #j +o bob",
                         f":a.test BATCH -{ref}"]
    assert plain.t.take() == [":bob!~bob@127.0.0.1 JOIN #j", ":a.test MODE #j +o bob"]
