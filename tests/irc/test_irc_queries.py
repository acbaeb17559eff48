"""Users and server queries with jaraco `irc`: WHO, WHOIS, WHOWAS, ISON, USERHOST, AWAY, LUSERS, MOTD,
VERSION, TIME, ADMIN, INFO, OPER, KILL; PRIVMSG and NOTICE to channels, nicks and several targets."""

from __future__ import annotations

import re

from ircsupport import OPER_NAME, OPER_PASSWORD, SERVER_NAME, chan, code_of, uniq


def join(c, ch):
    c.conn.join(ch)
    return c.collect(lambda e: code_of(e) == "366")


def codes(evs):
    return [code_of(e) for e in evs]


# ---------------------------------------------------------------------- WHO

def test_who_channel_and_nick_and_mask(irc):
    ch = chan()
    a = irc.jaraco(uniq("wa"), username="alpha", ircname="Alpha Person")
    b = irc.jaraco(uniq("wb"))
    join(a, ch)
    join(b, ch)
    a.conn.send_raw("AWAY :gone")
    a.expect("306")
    b.conn.who(ch)
    evs = b.collect("315")
    rows = {e.arguments[4]: e.arguments for e in evs if code_of(e) == "352"}
    assert set(rows) == {a.nick, b.nick}
    # <channel> <user> <host> <server> <nick> <flags> :<hopcount> <realname>
    assert rows[a.nick][:6] == [ch, "~alpha", "127.0.0.1", SERVER_NAME, a.nick, "G@"]
    assert rows[a.nick][6] == "0 Alpha Person"
    assert rows[b.nick][5] == "H"
    assert evs[-1].arguments[0] == ch
    b.conn.who(a.nick.upper())
    evs = b.collect("315")
    assert [e.arguments[4] for e in evs if code_of(e) == "352"] == [a.nick]
    assert evs[-1].arguments[0] == a.nick.upper()  # the mask, as sent
    b.conn.who(a.nick[:-1] + "*")
    evs = b.collect("315")
    assert a.nick in [e.arguments[4] for e in evs if code_of(e) == "352"]
    b.conn.who("nosuch" + uniq("x", 3))
    assert codes(b.collect("315")) == ["315"]


def test_who_hides_invisible_users_not_sharing_a_channel_and_shows_opers(irc):
    hidden = irc.jaraco(uniq("wi"))
    hidden.conn.send_raw(f"MODE {hidden.nick} +i")
    hidden.expect("umode")
    viewer = irc.jaraco(uniq("wv"))
    viewer.conn.who(hidden.nick)
    assert codes(viewer.collect("315")) == ["315"]
    ch = chan()
    join(hidden, ch)
    join(viewer, ch)
    viewer.conn.who(hidden.nick)
    assert codes(viewer.collect("315")) == ["352", "315"]
    hidden.conn.oper(OPER_NAME, OPER_PASSWORD)
    hidden.expect("381")
    viewer.conn.who(ch)
    rows = [e.arguments for e in viewer.collect("315") if code_of(e) == "352"]
    assert [r[5] for r in rows if r[4] == hidden.nick] == ["H*@"]


# ---------------------------------------------------------------------- WHOIS / WHOWAS

def test_whois(irc):
    ch, secret = chan(), chan("s")
    a = irc.jaraco(uniq("ia"), username="ident", ircname="Real A")
    b = irc.jaraco(uniq("ib"))
    join(a, ch)
    join(a, secret)
    a.conn.send_raw(f"MODE {secret} +s")
    a.expect("mode")
    b.conn.whois([a.nick])
    evs = b.collect("318")
    got = {code_of(e): e.arguments for e in evs}
    assert got["311"] == [a.nick, "~ident", "127.0.0.1", "*", "Real A"]
    assert got["319"] == [a.nick, "@" + ch]  # the secret channel is not shown
    assert got["312"][:2] == [a.nick, SERVER_NAME]
    assert got["317"][0] == a.nick and got["317"][1].isdigit() and got["317"][2].isdigit()
    assert got["318"][0] == a.nick
    assert "301" not in got and "313" not in got and "330" not in got
    assert set(got) <= {"311", "319", "312", "317", "318"}
    a.conn.send_raw("AWAY :brb")
    a.expect("306")
    a.conn.oper(OPER_NAME, OPER_PASSWORD)
    a.expect("381")
    b.conn.send_raw(f"WHOIS {SERVER_NAME} {a.nick.upper()}")  # the server param form, casemapped nick
    got = {code_of(e): e.arguments for e in b.collect("318")}
    assert got["301"] == [a.nick, "brb"]
    assert got["313"][0] == a.nick
    a.conn.whois([a.nick])
    got = {code_of(e): e.arguments for e in a.collect("318")}
    assert sorted(got["319"][1].split()) == sorted(["@" + ch, "@" + secret])  # one's own secret channels


