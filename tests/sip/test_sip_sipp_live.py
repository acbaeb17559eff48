"""SIPp (Debian's sip-tester) against the sip module: a REGISTER scenario and a MESSAGE scenario
(tests/sip/sipp/*.xml), each many transactions with digest, every call successful, every MESSAGE
delivered to the IRC user it names. The rate is printed (tools/bench is where speed is judged)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sipua import UA
from support import RawClient, Server, free_port, server_config, wait_for

SIPP = shutil.which("sipp")
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp not installed (tools/dev installs sip-tester as root)")
SCENARIOS = Path(__file__).parent / "sipp"
CALLS = 300


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {"requests_per_second": 100000, "request_burst": 100000}})
    s = Server(tmp_path_factory.mktemp("sipp"), cfg).start()
    s.sip_port = sip
    s.ctl("register", "alice", "alice-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log()


def sipp(srv, tmp_path, scenario: str, *extra: str) -> subprocess.CompletedProcess:
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\nalice;alice-pw;ircx\n")
    started = time.monotonic()
    r = subprocess.run([SIPP, "-sf", str(SCENARIOS / scenario), "-inf", str(users), "-au", "alice", "-ap", "alice-pw",
                        f"127.0.0.1:{srv.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()),
                        "-m", str(CALLS), "-r", "1000", "-l", "100", "-nostdin", "-timeout", "60s",
                        "-trace_err", "-error_file", str(tmp_path / "errors.log"), *extra],
                       capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - started
    print(f"SIPp {scenario}: {CALLS} calls (2 transactions each) in {elapsed:.2f} s, "
          f"{2 * CALLS / elapsed:.0f} transactions/s")
    return r


def successful(out: str) -> int:
    line = next(l for l in out.splitlines() if "Successful call" in l)
    return int(line.split("|")[2].split()[0])


def test_sipp_register_scenario(srv, tmp_path):
    r = sipp(srv, tmp_path, "register.xml")
    assert r.returncode == 0, r.stdout[-3000:]
    assert successful(r.stdout) == CALLS
    assert [b["account"] for b in srv.call("sip", "bindings")] == ["alice"]  # one contact, refreshed


def test_sipp_message_scenario_reaches_the_irc_user(srv, tmp_path):
    me = UA(srv.sip_port, "alice", "alice-pw")
    assert me.register(600).status == 200     # the sender must be a member to message network users
    irc = RawClient(srv.irc_port).register("ircx")
    got: list[str] = []

    def read():
        try:
            while len(got) < CALLS:
                got.append(irc.read_until("PRIVMSG ircx :sipp ", timeout=60))
        except (AssertionError, ConnectionError, OSError):
            pass
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    r = sipp(srv, tmp_path, "message.xml", "-auth_uri", f"ircx@127.0.0.1:{srv.sip_port}")
    assert r.returncode == 0, r.stdout[-3000:]
    assert successful(r.stdout) == CALLS
    wait_for(lambda: len(got) >= CALLS, timeout=30, what="every MESSAGE at the IRC user")
    assert all(line.startswith(":alice!") for line in got)
    irc.close()
    me.register(0)
    me.close()
