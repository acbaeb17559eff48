"""BOSH (XEP-0124, XMPP over it: XEP-0206) at `/http-bind` on the HTTP listener.

A BOSH session is a c2s session with RFC 7395 framing (websocket.WebSocketC2s: the same codec,
negotiation, SASL, bind and routing) behind a transport that queues what the session writes: each
child of a request's `<body/>` is one message in (`<open/>` at creation and on `xmpp:restart`,
`<close/>` on `type='terminate'`), and what was queued goes out in the `<body/>` of the oldest
request held. A request may come one ahead of its turn (two connections): it waits for the one
before. A request with nothing to answer is held (long polling, a DeferredResponse) until
something is queued or `wait` seconds pass; at most `hold` are held, an older one is answered
empty when a newer comes. Request ids must follow each other (a repeated one gets its answer
again); a session with no request for `inactivity` seconds ends, as does any broken rule
(`type='terminate'` with the condition). Security is as for WebSocket: https, or plain http
from a loopback address or with `xmpp.http_secure`.
"""

from __future__ import annotations

import secrets

from lxml import etree

from relay.core.http_routes import DeferredResponse, HttpResponse

from . import namespaces as ns
from .restricted import Refused, RestrictedXmlScanner, declaration_length
from .stanza import escape_attr
from .websocket import WebSocketC2s, http_secure

PATH = "/http-bind"
BOSH = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
_RESTART = "{%s}restart" % XBOSH
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=False, remove_pis=False)
_HEADERS = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Allow-Methods", "POST, OPTIONS"), ("Cache-Control", "no-store")]
OPEN = b"<open xmlns='%s' to='%%s' version='1.0'/>" % ns.FRAMING.encode()
CLOSE = b"<close xmlns='%s'/>" % ns.FRAMING.encode()


def _response(body: bytes) -> HttpResponse:
    return HttpResponse(200, list(_HEADERS), body, content_type="text/xml; charset=utf-8")


def terminate(condition: str | None = None) -> HttpResponse:
    cond = b" condition='%s'" % condition.encode() if condition else b""
    return _response(b"<body xmlns='%s' type='terminate'%s/>" % (BOSH.encode(), cond))


def parse_body(data: bytes) -> etree._Element:
    """A request's `<body/>`, under the stream's restricted-XML rules (Refused, or XMLSyntaxError)."""
    skip = declaration_length(data)
    if skip is None:
        raise Refused("bad-request", "incomplete XML declaration")
    data = data[skip:]
    RestrictedXmlScanner().scan(data)
    el = etree.fromstring(data, _PARSER)
    if el.tag != "{%s}body" % BOSH:
        raise Refused("bad-request", "not a BOSH <body/>")
    return el


class BoshTransport:
    """What the c2s session writes to: one message per write, queued on the BOSH session."""

    proto = "bosh"

    def __init__(self, bosh: "BoshSession", peer_host: str, tls: bool):
        self.b, self.peer_host, self.peer_port, self.tls = bosh, peer_host, 0, tls
        self.closing = False
        self.backlog = 0

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.b.queued(data)

    def close(self, reason: str = "") -> None:
        if not self.closing:
            self.closing = True
            self.b.closed(reason)

    def abort(self, reason: str) -> None:
        self.close(reason)

    def channel_bindings(self) -> dict:
        return {}


