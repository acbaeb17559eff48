"""relayctl and the runtime, over real processes and sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from support import RELAYCTL, RawClient, Server, copy_configs, process_gone, relayctl, server_config, wait_for


def test_detach_returns_once_listening_then_status_and_stop(make_server):
    srv = make_server()
    # --detach returned: the IRC port must accept right now, no retry.
    socket.create_connection(("127.0.0.1", srv.irc_port), timeout=2).close()
    st = srv.status()
    assert st["version"] and st["server"]["id"] == "001"
    assert st["listeners"][0]["port"] == srv.irc_port
    assert st["memory_rss"] > 0 and st["uptime"] >= 0
    assert "links" in st and "connections" in st
    import resource
    assert st["open_files_limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # raised to the hard limit
    text = srv.ctl("status").stdout
    assert "relaynet" in text and "listeners: irc@127.0.0.1" in text
    pid = srv.pid()
    assert srv.stop().returncode == 0
    assert not (srv.dir / "data" / "relay.pid").exists()
    assert not (srv.dir / "data" / "control.sock").exists()
    assert process_gone(pid)


def test_commands_against_a_stopped_server_say_so_in_one_line(make_server):
    srv = make_server(start=False)
    for args in (["status"], ["stop"], ["register", "a", "b"], ["shell"]):
        r = srv.ctl(*args, check=False)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not running" in lines[0], r.stderr


def test_config_error_refuses_to_start_with_status_2(make_server, tmp_path):
    srv = make_server(start=False, listen=[{"proto": "irc", "port": 6667}, {"proto": "irc", "port": 99999}])
    for args in (["start", "--detach"], ["start"]):
        r = srv.ctl(*args, check=False)
        assert r.returncode == 2
        assert "listen[1].port: must be 1-65535" in r.stderr


def test_unknown_listener_protocol_refuses_to_start(make_server):
    srv = make_server(start=False, listen=[{"proto": "gopher", "port": 7070}])
    r = srv.ctl("start", "--detach", check=False)
    assert r.returncode == 2
    assert "listen[0].proto: no loaded module provides 'gopher'" in r.stderr


def test_second_start_is_refused(make_server):
    srv = make_server()
    r = srv.ctl("start", "--detach", check=False)
    assert r.returncode == 1 and "already running" in r.stderr


def test_foreground_start_and_sigterm_shut_down_cleanly(make_server):
    srv = make_server(start=False)
    proc = subprocess.Popen([RELAYCTL, "start", "-c", str(srv.path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (srv.dir / "data" / "relay.pid").exists(), what="pid file")
    c = RawClient(srv.irc_port).register("alice")
    proc.send_signal(signal.SIGTERM)
    # The client is told, then the connection closes; the server exits 0.
    line = c.read_until("ERROR")
    assert "Received SIGTERM" in line
    assert proc.wait(timeout=15) == 0
    err = proc.stderr.read()
    assert "shutting down: Received SIGTERM" in err  # console logging in the foreground
    assert "shutting down" in srv.log()               # and the log file


def test_operator_commands_over_the_control_socket(make_server):
    srv = make_server()
    assert "registered" in srv.ctl("register", "alice", "pw-alice").stdout
    r = srv.ctl("register", "alice", "x", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert json.loads(srv.ctl("accounts", "--json").stdout) == ["alice"]
    srv.ctl("passwd", "alice", "new-pw")
    srv.ctl("group", "add", "alice", "ops")
    assert srv.ctl("group", "list", "alice").stdout.strip() == "ops"
    srv.ctl("group", "remove", "alice", "ops")
    srv.ctl("unregister", "alice")
    assert srv.ctl("unregister", "alice", check=False).returncode == 1
    # Usage errors exit 2 and say the syntax.
    r = srv.ctl("register", "onlyname", check=False)
    assert r.returncode == 2 and "usage: register USER PASSWORD" in r.stderr
    r = srv.ctl("frobnicate", check=False)
    assert r.returncode == 2 and "unknown command" in r.stderr
    # Log level at runtime.
    srv.ctl("log-level", "debug")
    assert srv.ctl("log-level", "chatty", check=False).returncode == 2
    assert "register USER PASSWORD" in srv.ctl("help").stdout


def test_reload_config_applies_and_refuses_fixed_keys(make_server):
    srv = make_server()
    cfg = yaml.safe_load(srv.path.read_text())
    cfg["irc"] = {"motd": "changed motd"}
    srv.path.write_text(yaml.safe_dump(cfg))
    assert "irc" in srv.ctl("reload-config").stdout
    c = RawClient(srv.irc_port)
    c.send("NICK bob")
    c.send("USER bob 0 * :Bob")
    c.read_until("changed motd")
    cfg["server"]["name"] = "other.relay.local"
    srv.path.write_text(yaml.safe_dump(cfg))
    r = srv.ctl("reload-config", check=False)
    assert r.returncode == 2 and "server cannot change while running" in r.stderr
    cfg["server"]["name"] = "test.relay.local"
    cfg["listen"][0]["port"] = 0
    srv.path.write_text(yaml.safe_dump(cfg))
    r = srv.ctl("reload-config", check=False)
    assert r.returncode == 2 and "listen[0].port: must be 1-65535" in r.stderr


def test_shell_runs_the_same_commands(make_server):
    srv = make_server()
    r = relayctl("shell", "-c", str(srv.path), input="register carol pw\nstatus --json\nhelp module\nexit\n")
    assert "account carol registered" in r.stdout
    assert '"version"' in r.stdout
    assert "module load NAME" in r.stdout
    # ... and what the shell did, the command line sees.
    assert "carol" in srv.ctl("accounts").stdout


SYSTEM_PYTHON = "/usr/bin/python3"  # reachable by other users, unlike the venv under /root
CONNECT = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
           "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES'); sys.exit()\n"
           "s.sendall(b'{\"argv\":[\"stop\"]}\\n'); print(s.recv(4096).decode())")


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or os.getuid() != 0, reason="needs root and /usr/bin/python3")
def test_control_socket_refuses_other_users():
    base = tempfile.mkdtemp(prefix="relay-perm-")
    os.chmod(base, 0o755)
    srv = Server(Path(base) / "s", server_config())
    os.chmod(srv.dir, 0o755)
    srv.start()
    try:
        sock_path = srv.dir / "data" / "control.sock"
        assert (sock_path.stat().st_mode & 0o777) == 0o600
        assert (sock_path.parent.stat().st_mode & 0o777) == 0o700

        def as_nobody():
            return subprocess.run([SYSTEM_PYTHON, "-c", CONNECT, str(sock_path)], capture_output=True, text=True,
                                  user=65534, group=65534, cwd="/").stdout
        # The data directory is private: another user cannot even reach the socket.
        assert "EACCES" in as_nobody()
        # Even with the file modes opened, the server checks the peer's uid and refuses clearly.
        os.chmod(srv.dir / "data", 0o755)
        os.chmod(sock_path, 0o666)
        assert "permission denied: the control socket is for uid 0" in as_nobody()
        assert srv.status()["server"]["id"] == "001"  # still running: the stop was refused
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_slow_reader_is_dropped_without_stalling_others(make_server):
    srv = make_server(limits={"sendq": 65536})
    slow = RawClient(srv.irc_port).register("slow")
    slow.send("JOIN #flood")
    slow.read_until(" 366 ")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    talker = RawClient(srv.irc_port).register("talker")
    talker.send("JOIN #flood")
    talker.read_until(" 366 ")
    watcher = RawClient(srv.irc_port).register("watcher")
    watcher.send("JOIN #flood")
    watcher.read_until(" 366 ")
    payload = "x" * 400
    dropped = lambda l: "QUIT" in l and "SendQ exceeded" in l  # noqa: E731
    for i in range(50000):
        talker.send(f"PRIVMSG #flood :{i} {payload}")
        if i % 100 == 99:
            # The watcher keeps up, so it keeps receiving while slow stops reading.
            watcher.read_until(lambda l: f"PRIVMSG #flood :{i} " in l or dropped(l))
            if any(dropped(l) for l in watcher.lines[-101:]):
                break
    else:
        pytest.fail("the slow reader was never dropped")
    talker.send("PING :still-alive")
    talker.read_until("still-alive")


def test_tree3_servers_start_detached_side_by_side_and_stop(tmp_path):
    d = copy_configs("tree-3", tmp_path)
    servers = []
    try:
        for name in ("a", "b", "c"):
            relayctl("start", "-c", str(d / f"{name}.yaml"), "--detach")
            servers.append(name)
        for name, port in (("a", 6701), ("b", 6702), ("c", 6703)):
            st = json.loads(relayctl("status", "--json", "-c", str(d / f"{name}.yaml")).stdout)
            assert st["server"]["name"] == f"{name}.relay.test"
            assert any(l["port"] == port for l in st["listeners"])
    finally:
        for name in servers:
            relayctl("stop", "-c", str(d / f"{name}.yaml"), check=False)
    for name in ("a", "b", "c"):
        assert not (d / "data" / name / "relay.pid").exists()
