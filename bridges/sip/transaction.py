"""RFC 3261 §17 transactions as sans-IO state machines, with RFC 6026's Accepted state for INVITE 2xx.

Time is passed in: `start(now)`, `receive(message, now)`, `send(response, now)` (server side),
`timeout(now)`; `next_deadline()` says when `timeout` is next due. Each returns effects (commands for
the caller to carry out): `SendMessage`, `DeliverResponse` (to the transaction user), `TimeoutOccurred`,
`TransactionTerminated`. Retransmissions happen only over unreliable transports (UDP); over reliable
ones the timers that absorb retransmissions are zero, so those states are left at once.

The ACK for a non-2xx final response belongs to the INVITE transaction (the client transaction sends
it, the server transaction absorbs it); the ACK for a 2xx is the transaction user's: the UAC sends it
itself, and at the UAS it matches no transaction (it has a branch of its own) and goes to the TU.

Also here: matching requests, CANCELs and responses to transactions (§17.1.3, §17.2.3 with the RFC 2543
fallback, §9.2), building the ACK for a non-2xx final response (§17.1.1.3) and a CANCEL (§9.1), and where
a response goes (§18.2.2 with rport, RFC 3581) as the pure function `response_destination`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers, Via
from bridges.sip.message import Message, Request, Response, make_response

MAGIC_COOKIE = "z9hG4bK"
# LINK: a request carried to another server of the tree (bridges/sip/federation.py).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS", "LINK"})
_NOWHERE = frozenset({"255.255.255.255", "0.0.0.0", "[::]", "::"})


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 defaults: T1 the RTT estimate, T2 the cap on non-INVITE retransmission intervals, T4
    how long the network keeps a message."""
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


DEFAULT_TIMERS = Timers()


@dataclass(frozen=True, slots=True)
class Destination:
    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport.upper() in RELIABLE_TRANSPORTS


# --- effects ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class SendMessage:
    message: Message
    destination: Destination


@dataclass(slots=True)
class DeliverResponse:
    """Pass this response up to the transaction user (the UAC core or the proxy)."""
    key: tuple
    response: Response


@dataclass(slots=True)
class DeliverRequest:
    """Pass this request up to the transaction user: an ACK for a 2xx that matched an INVITE server
    transaction in the Accepted state (RFC 6026 §7.1; only RFC 2543 peers' ACKs match it)."""
    key: tuple
    request: Request


@dataclass(slots=True)
class TimeoutOccurred:
    """Timer B, F or H fired: the transaction user treats it as a 408 (or, for H, a missing ACK)."""
    key: tuple
    timer: str


@dataclass(slots=True)
class TransactionTerminated:
    key: tuple


# --- keys and matching -------------------------------------------------------------------------------------

def _has_rfc3261_branch(via: Via) -> bool:
    branch = via.branch
    # A bare magic cookie identifies nothing (RFC 4475 §3.2.1): fall back to RFC 2543 matching.
    return bool(branch) and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)


def server_key(request: Request, method: str | None = None) -> tuple:
    """The server transaction a request belongs to (§17.2.3); ACK maps to its INVITE's transaction."""
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    if _has_rfc3261_branch(via):
        return ("3261", via.branch, via.sent_by, method)
    # RFC 2543: Request-URI, From tag, Call-ID, CSeq number and top Via; the To tag is left out so the
    # ACK (which carries the tag of our response) matches the INVITE (which had none).
    return ("2543", request.uri_text, request.from_.tag, request.call_id, request.cseq.number,
            via.transport, via.sent_by, via.branch, method)


def cancel_target_key(cancel: Request) -> tuple:
    """The key of the INVITE server transaction a CANCEL cancels (§9.2)."""
    return server_key(cancel, "INVITE")


def client_key(message: Message) -> tuple:
    """The client transaction of a request we send or of a response to it (§17.1.3)."""
    return (message.top_via.branch, message.cseq.method)


