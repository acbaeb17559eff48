"""One c2s connection (a ProtocolHandler), and the network member of a bound account.

`C2sSession` drives the sans-IO negotiation over the runtime's transport: STARTTLS through
`transport.start_tls`, SASL through the shared relay.core.sasl (an adapter to the
negotiation's mechanism protocol), binding with conflict handling; once bound, stanzas go
to the router. `AccountMember` is the network member of one account on this server (all
its resources): the MemberSession the network tells events to (direct messages arrive as
chat from `nick@domain`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from relay.core.model import MESSAGE, NOTICE, MessageSent, User
from relay.core.sasl import Challenge, SaslServer, Succeeded, offered_mechanisms

from . import namespaces as ns
from .jid import Jid
from .negotiation import (Authenticated, Bound, C2sNegotiation, C2sPolicy, CloseStream, SaslChallenge,
                          SaslFailure, SaslSuccess, SendBytes, StartTls, Stage)
from .stanza import element
from .stream import SendStanza, SendStreamError, StanzaReceived

if TYPE_CHECKING:
    from .service import XmppService


class SaslAdapter:
    """relay.core.sasl.SaslServer as the negotiation's SaslMechanism.

    The exchange is made at the first message: a -PLUS client that names its channel binding
    type (`p=tls-unique`) is checked against that one; otherwise (`n`, `y`) every binding the
    transport has is given, so a `y` client is caught as a downgrade."""

    def __init__(self, mechanism: str, lookup, tls: bool, bindings: dict):
        self.mechanism, self.lookup, self.tls, self.bindings = mechanism, lookup, tls, bindings
        self.server: SaslServer | None = None

    def step(self, data: bytes):
        if self.server is None:
            bindings = self.bindings
            if data.startswith(b"p="):
                name = data[2:].split(b",", 1)[0].decode("ascii", "replace")
                bindings = {name: bindings[name]} if name in bindings else bindings
            self.server = SaslServer(self.mechanism, self.lookup, tls=self.tls, bindings=bindings)
        out = self.server.step(data)
        if type(out) is Challenge:
            return SaslChallenge(out.data)
        if type(out) is Succeeded:
            return SaslSuccess(out.account, out.data or b"")
        return SaslFailure(out.condition, out.text or None)


class C2sSession:
    """One client stream, from the header to the close."""

    proto = "xmpp"

    def __init__(self, svc: "XmppService", transport, listener, now: float):
        self.svc, self.t = svc, transport
        o = svc.opts
        self.policy = C2sPolicy(domain_ok=lambda d: d == svc.domain, sasl_mechanisms=self._mechanisms,
                                tls_available=not transport.tls, tls_required=o.require_starttls,
                                max_auth_failures=o.max_auth_failures, bind=self._bind, limits=svc.limits,
                                preauth_iq=lambda el, secure: svc.core.hooks.run("xmpp_preauth_iq", self, el, secure),
                                preauth_features=lambda secure: [f for fn in svc.core.items.get("xmpp-stream-feature")
                                                                 for f in fn(self, secure)])
        self.neg = C2sNegotiation(self.policy, secure=transport.tls)
        svc.pending.add(self)                  # until bound: closed past the negotiation timeout
        self.account: str | None = None
        self.jid: Jid | None = None            # full, once bound
        self.member: AccountMember | None = None
        self.presence: etree._Element | None = None   # the last broadcast available presence
        self.priority = 0
        self.interested = False                # sent initial presence: gets presence broadcasts
        self.roster_requested = False          # asked for the roster: gets roster pushes
        self.started = self.last_read = now
        self.pinged = False                    # the server's XEP-0199 ping is out
        self.ended = False                     # closed by a stream end or error: nothing to resume
        self.sm = None                         # sm.SmState once XEP-0198 is enabled
        self.csi = None                        # csi.Held while the client says it is inactive
        self.carbons = False                   # XEP-0280 enabled
        self.blocklist_requested = False       # asked for the XEP-0191 blocklist: gets its pushes

    # ---------------------------------------------------------------- negotiation
    def _mechanisms(self, secure: bool) -> dict:
        bindings = self.t.channel_bindings() if secure else {}
        lookup = self.svc.core.accounts.get
        names = offered_mechanisms(secure, bindings)
        return {m: (lambda m=m: SaslAdapter(m, lookup, secure, bindings)) for m in names}

    def _bind(self, full: Jid) -> Jid | None:
        """A resource already bound for the account is a conflict: the new session gets another."""
        return self.svc.free_resource(full)

    def data_received(self, data: bytes, now: float) -> None:
        self.last_read, self.pinged = now, False
        for effect in self.neg.receive_data(data):
            t = type(effect)
            if t is StanzaReceived:
                if self.sm is not None and effect.element.tag in _COUNTED:
                    self.sm.h_in = (self.sm.h_in + 1) & 0xFFFFFFFF      # XEP-0198 counts wrap at 2^32
                self.svc.router.from_client(self, effect.element, now)
            elif t is SendBytes:
                self.t.write(effect.data)
            elif t is StartTls:
                self.t.start_tls(self._tls_done)
            elif t is Authenticated:
                self.account = effect.jid.local
            elif t is Bound:
                self.jid = effect.full_jid
                self.svc.bound(self, now)
            elif t is CloseStream:
                self.ended = True
                self.t.close("stream closed" if effect.condition is None else f"stream error {effect.condition}")
            if self.t.closing:
                return

    def _tls_done(self, ok: bool, reason: str) -> None:
        if ok and self.neg.stage is Stage.TLS:
            self.neg.tls_started()
        elif not ok:
            self.t.close(f"STARTTLS failed: {reason}")    # after <proceed/> there is no way back (§5.4.3.3)

    def connection_lost(self, reason: str, now: float) -> None:
        self.svc.pending.discard(self)
        if self.sm is not None and self.sm.hold(self, now):
            return                             # XEP-0198: held for resumption, still the network member
        if self.jid is not None:
            self.svc.unbound(self, reason, now)
            if self.sm is not None:
                self.sm.finished(self, now)

    # ---------------------------------------------------------------- out
    @property
    def established(self) -> bool:
        return self.neg.stage is Stage.ESTABLISHED and not self.t.closing

    def send(self, el: etree._Element) -> None:
        """A stanza to this client (user_receive_packet may rewrite or drop it)."""
        if not self.established:
            return
        hooks = self.svc.core.hooks
        if hooks.has("user_receive_packet"):
            el = hooks.fold("user_receive_packet", el, self)
            if el is None:
                return
        self.write_stanza(el, self.neg.stream.send(SendStanza(el)))

    def send_bytes_of(self, out) -> None:
        """One stanza of several recipients' (stanza.Outgoing): serialised once, `to` spliced in."""
        if not self.established:
            return
        if self.svc.core.hooks.has("user_receive_packet"):
            el = _copy_with_to(out.element, str(self.jid))
            self.send(el)
            return
        self.write_stanza(out.element, out.bytes_to(str(self.jid)))

    def write_stanza(self, el: etree._Element, data: bytes) -> None:
        """The last step of every stanza to this client: the router's filters (blocking, CSI) may take
        it; then XEP-0198 counts and keeps it until acked."""
        for f in self.svc.router.out_filters:
            if f(self, el, data):
                return
        self.transmit(data)

    def transmit(self, data: bytes) -> None:
        if self.sm is not None:
            self.sm.sent(self, data)
        else:
            self.t.write(data)

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Say why (RFC 6120 §4.9) and close; the stream's header first if none was sent."""
        self.ended = True
        if not self.t.closing:
            self.t.write(self.neg.stream.send(SendStreamError(condition, text)))
            self.t.close(f"stream error {condition}")


