"""IRCv3 capabilities over raw sockets (jaraco `irc` does not negotiate CAP): message-tags, server-time,
echo-message, batch, multi-prefix, userhost-in-names, away-notify, account-notify, account-tag,
extended-join, labeled-response, invite-notify, setname, cap-notify."""

from __future__ import annotations

import calendar
import re
import time

import pytest
from ircsupport import SERVER_NAME, TIME_RE, chan, sasl_plain_payload, uniq


@pytest.fixture(scope="module")
def accounts(server):
    server.account("tagacct", "tagpass")
    server.account("ntfacct", "ntfpass")
    return server


def sasl_client(irc, nick, account, password, caps=()):
    c = irc.raw()
    c.send("CAP LS 302")
    c.send(f"CAP REQ :{' '.join(('sasl', *caps))}")
    assert c.expect(lambda m: m.command == "CAP" and m.params[1] != "LS").params[1] == "ACK"
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain_payload(account, password))
    c.expect("903")
    c.send(f"NICK {nick}")
    c.send(f"USER {nick} 0 * :Real {nick}")
    c.send("CAP END")
    c.expect("376")
    c.nick = nick
    return c


def in_channel(irc, ch, *clients):
    for c in clients:
        c.join(ch)
    for c in clients:
        c.sync()


# ---------------------------------------------------------------------- message-tags

def test_message_tags_client_only_tags_msgid_and_tagmsg(irc):
    ch = chan()
    alice = irc.raw(uniq("ta"), caps=["message-tags"])
    bob = irc.raw(uniq("tb"), caps=["message-tags", "echo-message"])
    carol = irc.raw(uniq("tc"))
    dave = irc.raw(uniq("td"), caps=["server-time"])
    in_channel(irc, ch, alice, bob, carol, dave)
    alice.send(f"@+baz=bat;fizz=buzz PRIVMSG {ch} :hi")
    m = bob.expect("PRIVMSG")
    assert m.tags.get("+baz") == "bat" and "fizz" not in m.tags and m.tags.get("msgid")
    m = carol.expect("PRIVMSG")
    assert m.raw.startswith(":") and m.params == [ch, "hi"]  # no tags at all
    m = dave.expect("PRIVMSG")
    assert "+baz" not in m.tags and TIME_RE.match(m.tags["time"])
    # escaping round trip, and TAGMSG only to message-tags clients
    bob.send(rf"@+buzz=fizz\:buzz\sx\\y;cat=dog TAGMSG {ch}")
    echo = bob.expect("TAGMSG")
    got = alice.expect("TAGMSG")
    for t in (echo, got):
        assert t.params == [ch] and t.tags["+buzz"] == "fizz;buzz x\\y" and "cat" not in t.tags
    assert echo.tags["msgid"] == got.tags["msgid"]
    assert [m.command for m in carol.sync()] == []
    assert [m.command for m in dave.sync()] == []


def test_message_tags_to_a_nick_and_the_4094_byte_limit(irc):
    a = irc.raw(uniq("tl"), caps=["message-tags", "echo-message"])
    b = irc.raw(uniq("tm"), caps=["message-tags"])
    ok = "@foo=bar;+baz=%s TAGMSG %s" % ("a" * 4081, b.nick)  # tag section exactly 4096 bytes with @ and space
    assert ok.index("TAGMSG") == 4096
    a.send(ok)
    assert b.expect("TAGMSG").tags["+baz"] == "a" * 4081
    a.expect("TAGMSG")
    too_long = "@foo=bar;+baz=%s TAGMSG %s" % ("a" * 4082, b.nick)
    a.send(too_long)
    assert a.expect(lambda m: m.command in ("417", "TAGMSG")).command == "417"
    assert b.sync() == []


# ---------------------------------------------------------------------- server-time

def test_server_time_on_messages_and_channel_events(irc):
    ch = chan()
    a = irc.raw(uniq("st"), caps=["server-time"])
    b = irc.raw(uniq("su"))
    before = time.time()
    join = a.join(ch)[0]
    assert join.command == "JOIN" and TIME_RE.match(join.tags["time"])
    b.join(ch)
    m = a.expect("JOIN")
    t = m.tags["time"]
    assert TIME_RE.match(t), t
    secs = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + int(t[20:23]) / 1000
    assert before - 1 <= secs <= time.time() + 1
    b.send(f"PRIVMSG {ch} :timed")
    assert TIME_RE.match(a.expect("PRIVMSG").tags["time"])
    b.send(f"PART {ch}")
    assert TIME_RE.match(a.expect("PART").tags["time"])


