"""Server links: sessions, handshake, burst and routing. Synchronous; `now` passed in.

Every frame that leaves this server goes through `LinkLayer._out`, whose link
sets come from topology.fanout (the one place that decides forwarding), so a
frame crosses each link at most once and only towards subtrees that need it.

What happens on splits and netjoins (split-hold, merge rules, replay) is the
`policy`, installed by the netsplit module that the core loads at start.

Link-up: HELLO/AUTH (topology.link), then each side sends VECTOR (what it has
seen of each origin's messages) and, on the peer's VECTOR, its burst: SERVER,
UID, SJOIN, the message frames the peer missed, EOB. Live frames follow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from typing import TYPE_CHECKING, Any, Callable

from relay.core.model import MESSAGE, NOTICE, TAG_ONLY, Channel, User
from relay.proto.link import MAX_SEQ, Frame, LinkCodec, LinkProtocolError, valid_server_id
from topology.fanout import links_for, links_for_all
from topology.link import LinkAuthenticated, LinkHandshake, LinkRefused, SendFrame
from topology.tree import LoopDetected, Tree, UnknownServer, render_map

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices

log = logging.getLogger("relay.links")

STATE_FRAMES = ("SERVER", "SQUIT", "UID", "NICK", "QUIT", "KILL", "SJOIN", "PART", "KICK", "MODE", "TOPIC",
                "UPDATE", "INVITE")
MESSAGE_FRAMES = ("PRIVMSG", "NOTICE", "TAGMSG")
# The link protocol names message kinds as IRC does (frame types are part of the wire format).
FRAME_OF_KIND = {MESSAGE: "PRIVMSG", NOTICE: "NOTICE", TAG_ONLY: "TAGMSG"}
KIND_OF_FRAME = {v: k for k, v in FRAME_OF_KIND.items()}


def _valid_seq(v) -> bool:
    return type(v) is int and 0 <= v <= MAX_SEQ


class LinkSession:
    """One server-to-server connection (accepted or dialled): the runtime's protocol handler."""

    def __init__(self, layer: "LinkLayer", transport, role: str, now: float, block=None):
        self.layer = layer
        self.t = transport
        self.role = role
        self.block = block
        self.codec = LinkCodec()
        self.peer_id: str | None = None
        self.peer_name: str | None = None
        self.caps: frozenset[str] = frozenset()
        self.established_at: float | None = None
        self.last_rx = now
        self.ping_sent: float | None = None
        self.lag: float | None = None
        self.closed = False
        self.burst_done = False
        self.frames_in: dict[str, int] = {}
        self.bytes_in: dict[str, int] = {}
        self.frames_out: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        cfg = layer.core.config
        secret: Any = block.secret if block is not None else layer.secret_for
        self.hs = LinkHandshake(cfg.server.id, cfg.server.name, secret, block.id if block else None, role, now,
                                os.urandom(32), timeout=cfg.linking.handshake_timeout)
        layer.pending.add(self)
        if role == "dial":
            self._outputs(self.hs.start(now), now)

    @property
    def established(self) -> bool:
        return self.established_at is not None

    def write_frame(self, ftype: str, data: bytes) -> None:
        self.frames_out[ftype] = self.frames_out.get(ftype, 0) + 1
        self.bytes_out[ftype] = self.bytes_out.get(ftype, 0) + len(data)
        self.t.write(data)

    def data_received(self, data: bytes, now: float) -> None:
        self.last_rx = now
        try:
            frames = self.codec.receive_data(data)
        except LinkProtocolError as e:
            log.info("link %s (%s:%s) refused: protocol error: %s", self.describe(), self.t.peer_host,
                     self.t.peer_port, e.reason)
            self.drop(f"protocol error: {e.reason}", now)
            return
        layer = self.layer
        for f in frames:
            if self.closed:
                return
            self.frames_in[f.type] = self.frames_in.get(f.type, 0) + 1
            if self.established:
                layer.handle(self, f, now)
            else:
                self._outputs(self.hs.receive(f, now), now)

    def _outputs(self, outputs, now: float) -> None:
        for o in outputs:
            if type(o) is SendFrame:
                f = o.frame
                self.write_frame(f.type, self.codec.send(f))
            elif type(o) is LinkAuthenticated:
                self.layer.authenticated(self, o, now)
            elif type(o) is LinkRefused:
                log.warning("link %s (%s:%s) refused: %s", self.describe(), self.t.peer_host, self.t.peer_port,
                            o.reason)
                self.layer.last_error[self.describe()] = o.reason
                self.close(o.reason, now)

    def describe(self) -> str:
        if self.peer_name:
            return self.peer_name
        return self.block.name if self.block is not None else f"{self.t.peer_host}:{self.t.peer_port}"

    def check(self, now: float) -> None:
        """Handshake timeout, lag pings, silence timeout (called by the layer's sweep)."""
        if self.closed:
            return
        if not self.established:
            self._outputs(self.hs.check_timeout(now), now)
            return
        lk = self.layer.core.config.linking
        if now - self.last_rx > lk.timeout:
            self.drop(f"Ping timeout: {int(now - self.last_rx)} seconds", now)
        elif self.ping_sent is None and now - self.last_rx >= lk.ping_interval:
            self.ping_sent = now
            self.layer.send_to(self, "PING", {"token": repr(now)})

    def drop(self, reason: str, now: float) -> None:
        """Tell the peer why, then close; the split happens in connection_lost."""
        if self.closed:
            return
        self.write_frame("ERROR", self.codec.encode("ERROR", self.layer.me.id, 0, {"reason": reason[:400]}))
        self.close(reason, now)

    def close(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.t.close(reason)
        self.connection_lost(reason, now)

    def connection_lost(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self.layer.lost(self, reason, now)


class LinkLayer:
    """The router: the link sessions, the tree, and the frames in and out."""

    def __init__(self, core: "CoreServices"):
        self.core = core
        self.net = core.net
        cfg = core.config
        self.me = cfg.server
        self.tree = Tree(self.me.id, self.me.name, self.me.description)
        self.peers: dict[str, LinkSession] = {}     # neighbour id -> established session
        self.pending: set[LinkSession] = set()
        self.seq = 0          # sequence of state frames this server originates
        self.msg_seq = 0      # per-origin sequence of this server's message frames (replay, dedupe)
        self.policy: Any = None  # netsplit.policy.NetsplitPolicy
        self.codec = LinkCodec()
        self.dial: Callable | None = None          # runtime: dial(block, factory, on_fail)
        self.connecting: set[str] = set()           # link names being dialled
        self.retry: dict[str, tuple[int, float]] = {}  # link name -> (failures, next attempt)
        self.suppressed: set[str] = set()           # unlinked by an operator: no autoconnect
        self.last_error: dict[str, str] = {}
        self.burst_started: dict[str, float] = {}
        self.handlers = {name: getattr(self, "_on_" + name) for name in STATE_FRAMES + MESSAGE_FRAMES +
                         ("PING", "PONG", "EOB", "ERROR", "ENCAP", "VECTOR")}
        self.net.router = self
        core.timers.every(1.0, self._sweep, core.now(), owner="links")

    # ------------------------------------------------------------------ sessions
    def secret_for(self, peer_id: str, peer_name: str) -> str | None:
        for b in self.core.config.links:
            if b.name == peer_name and (b.id is None or b.id == peer_id):
                return b.secret
        return None

    def accept(self, transport, listener, now: float) -> LinkSession:
        return LinkSession(self, transport, "accept", now)

    def block(self, name: str):
        return next((b for b in self.core.config.links if b.name == name), None)

    def connect(self, name: str, now: float) -> str:
        """Dial a configured peer now (operator `link`, or autoconnect)."""
        b = self.block(name)
        if b is None:
            raise KeyError(f"no link named {name} in the config's links: section")
        self.suppressed.discard(name)
        if any(s.peer_name == name for s in self.peers.values()):
            return f"already linked to {name}"
        if name in self.connecting:
            return f"already connecting to {name}"
        if self.dial is None:
            raise RuntimeError("this server cannot dial")
        self.connecting.add(name)
        self.dial(b, lambda t, lst, n: LinkSession(self, t, "dial", n, b),
                  lambda reason: self._dial_failed(name, reason))
        return f"connecting to {name} ({b.host}:{b.port})"

    def _dial_failed(self, name: str, reason: str) -> None:
        self.connecting.discard(name)
        self.last_error[name] = reason
        log.info("link %s: cannot connect: %s", name, reason)
        self._backoff(name, self.core.now())

    def _backoff(self, name: str, now: float) -> None:
        lk = self.core.config.linking
        fails, _ = self.retry.get(name, (0, 0.0))
        delay = min(lk.retry_max, lk.retry_min * (2 ** fails)) * random.uniform(0.5, 1.5)
        self.retry[name] = (fails + 1, now + delay)

    def _sweep(self, now: float) -> None:
        for s in list(self.pending) + list(self.peers.values()):
            s.check(now)
        for b in self.core.config.links:
            if not b.autoconnect or b.name in self.suppressed or b.name in self.connecting:
                continue
            if any(s.peer_name == b.name for s in self.peers.values()):
                continue
            if now >= self.retry.get(b.name, (0, 0.0))[1] and self.dial is not None:
                self.connect(b.name, now)

    def authenticated(self, s: LinkSession, ev: LinkAuthenticated, now: float) -> None:
        self.pending.discard(s)
        if s.block is not None:
            self.connecting.discard(s.block.name)
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
        self.retry.pop(ev.peer_name, None)
        self.tree.add_server(ev.peer_id, ev.peer_name, self.me.id, 1, "")
        self.policy.server_returned(ev.peer_id)
        self.net.server_names[ev.peer_id] = ev.peer_name
        self.burst_started[ev.peer_id] = now
        # The peer's burst will include what we missed from each origin; it learns that first.
        self.send_to(s, "VECTOR", {"seen": self.policy.vector()})

    def _on_VECTOR(self, s, f, now):
        """The peer's vector arrived: it is a neighbour now; burst to it, then live traffic flows."""
        if s.peer_id in self.peers:
            return
        seen = f.payload.get("seen", {})
        if not isinstance(seen, dict) or not all(valid_server_id(k) and _valid_seq(v) for k, v in seen.items()):
            s.drop("VECTOR: seen must map server ids to sequence numbers", now)
            return
        self.peers[s.peer_id] = s
        log.info("link with %s (%s) established; bursting", s.peer_name, s.peer_id)
        if s.peer_id in seen:
            self.policy.peer_numbering(s.peer_id, seen[s.peer_id])
        self._out("SERVER", self.me.id, self._server_payload(s.peer_id), links_for_all(self.tree, s.peer_id))
        self._burst(s, seen, now)
        self.core.hooks.run("link_up", s.peer_id)

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
    def _out(self, ftype: str, origin: str, payload: dict, links, seq: int | None = None,
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
        self._out(ftype, origin or self.me.id, payload, links_for_all(self.tree, exclude), seq)

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
            links = self._links_to(servers, exclude_link, frame)
        if self.policy is not None:
            self.policy.record(self.core.now(), *frame, links)
        self._out("ENCAP", self.me.id, env, links, self.msg_seq)

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
            self._out("INVITE", self.me.id, {"source": source.uid, "uid": target.uid, "channel": ch.name},
                      self._links_to((target.server,)))

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
        p = {"source": ev.source.uid, "target": target, "text": ev.text, "tags": ev.tags,
             "msgid": ev.msgid, "time": ev.time}
        ftype = FRAME_OF_KIND[ev.kind]
        frame = (self.me.id, self.msg_seq, ftype, p)
        links = self._links_to(servers, None, frame)
        if self.policy is not None:
            self.policy.record(ev.time, *frame, links)
        self._out(ftype, self.me.id, p, links, self.msg_seq)

    def _links_to(self, servers, exclude: str | None = None, frame: tuple | None = None) -> set[str]:
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
        h = self.handlers.get(f.type)
        try:
            if h is None:
                self._on_unknown(s, f, now)
            else:
                h(s, f, now)
        except Exception:
            log.exception("link %s: handling %s from %s raised", s.peer_name, f.type, f.origin)

    def _user(self, uid: str) -> User | None:
        return self.net.users.get(uid)

    def _source(self, ref: str):
        u = self.net.users.get(ref)
        return u if u is not None else ref

    def _on_ERROR(self, s, f, now):
        reason = f.payload["reason"]
        log.warning("link %s closed by peer: %s", s.peer_name, reason)
        s.close(f"closed by peer: {reason}", now)

    def _on_PING(self, s, f, now):
        self.send_to(s, "PONG", {"token": f.payload["token"]})

    def _on_PONG(self, s, f, now):
        try:
            s.lag = max(0.0, now - float(f.payload["token"]))
        except ValueError:
            pass
        s.ping_sent = None

    def _on_EOB(self, s, f, now):
        # Forwarded as {"server": id}: servers further on reconcile their held users too,
        # after every burst frame it follows.
        self._out("EOB", f.origin, {"server": f.payload.get("server", s.peer_id)},
                  links_for_all(self.tree, s.peer_id), 0)
        self.policy.burst_ended(s, now, f.payload.get("server", s.peer_id))
        if "server" in f.payload:
            return
        s.burst_done = True
        started = self.burst_started.pop(s.peer_id, None)
        log.info("link %s: end of burst%s", s.peer_name,
                 f" ({now - started:.3f}s after link-up)" if started is not None else "")
        self.core.hooks.run("netjoin", s.peer_id)

    def _on_SERVER(self, s, f, now):
        p = f.payload
        parent = p["parent"]
        if "seq" in p and not _valid_seq(p["seq"]):
            s.drop(f"SERVER {p['name']}: seq must be a sequence number", now)
            return
        if parent not in self.tree or (parent != s.peer_id and self.tree.link_of(parent) != s.peer_id):
            s.drop(f"SERVER {p['name']}: unknown parent {parent}", now)
            return
        try:
            self.tree.add_server(p["id"], p["name"], parent, self.tree.server(parent).hops + 1, p["description"])
        except LoopDetected as e:
            reason = f"server {p['name']} ({p['id']}) introduced twice (a loop): {e}"
            log.warning("link %s: %s; dropping this link", s.peer_name, reason)
            self.oper_notice(f"Loop: {reason}; dropped the link with {s.peer_name}")
            s.drop(reason, now)
            return
        self.policy.server_returned(p["id"])
        self.net.server_names[p["id"]] = p["name"]
        if "seq" in p:
            self.policy.learn_numbering(p["id"], p["seq"])
        self._out("SERVER", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_SQUIT(self, s, f, now):
        sid = f.payload["id"]
        if sid not in self.tree or self.tree.link_of(sid) != s.peer_id:
            return
        self.policy.split(sid, f.payload["reason"], now, exclude=s.peer_id)

    def _on_UID(self, s, f, now):
        p = f.payload
        held = self.net.users.get(p["uid"])
        if held is not None:
            if self.policy.user_returned(held, p, now):
                self._out("UID", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)
            return
        server = p.get("server") or f.origin
        if server not in self.tree or self.tree.link_of(server) != s.peer_id:
            log.warning("link %s: UID %s from unknown server %s ignored", s.peer_name, p["uid"], server)
            return
        nick = self.policy.resolve_nick(p["nick"], p["ts"], p["uid"], now)
        u = self.net.introduce(None, nick, p["user"], p["host"], p["realname"], p.get("proto") or "irc", now,
                               account=p.get("account"), ip=p.get("ip") or "0.0.0.0", uid=p["uid"], server=server,
                               nick_ts=p["ts"], propagate=False, attrs=_attrs(p.get("attrs")))
        u.away = p.get("away")
        self.net.replace_user_modes(u, p.get("modes") or "")
        u.signon = p.get("signon", now)
        self._out("UID", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_NICK(self, s, f, now):
        p = f.payload
        u = self._user(p["uid"])
        if u is None:
            return
        nick = self.policy.resolve_nick(p["nick"], p["ts"], p["uid"], now)
        self.net.change_nick(u, nick, now, propagate=False, ts=p["ts"])
        self._out("NICK", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_QUIT(self, s, f, now):
        u = self._user(f.payload["uid"])
        if u is not None:
            self.net.quit(u, f.payload["reason"], now, propagate=False)
        self._out("QUIT", f.origin, f.payload, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_KILL(self, s, f, now):
        u = self._user(f.payload["uid"])
        if u is not None:
            if u.session is not None:
                u.session.quit_and_close(f.payload["reason"], now)  # the owner closes the client
            else:
                self.net.quit(u, f.payload["reason"], now, propagate=False)
        self._out("KILL", f.origin, f.payload, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_SJOIN(self, s, f, now):
        merged = self.policy.merge_channel(f.payload, now)
        if merged is not None:
            self._out("SJOIN", f.origin, merged, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_PART(self, s, f, now):
        u, ch = self._user(f.payload["uid"]), self.net.find_channel(f.payload["channel"])
        if u is not None and ch is not None and u in ch.members:
            self.net.part(u, ch, f.payload["reason"], now, propagate=False)
        self._out("PART", f.origin, f.payload, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_KICK(self, s, f, now):
        p = f.payload
        u, ch = self._user(p["uid"]), self.net.find_channel(p["channel"])
        if u is not None and ch is not None and u in ch.members:
            self.net.kick(self._source(p["source"]), ch, u, p["reason"], now, propagate=False)
        self._out("KICK", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_MODE(self, s, f, now):
        p = f.payload
        ch = self.net.find_channel(p["channel"])
        if ch is None or p["ts"] > ch.ts:
            return  # modes of a channel incarnation that lost the ts comparison
        changes = []
        for sign, m, arg in p["changes"]:
            if m in "ov":
                u = self._user(arg)
                if u is None:
                    continue
                arg = u.nick
            changes.append((sign, m, arg))
        self.net.apply_modes(self._source(p["source"]), ch, changes, now, propagate=False)
        self._out("MODE", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_TOPIC(self, s, f, now):
        p = f.payload
        ch = self.net.find_channel(p["channel"])
        if ch is not None:
            self.net.set_topic(self._source(p["source"]), ch, p["topic"], now, propagate=False)
            ch.topic_by, ch.topic_ts = p["setter"], p["ts"]
        self._out("TOPIC", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_UPDATE(self, s, f, now):
        p = f.payload
        u = self._user(p["uid"])
        if u is not None:
            what, v = p["what"], p["value"]
            if what == "away":
                u.away = v
            elif what == "account":
                u.account = v
            elif what == "realname":
                u.realname = v
            elif what == "modes":
                self.net.replace_user_modes(u, v or "")
            elif what == "attrs":
                u.attrs = _attrs(v)
            self.net.update_user(u, what, now, propagate=False)
        self._out("UPDATE", f.origin, p, links_for_all(self.tree, s.peer_id), f.seq)

    def _on_INVITE(self, s, f, now):
        p = f.payload
        src, target, ch = self._user(p["source"]), self._user(p["uid"]), self.net.find_channel(p["channel"])
        if None in (src, target, ch):
            return
        if target.session is not None:
            self.net.invite(src, target, ch, now)
        else:
            self._out("INVITE", f.origin, p, self._links_to((target.server,), s.peer_id), f.seq)

    def _on_message(self, s, f, now):
        p = f.payload
        if f.seq and not self.policy.accept(f.origin, f.seq):
            return  # already delivered (a replay overlapping live traffic)
        links = self._deliver_message(s, f, now)
        if f.seq:
            self.policy.record(now, f.origin, f.seq, f.type, p, links)
        self._out(f.type, f.origin, p, links, f.seq, f.raw)

    def _deliver_message(self, s, f, now) -> set[str]:
        """Deliver a message frame to its local recipients; returns the links to pass it on to (a
        frame for held servers is kept for them)."""
        p = f.payload
        src = self._user(p["source"])
        if src is None:
            return set()
        frame = (f.origin, f.seq, f.type, p)
        t = p["target"]
        if t.startswith("#"):
            ch = self.net.find_channel(t)
            if ch is None:
                return set()
            ev = self.net.message(src, ch, KIND_OF_FRAME[f.type], p["text"], p.get("time", now), p.get("tags") or {},
                                  p.get("msgid"), propagate=False)
            return set() if ev is None else self._links_to(ch.servers, s.peer_id, frame)
        u = self._user(t)
        if u is None:
            return set()
        if u.session is not None:
            self.net.message(src, u, KIND_OF_FRAME[f.type], p["text"], p.get("time", now), p.get("tags") or {},
                             p.get("msgid"), propagate=False)
            return set()
        return self._links_to((u.server,), s.peer_id, frame)

    _on_PRIVMSG = _on_NOTICE = _on_TAGMSG = _on_message

    def _on_ENCAP(self, s, f, now):
        p = f.payload
        if f.seq and not self.policy.accept(f.origin, f.seq):
            return
        target = p["target"]
        mine = target == "*" or self.me.id in target.split(",")
        if mine:
            self.core.hooks.run("link_extension", p["type"], f.origin, p["payload"], s.peer_id)
        frame = (f.origin, f.seq, "ENCAP", p)
        if target == "*":
            links = links_for_all(self.tree, s.peer_id)
            if f.seq:
                self.policy.keep_for_held(list(self.policy.held), *frame)
        else:
            links = self._links_to([x for x in target.split(",") if x != self.me.id], s.peer_id, frame)
        if f.seq:
            self.policy.record(now, f.origin, f.seq, "ENCAP", p, links)
        self._out("ENCAP", f.origin, p, links, f.seq, f.raw)

    def _on_unknown(self, s, f, now):
        # A frame type this version does not know: pass it on to everyone else, unchanged.
        claimed = self.core.hooks.run("link_extension", f.type, f.origin, f.payload, s.peer_id)
        if claimed is None:
            log.debug("link %s: passing on unknown frame type %s", s.peer_name, f.type)
        self._out(f.type, f.origin, f.payload, links_for_all(self.tree, s.peer_id), f.seq, f.raw)

    # ------------------------------------------------------------------ splits
    def lost(self, s: LinkSession, reason: str, now: float) -> None:
        self.pending.discard(s)
        if s.block is not None:
            self.connecting.discard(s.block.name)
        if s.peer_id is not None and self.peers.get(s.peer_id) is not s and s.peer_id in self.tree \
                and self.tree.link_of(s.peer_id) == s.peer_id and s.peer_id not in self.peers:
            self.tree.remove_subtree(s.peer_id)  # authenticated, but lost before the burst began
        if s.peer_id is None or self.peers.get(s.peer_id) is not s:
            if s.block is not None and s.block.autoconnect:
                self._backoff(s.block.name, now)
            return
        del self.peers[s.peer_id]
        log.warning("link with %s lost: %s", s.peer_name, reason)
        self.last_error[s.peer_name] = reason
        lost = self.policy.split(s.peer_id, reason, now, exclude=None)
        if s.block is not None or self.block(s.peer_name) is not None:
            self._backoff(s.peer_name, now)
        self.core.hooks.run("link_down", s.peer_id, lost)

    def unlink(self, name: str, reason: str, now: float) -> str:
        s = next((x for x in self.peers.values() if x.peer_name == name), None)
        if s is None:
            raise KeyError(f"no direct link to {name}")
        self.suppressed.add(name)
        s.drop(reason or "unlinked by operator", now)
        return f"unlinked {name}"

    def shutdown(self, reason: str, now: float) -> None:
        """Tell every peer why we are leaving (they split us off at once, not after a timeout)."""
        for sess in list(self.peers.values()) + list(self.pending):
            sess.drop(reason, now)

    def oper_notice(self, text: str) -> None:
        self.net.notify_opers(text, self.core.now())

    # ------------------------------------------------------------------ views
    def hops(self, sid: str) -> int:
        return self.tree.server(sid).hops if sid in self.tree else 0

    def summary(self) -> list[dict]:
        out = []
        for s in self.peers.values():
            out.append({"name": s.peer_name, "id": s.peer_id, "role": s.role, "lag": s.lag,
                        "up_since": s.established_at, "burst_done": s.burst_done,
                        "frames_in": dict(s.frames_in), "frames_out": dict(s.frames_out),
                        "bytes_in": s.t.bytes_in if hasattr(s.t, "bytes_in") else None,
                        "bytes_out_by_type": dict(s.bytes_out)})
        return sorted(out, key=lambda d: d["name"])

    def map_data(self, now: float) -> dict:
        def node(n) -> dict:
            s = self.peers.get(n.id)
            d = {"id": n.id, "name": n.name, "hops": n.hops,
                 "users": sum(1 for u in self.net.users.values() if u.server == n.id),
                 "children": [node(c) for c in n.children]}
            if s is not None:
                d["lag"] = s.lag
                d["uptime"] = round(now - s.established_at, 3)
            return d
        return node(self.tree.map())

    def map_text(self, now: float) -> str:
        lines = render_map(self.tree.map()).splitlines()
        out = []
        for line in lines:
            sid = line.rsplit("[", 1)[1].split("]")[0]
            s = self.peers.get(sid)
            extra = ""
            if s is not None:
                lag = f"{s.lag * 1000:.1f}ms" if s.lag is not None else "?"
                extra = f"  lag {lag} up {now - s.established_at:.0f}s"
            out.append(line + extra)
        return "\n".join(out)

    def state(self) -> dict:
        """The network state as this server sees it: equal on every server once converged."""
        edges = sorted(sorted((sid, self.tree.server(sid).parent)) for sid in self.tree.servers()
                       if self.tree.server(sid).parent is not None)
        servers = sorted([sid, self.net.server_name(sid)] for sid in self.tree.servers())
        users = sorted([u.uid, u.nick, u.ident, u.host, u.realname, u.server, u.account, u.away,
                        "".join(sorted(u.modes))] for u in self.net.users.values())
        chans = []
        for ch in sorted(self.net.channels.values(), key=lambda c: c.key_name):
            chans.append([ch.name, int(ch.ts), "".join(sorted(ch.modes)), ch.key, ch.limit, ch.topic,
                          sorted([u.uid, "".join(sorted(st))] for u, st in ch.members.items()),
                          {m: sorted(b.mask for b in lst) for m, lst in ch.lists.items()}])
        return {"servers": servers, "links": edges, "users": users, "channels": chans}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.state(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _attrs(v) -> dict:
    """Protocol attributes from a frame: {protocol: {name: value}}; anything else is dropped."""
    if not isinstance(v, dict):
        return {}
    return {k: a for k, a in v.items() if isinstance(k, str) and isinstance(a, dict)}
