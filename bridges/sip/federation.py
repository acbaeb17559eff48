"""SIP across the tree: bindings known on every server, requests carried to the server of the callee.

Frames (module link frames, `core.net.router.send_extension`; numbered, replayed after a short split):

    SIP_BIND {server, aor, contacts: [[uri, seconds left], ...], ver: [epoch, n]}
        The whole set of `aor`'s bindings on `server` (empty: none left). Sent when it changes, and on
        link_up for every set this server knows (its own and the ones it learned), so both sides of a
        new link learn the whole network. `ver` orders one server's announcements (epoch: when its
        module started), so a relayed older set never replaces a newer one.
    SIP_BIND {server, hello: true}
        The module started on a server that is already linked: every server answers with its own sets.
    SIP_REQ {msg, flow}
        A request for a user registered on the receiving server, sent to that server only. `msg` is the
        serialised request (latin-1), already carrying the sending server's Via and Record-Route and,
        when it authenticated the sender, a P-Asserted-Identity (RFC 3325: the servers of the tree are
        one trust domain, so the far server does not challenge again; a P-Asserted-Identity from a
        user agent is removed on arrival); `flow` the flow the request came in on (for the log).
    SIP_RSP {msg}
        A response to a SIP_REQ, back to the server that sent it.

To the transaction layer a link is one more reliable transport: `LinkFlow` is the flow of one remote
server (`("LINK", server id, 0)` as a flow key), so client and server transactions, CANCEL, forking and
Record-Route work over it as over TCP. Our Record-Route carries `relay=<server id>`, so a server that
finds another server's route next in a Route set sends the request over the link to that server.

A server's learned bindings are dropped when it is gone for good (hook `servers_gone`, after the
netsplit hold; while it is held, requests for it wait in the replay buffer).
"""

from __future__ import annotations

from bridges.sip.bindings import RemoteBinding
from bridges.sip.codec import RequestReceived, ResponseReceived, parse_datagram
from bridges.sip.errors import SipParseError
from bridges.sip.headers import parse_name_addr
from bridges.sip.message import Request
from bridges.sip.uri import SipUri

BIND_FRAME = "SIP_BIND"
REQ_FRAME = "SIP_REQ"
RSP_FRAME = "SIP_RSP"
FRAMES = frozenset({BIND_FRAME, REQ_FRAME, RSP_FRAME})


class LinkFlow:
    """The flow to one remote server: what the transaction layer sends leaves as SIP_REQ / SIP_RSP.
    `host`/`port` are this server's own SIP address (our Via and Record-Route name it)."""

    transport = "LINK"
    reliable = True

    def __init__(self, federation: "SipFederation", server: str, host: str, port: int, rr_transport: str):
        self.federation = federation
        self.server = server
        self.host, self.port = host, port
        self.rr_transport = rr_transport
        self.peer = (server, 0)

    def send(self, data: bytes, addr=None) -> bool:
        return self.federation.send_message(self.server, data)


