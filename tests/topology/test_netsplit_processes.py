"""Fault injection on real server processes: kill -9, SIGSTOP, repeated unlink/relink under traffic."""

import os
import signal
import subprocess
import threading
import time

import pytest
from support import RawClient, TreeNetwork, relayctl, wait_for

FAST_LINKS = {"linking": {"ping_interval": 0.5, "timeout": 2.0, "retry_min": 0.2, "retry_max": 1.0}}


@pytest.fixture
def tree3(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, **FAST_LINKS).start()
    yield net
    net.stop()


def client(net, server, nick, *channels, caps=None):
    c = RawClient(net[server].irc_port).register(nick, caps=caps)
    for ch in channels:
        c.send(f"JOIN {ch}")
        c.read_until(lambda l: " 366 " in l and ch in l)
    return c


def messages(c: RawClient, channel: str) -> list[str]:
    return [l.split(f" PRIVMSG {channel} ", 1)[1].lstrip(":") for l in c.lines if f" PRIVMSG {channel} " in l]


def drain(c: RawClient, until: str):
    c.read_until(until, timeout=20)


def test_kill_9_middle_server_and_restart(tree3):
    net = tree3
    alice = client(net, "a", "alice", "#k")
    carol = client(net, "c", "carol", "#k")
    net.wait_converged()
    os.kill(net["b"].pid(), signal.SIGKILL)
    # a and c each lose b (and what is behind it); after the hold window carol would QUIT for alice.
    wait_for(lambda: net.server_count("a") == 1 and net.server_count("c") == 1, what="split seen")
    (net["b"].data_dir / "control.sock").unlink(missing_ok=True)
    net["b"].start()
    net.wait_linked()
    digest = net.wait_converged()
    assert digest
    # alice never saw carol leave (the restart was inside the 30 s hold).
    assert not any("carol" in l and "QUIT" in l for l in alice.lines)
    alice.send("PRIVMSG #k :back")
    drain(carol, "back")


def test_sigstop_past_link_timeout_then_resume(tree3):
    net = tree3
    alice = client(net, "a", "alice", "#s")
    carol = client(net, "c", "carol", "#s")
    alice.read_until("carol!")      # carol's JOIN
    net.wait_converged()
    mark = len(alice.lines)
    pid_c = net["c"].pid()
    os.kill(pid_c, signal.SIGSTOP)
    try:
        wait_for(lambda: net.server_count("b") == 2, timeout=20, what="b drops the frozen c")
        for i in range(5):
            alice.send(f"PRIVMSG #s :frozen {i}")
        alice.send("PING :mark")
        alice.read_until("mark")
    finally:
        os.kill(pid_c, signal.SIGCONT)
    net.wait_linked()
    net.wait_converged()
    drain(carol, "frozen 4")
    got = [m for m in messages(carol, "#s") if m.startswith("frozen")]
    assert got == [f"frozen {i}" for i in range(5)]            # exactly once, in order
    assert not any("carol" in l and ("QUIT" in l or "JOIN" in l) for l in alice.lines[mark:]), alice.lines[mark:]


def test_same_channel_created_on_both_sides_during_split(tree3):
    net = tree3
    client(net, "a", "early", "#seed")   # something to make the network non-empty
    net.wait_converged()
    net["c"].ctl("unlink", "b.relay.test")
    wait_for(lambda: net.server_count("c") == 1, what="split")
    a_op = client(net, "a", "aop", "#both")
    time.sleep(1.1)   # channel timestamps are whole seconds: make c's creation strictly younger
    c_op = client(net, "c", "cop", "#both")
    net["c"].ctl("link", "b.relay.test")
    net.wait_linked()
    net.wait_converged()
    st = net["b"].call("dump-state")
    ch = next(c for c in st["channels"] if c[0] == "#both")
    uid = {u[1]: u[0] for u in st["users"]}
    status = dict(ch[6])
    assert status[uid["aop"]] == "o" and status[uid["cop"]] == ""   # the older creation wins; nobody rode the split
    c_op.read_until(lambda l: " MODE #both -" in l and l.endswith(" cop"))