# ---------------------------------------------------------------------- echo-message

def test_echo_message_channel_nick_notice(irc):
    ch = chan()
    a = irc.raw(uniq("ea"), caps=["echo-message", "server-time", "message-tags"])
    b = irc.raw(uniq("eb"), caps=["message-tags"])
    in_channel(irc, ch, a, b)
    for kind, target in (("PRIVMSG", ch), ("NOTICE", ch), ("PRIVMSG", b.nick), ("NOTICE", b.nick)):
        a.send(f"{kind} {target} :hello {kind}")
        echo = a.expect(kind)
        got = b.expect(kind)
        assert echo.params == got.params == [target, f"hello {kind}"]
        assert echo.nick == a.nick and echo.source == got.source
        assert echo.tags["msgid"] == got.tags["msgid"] and "time" in echo.tags
    # no echo without the capability
    b.send(f"PRIVMSG {a.nick} :back")
    a.expect("PRIVMSG")
    assert [m.command for m in b.sync()] == []


# ---------------------------------------------------------------------- multi-prefix / userhost-in-names

def test_multi_prefix_names_who_whois(irc):
    ch = chan()
    op = irc.raw(uniq("mp"), caps=["multi-prefix"])
    plain = irc.raw(uniq("mq"))
    in_channel(irc, ch, op, plain)
    op.send(f"MODE {ch} +v {op.nick}")
    op.expect("MODE")
    op.send(f"NAMES {ch}")
    assert f"@+{op.nick}" in op.expect("353").params[-1].split()
    plain.send(f"NAMES {ch}")
    assert f"@{op.nick}" in plain.expect("353").params[-1].split()
    op.send(f"WHO {ch}")
    rows = {m.params[5]: m.params[6] for m in op.collect("315") if m.command == "352"}
    assert rows[op.nick] == "H@+"
    op.send(f"WHOIS {op.nick}")
    assert op.expect("319").params[-1] == f"@+{ch}"


def test_userhost_in_names(irc):
    ch = chan()
    a = irc.raw(uniq("uh"), caps=["userhost-in-names"])
    b = irc.raw(uniq("ui"))
    in_channel(irc, ch, b, a)
    a.send(f"NAMES {ch}")
    names = a.expect("353").params[-1].split()
    assert sorted(names) == sorted([f"@{b.nick}!~{b.nick}@127.0.0.1", f"{a.nick}!~{a.nick}@127.0.0.1"])


# ---------------------------------------------------------------------- away-notify

def test_away_notify(irc):
    ch = chan()
    watcher = irc.raw(uniq("an"), caps=["away-notify"])
    plain = irc.raw(uniq("ao"))
    goer = irc.raw(uniq("ap"))
    in_channel(irc, ch, watcher, plain, goer)
    goer.send("AWAY :lunch")
    m = watcher.expect("AWAY")
    assert m.nick == goer.nick and m.params == ["lunch"]
    goer.send("AWAY")
    m = watcher.expect("AWAY")
    assert m.nick == goer.nick and m.params == []
    assert [m.command for m in plain.sync()] == []
    # joining while away: JOIN then AWAY
    late = irc.raw(uniq("aq"))
    late.send("AWAY :already away")
    late.expect("306")
    late.join(ch)
    m = watcher.expect("JOIN")
    assert m.nick == late.nick
    m = watcher.expect(lambda m: m.command in ("AWAY", "PING", "PONG"))
    assert m.command == "AWAY" and m.nick == late.nick and m.params == ["already away"]


# ---------------------------------------------------------------------- account-notify / account-tag / extended-join

def test_extended_join_with_and_without_account(irc, accounts):
    ch = chan()
    watcher = irc.raw(uniq("xj"), caps=["extended-join"])
    plain = irc.raw(uniq("xk"))
    watcher.join(ch)
    plain.join(ch)
    m = watcher.expect("JOIN")
    assert m.params == [ch, "*", "Real Name"]
    logged = sasl_client(irc, uniq("xl"), "tagacct", "tagpass")
    logged.join(ch)
    m = watcher.expect("JOIN")
    assert m.params == [ch, "tagacct", f"Real {logged.nick}"]
    m = plain.expect("JOIN")
    assert m.params == [ch]


