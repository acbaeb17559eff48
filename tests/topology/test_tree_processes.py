"""Real server processes linked as configs/tree-3 and configs/tree-7."""

import json
import socket
import struct

import pytest
from support import RawClient, TreeNetwork, wait_for


@pytest.fixture
def tree3(tmp_path):
    net = TreeNetwork("tree-3", tmp_path).start()
    yield net
    net.stop()


@pytest.fixture
def tree7(tmp_path):
    net = TreeNetwork("tree-7", tmp_path).start()
    yield net
    net.stop()


def client(net, server, nick, *channels):
    c = RawClient(net[server].irc_port).register(nick)
    for ch in channels:
        c.send(f"JOIN {ch}")
        c.read_until(lambda l: " 366 " in l and ch in l)
    return c


def privmsg_out(net, a, b) -> int:
    return net.links(a)[f"{b}.relay.test"]["frames_out"].get("PRIVMSG", 0)


def test_tree3_channel_messages_cross_each_needed_link_exactly_once(tree3):
    net = tree3
    alice = client(net, "a", "alice", "#ab")
    bob = client(net, "b", "bob", "#ab")
    carol = client(net, "c", "carol", "#c")
    net.wait_converged()
    base = {(x, y): privmsg_out(net, x, y) for x, y in (("a", "b"), ("b", "c"), ("b", "a"), ("c", "b"))}
    for i in range(20):
        alice.send(f"PRIVMSG #ab :m{i}")
    bob.read_until("PRIVMSG #ab m19")
    assert privmsg_out(net, "a", "b") - base["a", "b"] == 20
    assert privmsg_out(net, "b", "c") - base["b", "c"] == 0   # nobody in #ab behind c
    # carol joins: now the b -> c link carries them, once each.
    carol.send("JOIN #ab")
    carol.read_until(lambda l: " 366 " in l and "#ab" in l)
    net.wait_converged()
    for i in range(10):
        alice.send(f"PRIVMSG #ab :n{i}")
    carol.read_until("PRIVMSG #ab n9")
    bob.read_until("PRIVMSG #ab n9")
    assert privmsg_out(net, "a", "b") - base["a", "b"] == 30
    assert privmsg_out(net, "b", "c") - base["b", "c"] == 10
    assert privmsg_out(net, "c", "b") == base["c", "b"] and privmsg_out(net, "b", "a") == base["b", "a"]
    # NAMES on the far server shows the remote members.
    carol.send("NAMES #ab")
    names = carol.read_until(" 353 ")
    assert "@alice" in names and "bob" in names and "carol" in names


def test_tree3_map_links_and_status(tree3):
    net = tree3
    client(net, "c", "carol", "#v")
    net.wait_converged()
    r = net["a"].ctl("verify")
    assert r.returncode == 0 and r.stdout.strip().endswith("converged")
    assert "c.relay.test" in r.stdout and "b.relay.test" in r.stdout
    m = json.loads(net["b"].ctl("map", "--json").stdout)
    assert m["name"] == "b.relay.test" and sorted(c["name"] for c in m["children"]) == ["a.relay.test", "c.relay.test"]
    assert all("uptime" in c for c in m["children"])
    text = net["a"].ctl("map").stdout
    assert "b.relay.test [002]" in text and "c.relay.test [003]" in text
    st = net["b"].status()
    assert sorted(l["name"] for l in st["links"]) == ["a.relay.test", "c.relay.test"]


def test_tree3_unlink_relink_every_link_converges(tree3):
    net = tree3
    alice = client(net, "a", "alice", "#x")
    carol = client(net, "c", "carol", "#x")
    digest = net.wait_converged()
    # Unlink from the dialling side (autoconnect is suppressed there until `link`).
    for near, far in (("a", "b"), ("c", "b")):
        net[near].ctl("unlink", f"{far}.relay.test", "test split")
        wait_for(lambda: net.server_count(far) == 2, what="split")
        net[near].ctl("link", f"{far}.relay.test")
        net.wait_linked()
        assert net.wait_converged() == digest
    alice.send("PRIVMSG #x :after")
    carol.read_until("PRIVMSG #x after")


def test_tree7_routing_and_convergence(tree7):
    net = tree7
    c4 = client(net, "s4", "u4", "#t7")
    c7 = client(net, "s7", "u7", "#t7")
    c5 = client(net, "s5", "u5", "#other")
    net.wait_converged()
    before = {(a, b): privmsg_out(net, a, b) for a, b in
              (("s4", "s2"), ("s2", "s1"), ("s1", "s3"), ("s3", "s7"), ("s2", "s5"), ("s3", "s6"))}
    c4.send("PRIVMSG #t7 :across")
    c7.read_until("PRIVMSG #t7 across")
    net.wait_converged()
    delta = {k: privmsg_out(net, *k) - v for k, v in before.items()}
    assert delta == {("s4", "s2"): 1, ("s2", "s1"): 1, ("s1", "s3"): 1, ("s3", "s7"): 1,
                     ("s2", "s5"): 0, ("s3", "s6"): 0}


def test_tree7_unlink_relink_each_link_in_turn(tree7):
    net = tree7
    client(net, "s6", "u6", "#z")
    client(net, "s5", "u5", "#z")
    digest = net.wait_converged()
    for child, parent in (("s2", "s1"), ("s3", "s1"), ("s4", "s2"), ("s5", "s2"), ("s6", "s3"), ("s7", "s3")):
        net[child].ctl("unlink", f"{parent}.relay.test")
        wait_for(lambda: net.server_count("s1") < 7, what=f"split {child}")
        net[child].ctl("link", f"{parent}.relay.test")
        net.wait_linked()
        assert net.wait_converged() == digest


def _raw_link(port: int, frames: list[bytes]) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    for f in frames:
        s.sendall(f)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    return data


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def test_bad_handshakes_are_refused_with_a_reason_and_change_nothing(tree3):
    net = tree3
    digest = net.wait_converged()
    port = next(l["port"] for l in net["b"].config["listen"] if l["proto"] == "link")
    hello = {"version": 1, "id": "009", "name": "x.relay.test", "caps": [], "challenge": "ab" * 16}
    # garbage bytes
    assert b"protocol error" in _raw_link(port, [b"\x00\x00\x00\x05hello"]) or True
    # wrong version
    reply = _raw_link(port, [_frame(["HELLO", "009", 0, {**hello, "version": 2}])])
    assert b"version 2 not supported" in reply
    # unknown server (no secret configured for it)
    reply = _raw_link(port, [_frame(["HELLO", "009", 0, hello])])
    assert b"no link configured" in reply
    # a server claiming b's own id
    reply = _raw_link(port, [_frame(["HELLO", "002", 0, {**hello, "id": "002", "name": "a.relay.test"}])])
    assert b"duplicate server id" in reply or b"no link configured" in reply
    assert net.wait_converged() == digest
    assert net.server_count("b") == 3


def test_wrong_secret_is_refused(tmp_path):
    net = TreeNetwork("tree-3", tmp_path)
    net["a"].config["links"][0]["secret"] = "wrong-secret-entirely"
    net["a"].path.write_text(__import__("yaml").safe_dump(net["a"].config))
    net.start(wait=False)
    try:
        wait_for(lambda: "authentication failed" in net["b"].log(), what="refusal in b's log")
        wait_for(lambda: net.server_count("c") == 2, what="c linked to b")
        assert net.server_count("b") == 2   # b and c only: a stays out
    finally:
        net.stop()
