"""RPL_ISUPPORT advertises exactly what is implemented, and each advertised limit is enforced."""

from __future__ import annotations

from ircsupport import chan, uniq

EXPECTED = {
    "AWAYLEN": "200", "CASEMAPPING": "rfc1459", "CHANLIMIT": "#:50", "CHANMODES": "beI,k,l,imnst",
    "CHANNELLEN": "50", "CHANTYPES": "#", "EXCEPTS": "e", "INVEX": "I", "KICKLEN": "255",
    "MAXLIST": "b:100,e:100,I:100", "MODES": "4", "NETWORK": "relaytest", "NICKLEN": "9", "PREFIX": "(ov)@+",
    "TOPICLEN": "390", "USERLEN": "10",
    "TARGMAX": "PRIVMSG:4,NOTICE:4,TAGMSG:4,JOIN:,PART:,KICK:1,WHOIS:1", "UTF8ONLY": "",
}


def isupport(c) -> dict:
    c.send("VERSION")
    tokens = {}
    msgs = c.collect("351") + c.sync()
    for m in msgs:
        if m.command != "005":
            continue
        assert m.params[0] == c.nick and len(m.params) <= 15  # at most 13 tokens a line
        assert m.params[-1] == "are supported by this server"
        for tok in m.params[1:-1]:
            assert tok.isascii()
            k, _, v = tok.partition("=")
            tokens[k] = v
    return tokens


def test_isupport_tokens_are_exactly_the_implemented_ones(irc):
    c = irc.raw(uniq("is"))
    welcome = [m for m in c.seen if m.command == "005"]
    assert welcome, "no RPL_ISUPPORT at registration"
    tokens = {}
    for m in welcome:
        for tok in m.params[1:-1]:
            k, _, v = tok.partition("=")
            tokens[k] = v
    assert tokens == EXPECTED
    assert isupport(c) == EXPECTED  # VERSION repeats them


def test_advertised_lengths_are_enforced(irc):
    c = irc.raw(uniq("len"))
    # NICKLEN=9: 9 is fine, 10 is not
    nine = uniq("n", 9).ljust(9, "x")
    c.send(f"NICK {nine}")
    assert c.expect(lambda m: m.command in ("NICK", "432")).params == [nine]
    c.nick = nine
    c.send("NICK abcdefghij")
    assert c.expect("432").params[1] == "abcdefghij"
    # CHANNELLEN=50: 50 is fine, 51 is ERR_NOSUCHCHANNEL
    fifty = "#" + uniq("c", 49).ljust(49, "c")
    c.send(f"JOIN {fifty}")
    assert c.expect(lambda m: m.command in ("403", "JOIN")).params == [fifty]
    long_chan = "#" + "c" * 50
    c.send(f"JOIN {long_chan}")
    m = c.expect(lambda m: m.command in ("403", "476", "479", "JOIN"))
    assert m.command == "403" and m.params[1] == long_chan
    ch = chan()
    c.join(ch)
    # TOPICLEN=390
    c.send(f"TOPIC {ch} :" + "t" * 400)
    assert c.expect("TOPIC").params[1] == "t" * 390
    # KICKLEN=255
    other = irc.raw(uniq("kl"))
    other.join(ch)
    c.send(f"KICK {ch} {other.nick} :" + "k" * 300)
    assert c.expect("KICK").params[2] == "k" * 255
    # AWAYLEN=200
    c.send("AWAY :" + "a" * 300)
    c.expect("306")
    c.send(f"WHOIS {c.nick}")
    assert c.expect("301").params[2] == "a" * 200
    # MAXLIST=b:100,e:100,I:100 (MODES=4 a line)
    for i in range(26):
        c.send(f"MODE {ch} +bbbb a{i}!*@* a{i}x!*@* a{i}y!*@* a{i}z!*@*")
    c.send(f"MODE {ch} +e x!*@*")
    c.sync()
    c.send(f"MODE {ch} +b")
    assert len([m for m in c.collect("368") if m.command == "367"]) == 100
    c.send(f"MODE {ch} +e")
    assert len([m for m in c.collect("349") if m.command == "348"]) == 1  # a full ban list leaves +e alone


def test_targmax_and_chanmodes_letters_are_the_handled_ones(irc):
    c = irc.raw(uniq("tm"))
    ch = chan()
    c.join(ch)
    for letter in "imnst":
        c.send(f"MODE {ch} -{letter}")
        c.send(f"MODE {ch} +{letter}")
    c.send(f"MODE {ch} +k key")
    c.send(f"MODE {ch} +l 9")
    c.send(f"MODE {ch} +beI a!*@* b!*@* c!*@*")
    replies = c.sync()
    assert not [m for m in replies if m.command == "472"]
    for letter in "hqaRMCcSjfLpzu":  # not implemented, not advertised
        c.send(f"MODE {ch} +{letter}")
        assert c.expect(lambda m: m.command in ("472", "MODE", "696", "461")).command == "472"
