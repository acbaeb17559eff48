"""Per-topic publish/subscribe rules of the topic namespace (MQTT's `acl:` option today). Pure.

    acl:
      - {action: subscribe, topic: "users/%u/#", allow: true, who: all}
      - {action: all, topic: "secret/#", allow: false}

Rules are tried in order; the first whose action, topic and `who` match decides; when
none matches, `acl_default` does (allow unless configured otherwise). `%u` is the
client's user name and `%c` its client identifier; a rule with `%u` never matches an
anonymous client. `who` names an ACL of the server's `acl:` section (or `all`), checked
with `core.acl.match(who, core.subject(account, ip))`.

A PUBLISH topic matches a rule's topic like a topic filter matches a topic name. A
SUBSCRIBE filter matches a rule when every topic the filter can match is inside the
rule's topic ("a/+/c" is inside "a/#", "a/#" is not inside "a/+").
"""

from __future__ import annotations

from typing import Callable

PUBLISH, SUBSCRIBE = "publish", "subscribe"


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT matching of a topic name against a filter (with the '$' rule)."""
    if topic[:1] == "$" and pattern[:1] in ("+", "#"):
        return False
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


def filter_within(pattern: str, topic_filter: str) -> bool:
    """True if every topic `topic_filter` can match is also matched by `pattern`."""
    if topic_filter[:1] == "$" and pattern[:1] in ("+", "#"):
        return False
    p, f = pattern.split("/"), topic_filter.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(f):
            return False
        sub = f[i]
        if sub == "#":
            return False
        if level == "+":
            continue
        if sub == "+" or sub != level:
            return False
    return len(p) == len(f)


def _safe(name: str | None) -> bool:
    return name is None or not ("/" in name or "+" in name or "#" in name)


class Rule:
    __slots__ = ("action", "topic", "allow", "who", "needs_user")

    def __init__(self, action: str, topic: str, allow: bool, who: str):
        self.action, self.topic, self.allow, self.who = action, topic, allow, who
        self.needs_user = "%u" in topic


class TopicAcl:
    def __init__(self, rules: list, default: bool, who_match: Callable[[str, str | None, str | None], bool]):
        """`rules`: objects with action/topic/allow/who; `who_match(who, account, ip)`."""
        self.rules = [Rule(r.action, r.topic, r.allow, r.who) for r in rules]
        self.default = default
        self.who_match = who_match

    def allowed(self, action: str, topic: str, username: str | None, client_id: str,
                account: str | None, ip: str | None) -> bool:
        if not self.rules:
            return self.default
        test = filter_within if action == SUBSCRIBE else topic_matches
        for r in self.rules:
            if r.action != "all" and r.action != action:
                continue
            if r.needs_user and not username:
                continue
            pattern = r.topic
            if "%" in pattern:
                if not _safe(username) or not _safe(client_id):
                    continue  # a name with '/', '+' or '#' must not widen a rule
                pattern = pattern.replace("%u", username or "").replace("%c", client_id)
            if not test(pattern, topic):
                continue
            if r.who != "all" and not self.who_match(r.who, account, ip):
                continue
            return r.allow
        return self.default
