"""Netjoin merge rules, deterministic and applied identically on every server.

- Nick collision: the older nick (lower ts; equal ts: lower uid) keeps it; the
  other user is renamed to its uid. Nobody is killed, and since every server
  applies the same rule to the same inputs, no rename needs to be sent.
- Channel timestamps: the lower ts wins. The side with the higher ts loses
  its modes, key, limit, lists and its members' operator/voice status, but
  keeps its members (so a split rider who re-created a channel during a split
  gains nothing); equal ts merges modes, lists and statuses. The caller
  forwards what was applied, so servers further on apply the same result and
  clock skew cannot desynchronise them.
"""

from __future__ import annotations

import logging
from typing import Callable


log = logging.getLogger("relay.netsplit")


def resolve_nick(net, nick: str, ts: int, uid: str, now: float) -> str:
    """Nick collision: the older (ts, uid) keeps the nick; the other becomes its uid."""
    other = net.find_nick(nick)
    if other is None or other.uid == uid:
        return nick
    if (int(other.nick_ts), other.uid) < (ts, uid):
        log.info("nick collision on %s: %s keeps it, %s becomes %s", nick, other.uid, uid, uid)
        return uid
    log.info("nick collision on %s: %s keeps it, %s becomes %s", nick, uid, other.uid, other.uid)
    net.change_nick(other, other.uid, now, propagate=False, ts=other.nick_ts)
    return nick



FLAG_MODES = "imnst"
LIST_MODES = "beI"


def merge_channel(net, me_name: str, p: dict, now: float, seen: set | None = None,
                  open_batch: Callable | None = None) -> dict | None:
    """Apply a channel burst/join by the ts rules; returns what was applied, to forward.

    Local members see the members who joined, then every mode and status the merge changed, one
    ModeChanged (from this server) per change. `open_batch(ch)`, during a netjoin, opens the
    netjoin Batch for the channel's local members and returns (batch, close)."""
    name, ts = p["channel"], int(p["ts"])
    members = [(net.users.get(uid), st) for uid, st in p["members"]]
    members = [(u, st) for u, st in members if u is not None]
    ch = net.find_channel(name)
    if ch is None:
        if not members:
            return None
        u, st = members[0]
        ch = net.join(u, name, now, status=st, ts=ts, propagate=False)
        ch.modes.clear()  # theirs are applied below, as for an equal ts
    keep_ours, take_theirs = ts >= ch.ts, ts <= ch.ts   # equal: both; lower ts wins
    theirs_win = ts < ch.ts
    if theirs_win:
        ch.ts = ts
    joiners = [u for u, _ in members if u not in ch.members]
    changes = _merge_changes(ch, p, {u: st for u, st in members}, keep_ours, take_theirs, net.fold)
    batch, close = None, None
    if open_batch is not None and (joiners or changes) and ch.local:
        batch, close = open_batch(ch)
    for u in joiners:
        net.join(u, name, now, status="", propagate=False, batch=batch)
    for change in changes:
        net.apply_modes(me_name, ch, [change], now, propagate=False, batch=batch)
    if close is not None:
        close()
    if seen is not None:
        seen.update((u.uid, net.fold(name)) for u, _ in members)
    out = {"channel": ch.name, "ts": int(ch.ts), "modes": "",
           "members": [[u.uid, ch.members.get(u, "")] for u, _ in members]}
    if take_theirs:
        for k in ("modes", "key", "limit", "lists"):
            if k in p:
                out[k] = p[k]
    if take_theirs and p.get("topic"):
        text, by, tts = p["topic"]
        if theirs_win or tts > ch.topic_ts or not ch.topic:
            if text != ch.topic:
                net.set_topic(by, ch, text, now, propagate=False)
            ch.topic_by, ch.topic_ts = by, tts
        out["topic"] = p["topic"]
    return out


def _merge_changes(ch, p: dict, theirs: dict, keep_ours: bool, take_theirs: bool, fold) -> list[tuple]:
    """The mode changes that turn our channel into the merged one: removals first, then additions.
    Equal ts: the union; where both have a key or a limit, the lower one (the same on every server)."""
    minus, plus = [], []
    flags = (set(ch.modes) if keep_ours else set()) | \
        ({m for m in (p.get("modes") or "").lstrip("+") if m in FLAG_MODES} if take_theirs else set())
    minus += [("-", m, None) for m in sorted(ch.modes - flags)]
    plus += [("+", m, None) for m in sorted(flags - ch.modes)]
    for mode, ours, their in (("k", ch.key, p.get("key")), ("l", ch.limit, p.get("limit"))):
        choices = ([ours] if keep_ours and ours else []) + ([their] if take_theirs and their else [])
        target = min(choices) if choices else None
        if target is None and ours:
            minus.append(("-", mode, None))
        elif target is not None and target != ours:
            plus.append(("+", mode, str(target)))
    for m in LIST_MODES:
        have = {fold(b.mask): b.mask for b in ch.lists[m]}
        want = dict(have) if keep_ours else {}
        if take_theirs:
            for e in (p.get("lists") or {}).get(m, []):
                want.setdefault(fold(e[0]), e[0])
        minus += [("-", m, have[k]) for k in have if k not in want]
        plus += [("+", m, want[k]) for k in want if k not in have]
    for u, st in list(ch.members.items()) + [(u, "") for u in theirs if u not in ch.members]:
        target = (st if keep_ours else "") + (theirs.get(u, "") if take_theirs else "")
        minus += [("-", c, u) for c in "ov" if c in st and c not in target]
        plus += [("+", c, u) for c in "ov" if c in target and c not in st]
    return minus + plus
