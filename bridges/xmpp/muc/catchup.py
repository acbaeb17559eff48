"""One history for a room across the tree: a server that was not receiving a room's messages asks the
servers that were before it sends history on a join or answers a room MAM query.

A server sees a channel's messages only while it has members there (links route by `ch.servers`),
so its history and archive of a room have holes from the times it had none. `Catchup` keeps which
rooms' history is whole here (`synced`: since the channel was made with a local member, or since a
catch-up answered) and which rooms' archive is (`whole`: only since the channel was made here).

    MUC_HIST_ASK {room, ask}                  -> each server with members of the channel
    MUC_HIST {room, ask, entries: [[time, nick, jid, text, stanza-id]]}     <- its recent history
    MUC_MAM_ASK {room, ask, start, end, after, before, last, limit}
    MUC_MAM_ROWS {room, ask, rows: [[stanza-id, time, nick, jid, body, retracted]]}

Answers merge into this server's history and archive (by stanza-id, so each message is there once);
the join (or the query) goes on when every server asked has answered or `catchup_wait` has passed
(a core timer: the loop never waits). A server that has no MUC never answers: the timer covers it,
once (the room counts as caught up after it).
"""

from __future__ import annotations

import itertools
from typing import Callable

HIST_ASK, HIST, MAM_ASK, MAM_ROWS = "MUC_HIST_ASK", "MUC_HIST", "MUC_MAM_ASK", "MUC_MAM_ROWS"
FRAMES = (HIST_ASK, HIST, MAM_ASK, MAM_ROWS)
MAX_ROWS = 1000          # what one answer carries at most (a MAM page is at most 100)


class Ask:
    """One question out: who has not answered yet, and what runs when all have (or the timer fires)."""

    __slots__ = ("key", "waiting", "then", "timer", "kind")

    def __init__(self, key: str, waiting: set, kind: str):
        self.key, self.waiting, self.kind = key, waiting, kind
        self.then: list[Callable[[float], None]] = []
        self.timer = None


