"""relayctl and the runtime, over real processes and sockets."""

from __future__ import annotations

import json
import re
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
from support import (RELAYCTL, RawClient, Server, copy_configs, free_port, process_gone, relayctl, server_config,
                     wait_for)


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
    sock = srv.dir / "data" / "control.sock"
    for args in (["status"], ["stop"], ["register", "a", "b"], ["shell"], ["mqtt", "stats"], ["module", "list"]):
        r = srv.ctl(*args, check=False)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not running" in lines[0] and str(sock) in lines[0], r.stderr
    # A socket file left by a server that died: nothing listens on it.
    sock.parent.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    r = srv.ctl("accounts", check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"relaynet is not running (nothing listens on the control socket {sock})"


class SilentControlSocket:
    """A fake server: accepts on the control socket, reads, and never replies (or hangs up at once)."""

    def __init__(self, path: Path, hang_up: bool = False):
        import threading
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        self.requests: list[bytes] = []
        self.hang_up = hang_up
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.requests.append(c.recv(65536))
            if self.hang_up:
                c.close()
            else:
                self.held.append(c)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("hang_up", [False, True], ids=["silent", "hangs-up"])
def test_a_server_that_does_not_answer_is_one_line_and_the_command_may_have_run(make_server, hang_up):
    srv = make_server(start=False)
    (srv.dir / "data").mkdir()
    sock = srv.dir / "data" / "control.sock"
    fake = SilentControlSocket(sock, hang_up=hang_up)
    env = dict(os.environ, RELAYNET_TIMEOUT="0.5")
    try:
        for args, kw in ((["--timeout", "0.5", "register", "carol", "pw"], {}),
                         (["mqtt", "stats", "--timeout", "0.5"], {}),
                         (["module", "list"], {"env": env}), (["status"], {"env": env}),
                         (["shell"], {"env": env, "input": "accounts\n"})):
            r = relayctl(*args, "-c", str(srv.path), check=False, **kw)
            assert r.returncode == 75, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and str(sock) in lines[0] and "may still have run" in lines[0], (args, r.stderr)
            assert ("closed the connection without a reply" if hang_up else "no reply") in lines[0]
            assert "Traceback" not in r.stderr + r.stdout
        assert b'"argv":["register","carol","pw"]' in fake.requests[0]  # the command was sent
        r = relayctl("start", "--detach", "-c", str(srv.path), check=False, env=env)
        assert r.returncode == 1 and "does not answer" in r.stderr
    finally:
        fake.close()


def test_config_option_goes_before_or_after_every_command(make_server, tmp_path):
    srv = make_server()
    cfg = str(srv.path)
    elsewhere = tmp_path / "elsewhere"  # no ./data here: a command that ignored -c would find no server
    elsewhere.mkdir()
    ctl = lambda *a, **kw: relayctl(*a, cwd=elsewhere, **kw)  # noqa: E731
    ctl("-c", cfg, "register", "carol", "pw")
    ctl("register", "dave", "pw", "-c", cfg)
    ctl("register", "-c", cfg, "erin", "pw")
    ctl("register", f"--config={cfg}", "frank", "pw")
    ctl("--config", cfg, "register", "gina", "pw")
    for args in (("-c", cfg, "accounts", "--json"), ("accounts", "--json", "-c", cfg),
                 ("accounts", "-c", cfg, "--json")):
        assert json.loads(ctl(*args).stdout) == ["carol", "dave", "erin", "frank", "gina"]
    for words in (("module", "list"), ("status",), ("map",), ("mqtt", "stats"), ("netsplit", "stats"),
                  ("help", "module"), ("verify",)):
        before, after = ctl("-c", cfg, *words, check=False), ctl(*words, "-c", cfg, check=False)
        assert "not running" not in before.stderr + after.stderr, words
        # The same command of the same server ran: the same output, but for counters that moved between
        # the two calls (mqtt stats counts the server's own $SYS and federation traffic).
        same = re.sub(r"\d+(\.\d+)?", "N", before.stdout).split() == re.sub(r"\d+(\.\d+)?", "N", after.stdout).split()
        assert before.returncode == after.returncode and same or words == ("status",), (words, before, after)
    # RELAYNET_CONFIG, and -c wins over it wherever it is.
    env = dict(os.environ, RELAYNET_CONFIG=cfg)
    assert "carol" in ctl("accounts", env=env).stdout
    assert "netsplit" in ctl("module", "list", env=env).stdout
    env_elsewhere = dict(os.environ, RELAYNET_CONFIG=str(tmp_path / "none.yaml"))
    assert "carol" in ctl("accounts", "-c", cfg, env=env_elsewhere).stdout
    assert "carol" in ctl("-c", cfg, "accounts", env=env_elsewhere).stdout
    # Words that look like options go after "--".
    r = ctl("register", "-c", cfg, "--", "-h", "pw", check=False)
    assert r.returncode == 0 and "account -h registered" in r.stdout
    assert ctl("-c", cfg, "stop").stdout.split()[-1] == "stopped"


def test_every_module_command_that_ships_runs_through_relayctl(make_server):
    from relay.core.modules import CORE_MODULES
    from tools.relayctl import module_specs
    specs = module_specs()
    assert {"mqtt", "netsplit", "welcome", "filter"} <= set(specs)
    srv = make_server(modules={m: {} for m in specs if m not in CORE_MODULES},
                      listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                              {"proto": "mqtt", "host": "127.0.0.1", "port": free_port()}])
    rid = json.loads(srv.ctl("verify", "start", "--json").stdout)["round"]
    values = {"ROUND": str(rid)}
    for module, module_commands in specs.items():
        for spec in module_commands:
            words = [*spec.name.split(), *(values[a.name] for a in spec.args if not a.optional)]
            r = relayctl(*words, "-c", str(srv.path), "--json", check=False)
            assert r.returncode == 0, (words, r.stdout, r.stderr)
            json.loads(r.stdout)
            if spec.arity[1] is not None:  # one word too many: the syntax, not a handler's TypeError
                r = relayctl(*words, "extra", "-c", str(srv.path), check=False)
                assert r.returncode == 2 and r.stderr.strip() == f"usage: {spec.syntax}", (words, r.stderr)
    log = srv.log()
    assert "Traceback" not in log and "internal error" not in log