class BoshSession:
    def __init__(self, service: "BoshService", sid: str, rid: int, wait: int, hold: int, peer: str, tls: bool,
                 now: float):
        self.service, self.sid, self.rid, self.wait, self.hold = service, sid, rid, wait, hold
        self.out: list[bytes] = []
        self.held: list[tuple[int, DeferredResponse, float]] = []     # (rid, response, deadline), oldest first
        self.answers: dict[int, bytes] = {}      # the last answers by rid, for a repeated request
        self.early: dict[int, tuple] = {}        # rid -> (body, response): arrived before the one before it
        self.last_seen = now
        self.busy = False                        # feeding a request: writes wait for its end
        self.ending: str | None = None           # the session is over: why (the terminate condition or "")
        self.lost = False
        self.t = BoshTransport(self, peer, tls)
        self.c2s = WebSocketC2s(service.svc, self.t, None, now)

    # ---------------------------------------------------------------- what the session writes
    def queued(self, data: bytes) -> None:
        if data.startswith(b"<open "):
            self.stream_id = _attr(data, b"id")
            return                                # its attributes are the body's, at creation
        if data.startswith(b"<close "):
            self.ending = self.ending or ""
        else:
            if b"<stream:error" in data[:40]:
                self.ending = "remote-stream-error"
            self.out.append(data)
        if not self.busy:
            self.flush()

    def closed(self, reason: str) -> None:
        self.ending = self.ending if self.ending is not None else ""
        if not self.busy:
            self.finish(reason)

    # ---------------------------------------------------------------- requests
    def feed(self, messages: list[bytes], now: float) -> None:
        self.busy = True
        try:
            for m in messages:
                if self.t.closing:
                    break
                self.c2s.data_received(m, now)
        finally:
            self.busy = False
        if self.t.closing:
            self.finish("stream closed")

    def request(self, body: etree._Element, now: float):
        try:
            rid = int(body.get("rid", ""))
        except ValueError:
            self.end("bad-request")
            return terminate("bad-request")
        if rid in self.answers:
            return _response(self.answers[rid])  # a retransmission (§14.3): the same answer
        if rid <= self.rid or rid > self.rid + self.hold + 1 or rid in self.early:
            self.end("item-not-found")
            return terminate("item-not-found")
        d = DeferredResponse()
        d.on_lost = lambda: self._forget(d)
        self.early[rid] = (body, d)              # one ahead of its turn waits for the one before (§7.3)
        self.last_seen = now
        while self.rid + 1 in self.early and not self.lost:
            self.rid += 1
            self._process(self.rid, *self.early.pop(self.rid), now)
        return d

    def _process(self, rid: int, body: etree._Element, d: DeferredResponse, now: float) -> None:
        self.held.append((rid, d, now + self.wait))
        while len(self.held) > max(self.hold, 1):
            self._answer_oldest()                # the older request goes back (empty) for the new one
        if body.get("type") == "terminate":
            self.feed([etree.tostring(c, with_tail=False) for c in body] + [CLOSE], now)
            self.finish("client terminated")
        elif body.get(_RESTART) == "true":
            self.feed([OPEN % self.service.svc.domain.encode()], now)
        else:
            self.feed([etree.tostring(c, with_tail=False) for c in body], now)
        if self.out or self.ending is not None or self.hold == 0:
            self.flush(force=True)

    def _forget(self, d: DeferredResponse) -> None:
        self.held = [h for h in self.held if h[1] is not d]

    def flush(self, force: bool = False) -> None:
        """What is queued goes out on the oldest held request."""
        if self.held and (self.out or self.ending is not None or force):
            self._answer_oldest()
        if self.ending is not None and not self.lost and not self.busy:
            self.finish("stream closed")

    def _answer_oldest(self) -> None:
        rid, d, _ = self.held.pop(0)
        if self.ending is not None:
            data = b"<body xmlns='%s' type='terminate'%s>%s</body>" % (
                BOSH.encode(), b" condition='%s'" % self.ending.encode() if self.ending else b"", b"".join(self.out))
        else:
            data = b"<body xmlns='%s'>%s</body>" % (BOSH.encode(), b"".join(self.out))
        self.out = []
        self.answers[rid] = data
        for old in [r for r in self.answers if r <= rid - 2]:
            del self.answers[old]
        d.resolve(_response(data))

    def sweep(self, now: float) -> None:
        while self.held and self.held[0][2] <= now:
            self._answer_oldest()
        if not self.held and now - self.last_seen > self.service.inactivity:
            self.end(None, "BOSH session inactive")

    def end(self, condition: str | None, reason: str = "BOSH session ended") -> None:
        if self.ending is None:
            self.ending = condition or ""
        if not self.t.closing:
            self.t.closing = True
        self.finish(reason)

    def finish(self, reason: str) -> None:
        """The c2s session is over: every held request is answered, the session forgotten."""
        while self.held:
            self._answer_oldest()
        for _, d in self.early.values():
            d.resolve(terminate(self.ending or None))
        self.early.clear()
        if not self.lost:
            self.lost = True
            self.service.sessions.pop(self.sid, None)
            self.c2s.connection_lost(reason, self.service.core.now())


