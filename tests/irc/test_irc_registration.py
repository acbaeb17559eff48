"""Registration: PASS, NICK, USER, CAP (LS 302 / LIST / REQ / END), SASL PLAIN and SCRAM-SHA-256,
PING/PONG, QUIT and ERROR; over real sockets, with jaraco `irc` where a client library fits."""

from __future__ import annotations

import base64

import pytest
from ircsupport import OPER_NAME, SERVER_NAME, JIrc, chan, code_of, sasl_plain_payload, uniq
from scramp import ScramClient

EXPECTED_CAPS = {"message-tags", "server-time", "echo-message", "batch", "multi-prefix", "userhost-in-names",
                 "away-notify", "account-notify", "account-tag", "extended-join", "labeled-response",
                 "invite-notify", "setname", "cap-notify", "sasl", "draft/message-redaction"}


# ---------------------------------------------------------------------- NICK / USER / welcome

def test_jaraco_client_registers_and_gets_the_welcome_burst_in_order(irc):
    nick = uniq("reg")
    c = irc.jaraco(nick)
    codes = [code_of(e) for e in c.events if code_of(e).isdigit()]
    # Modern: 001-004, then at least one 005, then LUSERS and MOTD.
    assert codes[:4] == ["001", "002", "003", "004"]
    assert codes[4] == "005"
    assert {"251", "252", "253", "254", "255", "265", "266"} <= set(codes)
    assert codes[-3:][-1] == "376" and "375" in codes and "372" in codes
    welcome = c.events[0]
    assert welcome.target == nick and nick in welcome.arguments[0]
    myinfo = next(e for e in c.events if e.type == "myinfo")
    assert myinfo.arguments[0] == SERVER_NAME
    assert set(myinfo.arguments[2]) == set("iow")          # user modes
    assert set(myinfo.arguments[3]) == set("beIiklmnostv")  # channel modes
    # jaraco parses RPL_ISUPPORT
    assert c.conn.features.nicklen == 9
    assert dict(c.conn.features.prefix) == {"@": "o", "+": "v"}
    assert c.conn.get_nickname() == nick


def test_user_before_nick_also_registers(irc):
    c = irc.raw()
    nick = uniq("un")
    c.send(f"USER {nick} 0 * :Some One")
    c.send(f"NICK {nick}")
    m = c.expect("001")
    assert m.params[0] == nick
    assert m.params[-1].endswith(f"{nick}!~{nick}@127.0.0.1")


def test_nick_change_before_registration_is_taken(irc):
    c = irc.raw()
    a, b = uniq("na"), uniq("nb")
    c.send(f"NICK {a}")
    c.send(f"NICK {b}")
    c.send(f"USER u 0 * :r")
    assert c.expect("001").params[0] == b


def test_commands_before_registration_get_451_but_ping_works(irc):
    c = irc.raw()
    for line in ("JOIN #x", "PRIVMSG x :hi", "WHOIS x", "MODE x", "FOOBAR"):
        c.send(line)
        assert c.expect(lambda m: m.command.isdigit()).command == "451"
    c.send("PING :early bird")
    pong = c.expect("PONG")
    assert pong.params == [SERVER_NAME, "early bird"]


def test_nick_errors_431_432_433(irc):
    owner = irc.jaraco(uniq("own"))
    c = irc.jaraco(uniq("nerr"))
    c.conn.send_raw("NICK")
    assert c.expect("431").target == c.nick
    for bad in ("1digit", "-dash", "a*b", "toolongnick"):  # NICKLEN is 9
        c.conn.send_raw(f"NICK {bad}")
        ev = c.expect("432")
        assert ev.arguments[0] == bad
    c.conn.send_raw(f"NICK {owner.nick.upper()}")  # rfc1459 casemapping
    ev = c.expect("nicknameinuse")
    assert ev.arguments[0] == owner.nick.upper()
    # still the same nick: a PRIVMSG to it arrives
    owner.conn.privmsg(c.nick, "still you")
    assert c.expect("privmsg").arguments == ["still you"]


def test_nick_in_use_at_registration_gives_433_then_another_nick_registers(irc):
    taken = irc.raw(uniq("tk"))
    c = irc.raw()
    c.send(f"NICK {taken.nick}")
    m = c.expect("433")
    assert m.params[:2] == ["*", taken.nick]
    c.send("USER u 0 * :r")
    fresh = uniq("fr")
    c.send(f"NICK {fresh}")
    assert c.expect("001").params[0] == fresh


def test_two_unregistered_clients_with_the_same_nick_only_one_registers(irc):
    nick = uniq("twin")
    a, b = irc.raw(), irc.raw()
    a.send(f"NICK {nick}")
    b.send(f"NICK {nick}")
    a.send("USER a 0 * :a")
    assert a.expect(lambda m: m.command in ("001", "433")).command == "001"
    b.send("USER b 0 * :b")
    assert b.expect(lambda m: m.command in ("001", "433")).command == "433"


