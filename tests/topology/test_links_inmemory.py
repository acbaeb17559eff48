"""Several cores wired in memory: burst, routing once per link, loops, merges, splits."""

import pytest
from support_net import Wire


@pytest.fixture
def chain(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    w.link("c", "b")
    return w


def test_burst_gives_every_server_the_whole_network(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"])
    alice = w.client("a", "alice")
    alice.send("JOIN #x", "TOPIC #x :hello world", "MODE #x +k secret")
    carol = w.client("c", "carol")
    w.link("a", "b")
    w.link("c", "b")
    for core in w.cores.values():
        assert sorted(core.net.server_names.values()) == ["a.test", "b.test", "c.test"]
        assert {u.nick for u in core.net.users.values()} == {"alice", "carol"}
        ch = core.net.find_channel("#x")
        assert ch.topic == "hello world" and ch.key == "secret"
        assert [(u.nick, st) for u, st in ch.members.items()] == [("alice", "o")]
    assert len(w.digests()) == 1
    assert all(c.links.peers[next(iter(c.links.peers))].burst_done for c in w.cores.values())


def test_channel_message_crosses_only_links_with_members_behind_them(chain):
    w = chain
    alice, bob = w.client("a", "alice"), w.client("b", "bob")
    carol = w.client("c", "carol")
    alice.send("JOIN #room")
    bob.send("JOIN #room")
    carol.send("JOIN #other")
    for c in (alice, bob, carol):
        c.t.out.clear()
    alice.send("PRIVMSG #room one")
    assert w.frames("a", "b", "PRIVMSG") == 1
    assert w.frames("b", "c", "PRIVMSG") == 0          # nobody in #room behind c
    assert bob.t.take() == [":alice!~alice@127.0.0.1 PRIVMSG #room one"]
    assert carol.t.take() == []
    carol.send("JOIN #room")
    bob.t.out.clear()
    alice.send("PRIVMSG #room two")
    assert w.frames("a", "b", "PRIVMSG") == 2
    assert w.frames("b", "c", "PRIVMSG") == 1
    assert carol.t.take()[-1] == ":alice!~alice@127.0.0.1 PRIVMSG #room two"
    # A direct message follows the one route to its target.
    carol.send("PRIVMSG alice psst")
    assert w.frames("c", "b", "PRIVMSG") == 1 and w.frames("b", "a", "PRIVMSG") == 1
    assert alice.t.take()[-1] == ":carol!~carol@127.0.0.1 PRIVMSG alice psst"


def test_state_changes_reach_every_server_and_digests_converge(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("JOIN #s")
    carol.send("JOIN #s")
    alice.send("MODE #s +ov carol carol", "TOPIC #s :new topic", "AWAY :lunch", "NICK alicia")
    carol.send("PART #s :bye")
    for core in w.cores.values():
        ch = core.net.find_channel("#s")
        assert ch.topic == "new topic"
        assert [u.nick for u in ch.members] == ["alicia"]
        assert core.net.find_nick("alicia").away == "lunch"
    assert len(w.digests()) == 1


def test_loop_drops_the_link_that_introduced_it(chain):
    w = chain
    before = w.digests()
    w.link("a", "c")   # a already reaches c through b
    assert w.digests() == before
    for core in w.cores.values():
        assert len(core.net.server_names) == 3
    assert "a loop" in w.cores["c"].links.last_error.get("a.test", "") or \
        "a loop" in w.cores["a"].links.last_error.get("c.test", "")


def test_wrong_secret_is_refused_and_changes_nothing(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    w.link("a", "b", secret="not-the-secret")
    assert not w.cores["a"].links.peers and not w.cores["b"].links.peers
    assert "authentication failed" in " ".join(w.cores["b"].links.last_error.values())


def test_nick_collision_renames_the_younger_to_its_uid(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    old = w.client("a", "same")
    w.now += 10
    young = w.client("b", "same")
    young_uid = young.user.uid
    w.link("a", "b")
    for core in w.cores.values():
        assert core.net.find_nick("same").uid == old.user.uid
        assert core.net.find_nick(young_uid).uid == young_uid
    assert f":same!~same@127.0.0.1 NICK {young_uid}" in young.t.lines()
    assert len(w.digests()) == 1


def test_channel_ts_merge_older_wins_younger_loses_ops_keeps_members(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    early = w.client("a", "early")
    early.send("JOIN #dup", "MODE #dup +m")
    w.now += 100
    rider = w.client("b", "rider")
    rider.send("JOIN #dup", "MODE #dup +si")
    w.link("b", "a")
    for core in w.cores.values():
        ch = core.net.find_channel("#dup")
        members = {u.nick: st for u, st in ch.members.items()}
        assert members == {"early": "o", "rider": ""}
        assert ch.modes == {"n", "t", "m"}
    assert any("MODE #dup -i" in l or "-ist" in l or "-o rider" in l for l in rider.t.lines())
    assert len(w.digests()) == 1


def test_split_quits_remote_users_with_near_far_reason(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("CAP REQ :batch", "JOIN #s")
    carol.send("JOIN #s")
    alice.t.out.clear()
    w.unlink("b", "c")
    lines = alice.t.take()
    assert any(l.endswith("QUIT :b.test c.test") and "carol" in l for l in lines), lines
    assert any("BATCH +" in l and "netsplit b.test c.test" in l for l in lines)
    assert w.cores["a"].net.find_nick("carol") is None
    assert sorted(w.cores["a"].net.server_names.values()) == ["a.test", "b.test"]
    # Relink: converges again.
    w.link("c", "b")
    assert len(w.digests()) == 1
    assert w.cores["a"].net.find_nick("carol") is not None


def test_silent_link_is_dropped_after_the_timeout(chain):
    w = chain
    # Freeze c: it stops reading (nothing it receives is processed, nothing is answered).
    c_sessions = [s for s in w.cores["b"].links.peers.values() if s.peer_name == "c.test"]
    frozen = c_sessions[0]
    peer_end = frozen.t.other
    peer_end.session, saved = None, peer_end.session
    for _ in range(100):
        w.tick(1.0)
    assert "c.test" not in w.cores["b"].net.server_names.values()
    assert "Ping timeout" in w.cores["b"].links.last_error["c.test"]
