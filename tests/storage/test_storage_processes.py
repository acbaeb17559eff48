"""Real server processes on both backends: accounts an operator command reported as done survive
kill -9; a wrong or unreachable database refuses to start with one line naming the key; accounts
registered on one server work on every server (separate SQLite files, or one shared PostgreSQL
database); backup, restore and export through relayctl."""

from __future__ import annotations

import base64
import json
import os
import signal

import pytest
import yaml
from support import RawClient, Server, TreeNetwork, process_gone, relayctl, server_config, wait_for


def sasl_login(port: int, nick: str, user: str, password: str) -> bool:
    c = RawClient(port)
    c.send("CAP REQ :sasl")
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :{nick}")
    c.read_until(lambda l: " ACK " in l)
    c.send("AUTHENTICATE PLAIN")
    c.read_until("AUTHENTICATE +")
    c.send("AUTHENTICATE " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
    line = c.read_until(lambda l: " 903 " in l or " 904 " in l)
    c.close()
    return " 903 " in line


def kill9(srv: Server) -> None:
    pid = srv.pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), what="the killed server gone")


@pytest.fixture
def server(tmp_path, storage_section):
    started = []

    def make(**storage) -> Server:
        srv = Server(tmp_path / f"s{len(started)}", server_config(storage={**storage_section, **storage}))
        started.append(srv)
        return srv.start()

    yield make
    for s in started:
        s.stop()


def test_accounts_and_groups_survive_kill_9_after_the_reply(server):
    srv = server(flush_interval=3600)   # only the commands' own wait for their commit makes them durable
    srv.ctl("register", "alice", "pw-alice")
    srv.ctl("group", "add", "alice", "ops")
    srv.ctl("register", "bob", "pw-bob")
    srv.ctl("passwd", "bob", "pw-bob-2")
    srv.ctl("register", "gone", "x")
    srv.ctl("unregister", "gone")
    kill9(srv)                      # no clean stop: only what the replies promised is kept
    srv.start()
    assert json.loads(srv.ctl("accounts", "--json").stdout) == ["alice", "bob"]
    assert srv.ctl("group", "list", "alice").stdout.strip() == "ops"
    assert sasl_login(srv.irc_port, "a1", "alice", "pw-alice")
    assert sasl_login(srv.irc_port, "b1", "bob", "pw-bob-2")
    assert not sasl_login(srv.irc_port, "b2", "bob", "pw-bob")


def test_logins_do_not_wait_for_the_database(server, storage_section):
    """Accounts are in memory and writes are queued: with the database stalled (PostgreSQL: a lock
    the writer cannot get), logins and other commands still answer; a registration's reply waits
    for its commit, which comes once the database is back."""
    if storage_section["backend"] != "postgresql":
        pytest.skip("the stall is made with a PostgreSQL lock")
    import threading

    import psycopg
    srv = server()
    srv.ctl("register", "carol", "pw-c")
    replies = []
    with psycopg.connect(storage_section["dsn"]) as blocker:
        blocker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        t = threading.Thread(target=lambda: replies.append(srv.ctl("register", "dan", "pw-d", check=False)))
        t.start()
        wait_for(lambda: srv.call("status")["storage"]["queued"] == 1, what="dan's write queued, not committed")
        assert sasl_login(srv.irc_port, "c1", "carol", "pw-c")
        assert sasl_login(srv.irc_port, "d1", "dan", "pw-d")   # in memory already
        assert not replies                                     # the reply waits for the commit
    t.join(30)
    assert replies and replies[0].returncode == 0 and "registered" in replies[0].stdout
    assert srv.call("status")["storage"]["queued"] == 0