_COUNTED = frozenset("{%s}%s" % (ns.CLIENT, n) for n in ("message", "presence", "iq"))


def _copy_with_to(el: etree._Element, to: str) -> etree._Element:
    out = etree.fromstring(etree.tostring(el))
    out.set("to", to)
    return out


class AccountMember:
    """The network member of one account on this server: its resources share one nick."""

    proto = "xmpp"

    def __init__(self, svc: "XmppService", bare: Jid):
        self.svc, self.bare = svc, bare
        self.resources: dict[str, C2sSession] = {}
        self.user: User | None = None

    @property
    def events_via(self):
        """What renders channel events for every XMPP account here (the MUC service), if loaded."""
        return self.svc.channel_events

    @property
    def t(self):
        """The first resource's transport (WHOIS shows whether it is TLS)."""
        for s in self.resources.values():
            return s.t
        return None

    def direct_refusal(self) -> None:
        """Direct messages always reach this member (MemberSession)."""
        return None

    def deliver(self, ev) -> None:
        from .service import xml_text
        hooks = self.svc.core.hooks
        if hooks.has("xmpp_member_event") and hooks.run("xmpp_member_event", self, ev) is not None:
            return                          # a service rendered it (MUC: channel events to occupants)
        if type(ev) is MessageSent and type(ev.target) is User and ev.kind in (MESSAGE, NOTICE):
            msg = element("message", {"type": "chat" if ev.kind == MESSAGE else "normal",
                                      "from": self.svc.jid_of(ev.source), "to": str(self.bare), "id": ev.msgid})
            etree.SubElement(msg, "{%s}body" % ns.CLIENT).text = xml_text(ev.text)
            self.svc.router.to_bare(self.bare, msg, ev.time)

    def server_closing(self, reason: str, now: float) -> None:
        for s in list(self.resources.values()):
            s.stream_error("system-shutdown", reason)