def test_case_only_nick_change_is_broadcast_and_a_noop_change_is_silent(irc):
    ch = chan()
    nick = uniq("case")
    a = irc.raw(nick)
    b = irc.raw(uniq("peer"))
    a.join(ch)
    b.join(ch)
    a.sync()
    a.send(f"NICK {nick.upper()}")
    assert a.expect("NICK").params == [nick.upper()]
    m = b.expect("NICK")
    assert m.nick == nick and m.params == [nick.upper()]
    a.send(f"NICK {nick.upper()}")
    assert a.sync() == []
    assert b.sync() == []


def test_user_errors_461_and_462(irc):
    c = irc.raw()
    c.send("USER onlytwo params")
    m = c.expect("461")
    assert m.params[:2] == ["*", "USER"]
    nick = uniq("ue")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :")  # empty realname: ERR_NEEDMOREPARAMS (Modern)
    m = c.expect(lambda m: m.command in ("461", "001"))
    assert m.command == "461" and m.params[:2] == [nick, "USER"]
    c.send("USER u 0 * :Real")
    c.expect("001")
    c.send("USER again 0 * :again")
    assert c.expect("462").params[0] == nick
    c.send("PASS late")
    assert c.expect("462").params[0] == nick


def test_pass_before_nick_user_is_accepted(irc):
    nick = uniq("pw")
    c = irc.jaraco(nick, password="anything")  # no server password configured: PASS is accepted
    assert c.conn.is_connected()


def test_username_gets_tilde_and_is_limited_to_userlen(irc):
    c = irc.raw()
    nick = uniq("ul")
    c.send(f"NICK {nick}")
    c.send("USER averyveryverylongusername 0 * :Real Name")
    c.expect("376")
    c.send(f"WHOIS {nick}")
    m = c.expect("311")
    assert m.params[2].startswith("~") and len(m.params[2]) <= 10
    assert m.params[-1] == "Real Name"


# ---------------------------------------------------------------------- CAP

def test_cap_ls_302_lists_every_capability_with_sasl_mechanisms(irc):
    c = irc.raw()
    c.send("CAP LS 302")
    lines = c.collect(lambda m: m.command == "CAP" and m.params[2] != "*")
    caps = {}
    for m in lines:
        assert m.params[:2] == ["*", "LS"]
        for tok in m.params[-1].split():
            k, _, v = tok.partition("=")
            caps[k] = v
    assert set(caps) == EXPECTED_CAPS
    assert set(caps["sasl"].split(",")) == {"PLAIN", "SCRAM-SHA-256"}
    # registration waits for CAP END
    nick = uniq("cap")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :r")
    assert "001" not in [m.command for m in c.sync()]
    c.send("CAP LIST")
    lst = c.expect("CAP")
    assert lst.params[1] == "LIST" and lst.params[2].split() == ["cap-notify"]  # implied by 302
    c.send("CAP END")
    assert c.expect("001").params[0] == nick


def test_cap_ls_without_version_has_no_values_and_one_line(irc):
    c = irc.raw()
    c.send("CAP LS")
    m = c.expect("CAP")
    assert m.params[:2] == ["*", "LS"] and len(m.params) == 3
    assert "=" not in m.params[2]
    assert set(m.params[2].split()) == EXPECTED_CAPS


def test_cap_list_empty_and_req_ack_nak_and_removal(irc):
    c = irc.raw()
    c.send("CAP LIST")
    assert c.expect("CAP").raw.endswith("CAP * LIST :")
    c.send("CAP REQ :foo multi-prefix bar")
    m = c.expect("CAP")
    assert m.params[1:] == ["NAK", "foo multi-prefix bar"]  # the whole set is refused, verbatim
    c.send("CAP REQ :multi-prefix server-time")
    m = c.expect("CAP")
    assert m.params[1] == "ACK" and set(m.params[2].split()) == {"multi-prefix", "server-time"}
    c.send("CAP REQ :-server-time")
    assert c.expect("CAP").params[1:] == ["ACK", "-server-time"]
    c.send("CAP LIST")
    assert c.expect("CAP").params[2].split() == ["multi-prefix"]
    c.send("CAP BOGUS")
    m = c.expect("410")
    assert m.params[:2] == ["*", "BOGUS"]
    nick = uniq("capr")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :r")
    c.send("CAP END")
    c.expect("001")


def test_cap_req_after_registration_and_cap_end_is_harmless(irc):
    c = irc.raw(uniq("late"))
    c.send("CAP REQ :server-time")
    assert c.expect("CAP").params == [c.nick, "ACK", "server-time"]
    c.send("CAP END")
    c.send("PRIVMSG " + c.nick + " :self")
    m = c.expect("PRIVMSG")
    assert "time" in m.tags


