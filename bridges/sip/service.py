"""The SIP element of one server: transactions, the method table and its one dispatch(), the
registrar, the proxy and the mapping onto the network. Synchronous, time passed in; the module's timer
calls `tick(now)`. Flows (transport.py) bring codec events in and send bytes out.

Routing a request that no transaction has (dispatch):
1. the per-source request bucket (pike-like): over it, dropped unanswered;
2. our own Route (loose routing) is taken off; a request still routed elsewhere, or for a URI that is
   not ours, is forwarded only inside a dialog (To tag) through a Route we put there; else 403;
3. validate_request, then the method's entry in METHODS: where it may go (to the server itself, to a
   user), and whether its sender must authenticate (407, the identity must be the From user).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Callable

from bridges.sip.bindings import BindingStore
from bridges.sip.codec import MessageRejected, RequestReceived, ResponseReceived, serialise, validate_request
from bridges.sip.digest import DigestVerifier, parse_credentials
from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers, parse_name_addr
from bridges.sip.mapping import SipMembers
from bridges.sip.message import Request, Response, make_response
from bridges.sip.proxy import Proxy
from bridges.sip.ratelimit import TokenBuckets
from bridges.sip.registrar import Registrar
from bridges.sip.transaction import (
    DeliverRequest, DeliverResponse, Destination, SendMessage, TimeoutOccurred, TransactionTable,
    TransactionTerminated, client_transaction_for, reply_destination, server_transaction_for,
)
from bridges.sip.uri import SipUri
from relay.core.members import SpeakRefused, speak_refusal_text
from relay.core.network import JoinRefused
from relay.core.model import MESSAGE

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER"
ACCEPT = "text/plain, application/sdp"
SUPPORTED = "path, outbound"
FOR_US = frozenset({"REGISTER", "OPTIONS", "MESSAGE"})   # answered here (MESSAGE: when to a network user)


@dataclass(frozen=True, slots=True)
class Method:
    """A method's row: its syntax line, who handles it, whether the sender must authenticate (proxy
    challenge, 407) when it is not inside a dialog."""
    syntax: str
    handler: Callable
    auth: bool


class SipService:
    def __init__(self, core, opts, domain: str, store: BindingStore, log):
        self.core = core
        self.opts = opts
        self.domain = domain.lower()
        self.log = log
        self.realm = core.config.realm
        self.transactions = TransactionTable()
        self.udp: list = []
        self.tcp: dict[tuple[str, int], object] = {}
        self.store = store
        self.dialogs: dict[tuple[str, str], ConferenceDialog] = {}  # (Call-ID, our tag) -> dialog
        self.verifier = DigestVerifier(os.urandom(32), self.realm, opts.nonce_lifetime,
                                       algorithms=tuple(opts.algorithms))
        self.requests = TokenBuckets(opts.requests_per_second, opts.request_burst)
        self.auth_failures = TokenBuckets(opts.auth_failures_per_minute / 60.0, opts.auth_failures_burst)
        self.registrar = Registrar(store, opts, self.is_local_uri, self._bindings_changed)
        self.proxy = Proxy(self)
        cfg = core.config
        self.members = SipMembers(self, core.net, core.config)
        self.local_hosts = {self.domain, cfg.server.name.lower(), "localhost", *(a.lower() for a in opts.aliases)}
        self.stats = {"received": 0, "dropped_rate": 0, "dropped_amplify": 0, "auth_failed": 0,
                      "registered": 0, "messages": 0}

    # -------------------------------------------------------------- flows
    def udp_opened(self, flow) -> None:
        self.udp.append(flow)
        self._add_address(flow.host)

    def udp_closed(self, flow) -> None:
        if flow in self.udp:
            self.udp.remove(flow)

    def tcp_opened(self, flow) -> None:
        self.tcp[flow.peer] = flow
        self._add_address(flow.host)

    def tcp_closed(self, flow) -> None:
        if self.tcp.get(flow.peer) is flow:
            del self.tcp[flow.peer]

    def _add_address(self, host: str) -> None:
        if host in ("0.0.0.0", "::", ""):
            self.local_hosts |= {"127.0.0.1", "::1", "[::1]"}
        else:
            self.local_hosts.add(host.lower())

    def local_ports(self) -> set[int]:
        ports = {f.port for f in self.udp} | {f.port for f in self.tcp.values()}
        ports |= {l.port for l in self.core.config.listen if l.proto == "sip"}
        return ports

    def own_sent_by(self) -> set[tuple[str, int | None]]:
        return {(h, p) for h in self.local_hosts for p in self.local_ports()}

    def flow_for(self, key: tuple[str, str, int]):
        """The flow that reaches (transport, host, port): the connection for TCP/TLS, a UDP socket of the
        destination's address family for UDP; None if we have none (we do not dial out yet)."""
        transport, host, port = key
        if transport.upper() == "UDP":
            v6 = ":" in host
            return next((f for f in self.udp if (":" in f.host) == v6), self.udp[0] if self.udp else None)
        return self.tcp.get((host, port))

    def is_conference_uri(self, uri) -> bool:
        """sip:NAME@conference.<domain>: channel #NAME."""
        return (isinstance(uri, SipUri) and uri.user is not None and
                uri.host.lower() == f"conference.{self.domain}")

    def is_local_uri(self, uri) -> bool:
        if not isinstance(uri, SipUri):
            return False
        host = uri.host.lower()
        if host not in self.local_hosts:
            return False
        return uri.port is None or uri.port in self.local_ports()

    # -------------------------------------------------------------- events in
    def received(self, event, source: tuple[str, int], flow, size: int, now: float) -> None:
        self.stats["received"] += 1
        if type(event) is RequestReceived:
            self._request(event.request, source, flow, size, now)
        elif type(event) is ResponseReceived:
            tx = self.transactions.match_response(event.response)
            if tx is not None:  # stray responses are dropped silently
                self.run(tx.receive(event.response, now), now)
        elif type(event) is MessageRejected and event.response is not None:
            if not self.requests.allow(source[0], now):
                self.stats["dropped_rate"] += 1
                return
            dest = reply_destination(event.response, source, flow.transport, self.opts.force_rport)
            self._send_response(event.response, dest, flow, size)
            if event.framing_lost and flow.reliable:
                flow.close("SIP framing lost")

    def _request(self, req: Request, source, flow, size: int, now: float) -> None:
        if not self.requests.allow(source[0], now):
            self.stats["dropped_rate"] += 1
            return
        tx = self.transactions.match_request(req)
        if tx is not None:
            self.run(tx.receive(req, now), now)
            return
        if req.method == "ACK":
            self._forward_stateless(req, now)
            return
        if self.auth_failures.empty(source[0], now):
            self.stats["dropped_rate"] += 1  # too many failed authentications: not answered at all
            return
        via = req.top_via
        dest = reply_destination(make_response(req, 100), source, flow.transport, self.opts.force_rport)
        if dest is None:
            return
        if via.has_param("maddr"):  # a maddr would send our answers elsewhere: answer the sender only
            rport = self.opts.force_rport or via.has_param("rport")
            dest = Destination(flow.transport, source[0], source[1] if rport else (via.port or 5060))
        tx = server_transaction_for(req, dest, flow.reliable)
        tx.flow, tx.source, tx.size, tx.proxy = flow, source, size, None
        self.transactions.add(tx)
        self.run(tx.start(now), now)
        response = self.dispatch(tx, req, now)
        if response is not None:
            self.respond(tx, response, now)
        elif tx.proxy is None:  # nothing to say and nothing pending: forget it
            self.transactions.server.pop(tx.key, None)

    # -------------------------------------------------------------- the one dispatch
    def dispatch(self, tx, req: Request, now: float) -> Response | None:
        if req.method == "CANCEL":
            return self.cancel(req, now)
        if self.proxy.looped(req):
            return make_response(req, 482, "Loop Detected")
        routes = req.headers.values("Route")
        ours = False
        if routes:
            try:
                first = parse_name_addr(routes[0], "Route").uri
            except SipParseError as e:
                return make_response(req, 400, f"Bad Request: {e.reason}")
            if self.is_local_uri(first):
                req.headers.pop_first_value("Route")
                req.invalidate()
                ours = True
        in_dialog = req.to.tag is not None
        if in_dialog and (req.call_id, req.to.tag) in self.dialogs:
            return self.in_conference_dialog(req, now)
        conference = self.is_conference_uri(req.uri)
        local = conference or self.is_local_uri(req.uri)
        user = getattr(req.uri, "user", None)
        for_us = local and (user is None or conference or req.method in FOR_US)
        refusal = validate_request(req, for_us=for_us, supported={"path", "outbound"})
        if refusal is not None:
            return refusal
        if not local or req.headers.get("Route"):
            if in_dialog and ours:
                return self.forward_in_dialog(tx, req, now)
            return make_response(req, 403, "Forbidden: relaying denied")
        row = METHODS.get(req.method)
        if row is None:
            return make_response(req, 405 if user is None else 501, extra=[("Allow", ALLOW)])
        sender = None
        if row.auth and not in_dialog:
            sender, refusal = self.authenticate(tx, req, "Proxy-Authorization", now)
            if refusal is not None or sender is None:
                return refusal
            from_uri = req.from_.uri
            if not isinstance(from_uri, SipUri) or (from_uri.user or "").lower() != sender.lower():
                self._auth_failed(tx, now)
                return make_response(req, 403, "Forbidden: From is not the authenticated user")
        if conference:
            return self.to_conference(tx, req, sender, now)
        return row.handler(self, tx, req, sender, now)

    # -------------------------------------------------------------- handlers (one per row of METHODS)
    def on_register(self, tx, req: Request, sender, now: float) -> Response | None:
        """REGISTER sip:<domain> (digest: 401, WWW-Authenticate)"""
        user, refusal = self.authenticate(tx, req, "Authorization", now)
        if refusal is not None or user is None:
            return refusal
        self.stats["registered"] += 1
        return self.registrar.register(req, user, (tx.flow.transport, *tx.source), now)

    def on_options(self, tx, req: Request, sender, now: float) -> Response | None:
        """OPTIONS sip:<domain> | sip:user@<domain>"""
        if req.uri.user is None:
            return make_response(req, 200, extra=[("Allow", ALLOW), ("Accept", ACCEPT),
                                                   ("Supported", SUPPORTED)])
        return self.to_user(tx, req, now)

    def on_message(self, tx, req: Request, sender, now: float) -> Response | None:
        """MESSAGE sip:nick@<domain> (RFC 3428): to a registered SIP user's contacts, or a direct message
        to the network user of that nick"""
        aor = req.uri.user.lower()
        if self.store.get(aor, now) or req.to.tag is not None:
            return self.to_user(tx, req, now)
        target = self.core.net.find_nick(req.uri.user)
        if target is None:
            return make_response(req, 404, "Not Found")
        source = self.members.user_of(sender.lower()) if sender else None
        if source is None:
            return make_response(req, 403, "Forbidden: register to send messages to network users")
        try:
            text = req.body.decode("utf-8")
        except UnicodeDecodeError:
            return make_response(req, 400, "Bad Request: the body is not UTF-8")
        for line in text.replace("\r\n", "\n").split("\n"):
            if line:
                self.core.net.message(source, target, MESSAGE, line, now)
        self.stats["messages"] += 1
        return make_response(req, 202, "Accepted")

    def on_to_user(self, tx, req: Request, sender, now: float) -> Response | None:
        """INVITE | BYE | ... sip:user@<domain>: proxied to its contacts"""
        if req.uri.user is None:
            return make_response(req, 405, extra=[("Allow", ALLOW)])
        return self.to_user(tx, req, now)

    def to_user(self, tx, req: Request, now: float) -> Response | None:
        bindings = self.store.get(req.uri.user.lower(), now)
        if not bindings:
            known = self.core.net.find_nick(req.uri.user) is not None
            return make_response(req, 480 if known else 404, "Temporarily Unavailable" if known else "Not Found")
        return self.proxy.fork(tx, req, [(b.contact, b.flow) for b in bindings], now)

    def to_conference(self, tx, req: Request, sender, now: float) -> Response | None:
        """MESSAGE sip:NAME@conference.<domain> outside a dialog: a message to #NAME if the sender may
        speak there. INVITE to it: join #NAME (the answer declines every media stream, RFC 3264 §6)."""
        if req.method not in ("MESSAGE", "INVITE") or req.to.tag is not None:
            return make_response(req, 501, "Not Implemented: only MESSAGE and INVITE to a conference")
        source = self.members.user_of(sender.lower()) if sender else None
        if source is None:
            return make_response(req, 403, "Forbidden: register to post to a conference")
        if req.method == "INVITE":
            return self.join_conference(tx, req, source, now)
        try:
            text = req.body.decode("utf-8")
        except UnicodeDecodeError:
            return make_response(req, 400, "Bad Request: the body is not UTF-8")
        channel = "#" + req.uri.user
        try:
            for line in text.replace("\r\n", "\n").split("\n"):
                if line:
                    self.members.members.speak(source, channel, line, now)
        except SpeakRefused as e:
            return make_response(req, 403, f"Forbidden: {speak_refusal_text(e)}")
        self.stats["messages"] += 1
        return make_response(req, 202, "Accepted")

    def join_conference(self, tx, req: Request, source, now: float) -> Response:
        channel = "#" + req.uri.user
        try:
            self.members.members.join(source, channel, now)
        except JoinRefused as e:
            return make_response(req, 403, f"Forbidden: cannot join {channel} ({e.code})")
        flow = tx.flow
        contact = f"<sip:{req.uri.user}@{flow.host}:{flow.port};transport={flow.transport.lower()}>"
        answer = sdp_declining(req.body, flow.host) if req.content_type == "application/sdp" and req.body else b""
        extra = [("Contact", contact)] + ([("Content-Type", "application/sdp")] if answer else [])
        response = make_response(req, 200, extra=extra, body=answer)
        try:
            target = str(req.contacts[0].uri) if req.contacts else str(req.from_.uri)
        except (SipParseError, IndexError):
            target = str(req.from_.uri)
        self.dialogs[(req.call_id, response.to.tag)] = ConferenceDialog(
            sender_aor(source), channel, target, (flow.transport, *tx.source), req.headers.get("From"),
            response.headers.get("To"))
        return response

    def in_conference_dialog(self, req: Request, now: float) -> Response | None:
        """BYE leaves the channel; MESSAGE in the dialog is a channel message; ACK is absorbed."""
        key = (req.call_id, req.to.tag)
        d = self.dialogs[key]
        aor, channel = d.aor, d.channel
        user = self.members.user_of(aor)
        if req.method == "ACK":
            return None
        if req.method == "BYE":
            del self.dialogs[key]
            if user is not None:
                self.members.members.leave(user, channel, "Left the conference", now)
            return make_response(req, 200)
        if req.method == "MESSAGE" and user is not None:
            try:
                for line in req.body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
                    if line:
                        self.members.members.speak(user, channel, line, now)
            except SpeakRefused as e:
                return make_response(req, 403, f"Forbidden: {speak_refusal_text(e)}")
            return make_response(req, 200)
        return make_response(req, 488 if req.method == "INVITE" else 200)

    def forward_in_dialog(self, tx, req: Request, now: float) -> Response | None:
        """An in-dialog request that came through our Record-Route: to its Request-URI."""
        target = self._target_of(req.uri)
        if target is None:
            return make_response(req, 404, "Not Found: no route to the Request-URI")
        return self.proxy.fork(tx, req, [(req.uri_text, target)], now)

    def cancel(self, req: Request, now: float) -> Response:
        """CANCEL: 200 for the CANCEL, then the pending branches are cancelled (their 487 goes up)."""
        target = self.transactions.match_cancel(req)
        if target is None:
            return make_response(req, 481, "Call/Transaction Does Not Exist")
        self.proxy.cancel(target, now)
        return make_response(req, 200)

    # -------------------------------------------------------------- authentication
    def authenticate(self, tx, req: Request, header: str, now: float) -> tuple[str | None, Response | None]:
        """(user, None) when the request carries good credentials; otherwise (None, the challenge or
        refusal). A source that fails too often is not answered at all."""
        status, challenge_header = (401, "WWW-Authenticate") if header == "Authorization" else \
                                   (407, "Proxy-Authenticate")
        creds = None
        for value in req.headers.fields(header):
            try:
                c = parse_credentials(value)
            except SipParseError as e:
                return None, make_response(req, 400, f"Bad Request: {e.reason}")
            if c is not None and c.realm == self.realm:
                creds = c
                break
        if creds is None:
            return None, self._challenge(req, status, challenge_header, now)
        result = self.verifier.verify(creds, req.method, self._ha1, now, req.uri_text)
        if result.ok:
            return result.username, None
        if result.stale:
            return None, self._challenge(req, status, challenge_header, now, stale=True)
        self._auth_failed(tx, now)
        if result.reason == "unknown nonce":
            return None, self._challenge(req, status, challenge_header, now)
        return None, make_response(req, 403, f"Forbidden: {result.reason}")

    def _auth_failed(self, tx, now: float) -> None:
        self.stats["auth_failed"] += 1
        self.auth_failures.allow(tx.source[0], now)

    def _challenge(self, req: Request, status: int, header: str, now: float, stale: bool = False) -> Response:
        return make_response(req, status, extra=[(header, c) for c in self.verifier.challenges(now, stale)])

    def _ha1(self, username: str, algorithm: str) -> str | None:
        acct = self.core.accounts.get(username)
        if acct is None or acct.realm != self.realm or acct.name != username:
            return None
        return acct.sip_ha1 if algorithm == "MD5" else (acct.sip_ha1_sha256 or None)

    # -------------------------------------------------------------- out
    def respond(self, tx, response: Response, now: float) -> None:
        if not tx.flow.reliable and response.status >= 300:
            data = serialise(response)
            if len(data) > self.opts.amplification_limit * max(tx.size, 1):
                # An answer much larger than what asked for it would make us an amplifier.
                self.stats["dropped_amplify"] += 1
                self.transactions.server.pop(tx.key, None)
                return
        try:
            self.run(tx.send(response, now), now)
        except ValueError:
            pass  # the transaction has moved on (e.g. a final already sent)

    def _send_response(self, response: Response, dest, flow, size: int) -> None:
        if dest is None:
            return
        data = serialise(response)
        if not flow.reliable and len(data) > self.opts.amplification_limit * max(size, 1):
            self.stats["dropped_amplify"] += 1
            return
        flow.send(data, (dest.host, dest.port))

    def run(self, effects: list, now: float) -> None:
        for e in effects:
            t = type(e)
            if t is SendMessage:
                d = e.destination
                flow = self.flow_for((d.transport, d.host, d.port))
                if flow is not None:
                    flow.send(serialise(e.message), (d.host, d.port))
            elif t is DeliverResponse:
                self.proxy.response(e.key, e.response, now)
            elif t is TimeoutOccurred:
                if e.timer in ("B", "F"):
                    self.proxy.timed_out(e.key, now)
            elif t is TransactionTerminated:
                self.proxy.terminated(e.key)
            elif t is DeliverRequest:
                self._forward_stateless(e.request, now)

    def _target_of(self, uri) -> tuple[str, str, int] | None:
        """Where a URI is reached: a registered contact's flow, else its own address (literal IPs only:
        the core does not wait on DNS)."""
        text = str(uri)
        for aor in self.store.aors():
            for b in self.store.get(aor, self.core.now()):
                if b.contact == text:
                    return b.flow
        if not isinstance(uri, SipUri):
            return None
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            return None
        transport = (uri.param("transport") or "udp").upper()
        return (transport, uri.host.strip("[]"), uri.port or 5060)

    def _forward_stateless(self, req: Request, now: float) -> None:
        """An ACK for a 2xx (its own transaction): take our Route off and pass it on to its Request-URI."""
        routes = req.headers.values("Route")
        if not routes:
            return
        try:
            if not self.is_local_uri(parse_name_addr(routes[0], "Route").uri):
                return
        except SipParseError:
            return
        req.headers.pop_first_value("Route")
        req.invalidate()
        if req.max_forwards == 0:
            return
        target = self._target_of(req.uri)
        flow = self.flow_for(target) if target else None
        if flow is None:
            return
        out = self.proxy.prepare(req, req.uri_text, flow)
        flow.send(serialise(out), (target[1], target[2]))

    # -------------------------------------------------------------- the network -> SIP
    def send_direct(self, aor: str, ev) -> None:
        """A direct message to a SIP member: a MESSAGE to each of its contacts (a client transaction each)."""
        now = ev.time
        for b in self.store.get(aor, now):
            flow = self.flow_for(b.flow)
            if flow is None:
                continue
            h = Headers()
            h.add("Via", f"SIP/2.0/{flow.transport} {flow.host}:{flow.port};branch=z9hG4bK{os.urandom(8).hex()};rport")
            h.add("Max-Forwards", "70")
            h.add("From", f"<sip:{ev.source.nick}@{self.domain}>;tag={os.urandom(6).hex()}")
            h.add("To", f"<sip:{aor}@{self.domain}>")
            h.add("Call-ID", f"{os.urandom(10).hex()}@{self.domain}")
            h.add("CSeq", "1 MESSAGE")
            h.add("Content-Type", "text/plain;charset=utf-8")
            req = Request("MESSAGE", b.contact, h, ev.text.encode("utf-8"))
            tx = client_transaction_for(req, Destination(b.flow[0], b.flow[1], b.flow[2]))
            self.transactions.add(tx)
            self.run(tx.start(now), now)

    def send_to_conference(self, aor: str, ev) -> None:
        """A channel message to a member in a conference dialog: an in-dialog MESSAGE from the conference."""
        fold = self.core.net.fold(ev.target.name)
        for (call_id, _), d in list(self.dialogs.items()):
            if d.aor != aor or self.core.net.fold(d.channel) != fold:
                continue
            flow = self.flow_for(d.flow)
            if flow is None:
                continue
            d.cseq += 1
            h = Headers()
            h.add("Via", f"SIP/2.0/{flow.transport} {flow.host}:{flow.port};branch=z9hG4bK{os.urandom(8).hex()};rport")
            h.add("Max-Forwards", "70")
            h.add("From", d.local)     # we are the To of the INVITE: our side of the dialog
            h.add("To", d.remote)
            h.add("Call-ID", call_id)
            h.add("CSeq", f"{d.cseq} MESSAGE")
            h.add("Content-Type", "text/plain;charset=utf-8")
            text = f"<{ev.source.nick}> {ev.text}"
            req = Request("MESSAGE", d.target, h, text.encode("utf-8"))
            tx = client_transaction_for(req, Destination(*d.flow))
            self.transactions.add(tx)
            self.run(tx.start(ev.time), ev.time)

    # -------------------------------------------------------------- bindings -> members
    def _bindings_changed(self, aor: str, now: float) -> None:
        bindings = self.store.get(aor, now)
        acct = self.core.accounts.get(aor) if bindings else None
        ip = bindings[0].flow[1] if bindings else None
        self.members.update(aor, [b.contact for b in bindings], acct.name if acct else aor, ip, now)

    def restore(self, now: float) -> None:
        """Members for the bindings loaded from the file (a restart keeps registrations)."""
        self.store.expire(now)
        for aor in self.store.aors():
            self._bindings_changed(aor, now)

    # -------------------------------------------------------------- timers
    def tick(self, now: float) -> None:
        self.run(self.transactions.timeout(now), now)
        for aor in self.store.expire(now):
            self._bindings_changed(aor, now)
        for flow in list(self.tcp.values()):
            flow.sweep(now)
        self.store.save_if_dirty()

    def close(self, now: float) -> None:
        self.store.save_if_dirty()
        self.members.quit_all("SIP module unloaded", now)