def response_destination(via: Via, source: tuple[str, int], force_rport: bool = False) -> Destination | None:
    """Where a response to a request that arrived from `source` with this top Via goes (§18.2.2):
    back over the same connection for a reliable transport; to maddr if present; otherwise to the
    address the request came from and the Via port (or, with rport, the port it came from, RFC 3581;
    `force_rport` treats every Via so, for clients behind NATs that do not ask).
    None for an address no response should go to (broadcast, unspecified): no amplifying."""
    host, port = source
    transport = via.transport
    if transport in RELIABLE_TRANSPORTS:
        return Destination(transport, host, port)
    maddr = via.param("maddr")
    if maddr:
        host, port = maddr, via.port or 5060
    elif not (force_rport or via.has_param("rport")):
        port = via.port or 5060
    if host in _NOWHERE or not port:
        return None
    return Destination(transport, host, port)


def reply_destination(response: Response, source: tuple[str, int], transport: str = "UDP",
                      force_rport: bool = False) -> Destination | None:
    """Where to send a response to a request that came from `source`: per its top Via as the server
    recorded it (stamp_via, response_destination), or straight back to `source` over the transport it
    came on when that Via is the fault (an error response is no bigger than the request: no
    amplification)."""
    try:
        via = response.top_via
    except SipParseError:
        via = None
    if via is None:
        return Destination(transport, *source)
    return response_destination(stamp_via(via, source), source, force_rport)


def stamp_via(via: Via, source: tuple[str, int]) -> Via:
    """The top Via as a server records it on receipt (§18.2.1, RFC 3581 §4): received= when the sender's
    address differs from sent-by (always when rport was asked for), rport= filled with its port."""
    host, port = source
    if via.has_param("rport"):
        return via.with_param("received", host).with_param("rport", str(port))
    if via.host != host:
        return via.with_param("received", host)
    return via


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, sent by the INVITE client transaction (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", request.headers.values("Via")[0])
    for name in ("Route",):
        for value in request.headers.fields(name):
            headers.add(name, value)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From"))
    headers.add("To", response.headers.get("To"))
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.number} ACK")
    return Request("ACK", request.uri_text, headers)


def make_cancel(request: Request) -> Request:
    """A CANCEL for a pending request (§9.1): same Request-URI, Call-ID, From, To, CSeq number and
    top Via (so it reaches the same server transaction), method CANCEL."""
    headers = Headers()
    headers.add("Via", request.headers.values("Via")[0])
    for value in request.headers.fields("Route"):
        headers.add("Route", value)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From"))
    headers.add("To", request.headers.get("To"))
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.number} CANCEL")
    return Request("CANCEL", request.uri_text, headers)


# --- the state machines ------------------------------------------------------------------------------------

