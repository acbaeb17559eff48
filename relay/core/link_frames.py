"""Frames from established peers: one row per frame type, checked once in `dispatch()`.

The codec has already checked each known frame against `FRAME_SCHEMAS`; a row
can add a stricter schema of its own (`refine`). A frame that breaks either is
refused with a `LinkProtocolError` naming its type and key, and the link is
dropped with that reason; nothing a peer sends reaches a handler unchecked, so
a handler that raises anything else is a bug, logged, and the server runs on.
Handlers are thin and headed by their syntax line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from relay.core.model import MESSAGE, NOTICE, TAG_ONLY
from relay.proto.link import (
    FRAME_SCHEMAS,
    MAX_SEQ,
    MEMBER_ROWS,
    Frame,
    LinkProtocolError,
    check_payload,
    compile_schema,
    valid_server_id,
)
from topology.fanout import links_for_all
from topology.tree import LoopDetected

if TYPE_CHECKING:
    from topology.session import LinkSession

log = logging.getLogger("relay.links")

# The link protocol names message kinds as IRC does (frame types are part of the wire format).
FRAME_OF_KIND = {MESSAGE: "PRIVMSG", NOTICE: "NOTICE", TAG_ONLY: "TAGMSG"}
KIND_OF_FRAME = {v: k for k, v in FRAME_OF_KIND.items()}

# A handler: (the link layer, relay.core.links.LinkLayer, which calls dispatch; the session; the frame; now).
Handler = Callable[[Any, "LinkSession", Frame, float], None]


@dataclass(frozen=True, slots=True)
class FrameRule:
    handler: Handler
    refine: tuple | None  # compiled rows checked on top of the codec's schema


FRAMES: dict[str, FrameRule] = {}


def frame(*types: str, refine: dict[str, Any] | None = None):
    def register(fn: Handler) -> Handler:
        for t in types:
            FRAMES[t] = FrameRule(fn, compile_schema(t, refine) if refine else None)
        return fn
    return register


def dispatch(lk, s: "LinkSession", f: Frame, now: float) -> None:
    rule = FRAMES.get(f.type)
    try:
        if rule is None:
            if f.type in FRAME_SCHEMAS:  # HELLO, AUTH: the handshake is over
                raise LinkProtocolError(f"{f.type} frame after authentication")
            on_unknown(lk, s, f, now)
            return
        if rule.refine is not None:
            check_payload(f.type, f.payload, rule.refine)
        rule.handler(lk, s, f, now)
    except LinkProtocolError as e:
        s.refuse(e, now)
    except Exception:
        log.exception("link %s: handling %s from %s raised", s.peer_name, f.type, f.origin)


def _valid_seq(v) -> bool:
    return type(v) is int and 0 <= v <= MAX_SEQ


def _attrs(v) -> dict:
    """Protocol attributes from a frame: {protocol: {name: value}}; anything else is dropped."""
    if not isinstance(v, dict):
        return {}
    return {k: a for k, a in v.items() if isinstance(k, str) and isinstance(a, dict)}


def _onward(lk, s: "LinkSession", f: Frame, payload: dict | None = None) -> None:
    """Pass a state frame on to every other neighbour (every server keeps this state)."""
    lk.out(f.type, f.origin, f.payload if payload is None else payload, links_for_all(lk.tree, s.peer_id), f.seq)


# ------------------------------------------------------------------ the link itself

@frame("ERROR")
def on_error(lk, s, f, now):
    """ERROR {reason}: the peer closes the link."""
    reason = f.payload["reason"]
    log.warning("link %s closed by peer: %s", s.peer_name, reason)
    s.close(f"closed by peer: {reason}", now)


@frame("PING")
def on_ping(lk, s, f, now):
    """PING {token}"""
    lk.send_to(s, "PONG", {"token": f.payload["token"]})


@frame("PONG")
def on_pong(lk, s, f, now):
    """PONG {token}"""
    s.pong(f.payload["token"], now)


@frame("VECTOR")
def on_vector(lk, s, f, now):
    """VECTOR {seen: {server id: seq}}: the peer's view; it is a neighbour now, so burst to it."""
    seen = f.payload["seen"]
    if not all(valid_server_id(k) and _valid_seq(v) for k, v in seen.items()):
        raise LinkProtocolError("VECTOR: seen must map server ids to sequence numbers")
    if s.peer_id not in lk.peers:
        lk.neighbour_up(s, seen, now)


