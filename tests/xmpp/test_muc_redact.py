"""Message redaction between IRC and XMPP, in memory (cores of tests/support_net.py): IRCv3
`draft/message-redaction` (REDACT by a channel operator or the sender, FAIL otherwise) reaches
capable IRC members as REDACT, the others as a NOTICE and XMPP occupants as the XEP-0424/0425
retraction, across a link; an XEP-0425 moderation reaches IRC as REDACT where negotiated."""

from __future__ import annotations

import re

import pytest

from test_muc_rooms import ROOM, join, muc_wire
from test_xmpp_routing import Xmpp

RETRACT = b'<retract xmlns="urn:xmpp:message-retract:1"'


@pytest.fixture
def wire(tmp_path):
    return muc_wire(tmp_path, ("alice", "bob"), linked=True)


def irc(wire, core, nick, caps=()):
    c = wire.client(core, nick)
    if caps:
        c.send("CAP REQ :" + " ".join(caps))
    c.send("JOIN #room")
    c.t.out.clear()
    return c


def msgid_of(line: str) -> str:
    return re.search(r"(?:^@|;)msgid=([^; ]+)", line).group(1)


def test_an_operators_redact_reaches_every_kind_of_member(wire):
    op = irc(wire, "a", "oper", ("message-tags", "draft/message-redaction"))     # made the channel: @
    plain = irc(wire, "b", "plain")
    capable = irc(wire, "b", "capable", ("draft/message-redaction",))
    alice = Xmpp(wire, "b", "alice", "r")
    join(alice, "alice")
    plain.send("PRIVMSG #room :regrettable")
    line = next(l for l in op.t.lines() if "regrettable" in l)
    msgid = msgid_of(line)
    sid = re.search(rb'<stanza-id [^>]*id="([^"]+)"', alice.take()).group(1).decode()
    op.t.out.clear()
    capable.t.out.clear()
    plain.t.out.clear()
    op.send(f"REDACT #room {msgid} :off topic")
    assert [l for l in capable.t.lines() if "REDACT" in l] == \
        [f":{op.user.prefix} REDACT #room {msgid} :off topic"]
    assert any(l.endswith(f"REDACT #room {msgid} :off topic") for l in op.t.lines())   # the redactor too
    got = plain.t.lines()
    assert not any("REDACT" in l for l in got)
    assert any("NOTICE #room" in l and "oper redacted a message: off topic" in l for l in got)
    out = alice.take()
    assert f'{RETRACT.decode()} id="{sid}"'.encode() in out and b"off topic" in out
    assert b"urn:xmpp:message-moderate:1" in out
    room = wire.cores["b"].services["muc"].rooms["#room"]
    assert all(e[4] != sid for e in room.history)                      # gone from b's history


def test_the_sender_may_redact_its_own_message_others_may_not(wire):
    irc(wire, "a", "oper")
    dave = irc(wire, "a", "dave", ("message-tags", "draft/message-redaction"))
    erin = irc(wire, "a", "erin", ("message-tags", "draft/message-redaction"))
    dave.send("PRIVMSG #room :mine")
    msgid = msgid_of(next(l for l in erin.t.lines() if "mine" in l))
    erin.t.out.clear()
    erin.send(f"REDACT #room {msgid}")
    assert any(" FAIL REDACT REDACT_FORBIDDEN #room " + msgid in l for l in erin.t.lines()), erin.t.lines()
    erin.t.out.clear()
    dave.send(f"REDACT #room {msgid}")
    assert any(l.endswith(f"REDACT #room {msgid}") for l in erin.t.lines())
    dave.t.out.clear()
    dave.send(f"REDACT #nowhere {msgid}", f"REDACT dave {msgid}")
    assert sum(" FAIL REDACT INVALID_TARGET" in l for l in dave.t.lines()) == 2
    dave.send("REDACT #room")
    assert any(" 461 " in l for l in dave.t.lines())


def test_a_moderation_reaches_irc_as_redact_where_negotiated(wire):
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")                                  # made the room: owner, moderator
    capable = irc(wire, "b", "capable", ("draft/message-redaction",))
    plain = irc(wire, "b", "plain")
    plain.send("PRIVMSG #room :spam spam")
    out = alice.take()
    sid = re.search(rb'<stanza-id [^>]*id="([^"]+)"', out).group(1).decode()
    capable.t.out.clear()
    plain.t.out.clear()
    alice.feed(f"<iq type='set' id='m' to='{ROOM}'><moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
               "<retract xmlns='urn:xmpp:message-retract:1'/><reason>pure spam</reason></moderate></iq>")
    assert b'type="result"' in alice.take()
    msgid = sid.rsplit("-", 1)[0]
    assert [l.split(" ", 1)[1] for l in capable.t.lines() if "REDACT" in l] == [f"REDACT #room {msgid} :pure spam"]
    assert any("NOTICE #room" in l and "spam" in l for l in plain.t.lines())


def test_a_client_cannot_forge_a_redaction_with_a_client_tag(wire):
    irc(wire, "a", "oper")
    alice = Xmpp(wire, "a", "alice", "r")
    join(alice, "alice")
    dave = irc(wire, "b", "dave", ("message-tags",))
    dave.send("PRIVMSG #room :keep me")
    sid = re.search(rb'<stanza-id [^>]*id="([^"]+)"', alice.take()).group(1).decode()
    dave.send(f"@+relaynet/redact={sid.rsplit('-', 1)[0]} NOTICE #room :gotcha")
    out = alice.take()
    assert b"gotcha" in out and RETRACT not in out
    room = wire.cores["a"].services["muc"].rooms["#room"]
    assert any(e[4] == sid for e in room.history)
