"""XEP-0114 external components: a connection that serves one domain, after the handshake.

Stanzas from clients to the component's domain (or a JID in it) go to it, from any server of the
tree (component_net.py announces the domain); what it sends must come from its domain and is routed
to accounts wherever their resources are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from .negotiation import Authenticated, CloseStream, ComponentNegotiation, SendBytes
from .stream import SendStanza, SendStreamError, StanzaReceived

if TYPE_CHECKING:
    from .service import XmppService


class ComponentSession:
    proto = "xmpp-component"

    def __init__(self, svc: "XmppService", transport, listener, now: float):
        self.svc, self.t = svc, transport
        self.neg = ComponentNegotiation(lambda d: svc.opts.components.get(d), limits=svc.limits)
        self.domain: str | None = None
        self.started = now
        svc.pending.add(self)

    def data_received(self, data: bytes, now: float) -> None:
        for effect in self.neg.receive_data(data):
            t = type(effect)
            if t is StanzaReceived:
                self.svc.router.from_component(self, effect.element, now)
            elif t is SendBytes:
                self.t.write(effect.data)
            elif t is Authenticated:
                self.svc.pending.discard(self)
                self.domain = effect.jid.domain
                if not self.svc.component_domains.claim(self, now):
                    self.domain = None
                    self.stream_error("conflict", "that domain is already connected")
                    return
            elif t is CloseStream:
                self.t.close("stream closed")
            if self.t.closing:
                return

    def connection_lost(self, reason: str, now: float) -> None:
        self.svc.pending.discard(self)
        self.svc.component_domains.release(self)

    def send(self, el: etree._Element) -> None:
        if not self.t.closing and self.domain is not None:
            self.t.write(self.neg.stream.send(SendStanza(el)))

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if not self.t.closing:
            self.t.write(self.neg.stream.send(SendStreamError(condition, text)))
            self.t.close(f"stream error {condition}")