@frame("EOB")
def on_eob(lk, s, f, now):
    """EOB {[server]}: end of the peer's burst (with `server`: of a server further on)."""
    root = f.payload.get("server", s.peer_id)
    # Forwarded as {"server": id}: servers further on reconcile their held users too,
    # after every burst frame it follows.
    lk.out("EOB", f.origin, {"server": root}, links_for_all(lk.tree, s.peer_id), 0)
    lk.policy.burst_ended(s, now, root)
    if "server" not in f.payload:
        lk.burst_ended(s, now)


# ------------------------------------------------------------------ servers

@frame("SERVER")
def on_server(lk, s, f, now):
    """SERVER {id, name, parent, hops, description, [seq]}: a server behind the peer."""
    p = f.payload
    parent = p["parent"]
    if "seq" in p and not _valid_seq(p["seq"]):
        raise LinkProtocolError(f"SERVER {p['name']}: seq must be a sequence number")
    if parent not in lk.tree or (parent != s.peer_id and lk.tree.link_of(parent) != s.peer_id):
        s.drop(f"SERVER {p['name']}: unknown parent {parent}", now)
        return
    try:
        lk.tree.add_server(p["id"], p["name"], parent, lk.tree.server(parent).hops + 1, p["description"])
    except LoopDetected as e:
        reason = f"server {p['name']} ({p['id']}) introduced twice (a loop): {e}"
        log.warning("link %s: %s; dropping this link", s.peer_name, reason)
        lk.oper_notice(f"Loop: {reason}; dropped the link with {s.peer_name}")
        s.drop(reason, now)
        return
    lk.policy.server_returned(p["id"])
    lk.net.server_names[p["id"]] = p["name"]
    if "seq" in p:
        lk.policy.learn_numbering(p["id"], p["seq"])
    _onward(lk, s, f)


@frame("SQUIT")
def on_squit(lk, s, f, now):
    """SQUIT {id, reason}: a server behind the peer split off."""
    sid = f.payload["id"]
    if sid not in lk.tree or lk.tree.link_of(sid) != s.peer_id:
        return
    lk.policy.split(sid, f.payload["reason"], now, exclude=s.peer_id)


# ------------------------------------------------------------------ users

@frame("UID")
def on_uid(lk, s, f, now):
    """UID {uid, nick, ts, user, host, realname, [server, account, away, modes, proto, ip, signon, attrs]}"""
    p = f.payload
    held = lk.net.users.get(p["uid"])
    if held is not None:
        if lk.policy.user_returned(held, p, now):
            _onward(lk, s, f)
        return
    server = p.get("server") or f.origin
    if server not in lk.tree or lk.tree.link_of(server) != s.peer_id:
        log.warning("link %s: UID %s from unknown server %s ignored", s.peer_name, p["uid"], server)
        return
    nick = lk.policy.resolve_nick(p["nick"], p["ts"], p["uid"], now)
    u = lk.net.introduce(None, nick, p["user"], p["host"], p["realname"], p.get("proto") or "irc", now,
                         account=p.get("account"), ip=p.get("ip") or "0.0.0.0", uid=p["uid"], server=server,
                         nick_ts=p["ts"], propagate=False, attrs=_attrs(p.get("attrs")))
    u.away = p.get("away")
    lk.net.replace_user_modes(u, p.get("modes") or "")
    u.signon = p.get("signon", now)
    _onward(lk, s, f)


