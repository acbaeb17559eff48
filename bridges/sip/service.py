"""The SIP element of one server: transactions, the method table and its one dispatch(), the
registrar, the proxy and the mapping onto the network. Synchronous, time passed in; the module's timer
calls `tick(now)`. Flows (transport.py) bring codec events in and send bytes out.

Routing a request that no transaction has (dispatch):
1. the per-source request bucket (pike-like): over it, dropped unanswered;
2. our own Routes (loose routing) are taken off; a request still routed elsewhere, or for a URI that is
   not ours, is forwarded only inside a dialog (To tag) through a Route we put there; else 403;
3. validate_request, then the method's entry in METHODS: where it may go (to the server itself, to a
   user), and whether its sender must authenticate (407, the identity must be the From user).

Requests from another server of the tree (federation.py, a LinkFlow) skip the per-source limits and the
challenge: that server applied them, and says who it authenticated in P-Asserted-Identity (removed from
whatever a user agent sends). Which state is per server: the bindings this registrar made (stored),
transactions, conference dialogs, presence subscriptions; the other servers' bindings are learned.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Callable

from bridges.sip import stun
from bridges.sip.bindings import BindingStore
from bridges.sip.conference import Conferences
from bridges.sip.presence import PresenceAgent
from bridges.sip.federation import LinkFlow, SipFederation, asserted_user
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
from bridges.sip.uri import SipUri, parse_uri
from relay.core.members import SpeakRefused, speak_refusal_text
from relay.core.model import MESSAGE

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY"
ACCEPT = "text/plain, application/sdp"
SUPPORTED = "path, outbound"
FOR_US = frozenset({"REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE"})   # answered here (MESSAGE: when to a
# network user; SUBSCRIBE: we are every user's presence agent)


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
        self.conference_domain = (opts.conference_domain or f"conference.{self.domain}").lower()
        self.log = log
        self.realm = core.config.realm
        self.transactions = TransactionTable()
        self.udp: list = []
        self.tcp: dict[tuple[str, int], object] = {}
        self.store = store
        self.conferences = Conferences(self)
        self.presence = PresenceAgent(self)
        self.own: dict[tuple, Callable] = {}     # our client transactions -> on_result(response | None, now)
        self.inbound = ""                        # the flow of the request being handled (for the log)
        self.verifier = DigestVerifier(os.urandom(32), self.realm, opts.nonce_lifetime,
                                       algorithms=tuple(opts.algorithms),
                                       allow_without_qop=opts.allow_digest_without_qop)
        self.requests = TokenBuckets(opts.requests_per_second, opts.request_burst)
        self.auth_failures = TokenBuckets(opts.auth_failures_per_minute / 60.0, opts.auth_failures_burst)
        self.registrar = Registrar(store, opts, self.is_local_uri, self._bindings_changed)
        self.proxy = Proxy(self)
        cfg = core.config
        self.members = SipMembers(self, core.net, core.config)
        self.local_hosts = {self.domain, cfg.server.name.lower(), "localhost", *(a.lower() for a in opts.aliases)}
        self.stats = {"received": 0, "dropped_rate": 0, "dropped_amplify": 0, "auth_failed": 0,
                      "registered": 0, "messages": 0, "stun": 0, "stun_refused": 0}
        self.federation = SipFederation(self, core)

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
            self.flow_died((flow.transport, *flow.peer), self.core.now())

    def flow_died(self, key: tuple[str, str, int], now: float) -> None:
        """RFC 5626: the bindings reached over a connection that is gone are gone with it."""
        for aor in self.store.aors():
            dead = [b.contact for b in self.store.get(aor, now) if b.flow == key]
            for contact in dead:
                self.store.remove(aor, contact)
            if dead:
                self._bindings_changed(aor, now)

    def own_address(self) -> tuple[str, int, str]:
        """Our SIP address for Via and Record-Route towards other servers: host, port, transport."""
        for l in self.core.config.listen:
            if l.proto == "sip":
                host = l.host if l.host not in ("0.0.0.0", "::", "", None) else "127.0.0.1"
                return host, l.port, ("tls" if l.tls else getattr(l, "transport", None) or "tcp").lower()
        return "127.0.0.1", 5060, "udp"

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
        if transport == "LINK":
            return self.federation.flow(host)
        if transport.upper() == "UDP":
            v6 = ":" in host
            return next((f for f in self.udp if (":" in f.host) == v6), self.udp[0] if self.udp else None)
        return self.tcp.get((host, port))

    def is_conference_uri(self, uri) -> bool:
        """sip:NAME@<conference_domain> (conference.<domain>): channel #NAME."""
        return isinstance(uri, SipUri) and uri.user is not None and uri.host.lower() == self.conference_domain

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
        self.inbound = f"{flow.transport}/{source[0]}:{source[1]}"
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
            if dest is not None and dest.transport != flow.transport:
                dest = Destination(flow.transport, *source)   # no flow of the Via's kind: the sender
            self._send_response(event.response, dest, flow, size)
            if event.framing_lost and flow.reliable:
                flow.close("SIP framing lost")

    def stun_received(self, data: bytes, source: tuple[str, int], flow, now: float) -> None:
        """A STUN Binding request on a SIP UDP port (RFC 5626 §8.4): answered with the source it came from,
        which tells the user agent its flow is alive. Counted against the source's request bucket; never an
        answer larger than the amplification limit allows; malformed ones are dropped."""
        if not self.requests.allow(source[0], now):
            self.stats["dropped_rate"] += 1
            return
        try:
            out = stun.answer(data, source)
        except stun.StunError:
            self.stats["stun_refused"] += 1
            return
        if out is None:
            return
        if len(out) > self.opts.amplification_limit * len(data):
            self.stats["dropped_amplify"] += 1
            return
        self.stats["stun"] += 1
        flow.send(out, source)

    def _request(self, req: Request, source, flow, size: int, now: float) -> None:
        trusted = type(flow) is LinkFlow
        if not trusted:
            if not self.requests.allow(source[0], now):
                self.stats["dropped_rate"] += 1
                return
            if req.headers.get("P-Asserted-Identity") is not None:
                req.headers.remove("P-Asserted-Identity")   # only the servers of the tree may assert
                req.invalidate()
        tx = self.transactions.match_request(req)
        if tx is not None:
            self.run(tx.receive(req, now), now)
            return
        if req.method == "ACK":
            self._forward_stateless(req, now)
            return
        if not trusted and self.auth_failures.empty(source[0], now):
            self.stats["dropped_rate"] += 1  # too many failed authentications: not answered at all
            return
        via = req.top_via
        dest = reply_destination(make_response(req, 100), source, flow.transport, self.opts.force_rport)
        if dest is None:
            return
        # A maddr would send our answers elsewhere; a Via naming another transport than the request came
        # over has no flow of that kind to answer on (RFC 4475's messages do both): answer the sender.
        if via.has_param("maddr") or dest.transport != flow.transport:
            rport = self.opts.force_rport or via.has_param("rport") or flow.reliable
            dest = Destination(flow.transport, source[0], source[1] if rport else (via.port or 5060))
        tx = server_transaction_for(req, dest, flow.reliable)
        tx.flow, tx.source, tx.size, tx.proxy, tx.identity = flow, source, size, None, None
        self.transactions.add(tx)
        self.run(tx.start(now), now)
        response = self.dispatch(tx, req, now)
        if response is not None:
            self.respond(tx, response, now)
            self.presence.after_response(now)
        elif tx.proxy is None:  # nothing to say and nothing pending: forget it
            self.transactions.server.pop(tx.key, None)

    # -------------------------------------------------------------- the one dispatch
    def dispatch(self, tx, req: Request, now: float) -> Response | None:
        if req.method == "CANCEL":
            return self.cancel(req, now)
        if self.proxy.looped(req):
            return make_response(req, 482, "Loop Detected")
        try:
            ours = self.pop_own_routes(req)
        except SipParseError as e:
            return make_response(req, 400, f"Bad Request: {e.reason}")
        in_dialog = req.to.tag is not None
        key = self.conferences.dialog_key(req, (tx.flow.transport, *tx.source))
        if key is not None:
            return self.conferences.in_dialog(key, req, now)
        if in_dialog and self.presence.is_dialog(req):
            return self.presence.in_dialog(req, now)
        conference = self.is_conference_uri(req.uri)
        local = conference or self.is_local_uri(req.uri)
        user = getattr(req.uri, "user", None)
        for_us = local and (user is None or conference or req.method in FOR_US)
        refusal = validate_request(req, for_us=for_us, supported={"path", "outbound"})
        if refusal is not None:
            return refusal
        if not local or req.headers.get("Route"):
            # In a dialog: through our Record-Route, or (a user agent that ignores Record-Route, like
            # pyVoIP) straight to a contact registered here: that reaches no one we would not reach anyway.
            if in_dialog and (ours or (not req.headers.get("Route") and self.binding_flow(req.uri, now))):
                return self.forward_in_dialog(tx, req, now)
            return make_response(req, 403, "Forbidden: relaying denied")
        row = METHODS.get(req.method)
        if row is None:
            return make_response(req, 405 if user is None else 501, extra=[("Allow", ALLOW)])
        sender = None
        if type(tx.flow) is LinkFlow:
            sender = asserted_user(req, self.domain)
        elif row.auth and not in_dialog and not (req.method == "SUBSCRIBE" and self.opts.presence == "open"):
            sender = self.registered_on_flow(tx, req, now)
            if sender is None:
                sender, refusal = self.authenticate(tx, req, "Proxy-Authorization", now)
                if refusal is not None or sender is None:
                    return refusal
            from_uri = req.from_.uri
            if not isinstance(from_uri, SipUri) or (from_uri.user or "").lower() != sender.lower():
                self._auth_failed(tx, now)
                return make_response(req, 403, "Forbidden: From is not the authenticated user")
        tx.identity = sender
        if conference:
            return self.to_conference(tx, req, sender, now)
        return row.handler(self, tx, req, sender, now)

    def pop_own_routes(self, req: Request) -> bool:
        """Take our Routes off the top (one per server we are reached through); True if there were any."""
        ours = False
        while True:
            routes = req.headers.values("Route")
            if not routes or not self.is_local_uri(parse_name_addr(routes[0], "Route").uri):
                return ours
            req.headers.pop_first_value("Route")
            req.invalidate()
            ours = True

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
        if self.store.get(aor, now) or self.store.remote_get(aor, now) or req.to.tag is not None:
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

    def on_subscribe(self, tx, req: Request, sender, now: float) -> Response | None:
        """SUBSCRIBE sip:nick@<domain> (Event: presence): see presence.py"""
        if req.uri.user is None:
            return make_response(req, 404, "Not Found")
        return self.presence.subscribe(tx, req, now)

    def on_to_user(self, tx, req: Request, sender, now: float) -> Response | None:
        """INVITE | BYE | ... sip:user@<domain>: proxied to its contacts"""
        if req.uri.user is None:
            return make_response(req, 405, extra=[("Allow", ALLOW)])
        return self.to_user(tx, req, now)

    def to_user(self, tx, req: Request, now: float) -> Response | None:
        """To every contact of the AOR: ours directly, another server's through that server (which
        forks to its own contacts only)."""
        aor = req.uri.user.lower()
        targets = [(b.contact, b.flow) for b in self.store.get(aor, now)]
        if type(tx.flow) is not LinkFlow:
            uri = f"sip:{req.uri.user}@{self.domain}"
            targets += [(uri, ("LINK", sid, 0)) for sid in sorted(self.store.remote_get(aor, now))]
        if not targets:
            known = self.core.net.find_nick(req.uri.user) is not None
            return make_response(req, 480 if known else 404, "Temporarily Unavailable" if known else "Not Found")
        return self.proxy.fork(tx, req, targets, now)

    def to_conference(self, tx, req: Request, sender, now: float) -> Response | None:
        """MESSAGE sip:NAME@conference.<domain> outside a dialog: a message to #NAME if the sender may
        speak there. INVITE to it: join #NAME (the answer declines every media stream, RFC 3264 §6)."""
        if req.method not in ("MESSAGE", "INVITE") or req.to.tag is not None:
            return make_response(req, 501, "Not Implemented: only MESSAGE and INVITE to a conference")
        source = self.members.user_of(sender.lower()) if sender else None
        if source is None:
            return make_response(req, 403, "Forbidden: register to post to a conference")
        if req.method == "INVITE":
            return self.conferences.join(tx, req, source, now)
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

    def forward_in_dialog(self, tx, req: Request, now: float) -> Response | None:
        """An in-dialog request that came through our Record-Route: to the next Route, else its
        Request-URI."""
        target = self.next_hop(req)
        if target is None:
            return make_response(req, 404, "Not Found: no route to the Request-URI")
        return self.proxy.fork(tx, req, [(req.uri_text, target)], now)

    def next_hop(self, req: Request) -> tuple[str, str, int] | None:
        routes = req.headers.values("Route")
        if routes:
            try:
                return self._target_of(parse_name_addr(routes[0], "Route").uri)
            except SipParseError:
                return None
        return self._target_of(req.uri)

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

    def registered_on_flow(self, tx, req: Request, now: float) -> str | None:
        """The From user, when one of its live bindings was registered (with digest) over the very flow
        this request came on: it authenticated there already. A connection (TCP, TLS, WebSocket) cannot be
        taken over without its handshake, so that is as strong as a challenge. A UDP source address and
        port can be forged blindly (the answers go to the real owner, but the request, with its From, is
        forwarded), so UDP counts only with `trust_registered_udp_source` (off by default; for user agents
        that never answer 407, like pyVoIP). Any other source is challenged as before."""
        if not tx.flow.reliable and not self.opts.trust_registered_udp_source:
            return None
        from_uri = req.from_.uri
        if not isinstance(from_uri, SipUri) or not from_uri.user:
            return None
        aor = from_uri.user.lower()
        key = (tx.flow.transport, *tx.source)
        if any(b.flow == key for b in self.store.get(aor, now)):
            return aor
        return None

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
                done = self.own.get(e.key)
                if done is None:
                    self.proxy.response(e.key, e.response, now)
                elif e.response.status >= 200:
                    del self.own[e.key]
                    done(e.response, now)
            elif t is TimeoutOccurred:
                if e.timer in ("B", "F"):
                    done = self.own.pop(e.key, None)
                    if done is None:
                        self.proxy.timed_out(e.key, now)
                    else:
                        done(None, now)
            elif t is TransactionTerminated:
                self.own.pop(e.key, None)
                self.proxy.terminated(e.key)
            elif t is DeliverRequest:
                self._forward_stateless(e.request, now)

    def send_request(self, req: Request, flow_key: tuple[str, str, int], now: float, on_result=None) -> None:
        """A request of our own (a client transaction); `on_result(final response | None, now)`."""
        tx = client_transaction_for(req, Destination(*flow_key))
        self.transactions.add(tx)
        if on_result is not None:
            self.own[tx.key] = on_result
        self.run(tx.start(now), now)

    def binding_flow(self, uri, now: float) -> tuple[str, str, int] | None:
        """The flow of the binding whose contact is `uri` (same user, host and port: a user agent's
        in-dialog Request-URI may lack the parameters it registered with)."""
        if not isinstance(uri, SipUri):
            return None
        text = str(uri)
        bindings = [b for aor in self.store.aors() for b in self.store.get(aor, now)]
        for b in bindings:
            if b.contact == text:
                return b.flow
        want = (uri.user, uri.host.lower(), uri.port or 5060)
        for b in bindings:
            try:
                c = parse_uri(b.contact)
            except SipParseError:
                continue
            if isinstance(c, SipUri) and (c.user, c.host.lower(), c.port or 5060) == want:
                return b.flow
        return None

    def _target_of(self, uri) -> tuple[str, str, int] | None:
        """Where a URI is reached: another server's Record-Route (relay=<id>) over the link to it, a
        registered contact's flow, else its own address (literal IPs only: the core does not wait on
        DNS)."""
        relay = uri.param("relay") if isinstance(uri, SipUri) else None
        if relay and relay != self.federation.me:
            return ("LINK", relay, 0)
        flow = self.binding_flow(uri, self.core.now())
        if flow is not None:
            return flow
        if not isinstance(uri, SipUri):
            return None
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            return None
        transport = (uri.param("transport") or "udp").upper()
        return (transport, uri.host.strip("[]"), uri.port or 5060)

    def _forward_stateless(self, req: Request, now: float) -> None:
        """An ACK for a 2xx (its own transaction): take our Route off and pass it on to its Request-URI;
        without a Route (a user agent that ignores Record-Route), to the contacts of the local user it
        names (RFC 3261 §16.5: the location service)."""
        routes = req.headers.values("Route")
        if not routes:
            if self.is_local_uri(req.uri) and req.uri.user and req.max_forwards != 0:
                for b in self.store.get(req.uri.user.lower(), now):
                    flow = self.flow_for(b.flow)
                    if flow is not None:
                        flow.send(serialise(self.proxy.prepare(req, b.contact, flow)), (b.flow[1], b.flow[2]))
            return
        try:
            if not self.is_local_uri(parse_name_addr(routes[0], "Route").uri):
                return
        except SipParseError:
            return
        self.pop_own_routes(req)
        if req.max_forwards == 0:
            return
        target = self.next_hop(req)
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
            self.send_request(Request("MESSAGE", b.contact, h, ev.text.encode("utf-8")), b.flow, now)

    # -------------------------------------------------------------- bindings -> members
    def _bindings_changed(self, aor: str, now: float) -> None:
        bindings = self.store.get(aor, now)
        acct = self.core.accounts.get(aor) if bindings else None
        ip = bindings[0].flow[1] if bindings else None
        self.members.update(aor, [b.contact for b in bindings], acct.name if acct else aor, ip, now)
        self.federation.announce(aor, now)

    def restore(self, now: float) -> None:
        """Members for the bindings loaded from storage (a restart keeps registrations)."""
        self.store.load(now)
        for aor in self.store.aors():
            self._bindings_changed(aor, now)
        self.federation.hello(now)

    # -------------------------------------------------------------- timers
    def tick(self, now: float) -> None:
        self.run(self.transactions.timeout(now), now)
        for aor in self.store.expire(now):
            self._bindings_changed(aor, now)
        for flow in list(self.tcp.values()):
            flow.sweep(now)
        self.conferences.tick(now)
        self.presence.tick(now)

    def close(self, now: float) -> None:
        self.members.quit_all("SIP module unloaded", now)


METHODS: dict[str, Method] = {
    "REGISTER": Method("REGISTER sip:<domain>", SipService.on_register, auth=False),
    "OPTIONS": Method("OPTIONS sip:[user@]<domain>", SipService.on_options, auth=False),
    "MESSAGE": Method("MESSAGE sip:nick@<domain>", SipService.on_message, auth=True),
    "INVITE": Method("INVITE sip:user@<domain>", SipService.on_to_user, auth=True),
    "SUBSCRIBE": Method("SUBSCRIBE sip:nick@<domain>", SipService.on_subscribe, auth=True),
    "BYE": Method("BYE sip:user@<domain>", SipService.on_to_user, auth=False),
    "INFO": Method("INFO sip:user@<domain>", SipService.on_to_user, auth=False),
    "UPDATE": Method("UPDATE sip:user@<domain>", SipService.on_to_user, auth=False),
}