def test_whois_errors_401_431(irc):
    c = irc.jaraco(uniq("ie"))
    missing = "nobody" + uniq("", 3)
    c.conn.whois([missing])
    evs = c.collect("318")
    assert codes(evs) == ["401", "318"]
    assert evs[0].arguments[0] == missing and evs[1].arguments[0] == missing
    c.conn.send_raw("WHOIS")
    assert code_of(c.expect(lambda e: code_of(e).isdigit())) in ("431", "461")


def test_whowas(irc):
    gone = irc.jaraco(uniq("ww"), username="was", ircname="Was Here")
    nick = gone.nick
    gone.conn.quit("bye")
    gone.wait_disconnect()
    c = irc.jaraco(uniq("wq"))
    c.conn.whowas(nick)
    evs = c.collect("369")
    got = {code_of(e): e.arguments for e in evs}
    assert got["314"] == [nick, "~was", "127.0.0.1", "*", "Was Here"]
    assert got["312"][:2] == [nick, SERVER_NAME]
    assert got["369"][0] == nick
    missing = "never" + uniq("", 3)
    c.conn.whowas(missing)
    assert codes(c.collect("369")) == ["406", "369"]
    c.conn.send_raw("WHOWAS")
    assert c.expect("461").arguments[0] == "WHOWAS"


def test_whowas_after_nick_change_and_count(irc):
    c = irc.jaraco(uniq("wn"))
    old = c.nick
    for _ in range(3):
        new = uniq("wn")
        c.conn.nick(new)
        c.expect("nick")
    c.conn.send_raw(f"WHOWAS {old} 1")
    assert codes(c.collect("369")).count("314") == 1


# ---------------------------------------------------------------------- ISON / USERHOST / AWAY

def test_ison_and_userhost(irc):
    a = irc.jaraco(uniq("is"), username="isu")
    b = irc.jaraco(uniq("it"))
    missing = "no" + uniq("", 5)
    b.conn.ison([a.nick.upper(), missing, b.nick])
    ev = b.expect("303")
    assert ev.arguments[0].split() == [a.nick, b.nick]
    b.conn.send_raw(f"ISON {missing}")
    assert b.expect("303").arguments == [""]
    b.conn.send_raw(f"USERHOST {a.nick} {missing}")
    assert b.expect("302").arguments == [f"{a.nick}=+~isu@127.0.0.1"]
    a.conn.send_raw("AWAY :away")
    a.expect("306")
    a.conn.oper(OPER_NAME, OPER_PASSWORD)
    a.expect("381")
    b.conn.send_raw(f"USERHOST {a.nick}")
    assert b.expect("302").arguments == [f"{a.nick}*=-~isu@127.0.0.1"]
    b.conn.send_raw("ISON")
    assert b.expect("461").arguments[0] == "ISON"
    b.conn.send_raw("USERHOST")
    assert b.expect("461").arguments[0] == "USERHOST"


def test_away_305_306_and_301_on_privmsg(irc):
    a = irc.jaraco(uniq("aw"))
    b = irc.jaraco(uniq("ax"))
    a.conn.send_raw("AWAY :not here")
    assert a.expect("306").arguments == ["You have been marked as being away"]
    b.conn.privmsg(a.nick, "hello?")
    assert b.expect("301").arguments == [a.nick, "not here"]
    assert a.expect("privmsg").arguments == ["hello?"]
    b.conn.notice(a.nick, "no auto reply for NOTICE")
    assert codes(b.sync()) == []
    a.conn.send_raw("AWAY")
    assert a.expect("305")
    b.conn.privmsg(a.nick, "back?")
    assert codes(b.sync()) == []
    a.conn.send_raw("AWAY :" + "z" * 300)
    a.expect("306")
    b.conn.whois([a.nick])
    away = next(e for e in b.collect("318") if code_of(e) == "301")
    assert away.arguments[1] == "z" * 200  # AWAYLEN


# ---------------------------------------------------------------------- server queries

def lusers(c):
    c.send("LUSERS")
    got = c.collect("266")
    by = {m.command: m.params for m in got}
    assert len(by) == len(got), "duplicated numerics"
    assert set(by) == {"251", "252", "253", "254", "255", "265", "266"}
    assert all(p[0] == c.nick for p in by.values())
    vis, inv, servers = map(int, re.findall(r" (-?\d+) ", " " + by["251"][1] + " ")[:3])
    local_me = int(re.findall(r" (\d+) ", " " + by["255"][1] + " ")[0])
    return {"visible": vis, "invisible": inv, "servers": servers, "opers": int(by["252"][1]),
            "unknown": int(by["253"][1]), "channels": int(by["254"][1]), "local_me": local_me,
            "local": int(by["265"][1]), "local_max": int(by["265"][2]),
            "global": int(by["266"][1]), "global_max": int(by["266"][2])}


