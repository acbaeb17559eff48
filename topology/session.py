"""One server-to-server connection (accepted or dialled): codec, handshake, pings, counters.

Everything above the connection (what a frame means, the tree, splits) belongs
to its owner, reached through `SessionOwner`; a session needs nothing else.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from relay.proto.link import Frame, LinkCodec, LinkProtocolError
from topology.link import LinkAuthenticated, LinkHandshake, LinkRefused, SendFrame

log = logging.getLogger("relay.links")


class LinkTimers(Protocol):
    """The `linking:` options a session reads (each time, so a reload applies)."""
    handshake_timeout: float
    timeout: float
    ping_interval: float


class SessionOwner(Protocol):
    """What a session asks of the link layer that owns it."""
    my_id: str
    my_name: str
    last_error: dict[str, str]

    @property
    def timers(self) -> LinkTimers: ...
    def secret_for(self, peer_id: str, peer_name: str) -> str | None: ...
    def session_started(self, s: "LinkSession") -> None: ...
    def authenticated(self, s: "LinkSession", ev: LinkAuthenticated, now: float) -> None: ...
    def handle(self, s: "LinkSession", f: Frame, now: float) -> None: ...
    def send_to(self, s: "LinkSession", ftype: str, payload: dict) -> None: ...
    def lost(self, s: "LinkSession", reason: str, now: float) -> None: ...


class LinkSession:
    """One link: the runtime's protocol handler for it. `block` is the link's config when we dialled."""

    def __init__(self, owner: SessionOwner, transport, role: str, now: float, block=None):
        self.owner = owner
        self.t = transport
        self.role = role
        self.block = block
        self.codec = LinkCodec()
        self.peer_id: str | None = None
        self.peer_name: str | None = None
        self.caps: frozenset[str] = frozenset()
        self.established_at: float | None = None
        self.last_rx = now
        self.ping_sent: float | None = None
        self.lag: float | None = None
        self.closed = False
        self.burst_done = False
        self.frames_in: dict[str, int] = {}
        self.bytes_in: dict[str, int] = {}
        self.frames_out: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        secret: Any = block.secret if block is not None else owner.secret_for
        self.hs = LinkHandshake(owner.my_id, owner.my_name, secret, block.id if block else None, role, now,
                                os.urandom(32), timeout=owner.timers.handshake_timeout)
        owner.session_started(self)
        if role == "dial":
            self._outputs(self.hs.start(now), now)

    @property
    def established(self) -> bool:
        return self.established_at is not None

    def write_frame(self, ftype: str, data: bytes) -> None:
        self.frames_out[ftype] = self.frames_out.get(ftype, 0) + 1
        self.bytes_out[ftype] = self.bytes_out.get(ftype, 0) + len(data)
        self.t.write(data)

    def data_received(self, data: bytes, now: float) -> None:
        self.last_rx = now
        try:
            frames = self.codec.receive_data(data)
        except LinkProtocolError as e:
            self.refuse(e, now)
            return
        owner = self.owner
        for f in frames:
            if self.closed:
                return
            self.frames_in[f.type] = self.frames_in.get(f.type, 0) + 1
            if self.established:
                owner.handle(self, f, now)
            else:
                self._outputs(self.hs.receive(f, now), now)

    def refuse(self, e: LinkProtocolError, now: float) -> None:
        """The peer broke the protocol: say so, log it, drop the link."""
        log.info("link %s (%s:%s) refused: protocol error: %s", self.describe(), self.t.peer_host,
                 self.t.peer_port, e.reason)
        self.drop(f"protocol error: {e.reason}", now)

    def _outputs(self, outputs, now: float) -> None:
        for o in outputs:
            if type(o) is SendFrame:
                f = o.frame
                self.write_frame(f.type, self.codec.send(f))
            elif type(o) is LinkAuthenticated:
                self.owner.authenticated(self, o, now)
            elif type(o) is LinkRefused:
                log.warning("link %s (%s:%s) refused: %s", self.describe(), self.t.peer_host, self.t.peer_port,
                            o.reason)
                self.owner.last_error[self.describe()] = o.reason
                self.close(o.reason, now)

    def describe(self) -> str:
        if self.peer_name:
            return self.peer_name
        return self.block.name if self.block is not None else f"{self.t.peer_host}:{self.t.peer_port}"

    def check(self, now: float) -> None:
        """Handshake timeout, lag pings, silence timeout (called by the owner's sweep)."""
        if self.closed:
            return
        if not self.established:
            self._outputs(self.hs.check_timeout(now), now)
            return
        lk = self.owner.timers
        if now - self.last_rx > lk.timeout:
            self.drop(f"Ping timeout: {int(now - self.last_rx)} seconds", now)
        elif self.ping_sent is None and now - self.last_rx >= lk.ping_interval:
            self.ping_sent = now
            self.owner.send_to(self, "PING", {"token": repr(now)})

    def pong(self, token: str, now: float) -> None:
        """The answer to our PING: its token is the time we sent it."""
        try:
            self.lag = max(0.0, now - float(token))
        except ValueError:
            pass
        self.ping_sent = None

    def drop(self, reason: str, now: float) -> None:
        """Tell the peer why, then close; the split happens in connection_lost."""
        if self.closed:
            return
        self.write_frame("ERROR", self.codec.encode("ERROR", self.owner.my_id, 0, {"reason": reason[:400]}))
        self.close(reason, now)

    def close(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.t.close(reason)
        self.connection_lost(reason, now)

    def connection_lost(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner.lost(self, reason, now)
