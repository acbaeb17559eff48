"""Channels over real sockets with jaraco `irc`: JOIN (keys, JOIN 0), PART, TOPIC, NAMES, LIST, INVITE,
KICK and MODE with channel modes b e I i k l m n o s t v; the creator gets @; ban and exception masks."""

from __future__ import annotations

from ircsupport import chan, code_of, uniq


def join(c, ch, key=""):
    c.conn.join(ch, key)
    return c.collect(lambda e: code_of(e) == "366" and e.arguments[0].lower() == ch.lower())


def names_of(events, ch=None):
    out = []
    for e in events:
        if code_of(e) == "353" and (ch is None or e.arguments[1] == ch):
            out += e.arguments[2].split()
    return out


def names(c, ch):
    c.conn.names([ch])
    return names_of(c.collect(lambda e: code_of(e) == "366"), ch)


def pair(irc, ch=None):
    """An op (creator of ch) and a plain member."""
    ch = ch or chan()
    op = irc.jaraco(uniq("op"))
    join(op, ch)
    member = irc.jaraco(uniq("mb"))
    join(member, ch)
    op.expect("join")
    return ch, op, member


def mode(c, target, modes):
    c.conn.send_raw(f"MODE {target} {modes}")


# ---------------------------------------------------------------------- JOIN

def test_join_creator_gets_op_and_join_burst(irc):
    ch = chan()
    c = irc.jaraco(uniq("cr"))
    evs = join(c, ch)
    assert evs[0].type == "join" and evs[0].source.nick == c.nick and evs[0].target == ch
    assert "331" not in [code_of(e) for e in evs]  # no RPL_NOTOPIC on join
    nam = [e for e in evs if code_of(e) == "353"]
    assert nam[0].arguments[:2] == ["=", ch]
    assert names_of(evs, ch) == ["@" + c.nick]
    other = irc.jaraco(uniq("jn"))
    evs = join(other, ch)
    assert sorted(names_of(evs, ch)) == sorted(["@" + c.nick, other.nick])
    ev = c.expect("join")
    assert ev.source.nick == other.nick and ev.target == ch


def test_join_case_insensitive_channel_names(irc):
    base = uniq("cs")
    a = irc.jaraco(uniq("ca"))
    join(a, f"#{base}[x]")
    b = irc.jaraco(uniq("cb"))
    b.conn.join(f"#{base.upper()}{{X}}")  # rfc1459: [] and {} are the same letters
    evs = b.collect("366")
    assert evs[0].target == f"#{base}[x]" and evs[-1].arguments[0] == f"#{base}[x]"
    assert len(names_of(evs)) == 2
    assert a.expect("join").source.nick == b.nick


def test_join_several_channels_with_keys_and_join_zero(irc):
    ch1, ch2 = chan(), chan()
    op = irc.jaraco(uniq("jk"))
    join(op, ch1)
    join(op, ch2)
    mode(op, ch1, "+k k1")
    mode(op, ch2, "+k k2")
    op.expect("mode")
    op.expect("mode")
    c = irc.jaraco(uniq("jz"))
    c.conn.send_raw(f"JOIN {ch1},{ch2} k1,k2")
    got = c.collect(lambda e: code_of(e) == "366" and e.arguments[0] == ch2)
    assert [e.target for e in got if e.type == "join"] == [ch1, ch2]
    c.conn.send_raw("JOIN 0")
    parts = [c.expect("part").target, c.expect("part").target]
    assert sorted(parts) == sorted([ch1, ch2])
    assert op.expect("part").source.nick == c.nick
    c.conn.whois([c.nick])
    assert "319" not in [code_of(e) for e in c.collect("318")]


