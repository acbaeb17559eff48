"""Bad input gets the right numeric or a clean disconnection, and the server stays up: lines over 512
bytes, invalid UTF-8, NUL bytes, unknown commands, garbage, and a flood through the default shaper."""

from __future__ import annotations

import socket

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ircsupport import RawIrc, chan, uniq


def still_answers(srv) -> None:
    c = srv.raw(uniq("ok"))
    c.send("PING :alive")
    assert c.expect("PONG").params[-1] == "alive"


def test_line_over_512_bytes_gets_417_and_the_connection_goes_on(irc):
    c = irc.raw(uniq("ll"))
    peer = irc.raw(uniq("lp"))
    at_limit = f"PRIVMSG {peer.nick} :" + "x" * (510 - len(f"PRIVMSG {peer.nick} :"))
    assert len(at_limit) == 510  # 512 with CRLF: accepted
    c.send(at_limit)
    got = peer.expect("PRIVMSG")  # accepted; relayed with the sender's prefix, cut to 512 bytes
    assert set(got.params[1]) == {"x"} and 510 <= len(got.raw) + 2 <= 512
    c.send(at_limit + "y")  # one byte over
    m = c.expect(lambda m: m.command in ("417", "PRIVMSG"))
    assert m.command == "417" and m.params[0] == c.nick
    assert peer.sync() == []  # nothing of it was relayed
    c.send(f"PRIVMSG {peer.nick} :after")
    assert peer.expect("PRIVMSG").params[1] == "after"


def test_relayed_lines_are_cut_to_512_bytes_at_a_character_boundary(irc):
    ch = chan()
    sender = irc.raw(uniq("cut"), user="longident")
    peer = irc.raw(uniq("cuv"))
    sender.join(ch)
    peer.join(ch)
    sender.sync()
    room = 510 - len(f"PRIVMSG {peer.nick} :")  # what the sender may send; the relay adds its prefix
    for target in (peer.nick, ch):
        for payload in ("a" * room, "a" * (room - 4) + "😃", "é" * (room // 2), "😃" * (room // 4)):
            line = f"PRIVMSG {target} :{payload}"
            if len(line.encode()) > 510:
                continue
            sender.send(line)
            got = peer.expect("PRIVMSG")
            assert len(got.raw.encode()) + 2 <= 512, len(got.raw.encode())
            assert got.params[1] and payload.startswith(got.params[1])  # a prefix, and valid UTF-8
    # reasons too: PART and QUIT
    sender.send(f"PART {ch} :" + "p" * 480)
    got = peer.expect("PART")
    assert len(got.raw.encode()) + 2 <= 512 and set(got.params[1]) == {"p"}
    sender.join(ch)
    peer.expect("JOIN")
    sender.send("QUIT :" + "q" * 490)
    got = peer.expect("QUIT")
    assert len(got.raw.encode()) + 2 <= 512 and got.params[0].startswith("Quit: qqq")


def test_over_long_line_sent_in_pieces_and_huge_line_without_newline(irc):
    c = irc.raw(uniq("lh"))
    c.send_raw(b"PRIVMSG " + c.nick.encode() + b" :" + b"a" * 300)
    c.send_raw(b"b" * 300 + b"\r\n")
    assert c.expect(lambda m: m.command in ("417", "PRIVMSG")).command == "417"
    c.send_raw(b"NOTICE x :" + b"z" * 20000)  # no line end at all: rejected once, rest discarded
    c.send_raw(b"\r\n")
    assert c.expect(lambda m: m.command in ("417", "PRIVMSG")).command == "417"
    c.send("PING :fine")
    assert c.expect("PONG").params[-1] == "fine"


def test_invalid_utf8_gets_fail_invalid_utf8(irc):
    c = irc.raw(uniq("u8"))
    peer = irc.raw(uniq("u9"))
    c.send(b"PRIVMSG " + peer.nick.encode() + b" :caf\xe9 \xff\xfe")
    m = c.expect("FAIL")
    assert m.params[:2] == ["PRIVMSG", "INVALID_UTF8"]
    assert peer.sync() == []
    c.send(f"PRIVMSG {peer.nick} :café".encode())  # valid UTF-8 passes
    assert peer.expect("PRIVMSG").params[1] == "café"


def test_nul_byte_gets_fail(irc):
    c = irc.raw(uniq("nul"))
    peer = irc.raw(uniq("num"))
    c.send(b"PRIVMSG " + peer.nick.encode() + b" :a\x00b")
    m = c.expect("FAIL")
    assert m.params[0] == "PRIVMSG" and m.params[1] in ("INVALID_MESSAGE", "INVALID_UTF8")
    assert peer.sync() == []


def test_unknown_commands_get_421(irc):
    c = irc.raw(uniq("unk"))
    for cmd in ("FOO", "XYZZY arg :trailing", "foo"):
        c.send(cmd)
        m = c.expect("421")
        assert m.params[:2] == [c.nick, cmd.split()[0].upper()]


def test_unknown_command_with_underscore_or_digits_gets_421(irc):
    c = irc.raw(uniq("u421"))
    for cmd in ("NONEXISTENT_COMMAND", "X2Y"):
        c.send(cmd)
        assert "421" in [m.command for m in c.sync()], cmd


def test_garbage_lines_are_ignored_and_the_session_survives(irc):
    c = irc.raw(uniq("gb"))
    for junk in (b"", b"   ", b":onlyasource", b"@onlytags", b"@a=b :src", b":src", b"\r", b"\x01\x02\x03",
                 b"@;;; PING :tagged", b"   PING :leading-spaces"):
        c.send_raw(junk + b"\r\n")
    c.send_raw(b"PING :lf-only\n")
    got = c.sync()
    assert all(m.command in ("PONG", "421", "FAIL") for m in got), got
    assert "lf-only" in [m.params[-1] for m in got if m.command == "PONG"]
    still_answers(irc)


def test_unregistered_garbage_then_registration_still_works(irc):
    c = irc.raw()
    c.send_raw(b"\xff\xfe\x00\r\n" + b"x" * 700 + b"\r\nNICK\r\n")
    nick = uniq("gr")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :r")
    assert c.expect("001").params[0] == nick


def test_abrupt_disconnects_mid_line_do_not_hurt(irc):
    ch = chan()
    watcher = irc.raw(uniq("ab"))
    watcher.join(ch)
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", irc.port))
        if i % 2:
            s.sendall(f"NICK {uniq('ad')}\r\nUSER u 0 * :r\r\nJOIN {ch}\r\nPRIVMSG {ch} :half a li".encode())
        else:
            s.sendall(b"NICK ")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
    assert all(m.command in ("JOIN", "QUIT", "PRIVMSG") for m in watcher.sync())
    still_answers(irc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=0, max_size=700), min_size=1, max_size=6))