class SipFederation:
    def __init__(self, service, core):
        self.svc = service
        self.core = core
        self.me = core.config.server.id
        self.epoch = round(core.now(), 6)
        self.n = 0
        self.versions: dict[tuple[str, str], list] = {}   # (server, aor) -> ver of what we hold
        self.flows: dict[str, LinkFlow] = {}
        self.stats = {"bind_in": 0, "bind_out": 0, "req_out": 0, "req_in": 0, "rsp_out": 0, "rsp_in": 0}

    def hooks(self) -> list[tuple[str, object]]:
        """What the module hooks (recorded by the module, so unloading removes them)."""
        return [("link_extension", self.on_extension), ("link_up", self.on_link_up),
                ("servers_gone", self.on_servers_gone)]

    @property
    def router(self):
        return getattr(self.core.net, "router", None)

    def linked(self) -> bool:
        router = self.router
        return bool(router is not None and getattr(router, "peers", None))

    def flow(self, server: str) -> LinkFlow | None:
        """The flow to `server` if it is part of the network."""
        if server == self.me or server not in self.core.net.server_names:
            return None
        f = self.flows.get(server)
        if f is None:
            host, port, transport = self.svc.own_address()
            f = self.flows[server] = LinkFlow(self, server, host, port, transport)
        return f

    # -------------------------------------------------------------- bindings
    def announce(self, aor: str, now: float) -> None:
        router = self.router
        if router is None:
            return
        self.n += 1
        contacts = [[b.contact, b.remaining(now)] for b in self.svc.store.get(aor, now)]
        self.stats["bind_out"] += 1
        router.send_extension(BIND_FRAME, {"server": self.me, "aor": aor, "contacts": contacts,
                                           "ver": [self.epoch, self.n]}, None)

    def hello(self, now: float) -> None:
        if self.linked():
            self.router.send_extension(BIND_FRAME, {"server": self.me, "hello": True}, None)
            for aor in self.svc.store.aors():
                self.announce(aor, now)

    def on_link_up(self, peer_id: str, *rest) -> None:
        router = self.router
        now = self.core.now()
        for aor in self.svc.store.aors():
            self.announce(aor, now)
        for aor, servers in list(self.svc.store.remote.items()):
            for sid, contacts in list(servers.items()):
                ver = self.versions.get((sid, aor))
                if ver is None:
                    continue
                router.send_extension(BIND_FRAME, {"server": sid, "aor": aor, "ver": ver,
                                                   "contacts": [[c.contact, c.remaining(now)] for c in contacts]},
                                      None)
        return None

    def on_servers_gone(self, gone) -> None:
        for sid in gone:
            self.svc.store.forget_server(sid)
            self.flows.pop(sid, None)
            for key in [k for k in self.versions if k[0] == sid]:
                del self.versions[key]
        return None

    def _on_bind(self, p: dict, now: float) -> None:
        sid = p.get("server")
        if not isinstance(sid, str) or sid == self.me:
            return
        if p.get("hello"):
            for aor in self.svc.store.aors():
                self.announce(aor, now)
            return
        aor, ver, contacts = p.get("aor"), p.get("ver"), p.get("contacts")
        if not isinstance(aor, str) or not isinstance(ver, list) or not isinstance(contacts, list):
            return
        old = self.versions.get((sid, aor))
        if old is not None and old >= ver:
            return
        self.stats["bind_in"] += 1
        self.versions[(sid, aor)] = ver
        live = [RemoteBinding(sid, c[0], now + c[1]) for c in contacts
                if isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], (int, float))
                and c[1] > 0]
        self.svc.store.set_remote(aor, sid, live)

    # -------------------------------------------------------------- requests and responses
    def send_message(self, server: str, data: bytes) -> bool:
        router = self.router
        if router is None:
            return False
        text = data.decode("latin-1")
        if data.startswith(b"SIP/"):
            self.stats["rsp_out"] += 1
            router.send_extension(RSP_FRAME, {"msg": text}, {server})
        else:
            self.stats["req_out"] += 1
            router.send_extension(REQ_FRAME, {"msg": text, "flow": self.svc.inbound}, {server})
        return True

    def _on_message(self, origin: str, p: dict, now: float) -> None:
        msg = p.get("msg")
        flow = self.flow(origin)
        if not isinstance(msg, str) or flow is None:
            return
        try:
            data = msg.encode("latin-1")
        except UnicodeEncodeError:
            return
        event = parse_datagram(data)
        if type(event) is RequestReceived:
            self.stats["req_in"] += 1
            self.svc.received(event, flow.peer, flow, len(data), now)
        elif type(event) is ResponseReceived:
            self.stats["rsp_in"] += 1
            self.svc.received(event, flow.peer, flow, len(data), now)

    def on_extension(self, ftype: str, origin: str, payload: dict, from_link=None):
        if ftype not in FRAMES:
            return None
        now = self.core.now()
        if ftype == BIND_FRAME:
            self._on_bind(payload, now)
        else:
            self._on_message(origin, payload, now)
        return True


def asserted_user(req: Request, domain: str) -> str | None:
    """The user a server of the tree vouches for (P-Asserted-Identity: <sip:user@domain>)."""
    value = req.headers.get("P-Asserted-Identity")
    if value is None:
        return None
    try:
        uri = parse_name_addr(value, "P-Asserted-Identity").uri
    except SipParseError:
        return None
    if not isinstance(uri, SipUri) or uri.user is None or uri.host.lower() != domain:
        return None
    return uri.user