class Catchup:
    def __init__(self, muc):
        self.muc = muc
        self.synced: set[str] = set()          # channel keys whose recent history is whole here
        self.whole: set[str] = set()           # channel keys whose archive is whole here
        self.asks: dict[str, Ask] = {}         # ask id -> the question out
        self.history_asks: dict[str, Ask] = {}  # channel key -> its history question out (joins share it)
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- what this server sees
    def member_joined(self, user, ch) -> None:
        """The first local member of a channel: a new channel (only it in it) is whole from here on;
        one that had members elsewhere has a hole before this join."""
        if user.session is None or len(ch.local) != 1:
            return
        if len(ch.members) == 1:
            self.synced.add(ch.key_name)
            self.whole.add(ch.key_name)
        else:
            self.synced.discard(ch.key_name)
            self.whole.discard(ch.key_name)

    def member_left(self, user, ch, reason=None) -> None:
        """The last local member left a channel that goes on elsewhere: this server stops seeing it."""
        if user.session is not None and not ch.local and ch.members:
            self.synced.discard(ch.key_name)
            self.whole.discard(ch.key_name)

    def channel_destroyed(self, ch) -> None:
        self.synced.discard(ch.key_name)
        self.whole.discard(ch.key_name)

    # ---------------------------------------------------------------- asking
    def _peers(self, ch) -> set[str]:
        router = self.muc.net.router
        return {sid for sid in ch.servers if sid in router.tree} if router is not None else set()

    def _ask(self, kind: str, key: str, peers: set, payload: dict, then, now: float) -> Ask:
        ask_id = f"{self.muc.net.me.id}.{next(self._ids)}"
        ask = self.asks[ask_id] = Ask(key, set(peers), kind)
        ask.then.append(then)
        ask.timer = self.muc.core.timers.call_at(now + self.muc.opts.catchup_wait,
                                                 lambda t: self._finish(ask_id, t), owner="muc")
        self.muc.net.router.send_extension(kind, {"room": key, "ask": ask_id, **payload}, servers=set(peers))
        return ask

    def history(self, ch, then: Callable[[float], None], now: float) -> None:
        """`then(now)` once this server's recent history of `ch` is whole (at once if it is)."""
        key = ch.key_name
        peers = self._peers(ch)
        if key in self.synced or not peers:
            if not ch.servers:                           # no one else holds it: nothing to wait for
                self.synced.add(key)
            then(now)
            return
        ask = self.history_asks.get(key)
        if ask is not None:
            ask.then.append(then)
            return
        self.history_asks[key] = self._ask(HIST_ASK, key, peers, {}, then, now)

    def archive(self, ch, query: dict, then: Callable[[float], None], now: float) -> None:
        """`then(now)` once what the servers with members archived for `query` is merged into this
        server's archive (at once if this archive is whole or no one else holds the room)."""
        peers = self._peers(ch) if ch is not None else set()
        if ch is None or ch.key_name in self.whole or not peers:
            then(now)
            return
        self._ask(MAM_ASK, ch.key_name, peers, query, then, now)

    def _finish(self, ask_id: str, now: float) -> None:
        ask = self.asks.pop(ask_id, None)
        if ask is None:
            return
        if ask.timer is not None:
            ask.timer.cancel()
        if ask.kind == HIST_ASK:
            if self.history_asks.get(ask.key) is ask:
                del self.history_asks[ask.key]
            # Past the timer too: what did not come will not (a server without MUC never answers),
            # and the next join should not wait for it again.
            self.synced.add(ask.key)
        for fn in ask.then:
            fn(now)

    # ---------------------------------------------------------------- frames
    def link_extension(self, ftype: str, origin: str, payload) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("room"), str) \
                or not isinstance(payload.get("ask"), str):
            return                                       # malformed: dropped
        key, ask_id = payload["room"], payload["ask"]
        if ftype == HIST_ASK:
            self._answer_history(origin, key, ask_id)
        elif ftype == MAM_ASK:
            self._answer_archive(origin, key, ask_id, payload)
        elif ftype in (HIST, MAM_ROWS):
            ask = self.asks.get(ask_id)
            if ask is None or origin not in ask.waiting or ask.key != key:
                return                                   # late (the timer went) or not ours
            rows = payload.get("entries" if ftype == HIST else "rows")
            if isinstance(rows, list):
                (self._merge_history if ftype == HIST else self._merge_archive)(key, rows[:MAX_ROWS])
            ask.waiting.discard(origin)
            if not ask.waiting:
                self._finish(ask_id, self.muc.core.now())

    def _answer_history(self, origin: str, key: str, ask_id: str) -> None:
        room = self.muc.rooms.get(key)
        entries = [list(e) for e in room.history] if room is not None else []
        self.muc.net.router.send_extension(HIST, {"room": key, "ask": ask_id, "entries": entries[-MAX_ROWS:]},
                                           servers={origin})

    def _answer_archive(self, origin: str, key: str, ask_id: str, p: dict) -> None:
        def num(v):
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        def text(v):
            return v if isinstance(v, str) else None
        limit = p.get("limit")
        limit = max(0, min(MAX_ROWS, limit)) if isinstance(limit, int) and not isinstance(limit, bool) else 100
        router = self.muc.net.router

        last = p.get("last") is True                     # the newest page (RSM <before/>)

        def done(rows):
            rows = [list(r) for r in rows or ()]
            if last:
                rows = rows[-(limit + 1):]
            router.send_extension(MAM_ROWS, {"room": key, "ask": ask_id, "rows": rows[:MAX_ROWS + 1]},
                                  servers={origin})
        store = self.muc.store
        if store is None:
            done([])
            return
        if last:
            store.query(key, num(p.get("start")), num(p.get("end")), None, None, 1_000_000, done)
        else:
            store.query(key, num(p.get("start")), num(p.get("end")), text(p.get("after")),
                        text(p.get("before")), limit, done)

    def _merge_history(self, key: str, entries: list) -> None:
        room = self.muc.rooms.get(key)
        if room is None:
            return
        have = {e[4] for e in room.history}
        got = [tuple(e) for e in entries if _entry(e) and e[4] not in have]
        if not got:
            return
        merged = sorted([*room.history, *got], key=lambda e: (e[0], e[4]))
        room.history.clear()
        room.history.extend(merged)                      # the deque keeps the newest history_length
        muc = self.muc
        store, mode = muc.store, muc.opts.archive
        if store is not None and (mode == "all" or (mode == "persistent" and store.persistent(key))):
            for t, nick, jid, text, sid in got:
                store.archive(key, sid, t, nick, jid, text)

    def _merge_archive(self, key: str, rows: list) -> None:
        store = self.muc.store
        if store is None:
            return
        for r in rows:
            if isinstance(r, list) and len(r) == 6 and _entry([r[1], r[2], r[3], r[4], r[0]]):
                sid, t, nick, jid, body, retracted = r
                store.archive(key, sid, float(t), nick, jid, body)
                if retracted:
                    store.retract(key, sid)


def _entry(e) -> bool:
    """[time, nick, jid, text, stanza-id] as a peer sent it."""
    return isinstance(e, list) and len(e) == 5 and isinstance(e[0], (int, float)) and not isinstance(e[0], bool) \
        and all(isinstance(x, str) for x in e[1:])
