"""XEP-0198 stream management: acks and resumption.

Offered as the `<sm xmlns='urn:xmpp:sm:3'/>` stream feature after authentication. After
`<enable resume='true'/>` the session counts what it gets (`h_in`, every message, presence and iq
from the client) and keeps every stanza it sends until the client acks it (`<a h=/>`); it asks for
an ack (`<r/>`) once `xmpp.ack_every` stanzas are unacked, or when one has waited `xmpp.ack_seconds`.
Counts wrap at 2^32 (an ack is the difference mod 2^32; an h acking more than was sent is an
`undefined-condition` stream error).

When the TCP connection is cut (not a stream close), a resumable session is *held* for
`xmpp.resume_timeout` seconds: it stays the account's resource and the network member (nobody sees
it leave), what is sent to it meanwhile is queued, and a new stream of the same account that sends
`<resume previd= h=/>` instead of binding takes it over: the acked part of the queue is dropped and
the rest sent again. An unknown or expired id (or another account's) is `<failed>` with
`item-not-found` and the client binds afresh. Resumption is on the server that held the session:
a client that reconnects to another server of the tree binds a new session there.

When a session ends for good (expired, or lost without resumption) the messages with a body it
never acked are given another chance: the account's other resources, else offline storage
(offline.py), else an error bounced to the sender.
"""

from __future__ import annotations

import secrets
from collections import deque

from lxml import etree

from . import namespaces as ns
from .jid import JidError, parse_jid
from .routing import StanzaReceived
from .stanza import element

MASK = 0xFFFFFFFF
_SM = "{%s}" % ns.SM
_BODY = "{%s}body" % ns.CLIENT


def _nonza(name: str, **attrs) -> bytes:
    el = etree.Element(_SM + name, nsmap={None: ns.SM})
    for k, v in attrs.items():
        el.set(k, str(v))
    return etree.tostring(el)


def _failed(condition: str, h: int | None = None) -> bytes:
    el = etree.Element(_SM + "failed", nsmap={None: ns.SM})
    if h is not None:
        el.set("h", str(h))
    etree.SubElement(el, "{%s}%s" % (ns.STANZA_ERRORS, condition), nsmap={None: ns.STANZA_ERRORS})
    return etree.tostring(el)


class HeldTransport:
    """Stands in for the cut connection of a held session: writes go nowhere (the queue has them)."""

    def __init__(self, cut):
        self.peer_host, self.peer_port = cut.peer_host, getattr(cut, "peer_port", 0)
        self.tls, self.proto = cut.tls, getattr(cut, "proto", "xmpp")
        self.closing = False
        self.backlog = 0

    def write(self, data: bytes) -> None:
        pass

    def close(self, reason: str = "") -> None:
        self.closing = True                 # the sweep ends the held session

    abort = close

    def channel_bindings(self) -> dict:
        return {}


