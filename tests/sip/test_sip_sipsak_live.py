"""sipsak, a real SIP client, against the sip module: OPTIONS, the REGISTER / un-REGISTER cycle with
digest, a wrong password refused, and a MESSAGE (sent from a file: sipsak 0.9.8's -M mode crashes)
delivered to an IRC user.

sipsak writes a 5-digit port in a URI cut to 4 digits, so the port goes in -r and URIs carry none
(a URI with our address and no port is ours)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from support import RawClient, Server, free_port, server_config, wait_for

SIPSAK = shutil.which("sipsak")
pytestmark = pytest.mark.skipif(SIPSAK is None, reason="sipsak not installed (tools/dev installs it as root)")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {}})
    s = Server(tmp_path_factory.mktemp("sipsak"), cfg).start()
    s.sip_port = sip
    s.ctl("register", "alice", "alice-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log()


def sipsak(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIPSAK, "-vv", "-r", str(srv.sip_port), *args], capture_output=True, text=True,
                          timeout=60)


def bindings(srv) -> list[str]:
    return [b["contact"] for b in srv.call("sip", "bindings")]


def test_options(srv):
    r = sipsak(srv, "-s", "sip:127.0.0.1")
    assert r.returncode == 0 and "SIP/2.0 200 OK" in r.stdout, r.stdout + r.stderr


def test_register_and_unregister_cycle_with_digest(srv):
    contact = "sip:alice@127.0.0.1:5999"
    r = sipsak(srv, "-U", "-C", contact, "-x", "600", "-a", "alice-pw", "-u", "alice", "-s", "sip:alice@127.0.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert bindings(srv) == [contact]
    c = RawClient(srv.irc_port).register("watcher")
    c.send("WHOIS alice")
    assert "is connected through SIP" in c.read_until(" 320 ")
    r = sipsak(srv, "-U", "-C", contact, "-x", "0", "-a", "alice-pw", "-u", "alice", "-s", "sip:alice@127.0.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert bindings(srv) == []
    c.close()


def test_wrong_password_is_refused(srv):
    r = sipsak(srv, "-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "600", "-a", "wrong", "-u", "alice",
               "-s", "sip:alice@127.0.0.1")
    assert r.returncode != 0
    assert bindings(srv) == []


def test_message_from_sipsak_reaches_an_irc_user(srv, tmp_path):
    r = sipsak(srv, "-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "600", "-a", "alice-pw", "-u", "alice",
               "-s", "sip:alice@127.0.0.1")
    assert r.returncode == 0
    irc = RawClient(srv.irc_port).register("ircx")
    msg = tmp_path / "message.sip"
    msg.write_bytes(b"MESSAGE sip:ircx@127.0.0.1 SIP/2.0\r\nFrom: <sip:alice@127.0.0.1>;tag=sak1\r\n"
                    b"To: <sip:ircx@127.0.0.1>\r\nCall-ID: sak-msg-1@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n"
                    b"Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhello irc")
    r = sipsak(srv, "-f", str(msg), "-s", "sip:ircx@127.0.0.1", "-u", "alice", "-a", "alice-pw")
    assert "SIP/2.0 202 Accepted" in r.stdout, r.stdout + r.stderr
    line = irc.read_until("PRIVMSG ircx")
    assert line.startswith(":alice!") and line.endswith(":hello irc")
    irc.close()
    sipsak(srv, "-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "0", "-a", "alice-pw", "-u", "alice",
           "-s", "sip:alice@127.0.0.1")
    wait_for(lambda: bindings(srv) == [], what="alice unregistered")