@frame("NICK")
def on_nick(lk, s, f, now):
    """NICK {uid, nick, ts}"""
    p = f.payload
    u = lk.net.users.get(p["uid"])
    if u is None:
        return
    nick = lk.policy.resolve_nick(p["nick"], p["ts"], p["uid"], now)
    lk.net.change_nick(u, nick, now, propagate=False, ts=p["ts"])
    _onward(lk, s, f)


@frame("QUIT")
def on_quit(lk, s, f, now):
    """QUIT {uid, reason}"""
    u = lk.net.users.get(f.payload["uid"])
    if u is not None:
        lk.net.quit(u, f.payload["reason"], now, propagate=False)
    _onward(lk, s, f)


@frame("KILL")
def on_kill(lk, s, f, now):
    """KILL {uid, reason}: the user's own server closes its session."""
    u = lk.net.users.get(f.payload["uid"])
    if u is not None:
        if u.session is not None:
            u.session.quit_and_close(f.payload["reason"], now)  # the owner closes the client
        else:
            lk.net.quit(u, f.payload["reason"], now, propagate=False)
    _onward(lk, s, f)


@frame("UPDATE")
def on_update(lk, s, f, now):
    """UPDATE {uid, what, value}: away, account, realname, modes or attrs changed."""
    p = f.payload
    u = lk.net.users.get(p["uid"])
    if u is not None:
        what, v = p["what"], p["value"]
        if what == "away":
            u.away = v
        elif what == "account":
            u.account = v
        elif what == "realname":
            u.realname = v
        elif what == "modes":
            lk.net.replace_user_modes(u, v or "")
        elif what == "attrs":
            u.attrs = _attrs(v)
        lk.net.update_user(u, what, now, propagate=False)
    _onward(lk, s, f)


# ------------------------------------------------------------------ channels

@frame("SJOIN", refine={"members": MEMBER_ROWS})
def on_sjoin(lk, s, f, now):
    """SJOIN {channel, ts, modes, members: [[uid, status]], [key, limit, lists, topic]}: merged by the ts rules."""
    merged = lk.policy.merge_channel(f.payload, now)
    if merged is not None:
        _onward(lk, s, f, merged)


@frame("PART")
def on_part(lk, s, f, now):
    """PART {uid, channel, reason}"""
    p = f.payload
    u, ch = lk.net.users.get(p["uid"]), lk.net.find_channel(p["channel"])
    if u is not None and ch is not None and u in ch.members:
        lk.net.part(u, ch, p["reason"], now, propagate=False)
    _onward(lk, s, f)


@frame("KICK")
def on_kick(lk, s, f, now):
    """KICK {source, channel, uid, reason}"""
    p = f.payload
    u, ch = lk.net.users.get(p["uid"]), lk.net.find_channel(p["channel"])
    if u is not None and ch is not None and u in ch.members:
        lk.net.kick(lk.source(p["source"]), ch, u, p["reason"], now, propagate=False)
    _onward(lk, s, f)


@frame("MODE")
def on_mode(lk, s, f, now):
    """MODE {source, channel, ts, changes: [[sign, mode, arg]]}: statuses name users by uid."""
    p = f.payload
    ch = lk.net.find_channel(p["channel"])
    if ch is None or p["ts"] > ch.ts:
        return  # modes of a channel incarnation that lost the ts comparison
    changes = []
    for sign, m, arg in p["changes"]:
        if m in "ov":
            u = lk.net.users.get(arg)
            if u is None:
                continue
            arg = u.nick
        changes.append((sign, m, arg))
    lk.net.apply_modes(lk.source(p["source"]), ch, changes, now, propagate=False)
    _onward(lk, s, f)


@frame("TOPIC")
def on_topic(lk, s, f, now):
    """TOPIC {source, channel, topic, setter, ts}"""
    p = f.payload
    ch = lk.net.find_channel(p["channel"])
    if ch is not None:
        lk.net.set_topic(lk.source(p["source"]), ch, p["topic"], now, propagate=False)
        ch.topic_by, ch.topic_ts = p["setter"], p["ts"]
    _onward(lk, s, f)