class SmState:
    """One session's XEP-0198 counters and unacked stanzas."""

    __slots__ = ("mgr", "id", "h_in", "h_out", "acked", "queue", "asked_at", "oldest_at", "held_since")

    def __init__(self, mgr: "StreamManagement", resumable: bool, now: float):
        self.mgr = mgr
        self.id = secrets.token_urlsafe(12) if resumable else None
        self.h_in = 0                       # stanzas received from the client (mod 2^32)
        self.h_out = 0                      # stanzas sent to it (mod 2^32)
        self.acked = 0                      # the client's last h
        self.queue: deque[bytes] = deque()  # sent and not acked, oldest first
        self.asked_at: float | None = None  # our <r/> is out since
        self.oldest_at: float | None = None  # when the oldest unacked stanza was sent
        self.held_since: float | None = None

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def sent(self, s, data: bytes) -> None:
        """A stanza for the client: counted, kept until acked, written unless held."""
        self.h_out = (self.h_out + 1) & MASK
        if not self.queue:
            self.oldest_at = self.mgr.svc.core.now()
        self.queue.append(data)
        if self.held_since is not None:
            return
        s.t.write(data)
        if len(self.queue) >= self.mgr.ack_every and self.asked_at is None:
            self.ask(s, self.oldest_at)

    def ask(self, s, now: float) -> None:
        self.asked_at = now
        s.t.write(_nonza("r"))

    def ack(self, s, h: int) -> bool:
        """The client handled `h` stanzas in all: drop them from the queue; False if h is impossible."""
        n = (h - self.acked) & MASK
        if n > len(self.queue):
            return False
        for _ in range(n):
            self.queue.popleft()
        self.acked = h
        self.asked_at = None
        if not self.queue:
            self.oldest_at = None
        return True

    def hold(self, s, now: float) -> bool:
        """The connection was cut: keep the session for resumption (True), unless it cannot be."""
        if self.id is None or s.ended or s.jid is None or self.held_since is not None:
            return False
        self.held_since = now
        self.asked_at = None
        s.t = HeldTransport(s.t)
        return True

    def finished(self, s, now: float) -> None:
        """The session ended for good (after `unbound`): what it never acked gets another chance."""
        self.mgr.sessions.pop(self.id, None)
        queue, self.queue = self.queue, deque()
        if queue:
            self.mgr.undelivered(s, queue, now)


