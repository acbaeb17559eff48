"""relay.log, read from real server processes: a refused second start stays out of it, the start-up
line names every listener, input refused is one info line with peer and reason, and the open-files
note says once what to do (info when the limit is simply the machine's)."""

from __future__ import annotations

import re
import resource
import socket
import subprocess

from support import RELAYCTL, RawClient, free_port, wait_for


def _lines(log: str, level: str) -> list[str]:
    return [l for l in log.splitlines() if re.match(rf"\S+ \S+ {level} ", l)]


def test_a_refused_second_foreground_start_prints_to_the_console_only(make_server):
    srv = make_server()
    before = srv.log()
    r = subprocess.run([RELAYCTL, "start", "-c", str(srv.path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "another server is running here" in r.stderr
    added = srv.log()[len(before):]
    assert srv.log().startswith(before)
    assert "another server" not in added and "loaded" not in added and "open files" not in added, added
    srv.call("status")  # the running one is untouched


def test_the_start_up_line_lists_every_listener(make_server):
    irc, tls, link, mqtt = free_port(), free_port(), free_port(), free_port()
    srv = make_server(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                              {"proto": "irc", "host": "127.0.0.1", "port": tls, "tls": True},
                              {"proto": "link", "host": "127.0.0.1", "port": link},
                              {"proto": "mqtt", "host": "127.0.0.1", "port": mqtt}],
                      modules={"mqtt": {"persist": False}})
    started = next(l for l in srv.log().splitlines() if " started: " in l)
    assert (f"listening on irc 127.0.0.1:{irc}, irc 127.0.0.1:{tls} tls, link 127.0.0.1:{link}, "
            f"mqtt 127.0.0.1:{mqtt}, control {srv.data_dir / 'control.sock'}") in started, started


def _refused(srv, port: int, *words: str) -> str:
    """The one info line about the connection from local `port`, naming all `words`."""
    def find():
        hits = [l for l in srv.log().splitlines() if f"127.0.0.1:{port}" in l and all(w in l for w in words)]
        return hits or None
    hits = wait_for(find, what=f"a log line for 127.0.0.1:{port} with {words}")
    assert len(hits) == 1, hits
    assert " INFO " in hits[0], hits[0]
    return hits[0]


def test_connections_refused_for_bad_input_are_one_info_line_each(make_server):
    ports = {p: free_port() for p in ("irc", "mqtt", "mqtt-ws", "link")}
    srv = make_server(listen=[{"proto": p, "host": "127.0.0.1", "port": n} for p, n in ports.items()],
                      modules={"mqtt": {"persist": False}},
                      # the default shaper, so a flood is one
                      shapers={"normal": {"bytes_per_second": 8192, "messages_per_second": 4, "burst": 20}},
                      shaper_rules=[{"normal": "all"}])

    def attack(proto: str, data: bytes) -> int:
        s = socket.create_connection(("127.0.0.1", ports[proto]), timeout=10)
        s.sendall(data)
        port = s.getsockname()[1]
        try:
            while s.recv(65536):  # the server closes it
                pass
        except ConnectionResetError:
            pass
        s.close()
        return port

    _refused(srv, attack("mqtt", b"\x10\xff\xff\xff\xff\x7f"), "mqtt", "remaining length")
    _refused(srv, attack("mqtt-ws", b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"), "WebSocket handshake refused")
    _refused(srv, attack("link", b"\x00\x00\x00\x05hello"), "link", "refused: protocol error")
    flooder = RawClient(ports["irc"]).register("flooder")
    flooder.send(b"".join(f"PRIVMSG flooder :flood {i}\r\n".encode() for i in range(300)))
    assert flooder.closed(timeout=30)
    _refused(srv, flooder.sock.getsockname()[1], "irc", "Excess Flood")
    ctl = socket.socket(socket.AF_UNIX)
    ctl.connect(str(srv.data_dir / "control.sock"))
    ctl.sendall(b"not json\n")
    assert b"bad request" in ctl.recv(65536)
    ctl.close()
    wait_for(lambda: "control socket: client refused: not JSON" in srv.log(), what="the control refusal logged")
    assert not _lines(srv.log(), "WARNING") and not _lines(srv.log(), "ERROR"), srv.log()
    srv.call("status")


def _limit_files(n: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n // 2, n))


def test_the_open_files_note_is_info_when_the_limit_is_the_machines(make_server):
    srv = make_server(start=False)
    srv.ctl("start", "--detach", preexec_fn=_limit_files(1024))
    try:
        log = srv.log()
        notes = [l for l in log.splitlines() if "open files" in l]
        assert len(notes) == 1, notes
        assert " INFO " in notes[0]
        assert "limit is 1024" in notes[0] and "limits.max_connections (60000)" in notes[0]
        assert "raise the hard limit" in notes[0]  # what to do, said once
        assert not _lines(log, "WARNING"), log
        assert srv.status()["open_files_limit"] == 1024  # the soft limit was raised to the hard one
    finally:
        srv.stop()


def test_no_open_files_note_when_max_connections_fits(make_server):
    srv = make_server(start=False, limits={"max_connections": 100})
    srv.ctl("start", "--detach", preexec_fn=_limit_files(1024))
    try:
        assert "open files" not in srv.log()
    finally:
        srv.stop()