# ---------------------------------------------------------------------- SASL

@pytest.fixture(scope="module")
def sasl_accounts(server):
    server.account("saslu", "sesame")
    server.account("scramu", "s3cret pass")
    server.account("bigpw", "bar" * 97)
    return server


def _sasl_start(irc, mech="PLAIN"):
    c = irc.raw()
    c.send("CAP LS 302")
    c.send("CAP REQ :sasl")
    assert c.expect(lambda m: m.command == "CAP" and m.params[1] != "LS").params[1] == "ACK"
    c.send(f"AUTHENTICATE {mech}")
    return c


def test_sasl_plain_with_jaraco(irc, sasl_accounts):
    nick = uniq("js")
    c = JIrc(irc.port, nick, password="sesame", sasl_login="saslu")
    irc.clients.append(c)
    logged = next(e for e in c.events if code_of(e) == "900")
    assert logged.arguments[1] == "saslu"
    assert any(code_of(e) == "903" for e in c.events)
    c.conn.whois(nick)
    ev = c.expect("330")
    assert ev.arguments[:2] == [nick, "saslu"]


def test_sasl_plain_raw_success_without_and_with_authzid(irc, sasl_accounts):
    for authzid in ("", "saslu"):
        c = _sasl_start(irc)
        assert c.expect("AUTHENTICATE").params == ["+"]
        c.send("AUTHENTICATE " + sasl_plain_payload("saslu", "sesame", authzid))
        m = c.expect("900")
        assert m.params[2] == "saslu"
        c.expect("903")
        nick = uniq("sp")
        c.send(f"NICK {nick}")
        c.send("USER u 0 * :r")
        c.send("CAP END")
        c.expect("001")


def test_sasl_plain_failures(irc, sasl_accounts):
    c = _sasl_start(irc)
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain_payload("saslu", "wrong"))
    assert c.expect(lambda m: m.command in ("900", "904")).command == "904"
    # another authzid than the authcid is refused
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain_payload("saslu", "sesame", authzid="someoneelse"))
    assert c.expect(lambda m: m.command in ("900", "904")).command == "904"
    # unknown account, and bad base64
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain_payload("nobody", "sesame"))
    assert c.expect(lambda m: m.command in ("900", "904")).command == "904"
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE !!!notbase64")
    assert c.expect(lambda m: m.command in ("900", "904")).command == "904"
    # unknown mechanism: 908 lists the mechanisms, then 904
    c.send("AUTHENTICATE FOO")
    m = c.expect("908")
    assert set(m.params[1].split(",")) == {"PLAIN", "SCRAM-SHA-256"}
    c.expect("904")
    # abort: 906
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE *")
    c.expect("906")
    # then success, and a second attempt is 907
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain_payload("saslu", "sesame"))
    c.expect("903")
    c.send("AUTHENTICATE PLAIN")
    c.expect("907")


def test_registration_during_sasl_aborts_it_with_906(irc, sasl_accounts):
    c = _sasl_start(irc)
    c.expect("AUTHENTICATE")
    nick = uniq("ab")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :r")
    c.send("CAP END")
    got = c.collect("001")
    assert [m.command for m in got] == ["906", "001"]


def test_sasl_without_the_cap_fails(irc, sasl_accounts):
    c = irc.raw()
    c.send("AUTHENTICATE PLAIN")
    assert c.expect(lambda m: m.command.isdigit()).command == "904"


def test_sasl_plain_payload_of_exactly_400_bytes_then_plus(irc, sasl_accounts):
    payload = sasl_plain_payload("bigpw", "bar" * 97)
    assert len(payload) == 400
    c = _sasl_start(irc)
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + payload)
    c.send("AUTHENTICATE +")
    assert c.expect(lambda m: m.command in ("900", "904")).command == "900"
    c.expect("903")


def test_sasl_plain_payload_split_in_chunks(irc, sasl_accounts):
    irc.account("chunky", "x" * 350)
    payload = sasl_plain_payload("chunky", "x" * 350)
    assert 400 < len(payload) < 800
    c = _sasl_start(irc)
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + payload[:400])
    c.send("AUTHENTICATE " + payload[400:])
    assert c.expect(lambda m: m.command in ("900", "904")).command == "900"


def _scram(irc, user, password):
    c = _sasl_start(irc, "SCRAM-SHA-256")
    assert c.expect("AUTHENTICATE").params == ["+"]
    sc = ScramClient(["SCRAM-SHA-256"], user, password)
    c.send("AUTHENTICATE " + base64.b64encode(sc.get_client_first().encode()).decode())
    first = c.expect(lambda m: m.command in ("AUTHENTICATE", "904"))
    return c, sc, first


