"""The right numeric for every error, one scenario each, with jaraco `irc` (417 over a raw socket: the
library refuses to send an over-long line). Each row: how to get there, what the client sends, the
numeric and its parameters after the client's nick."""

from __future__ import annotations

import pytest
from ircsupport import OPER_NAME, chan, code_of, uniq


class Scene:
    """A few registered clients and a channel where `op` is the creator and `member` a plain member."""

    def __init__(self, irc):
        self.irc = irc
        self.ch = chan("e")
        self.op = irc.jaraco(uniq("eo"))
        self.member = irc.jaraco(uniq("em"))
        self.other = irc.jaraco(uniq("ex"))
        for c in (self.op, self.member):
            c.conn.join(self.ch)
            c.expect("366")
        self.op.sync()

    def op_sets(self, modes):
        self.op.conn.send_raw(f"MODE {self.ch} {modes}")
        self.op.expect("mode")


def _numeric_after(client, line):
    client.conn.send_raw(line)
    return client.expect(lambda e: code_of(e).isdigit())


CASES = {
    # numeric: (setup(scene) or None, who sends, line template, expected params template)
    "401": (None, "other", "PRIVMSG nosuchnick :hi", ["nosuchnick"]),
    "403": (None, "other", "PART #nosuchchan", ["#nosuchchan"]),
    "404": (None, "other", "PRIVMSG {ch} :outside", ["{ch}"]),
    "411": (None, "other", "PRIVMSG", None),
    "412": (None, "other", "PRIVMSG {op} :", None),
    "421": (None, "other", "FROBNICATE now", ["FROBNICATE"]),
    "431": (None, "other", "NICK", None),
    "432": (None, "other", "NICK 9lives", ["9lives"]),
    "433": (None, "other", "NICK {op}", ["{op}"]),
    "441": (None, "op", "KICK {ch} {other}", ["{other}", "{ch}"]),
    "442": (None, "other", "TOPIC {ch} :mine", ["{ch}"]),
    "443": (None, "op", "INVITE {member} {ch}", ["{member}", "{ch}"]),
    "461": (None, "other", "JOIN", ["JOIN"]),
    "462": (None, "other", "USER again 0 * :again", None),
    "464": (None, "other", f"OPER {OPER_NAME} wrongpassword", None),
    "471": (lambda s: s.op_sets("+l 2"), "other", "JOIN {ch}", ["{ch}"]),
    "472": (None, "op", "MODE {ch} +Y", ["Y"]),
    "473": (lambda s: s.op_sets("+i"), "other", "JOIN {ch}", ["{ch}"]),
    "474": (lambda s: s.op_sets(f"+b {s.other.nick}!*@*"), "other", "JOIN {ch}", ["{ch}"]),
    "475": (lambda s: s.op_sets("+k letmein"), "other", "JOIN {ch} wrongkey", ["{ch}"]),
    "481": (None, "other", "KILL {member} :no", None),
    "482": (None, "member", "KICK {ch} {op}", ["{ch}"]),
    "501": (None, "other", "MODE {other} +X", None),
    "502": (None, "other", "MODE {op} +i", None),
}


@pytest.mark.parametrize("numeric", sorted(CASES))
def test_error_numeric(irc, numeric):
    setup, who, line, params = CASES[numeric]
    s = Scene(irc)
    if setup:
        setup(s)
    names = {"ch": s.ch, "op": s.op.nick, "member": s.member.nick, "other": s.other.nick}
    client = getattr(s, who)
    ev = _numeric_after(client, line.format(**names))
    assert code_of(ev) == numeric, (ev.type, ev.arguments)
    assert ev.target == client.nick  # numerics are addressed to the client's nick
    if params is not None:
        want = [p.format(**names) for p in params]
        assert ev.arguments[:len(want)] == want
    assert ev.arguments[-1]  # and end with a human-readable text


def test_451_not_registered(irc):
    c = irc.raw()
    c.send("WHOIS someone")
    m = c.expect("451")
    assert m.params[0] == "*"


def test_417_input_too_long(irc):
    c = irc.raw(uniq("e417"))
    c.send("PRIVMSG " + c.nick + " :" + "x" * 600)
    m = c.expect(lambda m: m.command in ("417", "PRIVMSG"))
    assert m.command == "417" and m.params[0] == c.nick