class StreamManagement:
    """XEP-0198 for the service: the resumable sessions by id, the nonzas, the timers."""

    def __init__(self, svc, opts):
        self.svc = svc
        self.resume_timeout = opts.resume_timeout
        self.ack_every = opts.ack_every
        self.ack_seconds = opts.ack_seconds
        self.sessions: dict[str, object] = {}     # resumption id -> session (connected or held)
        self.resumed = self.expired = 0

    # ---------------------------------------------------------------- nonzas
    def nonza(self, ev: StanzaReceived):
        s, el = ev.session, ev.stanza
        handler = self.HANDLERS.get(el.tag)
        if handler is None:
            return None
        handler(self, s, el, ev.now)
        return True

    # <enable xmlns='urn:xmpp:sm:3' [resume='true'] [max='seconds']/>
    def _enable(self, s, el, now):
        if s.jid is None or not s.established or s.sm is not None:
            s.t.write(_failed("unexpected-request"))
            return
        resumable = el.get("resume") in ("true", "1")
        s.sm = SmState(self, resumable, now)
        if resumable:
            self.sessions[s.sm.id] = s
            s.t.write(_nonza("enabled", id=s.sm.id, resume="true", max=int(self.resume_timeout)))
        else:
            s.t.write(_nonza("enabled"))

    # <r xmlns='urn:xmpp:sm:3'/>
    def _request(self, s, el, now):
        if s.sm is None:
            s.t.write(_failed("unexpected-request"))
            return
        s.t.write(_nonza("a", h=s.sm.h_in))

    # <a xmlns='urn:xmpp:sm:3' h='N'/>
    def _answer(self, s, el, now):
        h = _h(el)
        if s.sm is None:
            return
        if h is None:
            s.stream_error("invalid-xml", "<a/> needs an h between 0 and 2^32-1")
        elif not s.sm.ack(s, h):
            s.stream_error("undefined-condition", f"h={h} acks more than the {s.sm.h_out} stanzas sent")

    # <resume xmlns='urn:xmpp:sm:3' previd='ID' h='N'/>
    def _resume(self, s, el, now):
        h = _h(el)
        old = self.sessions.get(el.get("previd") or "")
        if s.jid is not None or s.account is None:
            s.t.write(_failed("unexpected-request"))
            return
        if h is None:
            s.t.write(_failed("bad-request"))
            return
        if old is None or old.account != s.account or old.sm is None:
            s.t.write(_failed("item-not-found"))
            return
        sm = old.sm
        if (h - sm.acked) & MASK > len(sm.queue):
            s.t.write(_failed("unexpected-request", sm.h_in))
            return
        self.take_over(s, old, now)
        s.t.write(_nonza("resumed", h=sm.h_in, previd=sm.id))
        sm.ack(s, h)
        for data in sm.queue:               # still unacked: sent again, in order
            s.t.write(data)
        if sm.queue:
            sm.ask(s, now)
        self.resumed += 1

    HANDLERS = {_SM + "enable": _enable, _SM + "r": _request, _SM + "a": _answer, _SM + "resume": _resume}

    # ---------------------------------------------------------------- resumption
    def take_over(self, new, old, now: float) -> None:
        """`new` (authenticated, not bound) continues the session `old`: its resource, presence,
        roster and extension state, its network member; `old`'s connection, if still open, is closed."""
        cut = None if old.sm.held else old.t
        keep = {"svc", "t", "neg", "policy", "started", "last_read", "pinged"}
        new.__dict__.update({k: v for k, v in old.__dict__.items() if k not in keep})
        new.ended = False
        new.neg.resumed(old.jid)
        new.sm.held_since = None
        new.sm.asked_at = None
        new.member.resources[new.jid.resource] = new
        self.sessions[new.sm.id] = new
        self.svc.pending.discard(new)
        old.sm, old.jid = None, None        # its connection_lost is nothing now
        if cut is not None:
            cut.close("resumed on another connection")

    def sweep(self, now: float) -> None:
        """Held sessions past the timeout end; connected ones with an old unacked stanza are asked."""
        for s in list(self.sessions.values()):
            sm = s.sm
            if sm is None:
                continue
            if sm.held_since is not None:
                if now - sm.held_since >= self.resume_timeout or s.t.closing:
                    self.expired += 1
                    s.sm = None
                    self.svc.unbound(s, "Connection closed (stream not resumed)", now)
                    sm.finished(s, now)
            elif sm.queue and sm.asked_at is None and now - (sm.oldest_at or now) >= self.ack_seconds \
                    and not s.t.closing:
                sm.ask(s, now)

    def undelivered(self, s, queue, now: float) -> None:
        """Messages with a body that `s` never acked: another resource, offline storage, or a bounce."""
        r = self.svc.router
        for data in queue:
            if not data.startswith(b"<message"):
                continue
            try:
                wrapper = etree.fromstring(b"<x xmlns='%s'>%s</x>" % (ns.CLIENT.encode(), data))
            except etree.XMLSyntaxError:
                continue
            msg = wrapper[0]
            if msg.find(_BODY) is None or msg.get("type") not in (None, "chat", "normal"):
                continue
            bare = s.jid.bare
            if r.to_bare(bare, msg, now):
                continue
            if r.hooks.run("message/offline", StanzaReceived(r, s, msg, bare, now)) is not None:
                continue
            try:
                sender = parse_jid(msg.get("from") or "")
            except JidError:
                continue
            bounce = element("message", {"type": "error", "from": str(bare), "to": str(sender),
                                         "id": msg.get("id")})
            err = etree.SubElement(bounce, "{%s}error" % ns.CLIENT, type="cancel")
            etree.SubElement(err, "{%s}recipient-unavailable" % ns.STANZA_ERRORS, nsmap={None: ns.STANZA_ERRORS})
            r.deliver(bounce, now)

    def stats(self) -> dict:
        return {"sm_sessions": len(self.sessions), "sm_held": sum(1 for s in self.sessions.values()
                                                                    if s.sm is not None and s.sm.held),
                "sm_resumed": self.resumed, "sm_expired": self.expired}


def _h(el) -> int | None:
    try:
        h = int(el.get("h", ""))
    except ValueError:
        return None
    return h if 0 <= h <= MASK else None


def setup(module, svc) -> None:
    mgr = svc.sm = StreamManagement(svc, svc.opts)
    module.hook("nonza/" + ns.SM, mgr.nonza)
    module.every(1.0, mgr.sweep)