def test_join_refusals_471_473_474_475_and_403(irc):
    ch, op, _ = pair(irc)
    c = irc.jaraco(uniq("rf"))
    mode(op, ch, "+k sesame")
    op.expect("mode")
    for key in ("", "wrong"):
        c.conn.join(ch, key)
        ev = c.expect(lambda e: code_of(e) in ("475", "join"))
        assert code_of(ev) == "475" and ev.arguments[0] == ch
    mode(op, ch, "-k+l sesame 2")  # 2 members already
    op.expect("mode")
    c.conn.join(ch)
    assert code_of(c.expect(lambda e: code_of(e) in ("471", "join"))) == "471"
    mode(op, ch, "-l+i")
    op.expect("mode")
    c.conn.join(ch)
    assert code_of(c.expect(lambda e: code_of(e) in ("473", "join"))) == "473"
    mode(op, ch, f"-i+b {c.nick}!*@*")
    op.expect("mode")
    c.conn.join(ch)
    assert code_of(c.expect(lambda e: code_of(e) in ("474", "join"))) == "474"
    c.conn.join("nohash")
    ev = c.expect(lambda e: code_of(e) in ("403", "476"))
    assert ev.arguments[0] == "nohash"


def test_join_too_many_channels_405(restricted):
    srv = restricted
    c = srv.raw(uniq("many"))
    c.join(chan())
    c.join(chan())
    third = chan()
    c.send(f"JOIN {third}")
    m = c.expect(lambda m: m.command in ("405", "JOIN"))
    assert m.command == "405" and m.params[1] == third
    srv.close_clients()


def test_ban_exception_and_invite_exception_masks(irc):
    ch, op, _ = pair(irc)
    nick = uniq("bx")
    mode(op, ch, "+b *!*@127.0.0.1")
    assert op.expect("mode").arguments == ["+b", "*!*@127.0.0.1"]
    c = irc.jaraco(nick)
    c.conn.join(ch)
    assert code_of(c.expect(lambda e: code_of(e) in ("474", "join"))) == "474"
    mode(op, ch, f"+e {nick}!*@*")
    op.expect("mode")
    evs = join(c, ch)
    assert evs[0].type == "join"
    c.conn.part([ch])
    c.expect("part")
    # +i with an invite exception (+I) for the nick
    mode(op, ch, f"-b+i *!*@127.0.0.1")
    op.expect("mode")
    mode(op, ch, f"-e+I {nick}!*@* {nick}!*@*")
    op.expect("mode")
    evs = join(c, ch)
    assert evs[0].type == "join"
    # the lists, as a member sees them
    for letter, item, end in (("b", "367", "368"), ("e", "348", "349"), ("I", "346", "347")):
        mode(c, ch, f"+{letter}")
        evs = c.collect(end)
        items = [e for e in evs if code_of(e) == item]
        if letter == "I":
            assert items[0].arguments[:2] == [ch, f"{nick}!*@*"]
            assert items[0].arguments[2].startswith(op.nick)
        assert evs[-1].arguments[0] == ch


def test_ban_mask_is_completed_and_matches_case_insensitively(irc):
    ch, op, _ = pair(irc)
    nick = uniq("Bn")
    mode(op, ch, f"+b {nick.upper()}")
    ev = op.expect("mode")
    assert ev.arguments == ["+b", f"{nick.upper()}!*@*"]
    c = irc.jaraco(nick)
    c.conn.join(ch)
    assert code_of(c.expect(lambda e: code_of(e) in ("474", "join"))) == "474"
    mode(op, ch, f"-b {nick.lower()}!*@*")
    assert op.expect("mode").arguments[0] == "-b"
    assert join(c, ch)[0].type == "join"


def test_banned_member_cannot_speak_unless_voiced(irc):
    ch, op, member = pair(irc)
    mode(op, ch, f"+b {member.nick}!*@*")
    op.expect("mode")
    member.expect("mode")
    member.conn.privmsg(ch, "can I talk?")
    assert member.expect("404").arguments[0] == ch
    mode(op, ch, f"+v {member.nick}")
    member.expect("mode")
    member.conn.privmsg(ch, "now I can")
    assert op.expect("pubmsg").arguments == ["now I can"]


# ---------------------------------------------------------------------- PART

def test_part_with_reason_and_errors(irc):
    ch, op, member = pair(irc)
    member.conn.send_raw(f"PART {ch} :bye all")
    ev = member.expect("part")
    assert ev.target == ch and ev.arguments == ["bye all"]
    ev = op.expect("part")
    assert ev.source.nick == member.nick and ev.arguments == ["bye all"]
    member.conn.part([ch])
    assert member.expect("442").arguments[0] == ch
    missing = chan()
    member.conn.part([missing])
    assert member.expect("403").arguments[0] == missing
    op.conn.part([ch])
    assert op.expect("part").arguments == []
    # the last member left: the channel is gone
    op.conn.send_raw(f"TOPIC {ch}")
    assert code_of(op.expect(lambda e: code_of(e) in ("403", "442", "331"))) == "403"


