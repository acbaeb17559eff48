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


def test_split_quits_remote_users_with_near_far_reason(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"], split_hold=0)
    w.link("a", "b")
    w.link("c", "b")
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
    assert w.cores["b"].links.tree.by_name("c.test") is None
    assert "Ping timeout" in w.cores["b"].links.last_error["c.test"]


def test_irc_operator_link_commands(chain, tmp_path):
    w = chain
    alice = w.client("a", "alice")
    alice.send("LINKS")
    lines = alice.t.take()
    assert sum(" 364 " in l for l in lines) == 3 and any(" 365 " in l for l in lines)
    alice.send("MAP")
    assert any(" 015 " in l and "c.test [003]" in l for l in alice.t.take())
    alice.send("SQUIT b.test")
    assert any(" 481 " in l for l in alice.t.take())  # operators only
    alice.user.modes.add("o")
    alice.send("SQUIT b.test :maintenance")
    assert any("unlinked b.test" in l for l in alice.t.take())
    assert len(w.cores["a"].links.tree) == 1
    alice.send("CONNECT b.test")
    assert any("connecting to b.test" in l for l in alice.t.take())
    assert len(w.cores["a"].links.tree) == 3
    alice.send("CONNECT nowhere.test")
    assert any(" 402 " in l for l in alice.t.take())


# ---------------------------------------------------------------- split-hold, replay (netsplit/)

def test_short_split_shows_nothing_and_loses_no_message(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("CAP REQ :server-time", "JOIN #h")
    carol.send("JOIN #h")
    digest = w.digests()
    alice.t.out.clear()
    carol.t.out.clear()
    w.unlink("c", "b")                               # split: carol is held on a and b
    assert w.cores["a"].net.find_nick("carol") is not None
    alice.send("NICK carol")                          # her nick stays reserved
    assert any(" 433 " in l for l in alice.t.take())
    sent_at = w.now
    for i in range(5):
        alice.send(f"PRIVMSG #h :during split {i}")
    carol.send("PRIVMSG #h :from the other side")
    w.now += 10                                       # within the 30 s window
    w.link("c", "b")
    got = [l for l in carol.t.take() if "PRIVMSG" in l]
    assert [l.split(" PRIVMSG #h ", 1)[1].lstrip(":") for l in got] == [f"during split {i}" for i in range(5)]
    lines = alice.t.take()
    assert not any("QUIT" in l or "JOIN" in l for l in lines), lines   # nobody left, nobody rejoined
    replayed = [l for l in lines if "PRIVMSG #h" in l]
    assert len(replayed) == 1 and "from the other side" in replayed[0]
    assert replayed[0].startswith("@time=")                             # original server-time kept
    assert w.digests() == digest
    # Nothing twice: another round trip sees exactly the new message.
    alice.send("PRIVMSG #h :after")
    assert [l for l in carol.t.take() if "PRIVMSG" in l][-1].endswith("after")


def test_split_hold_expires_into_quits(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("CAP REQ :batch", "JOIN #h")
    carol.send("JOIN #h")
    alice.t.out.clear()
    w.unlink("c", "b")
    assert not any("QUIT" in l for l in alice.t.take())
    w.tick(29.0)
    assert not any("QUIT" in l for l in alice.t.take())
    w.tick(2.0)
    lines = alice.t.take()
    assert any("carol" in l and l.endswith("QUIT :b.test c.test") for l in lines), lines
    assert any("BATCH +" in l and "netsplit b.test c.test" in l for l in lines)
    assert w.cores["a"].net.find_nick("carol") is None


def test_changes_during_a_short_split_are_all_that_clients_see(chain):
    w = chain
    alice, carol, dave = w.client("a", "alice"), w.client("c", "carol"), w.client("c", "dave")
    alice.send("JOIN #h,#k")
    carol.send("JOIN #h,#k")
    dave.send("JOIN #h")
    alice.t.out.clear()
    w.unlink("c", "b")
    dave.send("QUIT :bye")           # left during the split
    carol.send("PART #k")            # parted during the split
    carol.send("AWAY :gone fishing")
    w.now += 5
    w.link("c", "b")
    lines = alice.t.take()
    assert any("dave" in l and "QUIT" in l for l in lines)
    assert any("carol" in l and "PART #k" in l for l in lines)
    assert not any("carol" in l and ("QUIT" in l or "JOIN" in l) for l in lines), lines
    assert w.cores["a"].net.find_nick("carol").away == "gone fishing"
    assert len(w.digests()) == 1


def test_replay_outside_the_window_is_counted_not_silent(tmp_path):
    w = Wire(tmp_path, ["a", "b"], replay={"max_frames": 3, "max_age": 60})
    w.link("b", "a")
    alice, bob = w.client("a", "alice"), w.client("b", "bob")
    alice.send("JOIN #r")
    bob.send("JOIN #r")
    w.unlink("b", "a")
    for i in range(10):
        alice.send(f"PRIVMSG #r :m{i}")
    bob.t.out.clear()
    w.link("b", "a")
    got = [l for l in bob.t.take() if "PRIVMSG #r" in l]
    assert [l.rsplit(" ", 1)[1].lstrip(":") for l in got] == ["m7", "m8", "m9"]
    stats = w.cores["a"].links.policy.stats
    assert stats["replay_gaps"] == 1 and stats["replay_lost_frames"] == 7


def test_split_riding_gains_no_ops(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.send("JOIN #own")                       # alice founded it: @alice everywhere
    carol.send("JOIN #own")
    w.unlink("c", "b")
    w.tick(31.0)                                  # the split outlasts the hold: alice QUITs on c
    ch_c = w.cores["c"].net.find_channel("#own")
    assert [u.nick for u in ch_c.members] == ["carol"]
    carol.send("PART #own", "JOIN #own")          # re-creates it on c: @carol with a newer ts
    assert w.cores["c"].net.find_channel("#own").members[carol.user] == "o"
    w.link("c", "b")
    for core in w.cores.values():
        ch = core.net.find_channel("#own")
        assert {u.nick: st for u, st in ch.members.items()} == {"alice": "o", "carol": ""}
    assert any(" MODE #own -" in l and "o" in l.split()[3] and l.endswith(" carol") for l in carol.t.lines())
    assert len(w.digests()) == 1


def test_anti_entropy_verify_round(chain):
    w = chain
    w.client("a", "alice").send("JOIN #v")
    w.client("c", "carol").send("JOIN #v")
    v = w.cores["a"].modules.loaded["netsplit"]
    from relay.core.builtin_admin import AdminContext
    ctx = AdminContext(w.cores["a"], w.now)
    rid = w.cores["a"].admin.dispatch(["verify", "start"], ctx).data["round"]
    w.pump()
    res = w.cores["a"].admin.dispatch(["verify", "result", str(rid)], ctx).data
    assert res["complete"] and res["converged"] and len(res["answers"]) == 3
    # Corrupt c's state behind the protocol's back: the next round names it.
    w.cores["c"].net.find_channel("#v").topic = "drifted"
    rid = w.cores["a"].admin.dispatch(["verify", "start"], ctx).data["round"]
    w.pump()
    res = w.cores["a"].admin.dispatch(["verify", "result", str(rid)], ctx).data
    assert res["differ"] == ["c.test"] and not res["converged"]


def test_kill_of_a_remote_user_closes_it_on_its_own_server(chain):
    w = chain
    alice, carol = w.client("a", "alice"), w.client("c", "carol")
    alice.user.modes.add("o")
    w.cores["a"].net.update_user(alice.user, "modes", w.now)
    w.pump()
    alice.send("KILL carol :spam")
    assert carol.t.closed
    assert any("ERROR" in l and "Killed (alice (spam))" in l for l in carol.t.lines())
    assert all(c.net.find_nick("carol") is None for c in w.cores.values())
    assert len(w.digests()) == 1


def test_one_burst_returning_several_held_splits_keeps_every_membership(tmp_path):
    # x sits behind y. y loses z, then w, then x itself, so x holds three splits; y relinks
    # z and w, then x: one burst brings both held users back. Each keeps its channel.
    w = Wire(tmp_path, ["x", "y", "z", "v"])
    w.link("x", "y")
    w.link("z", "y")
    w.link("v", "y")
    xu, zu, vu = w.client("x", "xu"), w.client("z", "zu"), w.client("v", "vu")
    for c in (xu, zu, vu):
        c.send("JOIN #t")
    xu.t.out.clear()
    w.unlink("y", "z")
    w.unlink("y", "v")
    w.unlink("y", "x")
    assert len(w.cores["x"].links.policy.held) == 3 and w.cores["x"].net.find_nick("zu") is not None
    w.link("z", "y")
    w.link("v", "y")
    w.link("x", "y")
    assert len(w.digests()) == 1
    ch = w.cores["x"].net.find_channel("#t")
    assert sorted(u.nick for u in ch.members) == ["vu", "xu", "zu"]
    assert not any("PART" in l or "QUIT" in l or "JOIN" in l for l in xu.t.take())


def test_lusers_counts_stay_exact_across_mode_changes_links_and_quits(tmp_path):
    # Network.counts() keeps running totals (LUSERS must not scan every user per registration).
    w = Wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    cs = [w.client("ab"[i % 2], f"u{i}") for i in range(8)]

    def check():
        for core in w.cores.values():
            users = core.net.users.values()
            k = core.net.counts()
            assert k["invisible"] == sum("i" in u.modes for u in users)
            assert k["opers"] == sum("o" in u.modes for u in users)
            unknown = sum(1 for c in core.services["irc"].local if not c.registered)
            assert len(core.services["irc"].local) - core.services["irc"].registered == unknown

    for i, c in enumerate(cs):
        c.send(f"MODE u{i} +i" if i % 3 else f"MODE u{i} +iw")
    check()
    cs[1].send("MODE u1 -i")
    cs[2].send("QUIT :bye")
    check()
    w.unlink("a", "b")          # remote users held, then relinked: bursts carry their modes
    w.link("a", "b")
    check()
    pending = w.cores["a"].services["irc"].new_client(type(cs[0].t)(), None, w.now)
    pending.data_received(b"NICK half\r\n", w.now)       # connected, not registered
    check()
    lines = cs[0].t.take()
    cs[0].send("LUSERS")
    text = "\n".join(cs[0].t.take())
    assert " 253 u0 1 :unknown connection(s)" in text, text
    assert f"and {w.cores['a'].net.counts()['invisible']} invisible" in text