def test_lusers_exact_counts(start_server):
    srv = start_server()  # its own server: the counts are global
    a = srv.raw(uniq("lu"))
    assert lusers(a) == {"visible": 1, "invisible": 0, "servers": 1, "opers": 0, "unknown": 0, "channels": 0,
                         "local_me": 1, "local": 1, "local_max": 1, "global": 1, "global_max": 1}
    b = srv.raw(uniq("lv"))
    b.send(f"MODE {b.nick} +i")
    b.expect("MODE")
    b.send(f"OPER {OPER_NAME} {OPER_PASSWORD}")
    b.expect("381")
    b.join(chan())
    unreg = srv.raw()
    unreg.send("NICK " + uniq("lw"))
    unreg.sync()
    assert lusers(a) == {"visible": 1, "invisible": 1, "servers": 1, "opers": 1, "unknown": 1, "channels": 1,
                         "local_me": 2, "local": 2, "local_max": 2, "global": 2, "global_max": 2}
    b.send("QUIT")
    assert b.closed()
    unreg.send("QUIT")
    assert unreg.closed()
    assert lusers(a) == {"visible": 1, "invisible": 0, "servers": 1, "opers": 0, "unknown": 0, "channels": 0,
                         "local_me": 1, "local": 1, "local_max": 2, "global": 1, "global_max": 2}
    srv.close_clients()


def test_lusers_motd_version_time_admin_info(irc):
    c = irc.jaraco(uniq("mv"))
    c.conn.lusers()
    evs = c.collect("266")
    assert codes(evs) == ["251", "252", "253", "254", "255", "265", "266"]
    assert evs[0].arguments[0].startswith("There are ") and evs[-1].arguments[0].isdigit()
    c.conn.motd()
    evs = c.collect("376")
    assert codes(evs) == ["375", "372", "376"] and evs[1].arguments == ["- Welcome to relaynet."]
    c.conn.version()
    evs = c.collect(lambda e: code_of(e) == "351")
    assert evs[-1].arguments[0].startswith("relaynet-") and evs[-1].arguments[1] == SERVER_NAME
    assert "005" in codes(c.sync())  # Modern: VERSION is followed by RPL_ISUPPORT
    c.conn.time()
    ev = c.expect("391")
    assert ev.arguments[0] == SERVER_NAME and re.search(r"\d\d:\d\d:\d\d", ev.arguments[1])
    c.conn.admin()
    evs = c.collect("259")
    assert codes(evs) == ["256", "257", "258", "259"]
    assert evs[-1].arguments == ["root@localhost"]
    c.conn.info()
    evs = c.collect("374")
    assert codes(evs)[-1] == "374" and "371" in codes(evs)


def test_server_queries_with_a_target_and_402(irc):
    c = irc.raw(uniq("tg"))
    for line, want in ((f"TIME {SERVER_NAME}", "391"), ("VERSION *relay*", "351"), (f"ADMIN {c.nick}", "256"),
                       (f"MOTD {SERVER_NAME}", "375"), (f"INFO {SERVER_NAME}", "371")):
        c.send(line)
        assert c.expect(lambda m: m.command.isdigit()).command == want, line
        c.sync()
    for cmd in ("INFO", "TIME", "VERSION", "ADMIN", "MOTD"):
        c.send(f"{cmd} invalid.server.example")
        m = c.expect(lambda m: m.command.isdigit())
        assert m.command == "402" and m.params[:2] == [c.nick, "invalid.server.example"], cmd


def test_motd_missing_422(restricted):
    srv = restricted
    c = srv.raw()
    c.send("NICK " + uniq("nm"))
    c.send("USER u 0 * :r")
    c.expect("422")
    c.send("MOTD")
    c.expect("422")
    srv.close_clients()


# ---------------------------------------------------------------------- OPER / KILL

def test_oper_success_and_failures(irc):
    c = irc.jaraco(uniq("oo"))
    c.conn.oper(OPER_NAME, "wrong")
    assert codes(c.sync()) == ["464"]
    c.conn.oper("nosuchoper", OPER_PASSWORD)
    assert codes(c.sync()) in (["464"], ["491"])
    c.conn.send_raw(f"OPER {OPER_NAME}")
    assert codes(c.sync()) == ["461"]
    c.conn.oper(OPER_NAME, OPER_PASSWORD)
    evs = c.sync()
    assert "381" in codes(evs)
    umode = next(e for e in evs if e.type == "umode")
    assert umode.target == c.nick and umode.arguments == ["+o"]
    c.conn.send_raw(f"MODE {c.nick}")
    assert "o" in c.expect("221").arguments[0]
    c.conn.send_raw(f"MODE {c.nick} -o")
    assert c.expect("umode").arguments == ["-o"]


