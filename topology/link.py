"""Server link handshake as a sans-IO state machine.

The dialing side sends HELLO {version, id, name, caps, challenge} at start; the
accepting side stays silent until it has the dialer's HELLO (so a port scan
learns nothing), then sends its own HELLO and its AUTH. Each side answers the
other's challenge with AUTH {response} (an HMAC of the shared secret, see
relay.proto.link.auth_response) and checks the answer it gets:

    dial:   start -> HELLO                       WAIT_HELLO
    accept: <- HELLO, -> HELLO + AUTH            WAIT_AUTH
    dial:   <- HELLO, -> AUTH                    WAIT_AUTH
    both:   <- AUTH verified                     ESTABLISHED (LinkAuthenticated)

Any refusal sends ERROR {reason} to the peer, emits LinkRefused(reason) and
leaves the machine in FAILED: the caller closes the connection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

from relay.proto.link import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    Frame,
    auth_response,
    make_challenge,
    valid_challenge,
    verify_response,
)

DEFAULT_TIMEOUT = 30.0


class State(enum.Enum):
    WAIT_HELLO = "wait_hello"
    WAIT_AUTH = "wait_auth"
    ESTABLISHED = "established"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendFrame:
    frame: Frame


@dataclass(frozen=True, slots=True)
class LinkAuthenticated:
    peer_id: str
    peer_name: str
    caps: frozenset[str]  # the capabilities both sides have


@dataclass(frozen=True, slots=True)
class LinkRefused:
    reason: str


Output = SendFrame | LinkAuthenticated | LinkRefused
# Secret for a peer given its (id, name); None when no link is configured for it.
SecretLookup = Callable[[str, str], str | None]


class LinkHandshake:
    """One link's handshake.

    `secret` is the link secret, or for an accepting side that learns who dials
    only from its HELLO, a lookup from the peer's (id, name) to the secret.
    `peer_expected_id`, when given, refuses any other peer.
    """

    def __init__(self, my_id: str, my_name: str, secret: str | SecretLookup, peer_expected_id: str | None,
                 role: Literal["dial", "accept"], now: float, rand: bytes,
                 caps: Iterable[str] = CAPABILITIES, timeout: float = DEFAULT_TIMEOUT):
        if role not in ("dial", "accept"):
            raise ValueError(f"role must be 'dial' or 'accept', not {role!r}")
        self.my_id, self.my_name, self.role = my_id, my_name, role
        self.peer_expected_id = peer_expected_id
        self.caps = frozenset(caps)
        self.timeout = timeout
        self.state = State.WAIT_HELLO
        self._secret = secret
        self._challenge = make_challenge(rand)
        self._started = now
        # Learned from the peer's HELLO.
        self._peer_id = self._peer_name = self._peer_challenge = self._peer_secret = ""
        self._peer_caps: frozenset[str] = frozenset()

    def start(self, now: float) -> list[Output]:
        """Begin (the timeout counts from here); the dialing side speaks first."""
        self._started = now
        return [SendFrame(self._hello())] if self.role == "dial" else []

    def check_timeout(self, now: float) -> list[Output]:
        if self.state in (State.WAIT_HELLO, State.WAIT_AUTH) and now - self._started >= self.timeout:
            return self._refuse(f"handshake timed out after {self.timeout:g}s")
        return []

    def receive(self, frame: Frame, now: float) -> list[Output]:
        """Feed one frame from the peer (already validated by LinkCodec)."""
        if self.state is State.FAILED:
            return []  # the rest of a batch after a refusal: the link is closing
        if self.state is State.ESTABLISHED:
            raise RuntimeError("handshake already established: frames belong to the link now")
        expired = self.check_timeout(now)
        if expired:
            return expired
        if frame.type == "ERROR":
            self.state = State.FAILED
            return [LinkRefused(f"refused by peer: {frame.payload['reason']}")]
        if frame.type == "HELLO":
            if self.state is not State.WAIT_HELLO:
                return self._refuse("HELLO sent twice")
            return self._on_hello(frame)
        if frame.type == "AUTH":
            if self.state is not State.WAIT_AUTH:
                return self._refuse("AUTH before HELLO")
            return self._on_auth(frame)
        return self._refuse(f"unexpected {frame.type} frame before authentication")

    def _on_hello(self, frame: Frame) -> list[Output]:
        p = frame.payload
        peer_id, peer_name = p["id"], p["name"]
        if p["version"] != PROTOCOL_VERSION:
            return self._refuse(f"protocol version {p['version']} not supported (we speak {PROTOCOL_VERSION})")
        if frame.origin != peer_id:
            return self._refuse(f"HELLO from {frame.origin} claims id {peer_id}")
        if peer_id == self.my_id:
            return self._refuse(f"duplicate server id {peer_id}")
        if peer_name.lower() == self.my_name.lower():
            return self._refuse(f"duplicate server name {peer_name}")
        if self.peer_expected_id is not None and peer_id != self.peer_expected_id:
            return self._refuse(f"unexpected server id {peer_id} (expected {self.peer_expected_id})")
        if not all(type(c) is str for c in p["caps"]):
            return self._refuse("HELLO caps must be strings")
        if not valid_challenge(p["challenge"]):
            return self._refuse("HELLO challenge must be 32-128 lowercase hex digits")
        if p["challenge"] == self._challenge:
            return self._refuse("HELLO reflects our own challenge")
        secret = self._secret(peer_id, peer_name) if callable(self._secret) else self._secret
        if secret is None:
            return self._refuse(f"no link configured for {peer_name} ({peer_id})")
        self._peer_id, self._peer_name, self._peer_challenge = peer_id, peer_name, p["challenge"]
        self._peer_secret = secret
        self._peer_caps = frozenset(p["caps"])
        self.state = State.WAIT_AUTH
        response = auth_response(secret, self._peer_challenge, self.my_id, peer_id, self._challenge)
        out = [] if self.role == "dial" else [SendFrame(self._hello())]
        out.append(SendFrame(Frame("AUTH", self.my_id, 0, {"response": response})))
        return out

    def _on_auth(self, frame: Frame) -> list[Output]:
        if frame.origin != self._peer_id:
            return self._refuse(f"AUTH from {frame.origin}, not {self._peer_id}")
        if not verify_response(self._peer_secret, frame.payload["response"], self._challenge, self.my_id,
                               self._peer_id, self._peer_challenge):
            return self._refuse("authentication failed")
        self.state = State.ESTABLISHED
        return [LinkAuthenticated(self._peer_id, self._peer_name, self.caps & self._peer_caps)]

    def _hello(self) -> Frame:
        return Frame("HELLO", self.my_id, 0, {"version": PROTOCOL_VERSION, "id": self.my_id, "name": self.my_name,
                                              "caps": sorted(self.caps), "challenge": self._challenge})

    def _refuse(self, reason: str) -> list[Output]:
        self.state = State.FAILED
        return [SendFrame(Frame("ERROR", self.my_id, 0, {"reason": reason})), LinkRefused(reason)]