def test_account_tag(irc, accounts):
    ch = chan()
    watcher = irc.raw(uniq("at"), caps=["account-tag"])
    logged = sasl_client(irc, uniq("au"), "tagacct", "tagpass")
    anon = irc.raw(uniq("av"))
    in_channel(irc, ch, watcher, logged, anon)
    logged.send(f"PRIVMSG {ch} :from an account")
    assert watcher.expect("PRIVMSG").tags.get("account") == "tagacct"
    anon.send(f"PRIVMSG {ch} :anonymous")
    assert "account" not in watcher.expect("PRIVMSG").tags
    logged.send(f"PRIVMSG {watcher.nick} :direct")
    assert watcher.expect("PRIVMSG").tags.get("account") == "tagacct"
    logged.send(f"INVITE {watcher.nick} {chan()}")  # no such channel: nothing
    watcher.send(f"MODE {ch} -t")
    watcher.expect("MODE")
    logged.send(f"TOPIC {ch} :tagged topic")
    assert watcher.expect("TOPIC").tags.get("account") == "tagacct"


def test_account_notify_on_login_after_registration(irc, accounts):
    ch = chan()
    watcher = irc.raw(uniq("ac"), caps=["account-notify"])
    plain = irc.raw(uniq("ad"))
    late = irc.raw(uniq("ae"), caps=["sasl"])
    in_channel(irc, ch, watcher, plain, late)
    late.send("AUTHENTICATE PLAIN")
    late.expect("AUTHENTICATE")
    late.send("AUTHENTICATE " + sasl_plain_payload("ntfacct", "ntfpass"))
    late.expect("903")
    m = watcher.expect("ACCOUNT")
    assert m.nick == late.nick and m.params == ["ntfacct"]
    assert [m.command for m in plain.sync()] == []


# ---------------------------------------------------------------------- invite-notify

def test_invite_notify(irc):
    ch = chan()
    op = irc.raw(uniq("in"), caps=["invite-notify"])
    member = irc.raw(uniq("io"))
    in_channel(irc, ch, op, member)
    op.send(f"MODE {ch} +o {member.nick}")
    member.expect("MODE")
    guest = irc.raw(uniq("ip"))
    member.send(f"INVITE {guest.nick} {ch}")
    member.expect("341")
    m = guest.expect("INVITE")
    assert m.nick == member.nick and m.params == [guest.nick, ch]
    m = op.expect("INVITE")  # another op, with invite-notify
    assert m.nick == member.nick and m.params == [guest.nick, ch]
    assert "INVITE" not in [x.command for x in member.sync()]


# ---------------------------------------------------------------------- setname

def test_setname(irc):
    ch = chan()
    a = irc.raw(uniq("sn"), caps=["setname"])
    b = irc.raw(uniq("so"), caps=["setname"])
    c = irc.raw(uniq("sp"))
    in_channel(irc, ch, a, b, c)
    a.send("SETNAME :A New Name")
    m = a.expect("SETNAME")
    assert m.nick == a.nick and m.params == ["A New Name"]
    assert b.expect("SETNAME").params == ["A New Name"]
    assert [m.command for m in c.sync()] == []
    c.send(f"WHOIS {a.nick}")
    assert c.expect("311").params[-1] == "A New Name"
    a.send("SETNAME :" + "x" * 300)
    m = a.expect("FAIL")
    assert m.params[:2] == ["SETNAME", "INVALID_REALNAME"]
    a.send("SETNAME")
    assert a.expect("461").params[1] == "SETNAME"


# ---------------------------------------------------------------------- labeled-response (and batch)