def test_random_bytes_never_kill_the_server(irc, chunks):
    c = RawIrc(irc.port)
    try:
        c.send_raw(b"NICK " + uniq("hy").encode() + b"\r\nUSER u 0 * :r\r\n")
        for chunk in chunks:
            c.send_raw(chunk)
        c.send_raw(b"\r\nPING :survived\r\n")
        try:
            pong = c.expect(lambda m: m.command in ("PONG", "ERROR"), timeout=10)
            assert pong.command == "ERROR" or pong.params[-1] == "survived"
        except Exception as e:  # a disconnection is clean too; a dead server is not
            assert "closed" in str(e)
    finally:
        c.close()
    assert irc.alive()


@pytest.fixture(scope="module")
def shaped(start_server):
    """A server with the default shaper (configs/default.yaml): burst 20, 4 messages a second."""
    return start_server(shapers={"normal": {"bytes_per_second": 8192, "messages_per_second": 4, "burst": 20}},
                        shaper_rules=[{"normal": "all"}])


def test_flood_with_the_default_shaper_is_disconnected_others_unaffected(shaped):
    srv = shaped
    ch = chan()
    bystander = srv.raw(uniq("by"))
    bystander.join(ch)
    flooder = srv.raw(uniq("fl"))
    flooder.join(ch)
    bystander.sync()
    flooder.send_raw(b"".join(f"PRIVMSG {ch} :flood {i}\r\n".encode() for i in range(300)))
    err = flooder.expect("ERROR", timeout=15)
    assert "Excess Flood" in err.params[0]
    assert flooder.closed()
    got = bystander.collect(lambda m: m.command == "QUIT", timeout=15)
    quit_ = got[-1]
    assert quit_.nick == flooder.nick and "Excess Flood" in quit_.params[0]
    relayed = [m for m in got if m.command == "PRIVMSG"]
    assert 1 <= len(relayed) < 300  # the burst went through; the rest never did
    # the bystander is fine, and the server answers everyone
    bystander.send(f"PRIVMSG {ch} :still here")
    bystander.send("PING :ok")
    assert bystander.expect("PONG").params[-1] == "ok"
    still_answers(srv)
    srv.close_clients()


def test_a_burst_past_the_shaper_is_delayed_not_refused(shaped):
    srv = shaped
    c = srv.raw(uniq("pc"))
    peer = srv.raw(uniq("pd"))
    # 30 messages at once: past the burst of 20 (minus registration) they are delayed (fakelag), in order
    c.send_raw(b"".join(f"PRIVMSG {peer.nick} :m{i}\r\n".encode() for i in range(30)))
    texts = [peer.expect("PRIVMSG", timeout=20).params[1] for _ in range(30)]
    assert texts == [f"m{i}" for i in range(30)]
    c.send("PING :ok")
    assert c.expect("PONG").params[-1] == "ok"
    srv.close_clients()


def test_a_client_that_stops_reading_is_dropped_with_sendq_exceeded(restricted):
    srv = restricted  # sendq 64 KiB
    noisy, quiet = chan("n"), chan("q")
    talker = srv.raw(uniq("st"))
    talker.join(noisy)
    watcher = srv.raw(uniq("sw"))
    watcher.join(quiet)
    sock = socket.socket()  # a client with a tiny receive buffer that never reads
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    nick = uniq("sq")
    sock.sendall(f"NICK {nick}\r\nUSER u 0 * :r\r\nJOIN {quiet}\r\nJOIN {noisy}\r\n".encode())
    watcher.expect(lambda m: m.command == "JOIN" and m.nick == nick)
    talker.expect(lambda m: m.command == "JOIN" and m.nick == nick)
    line = (f"PRIVMSG {noisy} :" + "x" * 400 + "\r\n").encode()
    quit_ = None
    for _ in range(40):  # up to 40 * 500 * ~450 bytes = 9 MB towards the stalled client
        talker.send_raw(line * 500)
        talker.sync()
        got = [m for m in watcher.sync() if m.command == "QUIT" and m.nick == nick]
        if got:
            quit_ = got[0]
            break
    assert quit_ is not None, "the stalled client was never dropped"
    assert "SendQ exceeded" in quit_.params[0]
    sock.close()
    talker.send("PING :ok")
    assert talker.expect("PONG").params[-1] == "ok"
    srv.close_clients()
