"""filter: drops or rewrites channel messages by pattern, per channel (on filter_packet).

    modules:
      filter:
        priority: 0
        rules:
          - {channel: "#kids", pattern: "(?i)badword", action: rewrite, replacement: "****"}
          - {channel: "*", pattern: "(?i)buy cheap", action: drop}
          - {pattern: "(?i)buy cheap", direct: true}     # direct messages (IRC, XMPP chats...) too

Channel patterns are IRC globs; a rule with `direct: true` also applies to direct messages
between users, whatever their protocols (an XMPP chat is one). The first matching rule applies.
Drops are counted.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.core.hooks import Stop
from relay.core.model import Channel, MessageSent, User
from relay.proto.irc import mask_match

COMMANDS = {"filter stats": "messages dropped and rewritten by the filter module"}  # syntax: help


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = "*"
    pattern: str
    action: Literal["drop", "rewrite"] = "drop"
    replacement: str = "***"
    direct: bool = False               # also direct messages (to a user, not a channel)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: int = 0
    rules: list[Rule] = Field(default_factory=list)


def setup(module) -> None:
    rules = [(r.channel, re.compile(r.pattern), r) for r in module.options.rules]
    stats = module.state
    stats.setdefault("dropped", 0)
    stats.setdefault("rewritten", 0)

    def on_packet(ev):
        if type(ev) is not MessageSent:
            return None
        direct = type(ev.target) is User
        if not direct and type(ev.target) is not Channel:
            return None
        for chan_glob, rx, rule in rules:
            if (not rule.direct if direct else not mask_match(chan_glob, ev.target.name)) or not rx.search(ev.text):
                continue
            if rule.action == "drop":
                stats["dropped"] += 1
                return Stop(None)
            stats["rewritten"] += 1
            return MessageSent(ev.time, ev.source, ev.target, ev.kind, rx.sub(rule.replacement, ev.text),
                               ev.tags, ev.msgid)
        return None

    module.hook("filter_packet", on_packet, priority=module.options.priority)
    module.command("filter stats", lambda ctx: _stats(module))


def _stats(module):
    from relay.core.admin import Reply
    s = module.state
    return Reply(f"dropped {s['dropped']}, rewritten {s['rewritten']}", dict(s))


def save(module):
    return dict(module.state)


def restore(module, state):
    module.state.update(state)