# ---------------------------------------------------------------------- TOPIC

def test_topic_set_query_unset_and_t_mode(irc):
    ch, op, member = pair(irc)
    op.conn.topic(ch)
    assert op.expect("331").arguments[0] == ch
    op.conn.topic(ch, "the topic")
    ev = op.expect("topic")
    assert ev.target == ch and ev.arguments == ["the topic"]
    assert member.expect("topic").arguments == ["the topic"]
    member.conn.topic(ch)
    assert member.expect("332").arguments == [ch, "the topic"]
    info = member.expect("333")
    assert info.arguments[:2] == [ch, str(ev.source)] and info.arguments[2].isdigit()   # the full mask
    assert str(ev.source).startswith(f"{op.nick}!") and "@" in str(ev.source)
    # +t is on by default: a plain member may not set it; a voiced one neither
    member.conn.topic(ch, "mine")
    assert member.expect("482").arguments[0] == ch
    mode(op, ch, f"+v {member.nick}")
    member.expect("mode")
    member.conn.topic(ch, "mine")
    assert member.expect("482").arguments[0] == ch
    mode(op, ch, "-t")
    member.expect("mode")
    member.conn.topic(ch, "mine")
    assert op.expect("topic").arguments == ["mine"]
    # a newcomer gets 332 and 333 on join
    late = irc.jaraco(uniq("lt"))
    evs = join(late, ch)
    assert [e.arguments for e in evs if code_of(e) == "332"] == [[ch, "mine"]]
    assert len([e for e in evs if code_of(e) == "333"]) == 1
    # unset
    op.conn.send_raw(f"TOPIC {ch} :")
    assert op.expect("topic").arguments == [""]
    late.conn.topic(ch)
    assert code_of(late.expect(lambda e: code_of(e) in ("331", "332"))) == "331"


def test_topic_errors_and_topiclen(irc):
    ch, op, member = pair(irc)
    outsider = irc.jaraco(uniq("ot"))
    outsider.conn.topic(ch, "nope")
    assert outsider.expect("442").arguments[0] == ch
    outsider.conn.topic(chan(), "nope")
    assert code_of(outsider.expect(lambda e: code_of(e) in ("403", "442"))) == "403"
    op.conn.topic(ch, "x" * 450)
    assert op.expect("topic").arguments == ["x" * 390]  # TOPICLEN=390


# ---------------------------------------------------------------------- NAMES

def test_names_prefixes_secret_and_invisible(irc):
    ch, op, member = pair(irc)
    mode(op, ch, f"+v {member.nick}")
    op.expect("mode")
    assert sorted(names(member, ch)) == sorted(["@" + op.nick, "+" + member.nick])
    mode(op, ch, f"+o {member.nick}")
    op.expect("mode")
    assert sorted(names(member, ch)) == sorted(["@" + op.nick, "@" + member.nick])  # highest prefix only
    outsider = irc.jaraco(uniq("ns"))
    outsider.conn.names([ch])
    evs = outsider.collect("366")
    sym = [e.arguments[0] for e in evs if code_of(e) == "353"]
    assert sym == ["="]
    # +i users are hidden from non-members
    mode(member, member.nick, "+i")
    member.expect("umode")
    assert names(outsider, ch) == ["@" + op.nick]
    # +s: the channel is hidden from non-members ("@" symbol for members)
    mode(op, ch, "+s")
    op.expect("mode")
    outsider.conn.names([ch])
    evs = outsider.collect("366")
    assert [code_of(e) for e in evs] == ["366"] and evs[-1].arguments[0] == ch
    member.conn.names([ch])
    evs = member.collect("366")
    assert [e.arguments[0] for e in evs if code_of(e) == "353"] == ["@"]