def _attr(data: bytes, name: bytes) -> str | None:
    at = data.find(b" %s=\"" % name)
    if at < 0:
        return None
    start = at + len(name) + 3
    return data[start:data.find(b'"', start)].decode("utf-8", "replace")


class BoshService:
    def __init__(self, module, svc):
        self.module, self.svc, self.core = module, svc, module.core
        o = svc.opts
        self.max_wait, self.inactivity = o.bosh_max_wait, o.bosh_inactivity
        self.sessions: dict[str, BoshSession] = {}

    # POST /http-bind  <body rid='N' [sid='S'] ...>stanzas</body>
    def http(self, req, now: float):
        if req.method == "OPTIONS":
            return HttpResponse(200, list(_HEADERS), b"")
        if req.method != "POST":
            return HttpResponse(405, [("Allow", "POST, OPTIONS")], b"BOSH takes POST\n")
        try:
            body = parse_body(req.body)
        except (Refused, etree.XMLSyntaxError) as e:
            return HttpResponse(400, list(_HEADERS), f"bad request: {e}\n".encode())
        sid = body.get("sid")
        if sid is None:
            return self.create(body, req, now)
        s = self.sessions.get(sid)
        if s is None:
            return terminate("item-not-found")
        return s.request(body, now)

    # <body rid='N' to='domain' wait='60' hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>
    def create(self, body: etree._Element, req, now: float) -> HttpResponse:
        svc = self.svc
        if body.get("to") != svc.domain:
            return terminate("host-unknown")
        try:
            rid = int(body.get("rid", ""))
            wait = max(1, min(int(body.get("wait") or self.max_wait), self.max_wait))
            hold = max(0, min(int(body.get("hold") or 1), 1))
        except ValueError:
            return terminate("bad-request")
        if len(self.sessions) >= svc.opts.bosh_max_sessions:
            return terminate("system-shutdown")
        sid = secrets.token_urlsafe(18)
        s = BoshSession(self, sid, rid, wait, hold, req.peer_host, http_secure(svc.opts, req.tls, req.peer_host),
                        now)
        self.sessions[sid] = s
        s.busy = True
        s.c2s.data_received(OPEN % svc.domain.encode(), now)
        s.busy = False
        attrs = {"sid": sid, "wait": str(wait), "requests": str(hold + 1), "hold": str(hold),
                 "inactivity": str(int(self.inactivity)), "polling": "1", "ver": "1.11", "from": svc.domain,
                 "authid": getattr(s, "stream_id", None) or sid, "xmpp:version": "1.0", "xmpp:restartlogic": "true"}
        head = b"".join(b" %s=\"%s\"" % (k.encode(), escape_attr(v)) for k, v in attrs.items())
        data = b"<body xmlns='%s' xmlns:xmpp='%s'%s>%s</body>" % (BOSH.encode(), XBOSH.encode(), head,
                                                                  b"".join(s.out))
        s.out = []
        s.answers[rid] = data
        return _response(data)

    def sweep(self, now: float) -> None:
        for s in list(self.sessions.values()):
            s.sweep(now)

    def close_all(self) -> None:
        for s in list(self.sessions.values()):
            s.end("system-shutdown", "XMPP module unloaded")


def install(module, svc) -> None:
    service = BoshService(module, svc)
    svc.bosh = service
    module.http_route(PATH, service.http)
    module.every(1.0, service.sweep)
    module.on_unload(service.close_all)
