"""Presence (RFC 3856, PIDF RFC 3863): this server is the presence agent of every network user.

SUBSCRIBE sip:nick@<domain> with `Event: presence` (the watcher authenticated by digest, 407) is answered
200 with Expires, then a NOTIFY with a PIDF body for that user whatever its protocol: online (basic
open), away (open, with RPID `away` and the away text as note; IRC AWAY, XMPP presence as the core's
away) or offline (basic closed). A new NOTIFY goes out when that changes (hooks client_connected,
client_disconnected, user_updated). A refresh inside the dialog renews the subscription; `Expires: 0`
ends it with a final NOTIFY `Subscription-State: terminated`; one that expires is ended with
`terminated;reason=timeout`; a NOTIFY answered 481 or not at all drops it. Per server: a watcher's
subscription lives on the server it subscribed at (every server knows every user's presence).
Who may watch whom is the `presence` option: `open` (anyone, unchallenged), `registered` (default: any
authenticated user) or `channels` (a user sharing a channel with the presentity, or the presentity's own
account); anything else is 403. Checked at SUBSCRIBE and at each refresh.

A nick change (hook nick_changed): the presentity sip:OLD@<domain> is gone, so its watchers get a final
NOTIFY, `terminated;reason=noresource` (RFC 6665 §4.1.3: do not re-subscribe) with a closed PIDF whose
note names the new nick; watchers of sip:NEW@<domain> get its state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers
from bridges.sip.message import Request, Response, make_response

PIDF = "application/pidf+xml"


@dataclass(slots=True)
class Subscription:
    call_id: str
    tag: str                      # our tag: with the Call-ID, the dialog's key
    nick: str                     # as subscribed (sip:nick@domain)
    target: str                   # the watcher's Contact
    flow: tuple[str, str, int]
    remote: str                   # the watcher's From (with its tag): our To
    local: str                    # our To with our tag: our From
    contact: str                  # our Contact
    expires_at: float
    cseq: int = 0
    state: tuple | None = None    # what the last NOTIFY said
    watcher: str | None = None    # the account that subscribed (None: unauthenticated, presence open)


def pidf(entity: str, state: tuple) -> bytes:
    basic, note = state
    away = basic == "away"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
             f'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
             f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity={quoteattr(entity)}>',
             f'<tuple id="t1"><status><basic>{"closed" if basic == "closed" else "open"}</basic></status>'
             + (f"<note>{escape(note)}</note>" if note else "") + "</tuple>"]
    if away:
        lines.append('<dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities></dm:person>')
    lines.append("</presence>")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


class PresenceAgent:
    def __init__(self, service):
        self.svc = service
        self.subs: dict[tuple[str, str], Subscription] = {}   # (Call-ID, our tag) -> subscription
        self._pending: Subscription | None = None             # its first NOTIFY follows our 200

    def hooks(self) -> list[tuple[str, object]]:
        return [("client_connected", lambda u: self.changed(u.nick)),
                ("client_disconnected", lambda u, reason: self.changed(u.nick)),
                ("user_updated", lambda u, what: self.changed(u.nick) if what == "away" else None),
                ("nick_changed", self.renamed)]

    def may_watch(self, watcher: str | None, nick: str) -> bool:
        """The `presence` rule: may the authenticated `watcher` (an account, None if unauthenticated)
        see the presence of `nick`?"""
        mode = self.svc.opts.presence
        if mode == "open":
            return True
        if watcher is None:
            return False
        if mode == "registered":
            return True
        net = self.svc.core.net
        target = net.find_nick(nick)
        if net.fold(watcher) == net.fold(nick) or (target is not None and target.account and
                                                   net.fold(target.account) == net.fold(watcher)):
            return True
        if target is None:
            return False
        mine = [self.svc.members.user_of(watcher.lower()), net.find_nick(watcher)]
        return any(me is not None and me.account and net.fold(me.account) == net.fold(watcher) and
                   any(k in target.channels for k in me.channels) for me in mine)

    def state_of(self, nick: str) -> tuple:
        u = self.svc.core.net.find_nick(nick)
        if u is None:
            return ("closed", None)
        if u.away:
            return ("away", u.away)
        return ("open", None)

    def is_dialog(self, req: Request) -> bool:
        return req.to.tag is not None and (req.call_id, req.to.tag) in self.subs

    # -------------------------------------------------------------- SUBSCRIBE
    def subscribe(self, tx, req: Request, now: float) -> Response:
        """SUBSCRIBE sip:nick@<domain> (Event: presence): 200, then NOTIFY with PIDF"""
        refusal, expires = self._check(req)
        if refusal is not None:
            return refusal
        nick = req.uri.user
        net = self.svc.core.net
        if net.find_nick(nick) is None and self.svc.core.accounts.get(nick.lower()) is None:
            return make_response(req, 404, "Not Found")
        if not self.may_watch(tx.identity, nick):
            return make_response(req, 403, "Forbidden: not allowed to watch that presence")
        flow = tx.flow
        contact = f"<sip:{nick}@{flow.host}:{flow.port};transport={flow.transport.lower()}>"
        response = make_response(req, 200, extra=[("Expires", str(expires)), ("Contact", contact)])
        if expires == 0:     # a fetch: one NOTIFY, terminated
            s = self._new(tx, req, nick, response, contact, now)
            self._notify(s, now, terminated="timeout")
            return response
        s = self._new(tx, req, nick, response, contact, now + expires)
        s.watcher = tx.identity
        self.subs[(req.call_id, response.to.tag)] = s
        self._pending = s
        return response

    def _new(self, tx, req: Request, nick: str, response: Response, contact: str, expires_at: float) -> Subscription:
        try:
            target = str(req.contacts[0].uri) if req.contacts else str(req.from_.uri)
        except (SipParseError, IndexError):
            target = str(req.from_.uri)
        return Subscription(req.call_id, response.to.tag, nick, target, (tx.flow.transport, *tx.source), req.headers.get("From"),
                            response.headers.get("To"), contact, expires_at)

    def _check(self, req: Request) -> tuple[Response | None, int]:
        event = (req.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "presence":
            return make_response(req, 489, "Bad Event", [("Allow-Events", "presence")]), 0
        opts = self.svc.opts
        try:
            expires = req.expires
        except SipParseError as e:
            return make_response(req, 400, f"Bad Request: {e.reason}"), 0
        expires = opts.default_expires if expires is None else min(expires, opts.max_expires)
        if 0 < expires < opts.min_expires:
            return make_response(req, 423, "Interval Too Brief", [("Min-Expires", str(opts.min_expires))]), 0
        return None, expires

    def in_dialog(self, req: Request, now: float) -> Response | None:
        """SUBSCRIBE in the dialog: a refresh, or with Expires: 0 the end (final NOTIFY)"""
        key = (req.call_id, req.to.tag)
        s = self.subs[key]
        if req.method != "SUBSCRIBE":
            return make_response(req, 200) if req.method != "ACK" else None
        refusal, expires = self._check(req)
        if refusal is not None:
            return refusal
        if expires and not self.may_watch(s.watcher, s.nick):
            del self.subs[key]
            self._notify(s, now, terminated="rejected")
            return make_response(req, 403, "Forbidden: not allowed to watch that presence")
        response = make_response(req, 200, extra=[("Expires", str(expires)), ("Contact", s.contact)])
        if expires == 0:
            del self.subs[key]
            self._notify(s, now, terminated="")
        else:
            s.expires_at = now + expires
            self._pending = s
        return response

    def after_response(self, now: float) -> None:
        """The NOTIFY that follows a 200 to SUBSCRIBE (sent after it, RFC 6665 §4.2.1.2)."""
        s, self._pending = self._pending, None
        if s is not None:
            s.state = None
            self._notify(s, now)

    # -------------------------------------------------------------- NOTIFY
    def changed(self, nick: str) -> None:
        fold = self.svc.core.net.fold
        key = fold(nick)
        now = self.svc.core.now()
        for s in [s for s in self.subs.values() if fold(s.nick) == key]:
            self._notify(s, now)
        return None

    def renamed(self, user, old: str) -> None:
        """`user` was `old`: that presentity is gone (final NOTIFY naming the new nick); the new one is here."""
        fold = self.svc.core.net.fold
        now = self.svc.core.now()
        if fold(old) != fold(user.nick):
            for key, s in [(k, s) for k, s in self.subs.items() if fold(s.nick) == fold(old)]:
                del self.subs[key]
                self._notify(s, now, terminated="noresource", state=("closed", f"now known as {user.nick}"))
        self.changed(user.nick)
        return None

    def _notify(self, s: Subscription, now: float, terminated: str | None = None, state: tuple | None = None) -> None:
        state = state or self.state_of(s.nick)
        if terminated is None and state == s.state:
            return
        s.state = state
        flow = self.svc.flow_for(s.flow)
        if flow is None:
            self.subs.pop((s.call_id, s.tag), None)
            return
        s.cseq += 1
        if terminated is None:
            sub_state = f"active;expires={max(0, int(s.expires_at - now + 0.5))}"
        else:
            sub_state = "terminated" + (f";reason={terminated}" if terminated else "")
        h = Headers()
        h.add("Via", f"SIP/2.0/{flow.transport} {flow.host}:{flow.port};branch=z9hG4bK{os.urandom(8).hex()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", s.local)
        h.add("To", s.remote)
        h.add("Call-ID", s.call_id)
        h.add("CSeq", f"{s.cseq} NOTIFY")
        h.add("Contact", s.contact)
        h.add("Event", "presence")
        h.add("Subscription-State", sub_state)
        h.add("Content-Type", PIDF)
        body = pidf(f"sip:{s.nick}@{self.svc.domain}", state)
        key = (s.call_id, s.tag)

        def answered(response, t):
            if response is None or response.status in (481, 408) or response.status >= 500:
                self.subs.pop(key, None)     # the watcher is gone (RFC 6665 §4.2.2)
        self.svc.send_request(Request("NOTIFY", s.target, h, body), s.flow, now, answered)

    def tick(self, now: float) -> None:
        for key, s in list(self.subs.items()):
            if s.expires_at <= now:
                del self.subs[key]
                self._notify(s, now, terminated="timeout")