def test_names_of_a_missing_channel_is_just_366(irc):
    c = irc.jaraco(uniq("nm"))
    missing = chan()
    c.conn.names([missing])
    evs = c.collect("366")
    assert [code_of(e) for e in evs] == ["366"] and evs[0].arguments[0] == missing
    c.conn.send_raw("NAMES invalid")
    evs = c.collect("366")
    assert [code_of(e) for e in evs] == ["366"] and evs[0].arguments[0] == "invalid"


# ---------------------------------------------------------------------- LIST

def test_list(irc):
    ch, op, member = pair(irc)
    op.conn.topic(ch, "listed topic")
    op.expect("topic")
    secret = chan("sec")
    join(op, secret)
    mode(op, secret, "+s")
    op.expect("mode")
    c = irc.jaraco(uniq("ls"))
    c.conn.list()
    evs = c.collect("323")
    assert code_of(evs[0]) == "321"
    listed = {e.arguments[0]: e.arguments for e in evs if code_of(e) == "322"}
    assert ch in listed and secret not in listed
    assert listed[ch][1] == "2" and listed[ch][2].endswith("listed topic")
    c.conn.list([ch])
    evs = c.collect("323")
    assert [e.arguments[0] for e in evs if code_of(e) == "322"] == [ch]
    c.conn.list([chan("nope")])
    evs = c.collect("323")
    assert {code_of(e) for e in evs} <= {"321", "323"}
    op.conn.list()
    evs = op.collect("323")
    assert secret in [e.arguments[0] for e in evs if code_of(e) == "322"]  # members see secret channels


# ---------------------------------------------------------------------- INVITE

def test_invite(irc):
    ch, op, member = pair(irc)
    guest = irc.jaraco(uniq("gs"))
    mode(op, ch, "+i")
    op.expect("mode")
    member.expect("mode")
    guest.conn.join(ch)
    assert code_of(guest.expect(lambda e: code_of(e) in ("473", "join"))) == "473"
    op.conn.invite(guest.nick, ch)
    ev = op.expect("341")
    assert ev.arguments == [guest.nick, ch]
    ev = guest.expect("invite")
    assert ev.source.nick == op.nick and ev.target == guest.nick and ev.arguments == [ch]
    assert [code_of(e) for e in member.sync()] == []  # other members are not told
    assert join(guest, ch)[0].type == "join"
    guest.conn.part([ch])
    guest.expect("part")
    guest.conn.join(ch)  # the invite was used up
    assert code_of(guest.expect(lambda e: code_of(e) in ("473", "join"))) == "473"


def test_invite_errors_401_403_442_443_482(irc):
    ch, op, member = pair(irc)
    outsider = irc.jaraco(uniq("io"))
    op.conn.invite("nobody" + uniq("x", 4), ch)
    assert code_of(op.expect(lambda e: code_of(e).isdigit())) == "401"
    op.conn.invite(outsider.nick, chan())
    assert code_of(op.expect(lambda e: code_of(e).isdigit())) == "403"
    outsider.conn.invite(op.nick, ch)
    assert outsider.expect("442").arguments[0] == ch
    op.conn.invite(member.nick, ch)
    assert op.expect("443").arguments[:2] == [member.nick, ch]
    mode(op, ch, "+i")
    member.expect("mode")
    member.conn.invite(outsider.nick, ch)
    assert member.expect("482").arguments[0] == ch


def test_invite_by_plain_member_without_plus_i(irc):
    ch, op, member = pair(irc)
    guest = irc.jaraco(uniq("gp"))
    member.conn.invite(guest.nick, ch)
    assert member.expect("341").arguments == [guest.nick, ch]
    assert guest.expect("invite").arguments == [ch]


def test_invite_overrides_ban(irc):
    ch, op, _ = pair(irc)
    guest = irc.jaraco(uniq("gb"))
    mode(op, ch, f"+b {guest.nick}!*@*")
    op.expect("mode")
    op.conn.invite(guest.nick, ch)
    guest.expect("invite")
    assert join(guest, ch)[0].type == "join"


# ---------------------------------------------------------------------- KICK

