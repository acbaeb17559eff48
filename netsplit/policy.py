"""Splits and netjoins: split-hold, replay on return, dedupe.

On losing a link the subtree behind it leaves the tree at once (routing), but
its users are *held* for `split_hold` seconds: still listed, their nicks still
reserved, unreachable. If the servers come back within the window, the burst
is reconciled against what was held, so clients see only what changed (no
QUIT/JOIN pairs for users who never left); otherwise the QUITs go out when the
window ends ("<near> <far>", inside a netsplit Batch, which IRC shows as an IRCv3 batch).
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

from netsplit.backlog import SplitBacklog
from netsplit.merge import merge_channel, resolve_nick
from netsplit.replay import ReplayBuffer, SeenWindow
from relay.core.model import NETJOIN, NETSPLIT, Batch, BatchEnded, BatchStarted, User

if TYPE_CHECKING:
    from relay.core.links import LinkLayer
    from topology.session import LinkSession
    from relay.core.interfaces import CoreServices

log = logging.getLogger("relay.netsplit")


class HeldSplit:
    def __init__(self, root: str, servers: list[str], users: list[User], reason: str, near: str, far: str,
                 until: float):
        self.root, self.servers, self.reason, self.near, self.far, self.until = root, set(servers), reason, near, far, until
        self.users: dict[str, User] = {u.uid: u for u in users}
        self.names: dict[str, str] = {}
        self.returned: set[str] = set()
        self.seen_users: set[str] = set()
        self.timer = None


class NetsplitPolicy:
    def __init__(self, core: "CoreServices", hold: float, replay_frames: int, replay_age: float):
        self.core = core
        self.net = core.net
        self.links: "LinkLayer" = core.links
        self.hold_window = hold
        self.held: dict[str, HeldSplit] = {}   # held server id -> its split
        self.replay = ReplayBuffer(replay_frames, replay_age)
        # Message frames that could not be routed to held servers, resent when they return.
        self.backlog = SplitBacklog(replay_frames, replay_age)
        self.seen: dict[str, SeenWindow] = {}
        # (uid, channel) of held users that a burst showed still in their channels. One set for
        # every returning split: a burst that brings back several splits lists them all at once.
        self.seen_members: set[tuple[str, str]] = set()
        # Servers whose netjoin is in progress -> (root of the joining subtree, near, far): until the
        # root's EOB, the joins and modes their bursts cause are shown in a netjoin batch.
        self.joining: dict[str, tuple[str, str, str]] = {}
        self.names: dict[str, str] = {}  # names of servers split off, for the log once they are gone
        self._batch_ids = itertools.count(1)
        self.stats = {"splits": 0, "held_returned": 0, "held_expired": 0, "replayed_out": 0,
                      "duplicates_dropped": 0, "replay_gaps": 0, "replay_lost_frames": 0,
                      "backlog_resent": 0, "backlog_dropped": 0}

    # ------------------------------------------------------------------ merge rules
    def resolve_nick(self, nick: str, ts: int, uid: str, now: float) -> str:
        return resolve_nick(self.net, nick, ts, uid, now)

    def merge_channel(self, p: dict, now: float) -> dict | None:
        returning = any(h.returned for h in self.held.values())
        users, joining = self.net.users, self.joining
        netjoin = next((joining[u.server] for u in (users.get(uid) for uid, _ in p["members"])
                        if u is not None and u.server in joining), None)
        opener = None if netjoin is None else (lambda ch: self._open_netjoin_batch(ch, netjoin))
        return merge_channel(self.net, self.links.me.name, p, now, self.seen_members if returning else None,
                             opener)

    def _open_netjoin_batch(self, ch, netjoin: tuple[str, str, str]):
        """A netjoin batch (near, far) for the channel's local members; returns (batch, close)."""
        _, near, far = netjoin
        batch = Batch(f"NJ{next(self._batch_ids):x}", NETJOIN, near, far)
        to = list(ch.local)
        now = self.core.now()
        self.net.tell(to, BatchStarted(now, batch))
        return batch, lambda: self.net.tell(to, BatchEnded(self.core.now(), batch))

    # ------------------------------------------------------------------ replay and dedupe
    def record(self, now: float, origin: str, seq: int, ftype: str, payload: dict, links) -> None:
        # `links` is the set the frame just went out on, made for it (LinkLayer.links_to): kept as is.
        self.replay.record(now, origin, seq, ftype, payload, links)

    def accept(self, origin: str, seq: int) -> bool:
        w = self.seen.get(origin)
        if w is None:
            w = self.seen[origin] = SeenWindow(seq - 1)
        if w.accept(seq):
            return True
        self.stats["duplicates_dropped"] += 1
        return False

    def keep_for_held(self, servers: list[str], origin: str, seq: int, ftype: str, payload: dict) -> None:
        held = frozenset(x for x in servers if x in self.held)
        if not held:
            return
        now = self.core.now()
        self.backlog.keep(now, held, origin, seq, ftype, payload)
        if len(self.backlog) > self.backlog.max_frames:
            self.prune_backlog(now)

    def prune_backlog(self, now: float) -> None:
        """Frames for servers that did not return within the replay window: dropped, logged, counted."""
        lost = self.backlog.prune(now)
        for sid, frames in sorted(lost.items()):
            self.stats["backlog_dropped"] += len(frames)
            log.warning("split backlog: %d message frames for %s (%s) dropped, not delivered: it did not return "
                        "within the replay window (%d frames, %gs); first %s/%d, last %s/%d", len(frames),
                        self.names.get(sid, sid), sid, self.backlog.max_frames, self.backlog.max_age,
                        *frames[0], *frames[-1])

    def _resend_backlog(self, now: float) -> None:
        """Frames kept for servers that are back (in the tree, netjoin over): resent towards them."""
        self.prune_backlog(now)
        tree, joining, links = self.links.tree, self.joining, self.links
        for servers, origin, seq, ftype, payload in self.backlog.take(lambda x: x in tree and x not in joining):
            links.out(ftype, origin, payload, links.links_to(servers), seq)
            self.stats["backlog_resent"] += 1

    def vector(self) -> dict[str, int]:
        """What we delivered of each origin we know (from where we learnt of it), and our own count.
        A server never known gets no replay: its history was never ours."""
        v = {o: w.low for o, w in self.seen.items()}
        for sid in self.held:
            v.setdefault(sid, 0)
        v[self.links.me.id] = self.links.msg_seq
        return v

    def numbering(self, sid: str) -> int:
        """Where `sid`'s message numbering stands for us (what a server learning of it from us skips)."""
        if sid == self.links.me.id:
            return self.links.msg_seq
        w = self.seen.get(sid)
        return w.low if w is not None else 0

    def learn_numbering(self, sid: str, seq: int) -> None:
        """A server we learn of: its frames numbered up to `seq` predate us. Without this, the first
        frame we saw of it would set the start, and an earlier one arriving later (a backlog resent
        by another server) would pass for a duplicate."""
        if sid != self.links.me.id and sid not in self.seen and seq >= 0:
            self.seen[sid] = SeenWindow(seq)

    def peer_numbering(self, sid: str, seq: int) -> None:
        """A neighbour's own count, from its VECTOR. Below what we saw of it: it restarted, and its
        numbering starts again."""
        w = self.seen.get(sid)
        if w is not None and (seq < w.low or any(x > seq for x in w.above)):
            log.info("server %s numbers its messages from %d again (restarted)", sid, seq)
            del self.seen[sid]
        self.learn_numbering(sid, seq)

    def replay_to(self, s: "LinkSession", vector: dict[str, int], now: float) -> None:
        self.replay.expire(now)
        frames, gaps = self.replay.since(vector, s.peer_id)
        for origin, upto in gaps.items():
            self.stats["replay_gaps"] += 1
            self.stats["replay_lost_frames"] += upto - vector[origin]
            log.warning("replay to %s: frames of origin %s after seq %d up to %d are older than the replay "
                        "window and are not replayed", s.peer_name, origin, vector[origin], upto)
        for origin, seq, ftype, payload in frames:
            s.write_frame(ftype, self.links.codec.encode(ftype, origin, seq, payload))
        self.stats["replayed_out"] += len(frames)
        if frames:
            log.info("replayed %d message frames to %s", len(frames), s.peer_name)

    # ------------------------------------------------------------------ splits
    def split(self, sid: str, reason: str, now: float, exclude: str | None) -> list[str]:
        """Remove the subtree behind `sid` from the tree; hold (or quit) its users. Returns the lost ids."""
        links = self.links
        tree = links.tree
        far = tree.server(sid)
        near = self.net.server_name(far.parent) if far.parent else links.me.name
        quit_reason = f"{near} {far.name}"
        links.broadcast("SQUIT", {"id": sid, "reason": reason[:400]}, exclude=exclude or sid)
        lost = tree.remove_subtree(sid)
        lost_set = set(lost)
        for x in lost:
            self.joining.pop(x, None)
        users = [u for u in self.net.users.values() if u.server in lost_set]
        self.stats["splits"] += 1
        log.info("netsplit %s (%s): %d servers and %d users %s", quit_reason, reason, len(lost), len(users),
                 f"held for {self.hold_window:g}s" if self.hold_window > 0 else "lost")
        self.core.hooks.run("netsplit", sid, lost, quit_reason)
        if self.hold_window <= 0:
            self._quit_all(users, near, far.name, quit_reason, now)
            for x in lost:
                self.net.server_names.pop(x, None)
            self.core.hooks.run("servers_gone", lost)
            return lost
        h = HeldSplit(sid, lost, users, quit_reason, near, far.name, now + self.hold_window)
        h.names = {x: self.net.server_name(x) for x in lost}
        self.names.update(h.names)
        for x in lost:
            self.held[x] = h
        h.timer = self.core.timers.call_at(h.until, lambda t, h=h: self.expire(h, t), owner="netsplit")
        return lost

    def is_held(self, sid: str) -> bool:
        return sid in self.held

    def expire(self, h: HeldSplit, now: float) -> None:
        """The window ended: whoever is still held QUITs now."""
        gone = [u for u in h.users.values() if u.server in h.servers and self.net.users.get(u.uid) is u]
        for x in h.servers:
            if self.held.get(x) is h:
                del self.held[x]
                self.net.server_names.pop(x, None)
        self.stats["held_expired"] += len(gone)
        self._quit_all(gone, h.near, h.far, h.reason, now)
        self.core.hooks.run("servers_gone", sorted(h.servers))

    def _quit_all(self, users: list[User], near: str, far: str, reason: str, now: float) -> None:
        """The users quit, in a netsplit batch told to the local users who shared a channel with them."""
        if not users:
            return
        batch = Batch(f"NS{far.split('.')[0]}{int(now * 1000) % 10**6:x}", NETSPLIT, near, far)
        # Who to tell, taken before the quits empty the users' channels, so the batch also ends for them.
        audience: dict[User, None] = {}
        for u in users:
            audience.update(dict.fromkeys(self.net.neighbours(u)))
        self.net.tell(audience, BatchStarted(now, batch))
        for u in users:
            self.net.quit(u, reason, now, propagate=False, batch=batch)
        self.net.tell(audience, BatchEnded(now, batch))

    # ------------------------------------------------------------------ netjoin
    def server_returned(self, sid: str) -> None:
        """`sid` (just added to the tree) joins: its netjoin lasts until the EOB of the subtree's root."""
        h = self.held.get(sid)
        if h is not None:
            h.returned.add(sid)
        sv = self.links.tree.server(sid)
        self.joining[sid] = self.joining.get(sv.parent) or (sid, self.net.server_name(sv.parent), sv.name)

    def user_returned(self, u: User, p: dict, now: float) -> bool:
        """A UID for a held user: update what changed; True if it was held."""
        h = self.held.get(u.server)
        if h is None or u.uid not in h.users:
            return False
        h.seen_users.add(u.uid)
        if p["nick"] != u.nick:
            self.net.change_nick(u, self.resolve_nick(p["nick"], p["ts"], u.uid, now), now, propagate=False,
                                 ts=p["ts"])
        for what, key in (("away", "away"), ("account", "account"), ("realname", "realname")):
            if getattr(u, what) != p.get(key):
                setattr(u, what, p.get(key))
                self.net.update_user(u, what, now, propagate=False)
        attrs = p.get("attrs") if isinstance(p.get("attrs"), dict) else {}
        if attrs != u.attrs:
            u.attrs = attrs
            self.net.update_user(u, "attrs", now, propagate=False)
        return True

    def burst_ended(self, s: "LinkSession", now: float, root: str) -> None:
        """Reconcile held users of the servers that came back: only what changed is shown."""
        self.joining = {x: j for x, j in self.joining.items() if j[0] != root}
        for h in {h for h in self.held.values() if h.returned}:
            back = [u for u in h.users.values() if u.server in h.returned and self.net.users.get(u.uid) is u]
            left = [u for u in back if u.uid not in h.seen_users]
            self._quit_all(left, h.near, h.far, h.reason, now)
            seen = self.seen_members
            for u in back:
                if u.uid in h.seen_users:
                    for ch in list(u.channels.values()):
                        if (u.uid, ch.key_name) not in seen:
                            self.net.part(u, ch, "Left during a netsplit", now, propagate=False)
            done = {u.uid for u in back}
            self.seen_members = {m for m in seen if m[0] not in done}
            self.stats["held_returned"] += len(back) - len(left)
            for x in h.returned:
                if self.held.get(x) is h:
                    del self.held[x]
            h.servers -= h.returned
            h.returned.clear()
            h.seen_users.clear()
            if not h.servers and h.timer is not None:
                h.timer.cancel()
            log.info("netjoin with %s: %d held users returned, %d had left", s.peer_name,
                     len(back) - len(left), len(left))
        self._resend_backlog(now)
