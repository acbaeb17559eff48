"""The module's per-topic rules (relay/core/topic_acl.py): pure, no server."""

from __future__ import annotations

from types import SimpleNamespace as R

import pytest

from relay.core.topic_acl import TopicAcl, filter_within, topic_matches


@pytest.mark.parametrize("pattern,flt,inside", [
    ("a/#", "a/b/c", True), ("a/#", "a/+/c", True), ("a/#", "a/#", True), ("a/#", "a", True),
    ("a/+", "a/b", True), ("a/+", "a/+", True), ("a/+", "a/#", False), ("a/+", "a/b/c", False),
    ("a/b", "a/+", False), ("a/b", "a/b", True), ("#", "$SYS/x", False), ("+/x", "$foo/x", False),
    ("$SYS/#", "$SYS/broker/+", True), ("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False),
])
def test_filter_within(pattern, flt, inside):
    assert filter_within(pattern, flt) is inside


@pytest.mark.parametrize("pattern,topic,match", [
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("+/b", "a/b", True), ("+/b", "$a/b", False),
    ("#", "$SYS/x", False), ("a/+", "a/b/c", False), ("a//b", "a//b", True),
])
def test_topic_matches(pattern, topic, match):
    assert topic_matches(pattern, topic) is match


def acl(rules, default=True, groups=None):
    groups = groups or {}
    return TopicAcl([R(**{"action": "all", "allow": True, "who": "all", **r}) for r in rules], default,
                    lambda who, account, ip: account in groups.get(who, ()))


def test_first_match_wins_with_placeholders_and_who():
    a = acl([
        {"action": "subscribe", "topic": "users/%u/#"},
        {"topic": "users/#", "allow": False},
        {"topic": "dev/%c/#"},
        {"topic": "dev/#", "allow": False},
        {"topic": "admin/#", "who": "admins"},
        {"topic": "admin/#", "allow": False},
        {"action": "publish", "topic": "ro/#", "allow": False},
    ], groups={"admins": {"root"}})
    ok = lambda action, topic, user="u1", cid="c1": a.allowed(action, topic, user, cid, user, "127.0.0.1")
    assert ok("subscribe", "users/u1/#") and not ok("subscribe", "users/u2/#")
    assert not ok("publish", "users/u1/x")            # the %u rule is for subscribe only
    assert not ok("subscribe", "users/+/inbox")
    assert ok("publish", "dev/c1/temp") and not ok("publish", "dev/c2/temp")
    assert ok("subscribe", "admin/x", user="root") and not ok("subscribe", "admin/x")
    assert not ok("publish", "ro/x") and ok("subscribe", "ro/#")
    assert ok("publish", "anything/else")             # no rule: the default
    # Anonymous clients never match a %u rule; names with wildcards or '/' never widen one.
    assert not a.allowed("subscribe", "users//#", None, "c1", None, None)
    assert not ok("subscribe", "users/#", user="#")
    assert not ok("publish", "dev/x/y", cid="x/y")


def test_default_deny_and_no_rules():
    assert acl([], default=False).allowed("publish", "x", "u", "c", "u", None) is False
    assert acl([], default=True).allowed("publish", "x", None, "c", None, None) is True
    a = acl([{"topic": "open/#"}], default=False)
    assert a.allowed("subscribe", "open/+/x", None, "c", None, None)
    assert not a.allowed("subscribe", "#", None, "c", None, None)
