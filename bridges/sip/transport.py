"""SIP's listener protocols: the UDP datagram handler (one per bound socket), the TCP/TLS stream
handler (one per connection) and SIP over WebSocket (RFC 7118, a stream handler on the HTTP listener's
`/sip` route). Both turn bytes into codec events and hand them, with their flow, to the
one SipService; a flow is how to send back (`send(data, addr)`) and our address on it (for Via and
Record-Route)."""

from __future__ import annotations

from bridges.sip.codec import PONG, KeepalivePing, SipStreamConnection, parse_datagram
from bridges.sip.stun import is_stun


class UdpFlow:
    """A bound UDP socket (the runtime's DatagramEndpoint) as the service sends through it."""

    transport = "UDP"
    reliable = False

    def __init__(self, service, endpoint, listener, now: float):
        self.service = service
        self.endpoint = endpoint
        self.host = getattr(listener, "host", None) or endpoint.host
        self.port = endpoint.port
        service.udp_opened(self)

    # DatagramHandler
    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if is_stun(data):
            self.service.stun_received(data, addr, self, now)   # RFC 5626 §4.4.2 keepalive
            return
        event = parse_datagram(data)
        if isinstance(event, KeepalivePing):
            return  # RFC 5626 keepalives over UDP are STUN (above); a stray CRLF datagram is ignored
        self.service.received(event, addr, self, len(data), now)

    def listener_closed(self, now: float) -> None:
        self.service.udp_closed(self)

    def send(self, data: bytes, addr: tuple[str, int]) -> bool:
        return self.endpoint.send_to(data, addr)


class TcpFlow:
    """One TCP or TLS connection; `first_deadline` closes a connection that sends no message in time,
    `idle_deadline` one that stays silent (RFC 5626 clients ping every couple of minutes)."""

    reliable = True

    def __init__(self, service, transport, listener, now: float):
        self.service = service
        self.t = transport
        self.transport = "TLS" if getattr(transport, "tls", False) else "TCP"
        self.host = getattr(listener, "host", None) or "127.0.0.1"
        self.port = getattr(listener, "port", 5060)
        self.peer = (transport.peer_host, transport.peer_port)
        self.stream = SipStreamConnection()
        self.messages = 0
        opts = service.opts
        self.first_deadline = now + opts.tcp_first_message_timeout
        self.idle_deadline = now + opts.tcp_idle_timeout
        self.closed = False
        service.tcp_opened(self)

    # ProtocolHandler
    def data_received(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self.idle_deadline = now + self.service.opts.tcp_idle_timeout
        for event in self.stream.receive_data(data):
            if isinstance(event, KeepalivePing):
                self.t.write(PONG)
                continue
            self.messages += 1
            self.service.received(event, self.peer, self, len(data), now)
            if self.closed:
                return
        if self.stream.closed:
            self.close("SIP framing lost")

    def connection_lost(self, reason: str, now: float) -> None:
        self.closed = True
        self.service.tcp_closed(self)

    def send(self, data: bytes, addr=None) -> bool:
        if self.closed or self.t.closing:
            return False
        self.t.write(data)
        return True

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.service.tcp_closed(self)
            self.t.close(reason)

    def sweep(self, now: float) -> None:
        if self.messages == 0 and now >= self.first_deadline:
            self.close("no SIP message in time")
        elif now >= self.idle_deadline:
            self.close("idle")


class WsFlow(TcpFlow):
    """SIP over WebSocket (RFC 7118): one SIP message per WebSocket message each way (the route's framing
    hands us whole messages). So a message is read like a datagram (RFC 7118 §5): Content-Length is
    optional and without it the body is the rest of the message. Via transport WS, or WSS over TLS;
    requests reach the client only over its connection (its Contact host is a `.invalid` name)."""

    def __init__(self, service, transport, listener, now: float):
        super().__init__(service, transport, listener, now)
        self.transport = "WSS" if getattr(transport, "tls", False) else "WS"

    def data_received(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self.idle_deadline = now + self.service.opts.tcp_idle_timeout
        event = parse_datagram(data)
        if isinstance(event, KeepalivePing):
            self.t.write(PONG)
            return
        self.messages += 1
        self.service.received(event, self.peer, self, len(data), now)