def test_sasl_scram_sha_256_success(irc, sasl_accounts):
    c, sc, first = _scram(irc, "scramu", "s3cret pass")
    assert first.command == "AUTHENTICATE"
    sc.set_server_first(base64.b64decode(first.params[0]).decode())
    c.send("AUTHENTICATE " + base64.b64encode(sc.get_client_final().encode()).decode())
    final = c.expect("AUTHENTICATE")
    sc.set_server_final(base64.b64decode(final.params[0]).decode())  # verifies the server's signature
    c.send("AUTHENTICATE +")
    m = c.expect("900")
    assert m.params[2] == "scramu"
    c.expect("903")
    nick = uniq("scr")
    c.send(f"NICK {nick}")
    c.send("USER u 0 * :r")
    c.send("CAP END")
    c.expect("001")
    c.send(f"WHOIS {nick}")
    assert c.expect("330").params[2] == "scramu"


def test_sasl_scram_sha_256_wrong_password_fails(irc, sasl_accounts):
    c, sc, first = _scram(irc, "scramu", "not it")
    assert first.command == "AUTHENTICATE"
    sc.set_server_first(base64.b64decode(first.params[0]).decode())
    c.send("AUTHENTICATE " + base64.b64encode(sc.get_client_final().encode()).decode())
    assert c.expect(lambda m: m.command in ("900", "904")).command == "904"


def test_sasl_scram_unknown_user_fails(irc, sasl_accounts):
    c, sc, first = _scram(irc, "ghost", "whatever")
    if first.command == "AUTHENTICATE":  # a server may fake a challenge; the proof must fail then
        sc.set_server_first(base64.b64decode(first.params[0]).decode())
        c.send("AUTHENTICATE " + base64.b64encode(sc.get_client_final().encode()).decode())
        first = c.expect("904")
    assert first.command == "904"


def test_sasl_after_registration_logs_in(irc, sasl_accounts):
    c = irc.raw(uniq("post"), caps=["sasl"])
    c.send("AUTHENTICATE PLAIN")
    assert c.expect(lambda m: m.command.isdigit() or m.command == "AUTHENTICATE").params == ["+"]
    c.send("AUTHENTICATE " + sasl_plain_payload("saslu", "sesame"))
    assert c.expect("900").params[:3] == [c.nick, f"{c.nick}!~{c.nick}@127.0.0.1", "saslu"]
    c.expect("903")
    c.send(f"WHOIS {c.nick}")
    assert c.expect("330").params[2] == "saslu"
    c.expect("318")
    c.send("AUTHENTICATE PLAIN")  # no second login
    assert c.expect(lambda m: m.command.isdigit()).command == "907"


# ---------------------------------------------------------------------- PING / PONG / QUIT / ERROR

def test_ping_pong(irc):
    c = irc.jaraco(uniq("pp"))
    c.conn.send_raw("PING :abc def")
    ev = c.expect("pong")
    assert ev.source == SERVER_NAME and ev.target == SERVER_NAME and ev.arguments == ["abc def"]
    c.conn.send_raw("PING")
    assert c.expect("461").arguments[0] == "PING"
    c.conn.send_raw("PONG :whatever")  # an unsolicited PONG gets no reply
    assert [code_of(e) for e in c.sync()] == []


def test_quit_sends_error_and_closes_and_channel_sees_quit(irc):
    ch = chan()
    watcher = irc.jaraco(uniq("wq"))
    watcher.conn.join(ch)
    watcher.expect("endofnames")
    leaver = irc.jaraco(uniq("lq"))
    leaver.conn.join(ch)
    leaver.expect("endofnames")
    leaver.conn.quit("see you")
    err = leaver.expect("error")
    assert "see you" in err.target or "see you" in " ".join(err.arguments)
    leaver.wait_disconnect()
    q = watcher.expect("quit")
    assert q.source.nick == leaver.nick and q.arguments == ["Quit: see you"]


def test_quit_raw_error_line(irc):
    c = irc.raw(uniq("qr"))
    c.send("QUIT")
    m = c.expect("ERROR")
    assert m.params[0].startswith("Closing Link: 127.0.0.1")
    assert c.closed()


def test_quit_before_registration(irc):
    c = irc.raw()
    c.send("NICK " + uniq("qb"))
    c.send("QUIT :bye")
    assert c.expect("ERROR")
    assert c.closed()


def test_nick_is_released_on_quit(irc):
    nick = uniq("rel")
    a = irc.raw(nick)
    a.send("QUIT")
    assert a.closed()
    b = irc.raw()
    b.send(f"NICK {nick.upper()}")
    b.send("USER u 0 * :r")
    assert b.expect(lambda m: m.command in ("001", "433")).command == "001"


def test_oper_wrong_password_464_with_jaraco(irc):
    c = irc.jaraco(uniq("op"))
    c.conn.oper(OPER_NAME, "wrong")
    assert c.expect("464").type == "passwdmismatch"
