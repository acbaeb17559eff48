"""Fault injection on real server processes: kill -9, SIGSTOP, repeated unlink/relink under traffic."""

import os
import signal
import subprocess
import threading
import time

import irc.bot
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


# ---------------------------------------------------------------- netjoin: what clients see (issue 12, items 2 and 3)

class ChannelView(irc.bot.SingleServerIRCBot):
    """A jaraco `irc` bot: its `channels` are a real client's view of members and their @/+ statuses,
    kept from NAMES, JOIN, MODE, PART, QUIT as the server sends them."""

    def __init__(self, port: int, nick: str):
        super().__init__([("127.0.0.1", port)], nick, nick)
        self.welcomed = False
        self._connect()
        self.until(lambda: self.welcomed, what="registered")

    def on_welcome(self, connection, event):
        self.welcomed = True

    def until(self, pred, timeout: float = 30.0, what: str = "condition"):
        def step():
            self.reactor.process_once(0.05)
            return pred()
        return wait_for(step, timeout=timeout, interval=0, what=what)

    def sees(self, channel: str, nick: str, oper: bool | None = None) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and ch.has_user(nick) and (oper is None or ch.is_oper(nick) == oper)

    def close(self):
        self.connection.close()


def test_ops_keep_their_at_in_a_real_clients_view_after_a_relink(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, split_hold=2, **FAST_LINKS).start()
    view = None
    try:
        view = ChannelView(net["a"].irc_port, "onA")
        view.connection.join("#ops")
        view.until(lambda: view.sees("#ops", "onA", oper=True), what="onA @ in #ops")
        on_c = client(net, "c", "onC", "#ops")
        view.until(lambda: view.sees("#ops", "onC"), what="onC's JOIN")
        view.connection.mode("#ops", "+o onC")
        view.until(lambda: view.sees("#ops", "onC", oper=True), what="onC @")
        net["c"].ctl("unlink", "b.relay.test")
        view.until(lambda: not view.sees("#ops", "onC"), what="onC's QUIT once the 2 s hold expired")
        on_c.read_until(lambda l: "QUIT" in l and l.startswith(":onA!"))
        net["c"].ctl("link", "b.relay.test")
        net.wait_linked()
        net.wait_converged()
        view.until(lambda: view.sees("#ops", "onC", oper=True), what="onC back, with its @")
        on_c.read_until(lambda l: l.endswith(" MODE #ops +o onA"))
        # What the client was told line by line agrees with NAMES.
        assert sorted(view.channels["#ops"].opers()) == ["onA", "onC"]
        on_c.send("NAMES #ops")
        assert sorted(on_c.read_until(" 353 ").rsplit(":", 1)[1].split()) == ["@onA", "@onC"]
    finally:
        if view is not None:
            view.close()
        net.stop()


def sync(c: RawClient, token: str) -> None:
    """Every line c sent before has been handled by its server (it answers in order)."""
    c.send(f"PING :{token}")
    c.read_until(token)


@pytest.mark.parametrize("hold", [30, 5], ids=["split-shorter-than-hold", "split-longer-than-hold"])
def test_messages_sent_during_a_split_arrive_once_in_both_directions(tmp_path, hold):
    net = TreeNetwork("tree-3", tmp_path, split_hold=hold, **FAST_LINKS).start()
    try:
        alice = client(net, "a", "alice", "#r")
        carol = client(net, "c", "carol", "#r")
        alice.read_until("carol!")
        net.wait_converged()
        net["c"].ctl("unlink", "b.relay.test")
        wait_for(lambda: net.server_count("a") == 2 and net.server_count("c") == 1, what="split seen")
        for i in range(5):
            alice.send(f"PRIVMSG #r :from a {i}")
            carol.send(f"PRIVMSG #r :from c {i}")
        sync(alice, "sent-a")
        sync(carol, "sent-c")
        held = net["a"].call("netsplit", "stats")["held_servers"]
        assert held == ["003"], held                             # all 10 were said while carol was held
        if hold < 30:   # outlast the hold: each side sees the other QUIT
            alice.read_until(lambda l: l.startswith(":carol!") and " QUIT " in l, timeout=20)
            carol.read_until(lambda l: l.startswith(":alice!") and " QUIT " in l, timeout=20)
        net["c"].ctl("link", "b.relay.test")
        net.wait_linked()
        net.wait_converged()
        carol.read_until("from a 4", timeout=20)
        alice.read_until("from c 4", timeout=20)
        alice.send("PRIVMSG #r :marker a")
        carol.send("PRIVMSG #r :marker c")
        carol.read_until("marker a")
        alice.read_until("marker c")
        assert [m for m in messages(carol, "#r") if m.startswith("from a")] == [f"from a {i}" for i in range(5)]
        assert [m for m in messages(alice, "#r") if m.startswith("from c")] == [f"from c {i}" for i in range(5)]
        if hold < 30:   # rejoined first, then the messages
            first = next(i for i, l in enumerate(carol.lines) if l.endswith("from a 0"))
            assert any(l.startswith(":alice!") and " JOIN " in l for l in carol.lines[:first])
    finally:
        net.stop()


def test_past_the_replay_window_the_loss_is_logged_and_counted(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, split_hold=6, replay={"max_age": 8}, **FAST_LINKS).start()
    try:
        alice = client(net, "a", "alice", "#w")
        carol = client(net, "c", "carol", "#w")
        alice.read_until("carol!")
        net.wait_converged()
        net["c"].ctl("unlink", "b.relay.test")
        wait_for(lambda: net.server_count("a") == 2 and net.server_count("c") == 1, what="split seen")
        for i in range(3):
            alice.send(f"PRIVMSG #w :late a {i}")
            carol.send(f"PRIVMSG #w :late c {i}")
        sync(alice, "sent-a")
        sync(carol, "sent-c")
        assert net["a"].call("netsplit", "stats")["backlog"] == 3
        for side in ("a", "c"):   # the periodic sweep drops them once they are 8 s old
            wait_for(lambda: net[side].call("netsplit", "stats")["backlog_dropped"] == 3, timeout=30,
                     what=f"{side} drops its backlog past the window")
        assert "split backlog: 3 message frames for c.relay.test (003) dropped" in net["a"].log()
        assert "split backlog: 3 message frames for a.relay.test (001) dropped" in net["c"].log()
        net["c"].ctl("link", "b.relay.test")
        net.wait_linked()
        net.wait_converged()
        alice.send("PRIVMSG #w :marker a")
        carol.read_until("marker a", timeout=20)
        carol.send("PRIVMSG #w :marker c")
        alice.read_until("marker c", timeout=20)
        assert not [m for m in messages(carol, "#w") if m.startswith("late")]
        assert not [m for m in messages(alice, "#w") if m.startswith("late")]
    finally:
        net.stop()