def test_labeled_response_single_ack_and_batch(irc):
    c = irc.raw(uniq("lr"), caps=["labeled-response", "batch", "echo-message", "message-tags"])
    other = irc.raw(uniq("ls"))
    # one line: just labeled
    c.send("@label=one PING token")
    m = c.expect("PONG")
    assert m.tags == {"label": "one"} and m.params == [SERVER_NAME, "token"]
    # no reply: ACK
    c.send("@label=two PONG token")
    m = c.expect("ACK")
    assert m.tags == {"label": "two"} and m.source == SERVER_NAME
    # several lines: a labeled-response batch
    c.send(f"@label=three WHOIS {other.nick}")
    lines = c.collect(lambda m: m.command == "BATCH" and m.params[0].startswith("-"))
    start, body, end = lines[0], lines[1:-1], lines[-1]
    assert start.command == "BATCH" and start.tags == {"label": "three"}
    ref = start.params[0][1:]
    assert re.fullmatch(r"[A-Za-z0-9-]+", ref) and start.params[1:] == ["labeled-response"]
    assert end.params == ["-" + ref]
    assert [m.command for m in body] == ["311", "312", "317", "318"]
    assert all(m.tags == {"batch": ref} for m in body)
    # JOIN: JOIN, NAMES in one batch
    ch = chan()
    c.send(f"@label=four JOIN {ch}")
    lines = c.collect(lambda m: m.command == "BATCH" and m.params[0].startswith("-"))
    assert lines[0].tags["label"] == "four"
    assert [m.command for m in lines[1:-1]] == ["JOIN", "353", "366"]


def test_labeled_errors_and_unknown_command(irc):
    c = irc.raw(uniq("le"), caps=["labeled-response", "batch"])
    c.send("@label=u1 NOSUCHCOMMAND")
    m = c.expect("421")
    assert m.tags == {"label": "u1"} and m.params[1] == "NOSUCHCOMMAND"
    c.send("@label=u2 KICK")
    m = c.expect("461")
    assert m.tags == {"label": "u2"}
    c.send("@label=u3 KILL x :y")
    assert c.expect("481").tags == {"label": "u3"}


def test_labeled_privmsg_label_only_on_the_echo(irc):
    a = irc.raw(uniq("la"), caps=["labeled-response", "batch", "echo-message"])
    b = irc.raw(uniq("lb"), caps=["labeled-response", "batch", "echo-message"])
    a.send(f"@label=12345 PRIVMSG {b.nick} :hi")
    m = a.expect("PRIVMSG")
    assert m.tags.get("label") == "12345"
    assert "label" not in b.expect("PRIVMSG").tags
    # to oneself: two copies, exactly one labeled, no batch
    a.send(f"@label=self PRIVMSG {a.nick} :me")
    m1, m2 = a.expect(lambda m: True), a.expect(lambda m: True)
    assert [m1.command, m2.command] == ["PRIVMSG", "PRIVMSG"]
    assert [m.tags.get("label") for m in (m1, m2)].count("self") == 1
    # several targets: a batch of echoes
    c = irc.raw(uniq("lc"))
    a.send(f"@label=multi PRIVMSG {b.nick},{c.nick} :both")
    lines = a.collect(lambda m: m.command == "BATCH" and m.params[0].startswith("-"))
    assert [m.command for m in lines] == ["BATCH", "PRIVMSG", "PRIVMSG", "BATCH"]


def test_label_with_escapes_comes_back_escaped_on_one_line(irc):
    c = irc.raw(uniq("lx"), caps=["labeled-response", "batch"])
    c.send(r"@label=a\:b\sc\nd\re PING t")
    m = c.expect("PONG")
    assert m.tags["label"] == "a;b c\nd\re"
    assert c.sync() == []


def test_label_ignored_without_the_capability_or_without_batch(irc):
    c = irc.raw(uniq("ln"))
    c.send("@label=x PING t")
    assert c.expect("PONG").tags == {}
    # labeled-response without batch: no labels, so never a BATCH the client did not ask for (as InspIRCd)
    d = irc.raw(uniq("lo"), caps=["labeled-response"])
    d.send(f"@label=y WHOIS {d.nick}")
    got = d.collect("318")
    assert "BATCH" not in [m.command for m in got] and all("label" not in m.tags for m in got)


# ---------------------------------------------------------------------- cap-notify

def test_cap_notify_is_implied_by_302_and_can_be_requested(irc):
    c = irc.raw()
    c.send("CAP LS 302")
    c.expect(lambda m: m.command == "CAP" and m.params[2] != "*")
    c.send("CAP LIST")
    assert "cap-notify" in c.expect("CAP").params[-1].split()
    d = irc.raw()
    d.send("CAP LS")
    d.expect("CAP")
    d.send("CAP REQ :cap-notify")
    assert d.expect("CAP").params[1:] == ["ACK", "cap-notify"]
