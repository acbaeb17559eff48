"""XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP listener, subprotocol `xmpp`.

The framing (`<open/>`, `<close/>`, one stanza per message) is the stream codec's (stream.py with
`framing="websocket"`); the runtime hands each whole text message to the session (TEXT_MESSAGES),
and each write is one message. Negotiation and the session are c2s's: SASL, bind, routing. There is
no STARTTLS: the WebSocket's TLS (wss) is the stream's. Plain ws counts as secure from a loopback
address (a reverse proxy on the host terminating TLS, or a local client) or everywhere with
`xmpp.http_secure: true`; otherwise a plain ws stream is offered no SASL while
`require_starttls` holds. No -PLUS mechanisms: the TLS is the
HTTP connection's, not this stream's.
"""

from __future__ import annotations

import ipaddress

from relay.core.http_routes import TEXT_MESSAGES
from relay.core.sasl import offered_mechanisms

from .negotiation import C2sNegotiation
from .session import SaslAdapter, C2sSession
from .stream import EndStream, SendStreamError

PATH = "/xmpp-websocket"


def http_secure(opts, tls: bool, peer_host: str) -> bool:
    """Whether a WebSocket or BOSH stream counts as encrypted: TLS, a loopback peer, or the operator says so."""
    if tls or opts.http_secure:
        return True
    try:
        return ipaddress.ip_address(peer_host.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


class WebSocketC2s(C2sSession):
    """A c2s session whose stream is RFC 7395 framed."""

    def __init__(self, svc, transport, listener, now: float):
        super().__init__(svc, transport, listener, now)
        secure = http_secure(svc.opts, transport.tls, transport.peer_host)
        self.policy.tls_available = False
        self.neg = C2sNegotiation(self.policy, secure=secure, framing="websocket")

    def _mechanisms(self, secure: bool) -> dict:
        lookup = self.svc.core.accounts.get
        return {m: (lambda m=m: SaslAdapter(m, lookup, secure, {})) for m in offered_mechanisms(secure, {})}

    def send_bytes_of(self, out) -> None:
        if not self.established:
            return
        if self.svc.core.hooks.has("user_receive_packet"):
            super().send_bytes_of(out)
            return
        self.t.write(out.bytes_to(str(self.jid), websocket=True))

    def stream_error(self, condition: str, text: str | None = None) -> None:
        if not self.t.closing:
            stream = self.neg.stream
            self.t.write(stream.send(SendStreamError(condition, text)))
            self.t.write(stream.send(EndStream()))
            self.t.close(f"stream error {condition}")


def install(module, svc) -> None:
    module.websocket_route(PATH, {"xmpp": TEXT_MESSAGES}, lambda t, listener, now: WebSocketC2s(svc, t, listener, now))