def test_kick(irc):
    ch, op, member = pair(irc)
    third = irc.jaraco(uniq("k3"))
    join(third, ch)
    op.conn.kick(ch, member.nick, "out you go")
    for c in (op, member, third):
        ev = c.expect("kick")
        assert ev.source.nick == op.nick and ev.target == ch and ev.arguments == [member.nick, "out you go"]
    # default reason: the kicker's nick
    op.conn.kick(ch, third.nick)
    ev = third.expect("kick")
    assert ev.arguments == [third.nick, op.nick]
    # kicked members are out
    member.conn.privmsg(ch, "still here?")
    assert member.expect("404").arguments[0] == ch


def test_kick_errors_403_441_442_482(irc):
    ch, op, member = pair(irc)
    outsider = irc.jaraco(uniq("ko"))
    outsider.conn.kick(ch, member.nick)
    assert outsider.expect("442").arguments[0] == ch
    member.conn.kick(ch, op.nick)
    assert member.expect("482").arguments[0] == ch
    op.conn.kick(ch, outsider.nick)
    assert op.expect("441").arguments[:2] == [outsider.nick, ch]
    missing = chan()
    op.conn.kick(missing, member.nick)
    assert op.expect("403").arguments[0] == missing
    op.conn.send_raw(f"KICK {ch}")
    assert op.expect("461").arguments[0] == "KICK"


def test_a_new_op_can_kick_the_creator(irc):
    ch, op, member = pair(irc)
    mode(op, ch, f"+o {member.nick}")
    member.expect("mode")
    member.conn.kick(ch, op.nick, "coup")
    assert op.expect("kick").arguments == [op.nick, "coup"]


# ---------------------------------------------------------------------- MODE

def test_channel_mode_query_324_329(irc):
    ch, op, member = pair(irc)
    mode(op, ch, "+k secretkey")
    op.expect("mode")
    mode(op, ch, "+l 10")
    op.expect("mode")
    op.conn.send_raw(f"MODE {ch}")
    ev = op.expect("324")
    assert ev.arguments[0] == ch and set(ev.arguments[1]) == set("+ntkl")
    assert ev.arguments[2:] == ["secretkey", "10"]
    assert op.expect("329").arguments[1].isdigit()
    outsider = irc.jaraco(uniq("mq"))
    outsider.conn.send_raw(f"MODE {ch}")
    ev = outsider.expect("324")
    assert "secretkey" not in ev.arguments  # the key is for members only


def test_channel_mode_flags_are_echoed_to_members_and_removed(irc):
    ch, op, member = pair(irc)
    mode(op, ch, "+imnst")
    ev = member.expect("mode")
    assert ev.source.nick == op.nick and ev.target == ch and set(ev.arguments[0]) == set("+ims")  # n, t were set
    op.expect("mode")
    op.conn.send_raw(f"MODE {ch}")
    assert set(op.expect("324").arguments[1]) == set("+imnst")
    mode(op, ch, "-imnst")  # five flags, no parameters: not limited by MODES=4
    ev = op.expect("mode")
    assert set(ev.arguments[0]) == set("-imnst")
    op.conn.send_raw(f"MODE {ch}")
    assert op.expect("324").arguments[1:] == ["+"]


def test_mode_op_and_voice(irc):
    ch, op, member = pair(irc)
    mode(op, ch, f"+ov {member.nick} {member.nick}")
    ev = member.expect("mode")
    assert ev.arguments == ["+ov", member.nick, member.nick]
    assert op.expect("mode").arguments == ev.arguments
    mode(op, ch, f"-v {member.nick}")
    assert member.expect("mode").arguments == ["-v", member.nick]
    op.expect("mode")
    mode(member, ch, f"-o {op.nick}")
    assert op.expect("mode").arguments == ["-o", op.nick]
    assert sorted(names(op, ch)) == sorted([op.nick, "@" + member.nick])