def test_oper_refused_by_access_rule_491(restricted):
    srv = restricted
    c = srv.raw(uniq("or"))
    c.send(f"OPER {OPER_NAME} {OPER_PASSWORD}")
    assert c.expect(lambda m: m.command in ("381", "491", "464")).command == "491"
    srv.close_clients()


def test_kill(irc):
    ch = chan()
    op = irc.jaraco(uniq("ko"))
    victim = irc.jaraco(uniq("kv"))
    watcher = irc.jaraco(uniq("kw"))
    join(victim, ch)
    join(watcher, ch)
    watcher.conn.send_raw(f"KILL {victim.nick} :not an oper")
    assert codes(watcher.sync()) == ["481"]
    op.conn.oper(OPER_NAME, OPER_PASSWORD)
    op.expect("381")
    op.conn.send_raw("KILL nosuch" + uniq("", 3) + " x")
    assert op.expect("401")
    op.conn.send_raw(f"KILL {victim.nick} :spamming")
    err = victim.expect("error")
    assert "spamming" in (err.target or "") + " ".join(err.arguments)
    victim.wait_disconnect()
    q = watcher.expect("quit")
    assert q.source.nick == victim.nick and "spamming" in q.arguments[0] and op.nick in q.arguments[0]


# ---------------------------------------------------------------------- PRIVMSG / NOTICE

def test_privmsg_and_notice_to_channel_and_nick(irc):
    ch = chan()
    a = irc.jaraco(uniq("pa"))
    b = irc.jaraco(uniq("pb"))
    join(a, ch)
    join(b, ch)
    a.conn.privmsg(ch, "hello channel")
    ev = b.expect("pubmsg")
    assert ev.source.nick == a.nick and ev.target == ch and ev.arguments == ["hello channel"]
    assert [e.type for e in a.sync()] == ["join"]  # no echo without echo-message
    a.conn.notice(ch, "channel notice")
    assert b.expect("pubnotice").arguments == ["channel notice"]
    a.conn.privmsg(b.nick.upper(), "hello you")
    ev = b.expect("privmsg")
    assert ev.target == b.nick and ev.arguments == ["hello you"]
    a.conn.notice(b.nick, "notice you")
    assert b.expect("privnotice").arguments == ["notice you"]
    a.conn.send_raw(f"PRIVMSG {b.nick} :\x01ACTION waves\x01")
    assert b.expect("action").arguments == ["waves"]


def test_privmsg_several_targets_and_407(irc):
    ch = chan()
    a, b, c = irc.jaraco(uniq("ma")), irc.jaraco(uniq("mb")), irc.jaraco(uniq("mc"))
    join(c, ch)
    a.conn.send_raw(f"PRIVMSG {b.nick},{ch},{c.nick} :to all")  # +n: a is outside #ch -> 404
    assert b.expect("privmsg").arguments == ["to all"]
    assert c.expect("privmsg").arguments == ["to all"]
    assert a.expect("404").arguments[0] == ch
    targets = ",".join([b.nick, c.nick, ch, "x1", "x2"])  # TARGMAX PRIVMSG:4
    a.conn.send_raw(f"PRIVMSG {targets} :too many")
    assert a.expect("407")
    assert codes(b.sync()) == []


def test_message_errors_401_404_411_412_and_notice_is_silent(irc):
    a = irc.jaraco(uniq("me"))
    missing = "nobody" + uniq("", 3)
    a.conn.privmsg(missing, "hi")
    ev = a.expect("401")
    assert ev.arguments[0] == missing
    a.conn.privmsg(chan(), "hi")
    assert code_of(a.expect(lambda e: code_of(e).isdigit())) in ("401", "403")
    a.conn.send_raw("PRIVMSG")
    assert code_of(a.expect(lambda e: code_of(e).isdigit())) == "411"
    a.conn.send_raw(f"PRIVMSG {a.nick}")
    assert a.expect("412")
    a.conn.send_raw(f"PRIVMSG {a.nick} :")
    assert a.expect("412")
    for line in (f"NOTICE {missing} :hi", f"NOTICE {chan()} :hi", "NOTICE", f"NOTICE {a.nick}"):
        a.conn.send_raw(line)
        assert codes(a.sync()) == [], line


def test_long_privmsg_arrives_whole(irc):
    a = irc.jaraco(uniq("lg"))
    b = irc.jaraco(uniq("lh"))
    text = "é" * 200  # 400 bytes of UTF-8
    a.conn.privmsg(b.nick, text)
    assert b.expect("privmsg").arguments == [text]
