"""In-process SIP: a Core with the sip module, datagrams in through its UDP flow, what it sends captured,
time passed in (core.tick), so timers run without sleeping."""

from __future__ import annotations

import pytest

from bridges.sip.codec import parse_datagram, serialise
from bridges.sip.digest import authorization, parse_challenge
from bridges.sip.headers import Headers
from bridges.sip.message import Request
from bridges.sip.transport import UdpFlow
from relay.core.config import parse
from relay.core.server import Core

T0 = 1000.0
ME = ("127.0.0.1", 5060)


class Endpoint:
    host, port = ME

    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def send_to(self, data, addr):
        self.sent.append((data, addr))
        return True

    def take(self):
        out = [(parse_datagram(d), a) for d, a in self.sent]
        self.sent.clear()
        return out


class Listener:
    host, port = ME


@pytest.fixture
def sip(tmp_path):
    cfg = parse({"data_dir": str(tmp_path), "listen": [{"proto": "sip", "port": 5060, "transport": "udp"}],
                 "modules": {"sip": {"min_expires": 30, "persist": False, "auth_failures_burst": 3}}})
    core = Core(cfg, now=T0)
    core.start(T0)
    for name in ("alice", "bob"):
        core.register_account(name, f"{name}-pw", T0)
    ep = Endpoint()
    flow = UdpFlow(core.services["sip"], ep, Listener(), T0)
    yield core, flow, ep
    core.stop(T0 + 1000)
    core.storage.close()


class Peer:
    """A user agent at `addr`, whose requests go into the flow."""

    def __init__(self, env, user, addr):
        self.core, self.flow, self.ep = env
        self.user, self.addr = user, addr
        self.n = 0

    def request(self, method, uri, to=None, extra=(), body=b"", from_user=None):
        self.n += 1
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch=z9hG4bK{self.user}{self.n}")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{from_user or self.user}@localhost>;tag=t{self.user}")
        h.add("To", f"<{to or uri}>")
        h.add("Call-ID", f"c-{self.user}")
        h.add("CSeq", f"{self.n} {method}")
        for k, v in extra:
            h.add(k, v)
        if body:
            h.add("Content-Type", "text/plain")
        return Request(method, uri, h, body)

    def send(self, req, now=T0, addr=None):
        self.flow.datagram_received(serialise(req), addr or self.addr, now)
        self.core.tick(now)
        return [e for e, a in self.ep.take()]

    def with_auth(self, req, challenge, password=None):
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        ch = parse_challenge(challenge.headers.get(header))
        self.n += 1
        h = req.headers.copy()
        h.set("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch=z9hG4bK{self.user}{self.n}")
        h.set("CSeq", f"{self.n} {req.method}")
        h.add("Authorization" if challenge.status == 401 else "Proxy-Authorization",
              authorization(self.user, ch["realm"], password or f"{self.user}-pw", ch["nonce"], req.method,
                            req.uri_text, nc=self.n))
        return Request(req.method, req.uri_text, h, req.body)

    def transact(self, req, now=T0, password=None):
        out = self.send(req, now)
        resp = out[-1].response
        if resp.status in (401, 407):
            out = self.send(self.with_auth(req, resp, password), now)
        return out

    def register(self, expires=600, now=T0):
        req = self.request("REGISTER", "sip:localhost", to=f"sip:{self.user}@localhost",
                           extra=[("Contact", f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]}>"),
                                  ("Expires", str(expires))])
        return self.transact(req, now)[-1].response
