"""Sans-IO stream negotiation: c2s (RFC 6120 §5-§7: STARTTLS, SASL, bind, legacy session) and the
XEP-0114 component handshake.

Bytes in, effects out (commands for the connection that owns it):

    neg = C2sNegotiation(C2sPolicy(domain_ok=..., sasl_mechanisms=...))
    for effect in neg.receive_data(data):
        SendBytes -> write; StartTls -> wrap the socket in TLS (server side), then neg.tls_started();
        Authenticated / Bound -> the session's identity; CloseStream -> close the transport
        (its bytes went out in the SendBytes before it); StanzaReceived -> a stanza for the router,
        once negotiation is over (XEP-0198/0352 elements are passed the same way, after auth).

Over RFC 7395 WebSocket (`framing="websocket"`), TLS is the WebSocket's: construct it with
`secure=True` and a policy with `tls_available=False`; each `receive_data()` is one message, and
each SendBytes one message to send.

SASL runs over a pluggable mechanism object (the `SaslMechanism` protocol below: the shared
code in relay/core/sasl.py will provide them); which mechanisms are offered, and whether at
all before TLS, is the policy's `sasl_mechanisms(secure)`.

Pipelining is not supported: bytes a client sends after `<starttls/>` or a SASL `<success/>` in
the same read as them are dropped, as a stream restart needs a new parser at that very byte
(and plaintext after `<starttls/>` must never be processed, RFC 6120 §5.3.3 / CVE-2011-0411).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Mapping, Optional, Protocol, Union

from lxml import etree

from . import namespaces as ns
from .jid import Jid, JidError, parse_jid, prep_domain, prep_localpart, prep_resource
from .stanza import element
from .stream import (EndStream, Limits, OpenStream, SendStanza, SendStreamError, StanzaReceived, StreamClosed,
                     StreamErrorOccurred, StreamErrorReceived, StreamOpened, XmppStream)

__all__ = [
    "SaslChallenge", "SaslSuccess", "SaslFailure", "SaslMechanism",
    "SendBytes", "StartTls", "Authenticated", "Bound", "CloseStream",
    "C2sPolicy", "C2sNegotiation", "ComponentNegotiation", "Stage", "handshake_digest",
]


# -- SASL mechanism interface (RFC 4422) --------------------------------------------------------

@dataclass(frozen=True)
class SaslChallenge:
    data: bytes = b""


@dataclass(frozen=True)
class SaslSuccess:
    username: str                           # the authenticated (and authorized) identity's localpart
    data: bytes = b""                       # additional data with success (SCRAM's server signature)


@dataclass(frozen=True)
class SaslFailure:
    condition: str = "not-authorized"       # an RFC 6120 §6.5 condition
    text: Optional[str] = None


SaslStep = Union[SaslChallenge, SaslSuccess, SaslFailure]


class SaslMechanism(Protocol):
    def step(self, data: bytes) -> SaslStep:
        """The client's next message (the initial response first) -> what to answer."""