class Transaction:
    """Timers by name -> (deadline, interval); `timeout` fires the due ones in deadline order."""

    state: str

    def __init__(self, key: tuple, destination: Destination, reliable: bool, timers: Timers):
        self.key = key
        self.destination = destination
        self.reliable = reliable
        self.timers = timers
        self._deadlines: dict[str, tuple[float, float]] = {}

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def next_deadline(self) -> float | None:
        return min((d for d, _ in self._deadlines.values()), default=None)

    def timeout(self, now: float) -> list:
        effects: list = []
        while self._deadlines:
            name, (deadline, interval) = min(self._deadlines.items(), key=lambda kv: kv[1][0])
            if deadline > now:
                break
            del self._deadlines[name]
            effects += self._fire(name, deadline, interval)
        return effects

    def _set(self, name: str, deadline: float, interval: float = 0.0) -> None:
        self._deadlines[name] = (deadline, interval)

    def _clear(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _terminate(self) -> list:
        self.state = "terminated"
        self._deadlines.clear()
        return [TransactionTerminated(self.key)]

    def _linger(self, timer: str, now: float, duration: float) -> list:
        """Enter a state that absorbs retransmissions for `duration` (zero on reliable transports)."""
        if self.reliable or duration <= 0:
            return self._terminate()
        self._set(timer, now + duration)
        return []

    def _fire(self, name: str, deadline: float, interval: float) -> list:
        raise NotImplementedError


class ClientTransaction(Transaction):
    def __init__(self, request: Request, destination: Destination, timers: Timers = DEFAULT_TIMERS):
        super().__init__(client_key(request), destination, destination.reliable, timers)
        self.request = request
        self.state = "init"

    def _send(self, message: Message) -> SendMessage:
        return SendMessage(message, self.destination)


class InviteClientTransaction(ClientTransaction):
    """§17.1.1: calling -> proceeding -> completed (non-2xx, ACK sent here) | accepted (2xx) -> terminated."""

    def start(self, now: float) -> list:
        self.state = "calling"
        t1 = self.timers.t1
        if not self.reliable:
            self._set("A", now + t1, t1)
        self._set("B", now + 64 * t1)
        return [self._send(self.request)]

    def receive(self, response: Response, now: float) -> list:
        status = response.status
        if self.state in ("calling", "proceeding"):
            if status < 200:
                self.state = "proceeding"
                self._clear("A", "B")
                return [DeliverResponse(self.key, response)]
            if status < 300:
                self.state = "accepted"
                self._clear("A", "B")
                self._set("M", now + 64 * self.timers.t1)
                return [DeliverResponse(self.key, response)]
            self.state = "completed"
            self._clear("A", "B")
            effects = [self._send(make_ack(self.request, response)), DeliverResponse(self.key, response)]
            return effects + self._linger("D", now, 32.0)
        if self.state == "accepted" and 200 <= status < 300:
            return [DeliverResponse(self.key, response)]  # 2xx retransmissions: the TU re-ACKs them
        if self.state == "completed" and status >= 300:
            return [self._send(make_ack(self.request, response))]
        return []

    def _fire(self, name: str, deadline: float, interval: float) -> list:
        if name == "A" and self.state == "calling":
            self._set("A", deadline + 2 * interval, 2 * interval)
            return [self._send(self.request)]
        if name == "B" and self.state == "calling":
            return [TimeoutOccurred(self.key, "B")] + self._terminate()
        if name in ("D", "M"):
            return self._terminate()
        return []


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: trying -> proceeding -> completed -> terminated; Timer E retransmits, doubling to T2."""

    def start(self, now: float) -> list:
        self.state = "trying"
        t1 = self.timers.t1
        if not self.reliable:
            self._set("E", now + t1, t1)
        self._set("F", now + 64 * t1)
        return [self._send(self.request)]

    def receive(self, response: Response, now: float) -> list:
        if self.state not in ("trying", "proceeding"):
            return []  # completed: retransmitted finals are absorbed
        if response.status < 200:
            self.state = "proceeding"
            return [DeliverResponse(self.key, response)]
        self.state = "completed"
        self._clear("E", "F")
        return [DeliverResponse(self.key, response)] + self._linger("K", now, self.timers.t4)

    def _fire(self, name: str, deadline: float, interval: float) -> list:
        if name == "E" and self.state in ("trying", "proceeding"):
            t2 = self.timers.t2
            nxt = t2 if self.state == "proceeding" else min(2 * interval, t2)
            self._set("E", deadline + nxt, nxt)
            return [self._send(self.request)]
        if name == "F" and self.state in ("trying", "proceeding"):
            return [TimeoutOccurred(self.key, "F")] + self._terminate()
        if name == "K":
            return self._terminate()
        return []


class ServerTransaction(Transaction):
    """`destination` is where responses go (see response_destination); `reliable` is the transport the
    request came over."""

    def __init__(self, request: Request, destination: Destination, reliable: bool | None = None,
                 timers: Timers = DEFAULT_TIMERS):
        if reliable is None:
            reliable = request.top_via.transport in RELIABLE_TRANSPORTS
        super().__init__(server_key(request), destination, reliable, timers)
        self.request = request
        self.last_response: Response | None = None

    def _send(self, response: Response) -> list:
        self.last_response = response
        return [SendMessage(response, self.destination)]

    def _resend(self) -> list:
        return [SendMessage(self.last_response, self.destination)] if self.last_response else []


class InviteServerTransaction(ServerTransaction):
    """§17.2.1: proceeding -> completed (non-2xx; Timer G retransmits until ACK or Timer H) -> confirmed
    -> terminated; a 2xx moves to accepted (RFC 6026) where INVITE retransmissions are absorbed."""

    def start(self, now: float, trying: bool = True) -> list:
        """Enter proceeding; with `trying` send 100 at once rather than bet the TU answers in 200 ms."""
        self.state = "proceeding"
        return self._send(make_response(self.request, 100)) if trying else []

    def receive(self, request: Request, now: float) -> list:
        if request.method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                self._clear("G", "H")
                return self._linger("I", now, self.timers.t4)
            if self.state == "accepted":
                return [DeliverRequest(self.key, request)]
            return []
        if self.state in ("proceeding", "completed"):
            return self._resend()
        return []

    def send(self, response: Response, now: float) -> list:
        status = response.status
        if self.state == "accepted" and 200 <= status < 300:
            return self._send(response)
        if self.state != "proceeding":
            raise ValueError(f"INVITE server transaction cannot send {status} in state {self.state}")
        if status < 200:
            return self._send(response)
        effects = self._send(response)
        t1 = self.timers.t1
        if status < 300:
            self.state = "accepted"
            self._set("L", now + 64 * t1)
            return effects
        self.state = "completed"
        if not self.reliable:
            self._set("G", now + t1, t1)
        self._set("H", now + 64 * t1)
        return effects

    def _fire(self, name: str, deadline: float, interval: float) -> list:
        if name == "G" and self.state == "completed":
            nxt = min(2 * interval, self.timers.t2)
            self._set("G", deadline + nxt, nxt)
            return self._resend()
        if name == "H" and self.state == "completed":
            return [TimeoutOccurred(self.key, "H")] + self._terminate()
        if name in ("I", "L"):
            return self._terminate()
        return []


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: trying -> proceeding -> completed (Timer J absorbs retransmissions) -> terminated."""

    def start(self, now: float) -> list:
        self.state = "trying"
        return []

    def receive(self, request: Request, now: float) -> list:
        if self.state in ("proceeding", "completed"):
            return self._resend()
        return []  # trying: nothing to repeat yet

    def send(self, response: Response, now: float) -> list:
        if self.state not in ("trying", "proceeding"):
            raise ValueError(f"non-INVITE server transaction cannot send in state {self.state}")
        effects = self._send(response)
        if response.status < 200:
            self.state = "proceeding"
            return effects
        self.state = "completed"
        return effects + self._linger("J", now, 64 * self.timers.t1)

    def _fire(self, name: str, deadline: float, interval: float) -> list:
        return self._terminate() if name == "J" else []


def server_transaction_for(request: Request, destination: Destination, reliable: bool | None = None,
                           timers: Timers = DEFAULT_TIMERS) -> ServerTransaction:
    cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    return cls(request, destination, reliable, timers)


def client_transaction_for(request: Request, destination: Destination,
                           timers: Timers = DEFAULT_TIMERS) -> ClientTransaction:
    if request.method == "ACK":
        raise ValueError("an ACK has no client transaction")
    cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
    return cls(request, destination, timers)


class TransactionTable:
    """The live transactions of one element, matched by key; `timeout(now)` runs every due timer and
    forgets terminated transactions."""

    def __init__(self):
        self.server: dict[tuple, ServerTransaction] = {}
        self.client: dict[tuple, ClientTransaction] = {}

    def add(self, tx: Transaction) -> None:
        (self.server if isinstance(tx, ServerTransaction) else self.client)[tx.key] = tx

    def match_request(self, request: Request) -> ServerTransaction | None:
        return self.server.get(server_key(request))

    def match_cancel(self, cancel: Request) -> ServerTransaction | None:
        return self.server.get(cancel_target_key(cancel))

    def match_response(self, response: Response) -> ClientTransaction | None:
        """None for a stray response: the caller drops it silently."""
        return self.client.get(client_key(response))

    def next_deadline(self) -> float | None:
        deadlines = [d for tx in (*self.server.values(), *self.client.values())
                     if (d := tx.next_deadline()) is not None]
        return min(deadlines, default=None)

    def timeout(self, now: float) -> list:
        effects: list = []
        for table in (self.server, self.client):
            for key, tx in list(table.items()):
                deadline = tx.next_deadline()
                if deadline is not None and deadline <= now:
                    effects += tx.timeout(now)
                if tx.terminated:
                    del table[key]
        return effects

    def __len__(self) -> int:
        return len(self.server) + len(self.client)