def test_a_wrong_or_unreachable_database_refuses_to_start(tmp_path):
    cases = [
        ({"backend": "postgresql", "dsn": f"host={tmp_path}/nowhere dbname=x"},
         "cannot start: storage.dsn: cannot connect to"),
        ({"backend": "postgresql", "dsn": "this is = not a dsn ="}, "cannot start: storage.dsn: invalid"),
        ({"backend": "postgresql"}, "config error: storage.dsn: required when storage.backend is postgresql"),
        ({"backend": "oracle"}, "config error: storage.backend:"),
    ]
    for i, (section, want) in enumerate(cases):
        srv = Server(tmp_path / f"bad{i}", server_config(storage=section))
        r = srv.ctl("start", "--detach", check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith(want), (section, r.stderr)


@pytest.fixture
def tree3(tmp_path, storage_section):
    """sqlite: each server its own file; postgresql: all three share one database."""
    net = TreeNetwork("tree-3", tmp_path, storage=storage_section).start()
    yield net
    net.stop()


def accounts(srv) -> list[str]:
    return srv.call("accounts")


def test_accounts_work_on_every_server(tree3):
    net = tree3
    net["a"].ctl("register", "dora", "pw-d")
    wait_for(lambda: "dora" in accounts(net["c"]), what="dora known on c, two links away")
    assert sasl_login(net["c"].irc_port, "d1", "dora", "pw-d")
    net["b"].ctl("passwd", "dora", "pw-d2")
    net["c"].ctl("group", "add", "dora", "staff")
    wait_for(lambda: net["a"].call("group", "list", "dora") == ["staff"], what="the group on a")
    assert sasl_login(net["a"].irc_port, "d2", "dora", "pw-d2")
    # A restarted server has what it was told (its own database, or the shared one).
    net["c"].stop()
    net["c"].start()
    assert "dora" in accounts(net["c"])
    assert sasl_login(net["c"].irc_port, "d3", "dora", "pw-d2")
    net["a"].ctl("unregister", "dora")
    wait_for(lambda: all("dora" not in accounts(net[s]) for s in "abc"), what="dora removed everywhere")


def test_an_account_made_while_apart_arrives_when_the_link_returns(tmp_path):
    """Separate databases: a server that was not linked learns the accounts, and the removals, at the
    netjoin."""
    net = TreeNetwork("tree-3", tmp_path)
    net["a"].start()
    net["a"].ctl("register", "early", "pw-e")
    net["b"].start()
    net["c"].start()
    net["c"].ctl("register", "late", "pw-l")
    try:
        net.wait_linked()
        wait_for(lambda: all({"early", "late"} <= set(accounts(net[s])) for s in "abc"), what="both everywhere")
        assert sasl_login(net["c"].irc_port, "e1", "early", "pw-e")
        # A removal made while c is down reaches c at the netjoin (c's own file still has the account,
        # and its copy does not come back to the others).
        net["c"].stop()
        net["a"].ctl("unregister", "early")
        net["c"].start()
        net.wait_linked()
        wait_for(lambda: all(accounts(net[s]) == ["late"] for s in "abc"), what="early removed everywhere")
    finally:
        net.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_removal_survives_a_restart_and_a_stale_peer_does_not_bring_the_account_back(tmp_path, backend,
                                                                                        request):
    """Separate databases: b is down while a removes an account b still has; a restarts (its memory
    of the removal is gone, its stored tombstone is not); when b links again its stale copy stays
    out and the removal reaches b."""
    net = TreeNetwork("tree-3", tmp_path)
    a, b = net["a"], net["b"]
    if backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        for srv in (a, b):
            srv.config["storage"] = {"backend": "postgresql", "dsn": cluster.new_database(), "pool_size": 2}
            srv.path.write_text(yaml.safe_dump(srv.config))

    def linked():
        wait_for(lambda: len(a.call("dump-state")["servers"]) == 2 and len(b.call("dump-state")["servers"]) == 2,
                 what="a and b linked")
    try:
        a.start()
        b.start()
        linked()
        a.ctl("register", "zed", "pw-z")
        a.ctl("register", "amy", "pw-a")
        wait_for(lambda: {"zed", "amy"} <= set(accounts(b)), what="zed and amy on b")
        b.stop()
        a.ctl("unregister", "zed")
        a.stop()
        a.start()
        assert accounts(a) == ["amy"]
        b.start()                          # its own database still has zed, as of before the removal
        linked()
        wait_for(lambda: accounts(b) == ["amy"], what="the removal reaching b at the netjoin")
        assert accounts(a) == ["amy"]
        assert not sasl_login(a.irc_port, "z1", "zed", "pw-z")
        b.stop()                           # b stored the tombstone too
        b.start()
        assert accounts(b) == ["amy"]
    finally:
        net.stop()


def test_backup_restore_and_export(server, storage_section, tmp_path, pg_cluster):
    srv = server()
    srv.ctl("register", "erin", "pw-e")
    srv.ctl("group", "add", "erin", "ops")
    dump = tmp_path / "backup.jsonl"
    assert "backup written" in srv.ctl("backup", str(dump)).stdout
    assert "pw-e" not in dump.read_text() and oct(dump.stat().st_mode & 0o777) == "0o600"
    srv.ctl("unregister", "erin")
    r = relayctl("restore", "-c", str(srv.path), str(dump), check=False)
    assert r.returncode == 1 and "the server is running" in r.stderr
    srv.stop()
    r = relayctl("restore", "-c", str(srv.path), str(dump))
    assert "restored" in r.stdout
    srv.start()
    assert accounts(srv) == ["erin"] and srv.call("group", "list", "erin") == ["ops"]
    # export --to: the running deployment copied onto PostgreSQL; the server then switched to it.
    dsn = pg_cluster.new_database()
    assert "exported to" in srv.ctl("export", "--to", dsn).stdout
    srv.stop()
    cfg = yaml.safe_load(srv.path.read_text())
    cfg["storage"] = {"backend": "postgresql", "dsn": dsn}
    srv.path.write_text(yaml.safe_dump(cfg))
    srv.start()
    assert accounts(srv) == ["erin"]
    assert sasl_login(srv.irc_port, "e2", "erin", "pw-e")