# -- effects ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SendBytes:
    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Wrap the transport in TLS as the server now, then call `tls_started()`."""


@dataclass(frozen=True)
class Authenticated:
    jid: Jid                                # bare JID (c2s) or the component's domain


@dataclass(frozen=True)
class Bound:
    full_jid: Jid


@dataclass(frozen=True)
class CloseStream:
    """Close the transport (the stream's closing bytes were sent just before)."""
    condition: Optional[str] = None         # the stream error we sent, if any


class Stage(Enum):
    HEADER = "header"                       # waiting for the (next) stream header
    FEATURES = "features"                   # features sent, before authentication
    TLS = "tls"                             # <proceed/> sent, waiting for the runtime's TLS
    SASL = "sasl"                           # a SASL exchange is on
    BIND = "bind"                           # authenticated, stream restarted, no resource yet
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass
class C2sPolicy:
    """What the server decides; callbacks so the codec needs no accounts or sessions."""
    domain_ok: Callable[[str], bool]        # a prepared domain (a header without `to` is host-unknown)
    sasl_mechanisms: Callable[[bool], Mapping[str, Callable[[], SaslMechanism]]]   # secure -> name: factory
    tls_available: bool = True
    tls_required: bool = True
    legacy_session: bool = True             # advertise RFC 3921 session as <optional/>
    stream_management: bool = True          # XEP-0198
    client_state_indication: bool = True    # XEP-0352
    roster_versioning: bool = True          # RFC 6121 §2.6: <ver/> (routing.py answers a roster get's `ver`)
    max_auth_failures: int = 3
    # The resource to bind for a requested full JID: the same, another (renamed), or None (conflict).
    bind: Callable[[Jid], Optional[Jid]] = lambda full: full
    new_id: Callable[[], str] = lambda: secrets.token_hex(8)
    new_resource: Callable[[], str] = lambda: secrets.token_hex(6)
    limits: Limits = field(default_factory=Limits)
    # Before authentication (XEP-0077): the reply to an iq, given the iq and whether the stream is secure
    # (None: refused as any stanza before authentication is); and stream features to add (<register/>).
    preauth_iq: Optional[Callable[[etree._Element, bool], Optional[etree._Element]]] = None
    preauth_features: Callable[[bool], list] = lambda secure: []


def _tag(namespace: str, name: str) -> str:
    return "{%s}%s" % (namespace, name)


def _el(namespace: str, name: str, text: Optional[str] = None, children=()) -> etree._Element:
    el = etree.Element(_tag(namespace, name), nsmap={None: namespace})
    if text is not None:
        el.text = text
    for child in children:
        el.append(child if isinstance(child, etree._Element) else _el(namespace, child))
    return el


_SM_NONZAS = frozenset(_tag(ns.SM, n) for n in ("enable", "resume", "r", "a"))
_CSI_NONZAS = frozenset(_tag(ns.CSI, n) for n in ("active", "inactive"))
_IQ = _tag(ns.CLIENT, "iq")
_STANZAS = frozenset(_tag(ns.CLIENT, n) for n in ("message", "presence", "iq"))
_ROUTED = _STANZAS | _SM_NONZAS | _CSI_NONZAS
_COMPONENT_STANZAS = frozenset(_tag(ns.COMPONENT, n) for n in ("message", "presence", "iq"))


class _Negotiation:
    """What c2s and component negotiation share: the stream, the effects list, errors and close."""

    def __init__(self, stream: XmppStream):
        self.stream = stream
        self.stage = Stage.HEADER
        self._out: list = []

    def receive_data(self, data: bytes) -> list:
        if self.stage in (Stage.CLOSED, Stage.TLS):
            return []                       # nothing is read in plaintext after <starttls/>
        self._out = []
        for event in self.stream.receive_data(data):
            if self.stage in (Stage.CLOSED, Stage.TLS):
                break
            stage = self.stage
            self.dispatch(event)
            if self.stage is Stage.HEADER and stage is not Stage.HEADER:
                break                       # restarted: the rest was for the old parser (no pipelining)
        out, self._out = self._out, []
        return out

    def dispatch(self, event) -> None:
        if isinstance(event, StreamErrorOccurred):
            self.fail(event.condition, event.text)
        elif isinstance(event, (StreamClosed, StreamErrorReceived)):
            self._send_raw(self.stream.send(EndStream()) if self.stream.peer_attrs is not None else b"")
            self.stage = Stage.CLOSED
            self._out.append(CloseStream())
        elif isinstance(event, StreamOpened):
            if self.stage is not Stage.HEADER:
                self.fail("not-well-formed", "a second stream header")
            else:
                self.opened(event.attrs)
        else:
            self.stanza(event.element)

    def fail(self, condition: str, text: Optional[str] = None) -> None:
        self._send_raw(self.stream.send(SendStreamError(condition, text)))
        if self.stream.websocket:
            self._send_raw(self.stream.send(EndStream()))    # RFC 7395 §3.6.1: <close/>, a message of its own
        self.stage = Stage.CLOSED
        self._out.append(CloseStream(condition))

    def _send(self, el: etree._Element) -> None:
        self._send_raw(self.stream.send(SendStanza(el)))

    def _send_raw(self, data: bytes) -> None:
        if data:
            self._out.append(SendBytes(data))

    def opened(self, attrs: dict) -> None:
        raise NotImplementedError

    def stanza(self, el: etree._Element) -> None:
        raise NotImplementedError


class C2sNegotiation(_Negotiation):
    """One client connection's negotiation, from the first header to a bound resource."""

    def __init__(self, policy: C2sPolicy, *, secure: bool = False, framing: str = "tcp"):
        super().__init__(XmppStream(content_ns=ns.CLIENT, framing=framing, limits=policy.limits,
                                    host_ok=lambda to: _domain(to) is not None and policy.domain_ok(_domain(to))))
        self.policy = policy
        self.secure = secure                # direct TLS (XEP-0368) starts secure
        self.domain: Optional[str] = None
        self.jid: Optional[Jid] = None      # bare once authenticated, full once bound
        self._mechanism: Optional[SaslMechanism] = None
        self._failures = 0

    # The element handlers, by tag: the stages each is allowed in.
    HANDLERS = {
        _tag(ns.TLS, "starttls"): ("_starttls", {Stage.FEATURES}),
        _tag(ns.SASL, "auth"): ("_auth", {Stage.FEATURES}),
        _tag(ns.SASL, "response"): ("_response", {Stage.SASL}),
        _tag(ns.SASL, "abort"): ("_abort", {Stage.SASL}),
        _IQ: ("_iq", {Stage.FEATURES, Stage.BIND, Stage.ESTABLISHED}),
    }

    def tls_started(self) -> None:
        """The runtime finished the TLS handshake: the client now opens a new stream."""
        if self.stage is not Stage.TLS:
            raise RuntimeError("tls_started() without StartTls")
        self.secure = True
        self.stream.restart()
        self.stage = Stage.HEADER

    def resumed(self, full: Jid) -> None:
        """XEP-0198: this stream took over the held session of `full` instead of binding."""
        if self.stage is not Stage.BIND:
            raise RuntimeError("resumed() outside the bind stage")
        self.jid = full
        self.stage = Stage.ESTABLISHED

    def opened(self, attrs: dict) -> None:
        self.domain = _domain(attrs.get("to"))
        reply_to = attrs.get("from") if self.stage is Stage.HEADER and self.jid is None else None
        self._send_raw(self.stream.send(OpenStream(from_=self.domain, to=_valid_jid(reply_to),
                                                   id=self.policy.new_id())))
        if self.jid is None:
            self.stage = Stage.FEATURES
            self._send(self._pre_auth_features())
        else:
            self.stage = Stage.BIND
            self._send(self._post_auth_features())

    def _pre_auth_features(self) -> etree._Element:
        features = etree.Element(_tag(ns.STREAMS, "features"), nsmap={"stream": ns.STREAMS})
        if not self.secure and self.policy.tls_available:
            starttls = features.makeelement(_tag(ns.TLS, "starttls"), nsmap={None: ns.TLS})
            features.append(starttls)
            if self.policy.tls_required:
                etree.SubElement(starttls, _tag(ns.TLS, "required"))
        if self.secure or not self.policy.tls_required:
            mechanisms = self.policy.sasl_mechanisms(self.secure)
            if mechanisms:
                features.append(_el(ns.SASL, "mechanisms",
                                    children=[_el(ns.SASL, "mechanism", name) for name in mechanisms]))
        for extra in self.policy.preauth_features(self.secure):
            features.append(extra)
        return features

    def _post_auth_features(self) -> etree._Element:
        features = etree.Element(_tag(ns.STREAMS, "features"), nsmap={"stream": ns.STREAMS})
        features.append(_el(ns.BIND, "bind"))
        if self.policy.legacy_session:
            features.append(_el(ns.SESSION, "session", children=["optional"]))
        if self.policy.stream_management:
            features.append(_el(ns.SM, "sm"))
        if self.policy.client_state_indication:
            features.append(_el(ns.CSI, "csi"))
        if self.policy.roster_versioning:
            features.append(_el(ns.ROSTERVER, "ver"))
        return features

    def stanza(self, el: etree._Element) -> None:
        """The one dispatch: checks from HANDLERS, then the handler; after bind the rest is routed."""
        entry = self.HANDLERS.get(el.tag)
        if entry is not None and self.stage in entry[1]:
            getattr(self, entry[0])(el)
        elif self.stage is Stage.ESTABLISHED and el.tag in _ROUTED:
            self._out.append(StanzaReceived(el))
        elif self.stage is Stage.BIND and el.tag in _SM_NONZAS:
            self._out.append(StanzaReceived(el))     # <resume/> instead of bind
        elif entry is not None and el.tag == _tag(ns.SASL, "auth") and self.jid is not None:
            self.fail("policy-violation", "already authenticated")
        elif self.stage is Stage.ESTABLISHED:
            self.fail("unsupported-stanza-type", f"{etree.QName(el).localname} is not a stanza here")
        else:
            self.fail("not-authorized", f"{etree.QName(el).localname} not allowed before negotiation ends")

    # <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>
    def _starttls(self, el: etree._Element) -> None:
        if self.secure or not self.policy.tls_available:
            self._send(_el(ns.TLS, "failure"))
            self.fail("policy-violation" if self.secure else "unsupported-feature", "no STARTTLS here")
            return
        self._send(_el(ns.TLS, "proceed"))
        self.stage = Stage.TLS
        self._out.append(StartTls())

    # <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='NAME'>base64 or = or nothing</auth>
    def _auth(self, el: etree._Element) -> None:
        if not self.secure and self.policy.tls_required:
            self._sasl_failure(SaslFailure("encryption-required"))
            return
        factory = self.policy.sasl_mechanisms(self.secure).get(el.get("mechanism", ""))
        if factory is None:
            self._sasl_failure(SaslFailure("invalid-mechanism"))
            return
        self._mechanism = factory()
        self.stage = Stage.SASL
        if not el.text:
            self._send(_el(ns.SASL, "challenge"))       # no initial response: an empty challenge (§6.4.2)
            return
        self._sasl_step(el.text)

    # <response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>base64</response>
    def _response(self, el: etree._Element) -> None:
        self._sasl_step(el.text or "=")

    # <abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>
    def _abort(self, el: etree._Element) -> None:
        self._sasl_failure(SaslFailure("aborted"))

    def _sasl_step(self, text: str) -> None:
        data = _b64decode(text)
        if data is None:
            self._sasl_failure(SaslFailure("incorrect-encoding"))
            return
        result = self._mechanism.step(data)
        if isinstance(result, SaslChallenge):
            self._send(_el(ns.SASL, "challenge", _b64encode(result.data)))
        elif isinstance(result, SaslSuccess):
            try:
                self.jid = Jid(prep_localpart(result.username), self.domain)
            except JidError:
                self._sasl_failure(SaslFailure("invalid-authzid"))
                return
            self._send(_el(ns.SASL, "success", _b64encode(result.data) if result.data else None))
            self._mechanism = None
            self.stream.authenticated = True
            self.stream.restart()
            self.stage = Stage.HEADER
            self._out.append(Authenticated(self.jid))
        else:
            self._sasl_failure(result)

    def _sasl_failure(self, failure: SaslFailure) -> None:
        self._mechanism = None
        self.stage = Stage.FEATURES
        children = [_el(ns.SASL, failure.condition)]
        if failure.text:
            children.append(_el(ns.SASL, "text", failure.text))
        self._send(_el(ns.SASL, "failure", children=children))
        if failure.condition != "aborted":
            self._failures += 1
            if self._failures >= self.policy.max_auth_failures:
                self.fail("policy-violation", "too many authentication failures")

    # <iq type='set' id='..'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>R</resource></bind></iq>
    # <iq type='set' id='..'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>
    def _iq(self, el: etree._Element) -> None:
        if self.stage is Stage.FEATURES:
            reply = self.policy.preauth_iq(el, self.secure) if self.policy.preauth_iq is not None else None
            if reply is None:
                self.fail("not-authorized", "iq not allowed before negotiation ends")
            else:
                self._send(reply)
            return
        payload = el[0] if len(el) else None
        kind = payload.tag if payload is not None else None
        if el.get("type") == "set" and kind == _tag(ns.BIND, "bind") and self.stage is Stage.BIND:
            self._bind(el, payload)
        elif el.get("type") == "set" and kind == _tag(ns.SESSION, "session") and self.stage is Stage.ESTABLISHED:
            self._send(element("iq", {"type": "result", "id": el.get("id")}))
        elif self.stage is Stage.ESTABLISHED:
            if kind == _tag(ns.BIND, "bind"):
                self._send(_iq_error(el, "cancel", "not-allowed"))     # one resource per stream
            else:
                self._out.append(StanzaReceived(el))
        else:
            self.fail("not-authorized", "stanza before resource binding")

    def _bind(self, iq: etree._Element, bind: etree._Element) -> None:
        requested = bind.findtext(_tag(ns.BIND, "resource"))
        try:
            resource = prep_resource(requested) if requested else prep_resource(self.policy.new_resource())
        except JidError:
            self._send(_iq_error(iq, "modify", "bad-request"))
            return
        full = self.policy.bind(Jid(self.jid.local, self.jid.domain, resource))
        if full is None:
            self._send(_iq_error(iq, "cancel", "conflict"))
            return
        self.jid = full
        result = element("iq", {"type": "result", "id": iq.get("id")})
        result.append(_el(ns.BIND, "bind", children=[_el(ns.BIND, "jid", str(full))]))
        self._send(result)
        self.stage = Stage.ESTABLISHED
        self._out.append(Bound(full))


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: hex SHA-1 of the stream id followed by the shared secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


class ComponentNegotiation(_Negotiation):
    """XEP-0114 external component: header to the component's domain, then `<handshake>`."""

    HANDLERS = {_tag(ns.COMPONENT, "handshake"): ("_handshake", {Stage.FEATURES})}

    def __init__(self, secret_for: Callable[[str], Optional[str]], *, new_id: Callable[[], str] = None,
                 limits: Limits = Limits()):
        super().__init__(XmppStream(content_ns=ns.COMPONENT, limits=limits,
                                    host_ok=lambda to: bool(to) and _secret(secret_for, to) is not None))
        self._secret_for = secret_for
        self._new_id = new_id or (lambda: secrets.token_hex(8))
        self.domain: Optional[str] = None

    def opened(self, attrs: dict) -> None:
        self.domain = prep_domain(attrs["to"])
        self._send_raw(self.stream.send(OpenStream(from_=self.domain, id=self._new_id(), version=None,
                                                   lang=None)))
        self.stage = Stage.FEATURES

    def stanza(self, el: etree._Element) -> None:
        entry = self.HANDLERS.get(el.tag)
        if entry is not None and self.stage in entry[1]:
            getattr(self, entry[0])(el)
        elif self.stage is Stage.ESTABLISHED and el.tag in _COMPONENT_STANZAS:
            self._out.append(StanzaReceived(el))
        elif self.stage is Stage.ESTABLISHED:
            self.fail("unsupported-stanza-type", f"{etree.QName(el).localname} is not a stanza")
        else:
            self.fail("not-authorized", "stanza before the handshake")

    # <handshake>hex sha1(stream id + secret)</handshake>
    def _handshake(self, el: etree._Element) -> None:
        expected = handshake_digest(self.stream.stream_id, _secret(self._secret_for, self.domain))
        if not hmac.compare_digest((el.text or "").strip().lower().encode(), expected.encode()):
            self.fail("not-authorized", "handshake mismatch")
            return
        self.stream.authenticated = True
        self._send(etree.Element(_tag(ns.COMPONENT, "handshake"), nsmap={None: ns.COMPONENT}))
        self.stage = Stage.ESTABLISHED
        self._out.append(Authenticated(Jid(None, self.domain)))


def _domain(to: Optional[str]) -> Optional[str]:
    try:
        return prep_domain(to) if to else None
    except JidError:
        return None


def _secret(secret_for: Callable[[str], Optional[str]], to: str) -> Optional[str]:
    try:
        return secret_for(prep_domain(to))
    except JidError:
        return None


def _iq_error(iq: etree._Element, kind: str, condition: str) -> etree._Element:
    reply = element("iq", {"type": "error", "id": iq.get("id")})
    error = etree.SubElement(reply, _tag(ns.CLIENT, "error"), type=kind)
    error.append(_el(ns.STANZA_ERRORS, condition))
    return reply


def _valid_jid(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    try:
        return str(parse_jid(text))
    except JidError:
        return None


def _b64decode(text: str) -> Optional[bytes]:
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="
