"""The link layer: the peers, the tree, the burst, and the frames this server sends.

Every frame that leaves this server goes through `LinkLayer.out`, whose link
sets come from topology.fanout (the one place that decides forwarding), so a
frame crosses each link at most once and only towards subtrees that need it.
Connections are topology.session, dialling topology.dialer, and what each frame
from a peer does is the table in relay.core.link_frames.

What happens on splits and netjoins (split-hold, merge rules, replay) is the
`policy`, installed by the netsplit module that the core loads at start.

Link-up: HELLO/AUTH (topology.link), then each side sends VECTOR (what it has
seen of each origin's messages) and, on the peer's VECTOR, its burst: SERVER,
UID, SJOIN, the message frames the peer missed, EOB. Live frames follow.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from relay.core.link_frames import FRAME_OF_KIND, dispatch
from relay.core.link_views import LinkViews
from relay.core.model import Channel, User
from relay.proto.link import Frame, LinkCodec
from topology.dialer import Dialer
from topology.fanout import links_for, links_for_all
from topology.link import LinkAuthenticated
from topology.session import LinkSession
from topology.tree import Tree, UnknownServer

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices

log = logging.getLogger("relay.links")

__all__ = ["LinkLayer", "LinkSession"]


class LinkLayer(LinkViews):
    """The router: the link sessions, the tree, and the frames in and out (a topology.session owner)."""

    def __init__(self, core: "CoreServices"):
        self.core = core
        self.net = core.net
        cfg = core.config
        self.me = cfg.server
        self.my_id, self.my_name = self.me.id, self.me.name
        self.tree = Tree(self.me.id, self.me.name, self.me.description)
        self.peers: dict[str, LinkSession] = {}     # neighbour id -> established session
        self.pending: set[LinkSession] = set()
        self.seq = 0          # sequence of state frames this server originates
        self.msg_seq = 0      # per-origin sequence of this server's message frames (replay, dedupe)
        self.policy: Any = None  # netsplit.policy.NetsplitPolicy
        self.codec = LinkCodec()
        self.last_error: dict[str, str] = {}
        self.burst_started: dict[str, float] = {}
        self.dialer = Dialer(lambda: self.core.config.links, lambda: self.core.config.linking, self._linked,
                             lambda b: (lambda t, lst, n: LinkSession(self, t, "dial", n, b)), core.now,
                             self.last_error)
        self.net.router = self
        core.timers.every(1.0, self._sweep, core.now(), owner="links")

    # ------------------------------------------------------------------ sessions (SessionOwner)
    @property
    def timers(self):
        return self.core.config.linking

    @property
    def dial(self):
        """The runtime's dial(block, factory, on_fail); None where this server cannot dial."""
        return self.dialer.dial

    @dial.setter
    def dial(self, fn) -> None:
        self.dialer.dial = fn

    def secret_for(self, peer_id: str, peer_name: str) -> str | None:
        for b in self.core.config.links:
            if b.name == peer_name and (b.id is None or b.id == peer_id):
                return b.secret
        return None

    def session_started(self, s: LinkSession) -> None:
        self.pending.add(s)

    def accept(self, transport, listener, now: float) -> LinkSession:
        return LinkSession(self, transport, "accept", now)

    def block(self, name: str):
        return self.dialer.block(name)

    def connect(self, name: str, now: float) -> str:
        """Dial a configured peer now (operator `link`, or autoconnect)."""
        return self.dialer.connect(name, now)

    def _linked(self, name: str) -> bool:
        return any(s.peer_name == name for s in self.peers.values())

    def _sweep(self, now: float) -> None:
        for s in list(self.pending) + list(self.peers.values()):
            s.check(now)
        self.dialer.sweep(now)

    def authenticated(self, s: LinkSession, ev: LinkAuthenticated, now: float) -> None:
        self.pending.discard(s)
        if s.block is not None:
            self.dialer.connecting.discard(s.block.name)
        cfg = self.core.config
        reason = None
        if ev.peer_id in self.tree:
            reason = f"server {ev.peer_name} ({ev.peer_id}) is already on the network (a loop)"
        elif self.tree.by_name(ev.peer_name) is not None:
            reason = f"a server named {ev.peer_name} is already on the network (a loop)"
        elif not cfg.hub and self.peers:
            reason = "this server is a leaf and already has a link"
        elif not self.core.acl.allowed("link", self.core.subject(None, s.t.peer_host)) \
                and "link" in self.core.acl.rule_names():
            reason = "link refused by access rule 'link'"
        if reason:
            log.warning("link %s refused: %s", ev.peer_name, reason)
            self.last_error[ev.peer_name] = reason
            self.oper_notice(f"Link with {ev.peer_name} refused: {reason}")
            s.drop(reason, now)
            return
        if self.policy is None:
            s.drop("this server cannot link: the netsplit module is not loaded", now)
            return
        s.peer_id, s.peer_name, s.caps, s.established_at = ev.peer_id, ev.peer_name, ev.caps, now
        self.dialer.succeeded(ev.peer_name)
        self.tree.add_server(ev.peer_id, ev.peer_name, self.me.id, 1, "")
        self.policy.server_returned(ev.peer_id)
        self.net.server_names[ev.peer_id] = ev.peer_name
        self.burst_started[ev.peer_id] = now
        # The peer's burst will include what we missed from each origin; it learns that first.
        self.send_to(s, "VECTOR", {"seen": self.policy.vector()})

    def neighbour_up(self, s: LinkSession, seen: dict[str, int], now: float) -> None:
        """The peer's VECTOR arrived: it is a neighbour now; burst to it, then live traffic flows."""
        self.peers[s.peer_id] = s
        log.info("link with %s (%s) established; bursting", s.peer_name, s.peer_id)
        if s.peer_id in seen:
            self.policy.peer_numbering(s.peer_id, seen[s.peer_id])
        self.out("SERVER", self.me.id, self._server_payload(s.peer_id), links_for_all(self.tree, s.peer_id))
        self._burst(s, seen, now)
        self.core.hooks.run("link_up", s.peer_id)

    def burst_ended(self, s: LinkSession, now: float) -> None:
        """The peer's own EOB: its burst is in."""
        s.burst_done = True
        started = self.burst_started.pop(s.peer_id, None)
        log.info("link %s: end of burst%s", s.peer_name,
                 f" ({now - started:.3f}s after link-up)" if started is not None else "")
        self.core.hooks.run("netjoin", s.peer_id)

    def _server_payload(self, sid: str) -> dict:
        sv = self.tree.server(sid)
        # seq: where its message numbering stands for us; a server learning of it starts there.
        return {"id": sv.id, "name": sv.name, "parent": sv.parent or self.me.id, "hops": sv.hops,
                "description": sv.description, "seq": self.policy.numbering(sid)}

    def _burst(self, s: LinkSession, vector: dict, now: float) -> None:
        me, tree = self.me.id, self.tree
        for sid in tree.servers():
            if sid not in (me, s.peer_id):
                self.send_to(s, "SERVER", self._server_payload(sid))
        # Users held behind another split are not ours to announce.
        for u in self.net.users.values():
            if u.server != s.peer_id and u.server in tree:
                self.send_to(s, "UID", self._uid_payload(u), origin=u.server)
        for ch in self.net.channels.values():
            members = [[u.uid, st] for u, st in ch.members.items() if u.server != s.peer_id and u.server in tree]
            if members:
                self.send_to(s, "SJOIN", self._sjoin_payload(ch, members, full=True))
        self.policy.replay_to(s, vector, now)
        self.send_to(s, "EOB", {})

    # ------------------------------------------------------------------ output
    def out(self, ftype: str, origin: str, payload: dict, links, seq: int | None = None,
             raw: bytes | None = None) -> None:
        """`raw`: the received frame, when it is passed on unchanged."""
        if not links:
            return
        if seq is None:
            self.seq += 1
            seq = self.seq
        data = raw or self.codec.encode(ftype, origin, seq, payload)  # serialised once for every link
        peers = self.peers
        for lid in links:
            s = peers.get(lid)
            if s is not None and not s.closed:
                s.write_frame(ftype, data)

    def send_to(self, s: LinkSession, ftype: str, payload: dict, origin: str | None = None) -> None:
        self.seq += 1
        s.write_frame(ftype, self.codec.encode(ftype, origin or self.me.id, self.seq, payload))

    def broadcast(self, ftype: str, payload: dict, origin: str | None = None, exclude: str | None = None,
                  seq: int | None = None) -> None:
        self.out(ftype, origin or self.me.id, payload, links_for_all(self.tree, exclude), seq)

    def send_extension(self, ftype: str, payload: dict, servers: set[str] | None = None,
                       exclude_link: str | None = None) -> None:
        """A module's frame, in an ENCAP envelope, to `servers` (None: every server)."""
        target = "*" if servers is None else ",".join(sorted(servers))
        env = {"target": target, "type": ftype, "payload": payload}
        # Numbered like messages: replayed after a short split, deduplicated, kept for held servers.
        self.msg_seq += 1
        frame = (self.me.id, self.msg_seq, "ENCAP", env)
        if servers is None:
            if self.policy is not None:
                self.policy.keep_for_held(list(self.policy.held), *frame)
            links = links_for_all(self.tree, exclude_link)
        else:
            links = self.links_to(servers, exclude_link, frame)
        if self.policy is not None:
            self.policy.record(self.core.now(), *frame, links)
        self.out("ENCAP", self.me.id, env, links, self.msg_seq)

    # ------------------------------------------------------------------ router interface (Network calls)
    @staticmethod
    def _uid_payload(u: User) -> dict:
        return {"uid": u.uid, "nick": u.nick, "ts": int(u.nick_ts), "user": u.ident, "host": u.host,
                "realname": u.realname, "server": u.server, "account": u.account, "away": u.away,
                "modes": "".join(sorted(u.modes)), "proto": u.proto, "ip": u.ip, "signon": int(u.signon),
                "attrs": u.attrs}

    @staticmethod
    def _sjoin_payload(ch: Channel, members: list, full: bool) -> dict:
        p: dict[str, Any] = {"channel": ch.name, "ts": int(ch.ts), "modes": "", "members": members}
        if full:
            p["modes"] = "+" + "".join(sorted(ch.modes))
            p["key"] = ch.key
            p["limit"] = ch.limit
            p["lists"] = {m: [[b.mask, b.setter, int(b.ts)] for b in lst] for m, lst in ch.lists.items() if lst}
            if ch.topic:
                p["topic"] = [ch.topic, ch.topic_by, int(ch.topic_ts)]
        return p

    def user_introduced(self, u: User) -> None:
        self.broadcast("UID", self._uid_payload(u), origin=u.server)

    def user_quit(self, u: User, reason: str) -> None:
        self.broadcast("QUIT", {"uid": u.uid, "reason": reason}, origin=u.server)

    def nick_changed(self, u: User) -> None:
        self.broadcast("NICK", {"uid": u.uid, "nick": u.nick, "ts": int(u.nick_ts)}, origin=u.server)

    def user_updated(self, u: User, what: str) -> None:
        value = {"away": u.away, "account": u.account, "realname": u.realname,
                 "modes": "".join(sorted(u.modes)), "attrs": u.attrs}.get(what)
        self.broadcast("UPDATE", {"uid": u.uid, "what": what, "value": value}, origin=u.server)

    def member_joined(self, u: User, ch: Channel, created: bool) -> None:
        self.broadcast("SJOIN", self._sjoin_payload(ch, [[u.uid, ch.members[u]]], full=created), origin=u.server)

    def member_left(self, u: User, ch: Channel, reason: str) -> None:
        self.broadcast("PART", {"uid": u.uid, "channel": ch.name, "reason": reason}, origin=u.server)

    def member_kicked(self, source, ch: Channel, target: User, reason: str) -> None:
        self.broadcast("KICK", {"source": self._src(source), "channel": ch.name, "uid": target.uid,
                                "reason": reason})

    def topic_changed(self, source, ch: Channel) -> None:
        self.broadcast("TOPIC", {"source": self._src(source), "channel": ch.name, "topic": ch.topic,
                                 "setter": ch.topic_by, "ts": int(ch.topic_ts)})

    def modes_changed(self, source, ch: Channel, changes) -> None:
        out = []
        for sign, m, arg in changes:
            if m in "ov":
                u = self.net.find_nick(arg)
                arg = u.uid if u else arg
            out.append([sign, m, arg])
        self.broadcast("MODE", {"source": self._src(source), "channel": ch.name, "ts": int(ch.ts), "changes": out})

    def user_invited(self, source: User, target: User, ch: Channel) -> None:
        if target.session is None:
            self.out("INVITE", self.me.id, {"source": source.uid, "uid": target.uid, "channel": ch.name},
                      self.links_to((target.server,)))

    def user_killed(self, target: User, reason: str) -> None:
        self.broadcast("KILL", {"uid": target.uid, "reason": reason})

    def channel_message(self, ev) -> None:
        self._originate(ev, ev.target.name, ev.target.servers)

    def direct_message(self, ev) -> None:
        self._originate(ev, ev.target.uid, (ev.target.server,))

    def _originate(self, ev, target: str, servers) -> None:
        """A message frame of ours: numbered per origin, kept for replay on the links it goes out on and,
        for held servers, in the split backlog."""
        self.msg_seq += 1
        p = {"source": ev.source.uid, "target": target, "text": ev.text, "msgid": ev.msgid, "time": ev.time}
        if ev.tags:                     # most messages have none: a shorter frame to write and read
            p["tags"] = ev.tags
        ftype = FRAME_OF_KIND[ev.kind]
        frame = (self.me.id, self.msg_seq, ftype, p)
        links = self.links_to(servers, None, frame)
        if self.policy is not None:
            self.policy.record(ev.time, *frame, links)
        self.out(ftype, self.me.id, p, links, self.msg_seq)

    def links_to(self, servers, exclude: str | None = None, frame: tuple | None = None) -> set[str]:
        try:
            return links_for(servers, self.tree, exclude)
        except UnknownServer:
            # Some are held behind a split: no route now; a message frame is kept for their return.
            tree = self.tree
            if frame is not None and self.policy is not None:
                self.policy.keep_for_held([x for x in servers if x not in tree], *frame)
            return links_for([x for x in servers if x in tree], tree, exclude)

    def _src(self, source) -> str:
        return source.uid if isinstance(source, User) else self.me.name


    # ------------------------------------------------------------------ input
    def handle(self, s: LinkSession, f: Frame, now: float) -> None:
        dispatch(self, s, f, now)

    def source(self, ref: str):
        """Who did something to a channel: a user by id, or else a server by name."""
        u = self.net.users.get(ref)
        return u if u is not None else ref

    # ------------------------------------------------------------------ splits
    def lost(self, s: LinkSession, reason: str, now: float) -> None:
        self.pending.discard(s)
        if s.block is not None:
            self.dialer.connecting.discard(s.block.name)
        if s.peer_id is not None and self.peers.get(s.peer_id) is not s and s.peer_id in self.tree \
                and self.tree.link_of(s.peer_id) == s.peer_id and s.peer_id not in self.peers:
            self.tree.remove_subtree(s.peer_id)  # authenticated, but lost before the burst began
        if s.peer_id is None or self.peers.get(s.peer_id) is not s:
            if s.block is not None and s.block.autoconnect:
                self.dialer.backoff(s.block.name, now)
            return
        del self.peers[s.peer_id]
        log.warning("link with %s lost: %s", s.peer_name, reason)
        self.last_error[s.peer_name] = reason
        lost = self.policy.split(s.peer_id, reason, now, exclude=None)
        if s.block is not None or self.block(s.peer_name) is not None:
            self.dialer.backoff(s.peer_name, now)
        self.core.hooks.run("link_down", s.peer_id, lost)

    def unlink(self, name: str, reason: str, now: float) -> str:
        s = next((x for x in self.peers.values() if x.peer_name == name), None)
        if s is None:
            raise KeyError(f"no direct link to {name}")
        self.dialer.suppressed.add(name)
        s.drop(reason or "unlinked by operator", now)
        return f"unlinked {name}"

    def shutdown(self, reason: str, now: float) -> None:
        """Tell every peer why we are leaving (they split us off at once, not after a timeout)."""
        for sess in list(self.peers.values()) + list(self.pending):
            sess.drop(reason, now)

    def oper_notice(self, text: str) -> None:
        self.net.notify_opers(text, self.core.now())

