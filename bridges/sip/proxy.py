"""The stateful proxy (RFC 3261 §16): a request for a registered user forks in parallel to every
contact, each branch its own client transaction; provisional and 2xx responses go back at once, the
best other final once every branch has ended (§16.7); a 2xx to an INVITE cancels the other branches.
Forwarded requests get Max-Forwards decremented, our Via (its branch carries a hash of the request, so a
request that comes back to us is a loop, 482) and, for dialog-making requests, a Record-Route so
in-dialog requests (ACK, BYE, re-INVITE) come through here too. The flows that reach a destination are
the service's (`service.flow_for`); this module never touches a socket.
"""

from __future__ import annotations

import hashlib
import itertools

from bridges.sip.message import Request, Response, make_response
from bridges.sip.transaction import Destination, client_transaction_for, make_cancel

RECORD_ROUTE_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_branch_ids = itertools.count(1)


def loop_hash(request: Request) -> str:
    """What makes a request the same request if it comes back (§16.6 step 8)."""
    key = "\0".join((request.uri_text, request.from_.tag or "", request.to.tag or "", request.call_id,
                     str(request.cseq.number), ",".join(request.headers.values("Route")),
                     ",".join(request.headers.values("Proxy-Require"))))
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def _rank(status: int) -> tuple:
    """§16.7 step 6: a 6xx wins; otherwise the lowest class, preferring 401/407/415/420/484."""
    if status >= 600:
        return (0, status)
    preferred = status in (401, 407, 415, 420, 484)
    return (status // 100, 0 if preferred else 1, status)


class ProxyContext:
    """One proxied request: its server transaction and its branches (client transaction key -> tx)."""

    def __init__(self, server_tx, request: Request):
        self.server_tx = server_tx
        self.request = request
        self.branches: dict[tuple, object] = {}
        self.open: set[tuple] = set()
        self.best: Response | None = None
        self.final_sent = False


class Proxy:
    def __init__(self, service):
        self.service = service
        self.contexts: dict[tuple, ProxyContext] = {}   # client transaction key -> its context

    def looped(self, request: Request) -> bool:
        mark = "z9hG4bK" + loop_hash(request) + "."
        ours = self.service.own_sent_by()
        return any(v.sent_by in ours and (v.branch or "").startswith(mark) for v in request.vias)

    def prepare(self, request: Request, target_uri: str, flow, inbound=None, identity: str | None = None) -> Request:
        """The copy of `request` sent to `target_uri` over `flow`, with our Via and Record-Route.
        Towards another server of the tree (a LinkFlow) the Record-Route names the flow the request came
        in on (the side user agents reach us on) and the identity we authenticated is asserted
        (P-Asserted-Identity, RFC 3325); towards a user agent, no assertion leaves the tree."""
        headers = request.headers.copy()
        headers.remove("Proxy-Authorization")  # credentials were for us (§22.3); we are the only proxy
        to_link = flow.transport == "LINK"
        headers.remove("P-Asserted-Identity")
        if to_link and identity:
            headers.add("P-Asserted-Identity", f"<sip:{identity}@{self.service.domain}>")
        mf = request.max_forwards
        headers.set("Max-Forwards", str((mf if mf is not None else 71) - 1))
        branch = f"z9hG4bK{loop_hash(request)}.{next(_branch_ids):x}"
        headers.insert(0, "Via", f"SIP/2.0/{flow.transport} {flow.host}:{flow.port};branch={branch};rport")
        if request.method in RECORD_ROUTE_METHODS:
            rr = inbound if to_link and inbound is not None and inbound.transport != "LINK" else flow
            transport = getattr(rr, "rr_transport", None) or rr.transport.lower()
            headers.insert(1, "Record-Route", f"<sip:{rr.host}:{rr.port};transport={transport};"
                                              f"relay={self.service.federation.me};lr>")
        return Request(request.method, target_uri, headers, request.body)

    def fork(self, server_tx, request: Request, targets: list[tuple[str, tuple]], now: float) -> Response | None:
        """Forward to every (contact uri, flow key); returns a response to send now if no branch starts."""
        ctx = ProxyContext(server_tx, request)
        for uri, flow_key in targets:
            flow = self.service.flow_for(flow_key)
            if flow is None:
                continue
            out = self.prepare(request, uri, flow, server_tx.flow, getattr(server_tx, "identity", None))
            tx = client_transaction_for(out, Destination(flow.transport, flow_key[1], flow_key[2]))
            ctx.branches[tx.key] = tx
            ctx.open.add(tx.key)
            self.contexts[tx.key] = ctx
            self.service.transactions.add(tx)
            self.service.run(tx.start(now), now)
        if not ctx.branches:
            return make_response(request, 480, "Temporarily Unavailable: no reachable contact")
        server_tx.proxy = ctx
        return None

    def response(self, key: tuple, response: Response, now: float) -> None:
        ctx = self.contexts.get(key)
        if ctx is None:
            return
        status = response.status
        if status == 100:
            return
        out = Response(status, response.reason, response.headers.copy(), response.body)
        out.headers.pop_first_value("Via")
        out.invalidate()
        if status < 200:
            if not ctx.final_sent:
                self.service.respond(ctx.server_tx, out, now)
            return
        ctx.open.discard(key)
        if status < 300:
            first = not ctx.final_sent
            ctx.final_sent = True
            self.service.respond(ctx.server_tx, out, now)  # every 2xx goes up (retransmissions too)
            if first and ctx.request.method == "INVITE":
                self.cancel_branches(ctx, now)
            self._maybe_done(ctx, key, now)
            return
        if ctx.best is None or _rank(status) < _rank(ctx.best.status):
            ctx.best = out
        self._maybe_done(ctx, key, now)

    def timed_out(self, key: tuple, now: float) -> None:
        ctx = self.contexts.get(key)
        if ctx is None:
            return
        ctx.open.discard(key)
        if ctx.best is None:
            ctx.best = make_response(ctx.request, 408, "Request Timeout")
        self._maybe_done(ctx, key, now)

    def _maybe_done(self, ctx: ProxyContext, key: tuple, now: float) -> None:
        if ctx.open:
            return
        if not ctx.final_sent and ctx.best is not None:
            ctx.final_sent = True
            best = ctx.best
            # Our own final must carry the request's Via, not a branch's.
            if best.headers.get("Via") is None or best.status == 408:
                best = make_response(ctx.request, best.status, best.reason)
            self.service.respond(ctx.server_tx, best, now)

    def terminated(self, key: tuple) -> None:
        ctx = self.contexts.pop(key, None)
        if ctx is not None:
            ctx.branches.pop(key, None)

    def cancel(self, server_tx, now: float) -> None:
        """A CANCEL matched this server transaction: cancel the pending branches."""
        ctx = getattr(server_tx, "proxy", None)
        if ctx is None or ctx.final_sent:
            return
        self.cancel_branches(ctx, now)

    def cancel_branches(self, ctx: ProxyContext, now: float) -> None:
        for key in list(ctx.open):
            tx = ctx.branches.get(key)
            if tx is None or tx.state not in ("calling", "proceeding"):
                continue
            flow = self.service.flow_for((tx.destination.transport, tx.destination.host, tx.destination.port))
            if flow is None:
                continue
            ctx.open.discard(key)
            cancel = client_transaction_for(make_cancel(tx.request), tx.destination)
            self.service.transactions.add(cancel)
            self.service.run(cancel.start(now), now)
        if not ctx.open and not ctx.final_sent:
            ctx.final_sent = True
            self.service.respond(ctx.server_tx, make_response(ctx.request, 487, "Request Terminated"), now)