def test_mode_errors_401_403_441_442_472_482(irc):
    ch, op, member = pair(irc)
    outsider = irc.jaraco(uniq("me"))
    member.conn.send_raw(f"MODE {ch} +o {member.nick}")
    evs = member.sync()
    assert [code_of(e) for e in evs] == ["482"]
    op.conn.send_raw(f"MODE {ch} +o {outsider.nick}")
    assert [code_of(e) for e in op.sync()] == ["441"]
    op.conn.send_raw(f"MODE {ch} +o nosuch{uniq('n', 3)}")
    assert [code_of(e) for e in op.sync()] == ["401"]
    op.conn.send_raw(f"MODE {chan()} +o {op.nick}")
    assert [code_of(e) for e in op.sync()] == ["403"]
    outsider.conn.send_raw(f"MODE {ch} +m")
    assert [code_of(e) for e in outsider.sync()] in (["442"], ["482"])
    op.conn.send_raw(f"MODE {ch} +Z")
    ev = op.expect("472")
    assert ev.arguments[0] == "Z"
    member.conn.send_raw(f"MODE {ch} +b")  # list queries need no privilege
    assert code_of(member.collect("368")[-1]) == "368"


def test_mode_key_and_limit_validation(irc):
    ch, op, _ = pair(irc)
    mode(op, ch, "+k :has space")
    evs = op.sync()
    assert {code_of(e) for e in evs} & {"525", "696"}, evs
    mode(op, ch, "+l notanumber")
    evs = op.sync()
    assert {code_of(e) for e in evs} & {"696", "461"} or evs == [], evs
    mode(op, ch, "+k good")
    assert op.expect("mode").arguments == ["+k", "good"]
    mode(op, ch, "-k *")
    assert op.expect("mode").arguments[0] == "-k"
    mode(op, ch, "+l 5")
    assert op.expect("mode").arguments == ["+l", "5"]
    mode(op, ch, "-l")
    assert op.expect("mode").arguments == ["-l"]


def test_moderated_and_no_external_messages(irc):
    ch, op, member = pair(irc)
    outsider = irc.jaraco(uniq("nx"))
    outsider.conn.privmsg(ch, "from outside")
    assert outsider.expect("404").arguments[0] == ch  # +n by default
    mode(op, ch, "-n")
    op.expect("mode")
    outsider.conn.privmsg(ch, "from outside")
    assert member.expect("pubmsg").arguments == ["from outside"]
    assert op.expect("pubmsg").arguments == ["from outside"]
    mode(op, ch, "+m")
    member.expect("mode")
    op.expect("mode")
    member.conn.privmsg(ch, "muted?")
    assert member.expect("404").arguments[0] == ch
    assert [e.type for e in op.sync()] == []
    mode(op, ch, f"+v {member.nick}")
    member.expect("mode")
    member.conn.privmsg(ch, "voiced")
    assert op.expect("pubmsg").arguments == ["voiced"]


def test_modes_with_parameters_are_limited_per_line(irc):
    ch, op, _ = pair(irc)
    masks = [f"m{i}!*@*" for i in range(6)]
    mode(op, ch, "+bbbbbb " + " ".join(masks))
    ev = op.expect("mode")
    assert ev.arguments[0] == "+bbbb" and ev.arguments[1:] == masks[:4]  # MODES=4


# ---------------------------------------------------------------------- user modes

def test_user_modes_i_w_and_errors(irc):
    a = irc.jaraco(uniq("um"))
    b = irc.jaraco(uniq("uo"))
    a.conn.send_raw(f"MODE {a.nick}")
    assert a.expect("221").arguments == ["+"]
    a.conn.send_raw(f"MODE {a.nick} +iw")
    ev = a.expect("umode")
    assert ev.target == a.nick and ev.arguments == ["+iw"]
    a.conn.send_raw(f"MODE {a.nick}")
    assert a.expect("221").arguments == ["+iw"]
    a.conn.send_raw(f"MODE {a.nick} -w")
    assert a.expect("umode").arguments == ["-w"]
    a.conn.send_raw(f"MODE {a.nick} +o")  # one may not give oneself +o: silently ignored
    assert [code_of(e) for e in a.sync()] == []
    a.conn.send_raw(f"MODE {a.nick} +Q")
    assert a.expect("501")
    a.conn.send_raw(f"MODE {b.nick} +i")
    assert a.expect("502")
    a.conn.send_raw(f"MODE {b.nick}")
    assert a.expect("502")
    a.conn.send_raw(f"MODE nosuch{uniq('x', 3)} +i")
    assert a.expect("401")
