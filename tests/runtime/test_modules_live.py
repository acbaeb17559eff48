"""Modules on a running server: load, unload and reload through relayctl while clients stay connected."""

import os
import socket
from pathlib import Path

import pytest
from support import RawClient, Server, server_config, wait_for

TESTS = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def live(tmp_path, monkeypatch):
    # The server process imports the test module mods.sample_mod from tests/.
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sample_port = 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sample_port = s.getsockname()[1]
    cfg = server_config(modules={
        "welcome": {"channels": {"#lobby": "Hello {nick}, welcome to {channel}"}},
        "filter": {"rules": [{"channel": "#kids", "pattern": "(?i)darn", "action": "rewrite", "replacement": "d**n"},
                             {"channel": "*", "pattern": "buy cheap", "action": "drop"}]},
        "mods.sample_mod": {"greeting": "hey"},
    })
    cfg["listen"].append({"proto": "sample", "host": "127.0.0.1", "port": sample_port})
    srv = Server(tmp_path / "live", cfg).start()
    srv.sample_port = sample_port
    yield srv
    srv.stop()


def test_shipped_modules_work_and_manage_at_runtime(live):
    alice = RawClient(live.irc_port).register("alice")
    bob = RawClient(live.irc_port).register("bob")
    for c in (alice, bob):
        c.send("JOIN #lobby,#kids")
        c.read_until(lambda l: " 366 " in l and "#kids" in l)
    assert any("NOTICE bob :Hello bob, welcome to #lobby" in l for l in bob.lines)
    # filter: rewrite per channel, drop everywhere
    alice.send("PRIVMSG #kids :oh darn it")
    assert bob.read_until("PRIVMSG #kids").endswith(":oh d**n it")
    alice.send("PRIVMSG #lobby :buy cheap watches")
    alice.send("PRIVMSG #lobby :darn is fine here")
    assert bob.read_until("PRIVMSG #lobby").endswith(":darn is fine here")
    assert "dropped 1, rewritten 1" in live.ctl("filter", "stats").stdout

    # Unload the filter: its hook and its command are gone; clients stay connected.
    live.ctl("module", "unload", "filter")
    assert live.ctl("filter", "stats", check=False).returncode == 2
    alice.send("PRIVMSG #lobby :buy cheap now")
    assert bob.read_until("PRIVMSG #lobby").endswith(":buy cheap now")
    live.ctl("module", "load", "filter")
    assert "dropped 0" in live.ctl("filter", "stats").stdout

    # Reload keeps the welcome module's saved state.
    assert "greeted 2" in live.ctl("welcome", "stats").stdout
    live.ctl("module", "reload", "welcome")
    assert "greeted 2" in live.ctl("welcome", "stats").stdout
    carol = RawClient(live.irc_port).register("carol")
    carol.send("JOIN #lobby")
    carol.read_until("NOTICE carol :Hello carol")
    assert "greeted 3" in live.ctl("welcome", "stats").stdout

    # A module's listener opens and closes with it.
    s = socket.create_connection(("127.0.0.1", live.sample_port), timeout=5)
    s.sendall(b"ping")
    assert s.recv(10) == b"PING"
    s.close()
    live.ctl("module", "unload", "mods.sample_mod")
    wait_for(lambda: _refused(live.sample_port), what="sample listener to close")
    listed = live.ctl("module", "list").stdout.split()
    assert "mods.sample_mod" not in listed and "welcome" in listed
    live.ctl("module", "load", "mods.sample_mod")
    s = socket.create_connection(("127.0.0.1", live.sample_port), timeout=5)
    s.close()

    # A module that fails to load leaves the server running and says why.
    r = live.ctl("module", "load", "nosuchmodule", check=False)
    assert r.returncode == 1 and "no module named 'nosuchmodule'" in r.stderr
    # The IRC clients were never disconnected.
    for c, n in ((alice, "alice"), (bob, "bob")):
        c.send(f"PING :{n}-alive")
        c.read_until(f"{n}-alive")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_module_with_bad_options_refuses_to_start(tmp_path):
    srv = Server(tmp_path / "bad", server_config(modules={"filter": {"rules": [{"pattern": "(unclosed"}]}}))
    r = srv.ctl("start", "--detach", check=False)
    assert r.returncode == 2
    assert "modules.filter.rules[0].pattern: not a valid regular expression" in r.stderr