@frame("INVITE")
def on_invite(lk, s, f, now):
    """INVITE {source, uid, channel}: routed to the invited user's server only."""
    p = f.payload
    users = lk.net.users
    src, target, ch = users.get(p["source"]), users.get(p["uid"]), lk.net.find_channel(p["channel"])
    if None in (src, target, ch):
        return
    if target.session is not None:
        lk.net.invite(src, target, ch, now)
    else:
        lk.out("INVITE", f.origin, p, lk.links_to((target.server,), s.peer_id), f.seq)


# ------------------------------------------------------------------ messages and extensions

@frame("PRIVMSG", "NOTICE", "TAGMSG")
def on_message(lk, s, f, now):
    """PRIVMSG|NOTICE|TAGMSG {source, target, text, [tags, msgid, time]}: numbered per origin."""
    p = f.payload
    if f.seq and not lk.policy.accept(f.origin, f.seq):
        return  # already delivered (a replay overlapping live traffic)
    links = _deliver_message(lk, s, f, now)
    if f.seq:
        lk.policy.record(now, f.origin, f.seq, f.type, p, links)
    lk.out(f.type, f.origin, p, links, f.seq, f.raw)


def _deliver_message(lk, s, f, now) -> set[str]:
    """Deliver a message frame to its local recipients; returns the links to pass it on to (a
    frame for held servers is kept for them)."""
    p = f.payload
    net = lk.net
    src = net.users.get(p["source"])
    if src is None:
        return set()
    frame_ = (f.origin, f.seq, f.type, p)
    t = p["target"]
    if t.startswith("#"):
        ch = net.find_channel(t)
        if ch is None:
            return set()
        ev = net.message(src, ch, KIND_OF_FRAME[f.type], p["text"], p.get("time", now), p.get("tags") or {},
                         p.get("msgid"), propagate=False)
        return set() if ev is None else lk.links_to(ch.servers, s.peer_id, frame_)
    u = net.users.get(t)
    if u is None:
        return set()
    if u.session is not None:
        net.message(src, u, KIND_OF_FRAME[f.type], p["text"], p.get("time", now), p.get("tags") or {},
                    p.get("msgid"), propagate=False)
        return set()
    return lk.links_to((u.server,), s.peer_id, frame_)


@frame("ENCAP")
def on_encap(lk, s, f, now):
    """ENCAP {target: "*" or server ids, type, payload}: a module's frame, numbered like messages."""
    p = f.payload
    if f.seq and not lk.policy.accept(f.origin, f.seq):
        return
    target = p["target"]
    if target == "*" or lk.me.id in target.split(","):
        lk.core.hooks.run("link_extension", p["type"], f.origin, p["payload"], s.peer_id)
    frame_ = (f.origin, f.seq, "ENCAP", p)
    if target == "*":
        links = links_for_all(lk.tree, s.peer_id)
        if f.seq:
            lk.policy.keep_for_held(list(lk.policy.held), *frame_)
    else:
        links = lk.links_to([x for x in target.split(",") if x != lk.me.id], s.peer_id, frame_)
    if f.seq:
        lk.policy.record(now, f.origin, f.seq, "ENCAP", p, links)
    lk.out("ENCAP", f.origin, p, links, f.seq, f.raw)


def on_unknown(lk, s, f, now):
    """A frame type this version does not know: pass it on to everyone else, unchanged."""
    claimed = lk.core.hooks.run("link_extension", f.type, f.origin, f.payload, s.peer_id)
    if claimed is None:
        log.debug("link %s: passing on unknown frame type %s", s.peer_name, f.type)
    lk.out(f.type, f.origin, f.payload, links_for_all(lk.tree, s.peer_id), f.seq, f.raw)