def test_help_lists_every_command_with_its_whole_description(make_server, monkeypatch):
    from tools.relayctl import LOCAL, known_specs
    tests_dir = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", tests_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    flat = lambda text: " ".join(text.split())  # noqa: E731  (wrapped, never cut)
    text = flat(relayctl("-h", env=dict(os.environ, COLUMNS="80")).stdout)
    for spec in known_specs():
        assert flat(f"{spec.syntax} {spec.help}") in text or spec.name in LOCAL, spec
    for module_command in ("mqtt stats", "mqtt sessions", "netsplit stats", "welcome stats", "filter stats"):
        assert module_command in text
    assert "sample hello" not in text
    # With a server running, its other commands (a module that does not ship) are listed too.
    srv = make_server(modules={"mods.sample_mod": {}})
    text = flat(relayctl("-c", str(srv.path), "-h").stdout)
    assert "More commands of the running server: sample hello [WORDS] say hello" in text
    assert "relayctl module load NAME [-c CONFIG] [--json]" in flat(relayctl("module", "-h").stdout)


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


def readme_commands(section: str) -> list[str]:
    """The lines of the first sh block under a README.md heading, comments dropped."""
    from support import ROOT
    text = (ROOT / "README.md").read_text().split(f"## {section}\n", 1)[1]
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_tree3_servers_start_detached_side_by_side_and_stop(tmp_path):
    # README's own commands, as a user runs them from a clone with the virtual environment active.
    copy_configs("tree-3", tmp_path / "configs")
    d = tmp_path / "configs" / "tree-3"
    ports: dict[int, int] = {}  # the shipped ports, moved to free ones (other test runs share this machine)
    for name in ("a", "b", "c"):
        cfg = yaml.safe_load((d / f"{name}.yaml").read_text())
        for entry in cfg["listen"] + cfg["links"]:
            entry["port"] = ports.setdefault(entry["port"], free_port())
        (d / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=os.path.dirname(RELAYCTL) + os.pathsep + os.environ["PATH"])
    sh = lambda line: subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,  # noqa: E731
                                     text=True, timeout=60)
    start, map_, verify, unlink, link, stop = readme_commands("A network of three servers")
    assert "start" in start and "stop" in stop
    try:
        r = sh(start)
        assert r.returncode == 0 and r.stdout.count("relaynet started") == 3, r.stderr
        for name, port in (("a", 6701), ("b", 6702), ("c", 6703)):
            st = json.loads(relayctl("status", "--json", "-c", str(d / f"{name}.yaml")).stdout)
            assert st["server"]["name"] == f"{name}.relay.test"
            assert any(l["port"] == ports[port] for l in st["listeners"])
        wait_for(lambda: "c.relay.test" in sh(map_).stdout, what="a map that reaches c")
        lines = sh(map_).stdout.splitlines()
        assert [l.split("[")[0].strip(" |`-") for l in lines] == ["a.relay.test", "b.relay.test", "c.relay.test"]
        def converged():
            r = sh(verify)
            return r if r.returncode == 0 else None
        r = wait_for(converged, what="verify: converged")
        assert r.stdout.splitlines()[-1] == "converged"
        assert sh(unlink).stdout.strip() == "unlinked b.relay.test"
        wait_for(lambda: "c.relay.test" not in sh(map_).stdout, what="c split off")
        assert "connecting to b.relay.test" in sh(link).stdout
        wait_for(lambda: "c.relay.test" in sh(map_).stdout, what="c back")
    finally:
        r = sh(stop)
    assert r.returncode == 0 and r.stdout.split().count("stopped") == 3, r.stdout + r.stderr
    for name in ("a", "b", "c"):
        assert not (d / "data" / name / "relay.pid").exists()
