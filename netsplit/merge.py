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

from relay.proto.irc import irc_lower

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



def merge_channel(net, me_name: str, p: dict, now: float, seen: set | None = None) -> dict | None:
    """Apply a channel burst/join by the ts rules; returns what was applied, to forward."""
    name, ts = p["channel"], p["ts"]
    members = [(net.users.get(uid), st) for uid, st in p["members"]]
    members = [(u, st) for u, st in members if u is not None]
    ch = net.find_channel(name)
    theirs_win = ch is None or ts < ch.ts
    equal = ch is not None and ts == ch.ts
    if ch is not None and ts < ch.ts:
        # We lose: drop our modes, lists and statuses (members stay).
        changes = [("-", m, None) for m in sorted(ch.modes)]
        if ch.key:
            changes.append(("-", "k", None))
        if ch.limit:
            changes.append(("-", "l", None))
        for m, lst in ch.lists.items():
            changes += [("-", m, b.mask) for b in lst]
        for u, st in ch.members.items():
            changes += [("-", c, u.nick) for c in st]
        net.apply_modes(me_name, ch, changes, now, propagate=False)
        ch.ts = int(ts)
    accept_modes = theirs_win or equal
    applied = []
    for u, st in members:
        if seen is not None:
            seen.add((u.uid, irc_lower(name)))
        st = st if accept_modes else ""
        if ch is None:
            ch = net.join(u, name, now, status=st, ts=ts, propagate=False)
            ch.modes.clear()
        elif u not in ch.members:
            net.join(u, name, now, status=st, propagate=False)
        elif st:
            net.apply_modes(me_name, ch, [("+", c, u.nick) for c in st], now, propagate=False)
        applied.append([u.uid, ch.members.get(u, "")])
    if ch is None:
        return None
    out = {"channel": ch.name, "ts": int(ch.ts), "modes": "", "members": applied}
    if accept_modes and p.get("modes"):
        changes = [("+", m, None) for m in p["modes"].lstrip("+") if m in "imnst"]
        if p.get("key"):
            changes.append(("+", "k", p["key"]))
        if p.get("limit"):
            changes.append(("+", "l", str(p["limit"])))
        for m, entries in (p.get("lists") or {}).items():
            changes += [("+", m, e[0]) for e in entries if m in "beI"]
        net.apply_modes(me_name, ch, changes, now, propagate=False)
        for k in ("modes", "key", "limit", "lists"):
            if k in p:
                out[k] = p[k]
    if accept_modes and p.get("topic"):
        text, by, tts = p["topic"]
        if theirs_win or tts > ch.topic_ts or not ch.topic:
            if text != ch.topic:
                net.set_topic(by, ch, text, now, propagate=False)
            ch.topic_by, ch.topic_ts = by, tts
        out["topic"] = p["topic"]
    return out