def test_nick_collision_across_a_split(tree3):
    net = tree3
    net.wait_converged()
    net["c"].ctl("unlink", "b.relay.test")
    wait_for(lambda: net.server_count("c") == 1, what="split")
    first = client(net, "a", "twin")
    time.sleep(1.1)
    second = client(net, "c", "twin")
    net["c"].ctl("link", "b.relay.test")
    net.wait_linked()
    net.wait_converged()
    renamed = second.read_until(lambda l: " NICK " in l)
    assert renamed.startswith(":twin!") and renamed.split(" NICK ")[1].lstrip(":").startswith("003")
    first.send("PING :still-connected")
    first.read_until("still-connected")                        # nobody was killed
    second.send("PING :also-connected")
    second.read_until("also-connected")


def test_relink_repeatedly_while_50_clients_talk(tree3):
    net = tree3
    clients = []
    for i in range(50):
        clients.append(client(net, "abc"[i % 3], f"t{i}", "#busy"))
    listener = client(net, "c", "listen", "#busy")
    net.wait_converged()
    stop = threading.Event()
    sent: list[str] = []

    def talk():
        n = 0
        while not stop.is_set():
            c = clients[n % 50]
            text = f"msg-{n}"
            c.send(f"PRIVMSG #busy :{text}")
            sent.append((c, text))
            n += 1
            time.sleep(0.005)

    t = threading.Thread(target=talk)
    t.start()
    try:
        for _ in range(3):
            net["a"].ctl("unlink", "b.relay.test")
            wait_for(lambda: net.server_count("b") == 2, what="split")
            net["a"].ctl("link", "b.relay.test")
            net.wait_linked()
    finally:
        stop.set()
        t.join()
    last = sent[-1][1]
    listener.read_until(lambda l: l.endswith(last), timeout=30)
    net.wait_converged()
    got = messages(listener, "#busy")
    expected = [text for c, text in sent]
    assert sorted(got) == sorted(expected)                      # every message, exactly once
    assert len(got) == len(set(got))
    assert not any("QUIT" in l for l in listener.lines), [l for l in listener.lines if "QUIT" in l][:3]


def test_tree7_kill_9_a_middle_server_and_freeze_another(tmp_path):
    net = TreeNetwork("tree-7", tmp_path, **FAST_LINKS).start()
    try:
        u4 = client(net, "s4", "u4", "#t")
        u6 = client(net, "s6", "u6", "#t")
        u4.read_until("u6!")                                # u6's JOIN
        net.wait_converged()
        mark4 = len(u4.lines)
        os.kill(net["s2"].pid(), signal.SIGKILL)           # s4 and s5 lose s2 (and all beyond)
        wait_for(lambda: net.server_count("s1") == 4, what="s1 loses s2, s4, s5")
        u6.send("PRIVMSG #t :while s2 is down")
        (net["s2"].data_dir / "control.sock").unlink(missing_ok=True)
        net["s2"].start()
        net.wait_linked()
        net.wait_converged()
        u4.read_until("while s2 is down")                   # delivered after the rejoin
        pid3 = net["s3"].pid()
        os.kill(pid3, signal.SIGSTOP)
        try:
            wait_for(lambda: net.server_count("s1") == 4, timeout=20, what="s1 drops the frozen s3")
            u4.send("PRIVMSG #t :while s3 is frozen")
        finally:
            os.kill(pid3, signal.SIGCONT)
        net.wait_linked()
        net.wait_converged()
        u6.read_until("while s3 is frozen")
        assert messages(u6, "#t").count("while s3 is frozen") == 1
        assert not any(("QUIT" in l or "JOIN" in l) and "u6" in l for l in u4.lines[mark4:])
    finally:
        net.stop()