@dataclass(slots=True)
class ConferenceDialog:
    """A SIP member's dialog with a conference: where in-dialog requests go, and both sides' headers."""
    aor: str
    channel: str
    target: str                   # the member's Contact
    flow: tuple[str, str, int]
    remote: str                   # its From (with its tag): our To
    local: str                    # the To we answered (with our tag): our From
    cseq: int = 0


def sender_aor(user) -> str:
    return (user.account or user.nick).lower()


def sdp_declining(offer: bytes, host: str) -> bytes:
    """An SDP answer that declines every stream of the offer (port 0, RFC 3264 §6): the channel has no
    media to mix."""
    lines = [f"v=0", f"o=relaynet 0 0 IN IP4 {host}", "s=relaynet conference", f"c=IN IP4 {host}", "t=0 0"]
    for line in offer.decode("utf-8", "replace").splitlines():
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) >= 4:
                lines.append(f"m={parts[0]} 0 {parts[2]} {parts[3]}")
    return ("\r\n".join(lines) + "\r\n").encode()


METHODS: dict[str, Method] = {
    "REGISTER": Method("REGISTER sip:<domain>", SipService.on_register, auth=False),
    "OPTIONS": Method("OPTIONS sip:[user@]<domain>", SipService.on_options, auth=False),
    "MESSAGE": Method("MESSAGE sip:nick@<domain>", SipService.on_message, auth=True),
    "INVITE": Method("INVITE sip:user@<domain>", SipService.on_to_user, auth=True),
    "BYE": Method("BYE sip:user@<domain>", SipService.on_to_user, auth=False),
    "INFO": Method("INFO sip:user@<domain>", SipService.on_to_user, auth=False),
    "UPDATE": Method("UPDATE sip:user@<domain>", SipService.on_to_user, auth=False),
}
