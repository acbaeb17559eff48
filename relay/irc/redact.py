"""Message redaction (IRCv3 draft/message-redaction): `REDACT <target> <msgid> [:reason]`.

A redaction rides the channel as a NOTICE with the tags REDACT_TAG / REDACT_REASON_TAG
(relay.core.model), so it crosses the tree like any message and every protocol renders it as its
own: clients with the capability get the REDACT line (client.redact_line), the others the
notice's text, XMPP occupants the XEP-0424/0425 retraction. Channel operators may redact any
message; anyone may redact the messages they sent here recently (`IrcService.sent`; kept for
clients with message-tags, the only ones that see a msgid).
"""

from __future__ import annotations

from relay.core.model import NOTICE, REDACT_REASON_TAG, REDACT_TAG
from relay.irc.client import IrcClient
from relay.irc.commands import command

MAX_REASON = 300


@command("REDACT", min_params=2)
def redact(c: IrcClient, msg, now):
    """REDACT <target> <msgid> [:reason]"""
    target, msgid = msg.params[0], msg.params[1]
    reason = msg.params[2][:MAX_REASON] if len(msg.params) > 2 else ""
    net, u = c.net, c.user
    ch = net.channels.get(net.fold(target)) if target.startswith("#") else None
    if ch is None or u not in ch.members:
        c.reply("FAIL", "REDACT", "INVALID_TARGET", target, "You can only redact messages in channels you are in")
        return
    sent = c.svc.sent.get(msgid)
    own = sent is not None and sent == (ch.key_name, u.uid)
    if not own and "o" not in ch.members[u]:
        c.reply("FAIL", "REDACT", "REDACT_FORBIDDEN", ch.name, msgid,
                "Only channel operators redact others' messages")
        return
    whose = f" from {net.users[sent[1]].nick}" if sent and sent[1] in net.users and not own else ""
    text = f"[redacted] {u.nick} redacted a message{whose}" + (f": {reason}" if reason else "")
    tags = {REDACT_TAG: msgid, **({REDACT_REASON_TAG: reason} if reason else {})}
    ev = net.message(u, ch, NOTICE, text, now, tags)
    if ev is not None and ("draft/message-redaction" in c.caps or "echo-message" in c.caps):
        c.deliver(ev)                                    # the redacting client sees it done
