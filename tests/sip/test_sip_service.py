"""The sip module in-process, sans sockets: datagrams in through its UDP flow, what it sends captured,
time passed in (core.tick), so timers (retransmission, Timer F, binding expiry) run without sleeping."""

from __future__ import annotations

import pytest

from bridges.sip.bindings import Binding, BindingStore
from bridges.sip.codec import ResponseReceived, RequestReceived, parse_datagram, serialise
from bridges.sip.digest import authorization, parse_challenge
from bridges.sip.headers import Headers
from bridges.sip.message import Request
from bridges.sip.ratelimit import TokenBuckets
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


def test_a_branch_that_never_answers_is_retransmitted_then_408(sip):
    core, flow, ep = sip
    alice, bob = Peer(sip, "alice", ("127.0.0.1", 7001)), Peer(sip, "bob", ("127.0.0.1", 7002))
    assert alice.register().status == 200
    out = bob.transact(bob.request("MESSAGE", "sip:alice@localhost", body=b"anyone?"))
    assert [type(e) for e in out] == [RequestReceived]  # forwarded to alice, nothing back to bob yet
    sends = 0
    now = T0
    while now < T0 + 40:
        now += 0.25
        core.tick(now)
        for e, addr in ep.take():
            if isinstance(e, RequestReceived):
                assert addr == alice.addr and e.request.body == b"anyone?"
                sends += 1
            else:
                assert addr == bob.addr
                final = e.response
    assert 8 <= sends <= 12             # Timer E: 0.5, 1, 2, 4, then every 4 s until Timer F (32 s)
    assert final.status == 408


def test_binding_expiry_ends_the_member(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ("127.0.0.1", 7001))
    assert alice.register(60).status == 200
    assert core.net.find_nick("alice").attrs["sip"]["aor"] == "sip:alice@localhost"
    core.tick(T0 + 59)
    assert core.net.find_nick("alice") is not None
    core.tick(T0 + 61)
    assert core.net.find_nick("alice") is None


def test_a_request_that_comes_back_is_a_loop(sip):
    core, flow, ep = sip
    loopy = Peer(sip, "alice", ME)          # registers our own address as its contact
    assert loopy.register().status == 200
    bob = Peer(sip, "bob", ("127.0.0.1", 7002))
    out = bob.transact(bob.request("MESSAGE", "sip:alice@localhost", body=b"round"))
    [forwarded] = [e.request for e in out if isinstance(e, RequestReceived)]  # sent to ourselves
    assert forwarded.headers.get("Proxy-Authorization") is None  # our credentials stay here
    # A peer that sends it back unchanged (its Request-URI as we received it): a loop, not a spiral.
    back = Request("MESSAGE", "sip:alice@localhost", forwarded.headers, forwarded.body)
    flow.datagram_received(serialise(back), ME, T0)
    answers = [e.response.status for e, _ in ep.take() if isinstance(e, ResponseReceived)]
    assert answers == [482]


def test_big_answers_to_small_udp_requests_are_not_sent(sip, tmp_path):
    core, flow, ep = sip
    core.services["sip"].opts.amplification_limit = 1.0
    tiny = Peer(sip, "alice", ("127.0.0.1", 7003))
    out = tiny.send(tiny.request("REGISTER", "sip:localhost", to="sip:alice@localhost",
                                 extra=[("Contact", "<sip:a@1.2.3.4>")]))
    assert out == [] and core.services["sip"].stats["dropped_amplify"] == 1


def test_maddr_does_not_redirect_our_answers(sip):
    core, flow, ep = sip
    p = Peer(sip, "x", ("127.0.0.1", 7004))
    req = p.request("OPTIONS", "sip:localhost")
    req.headers.set("Via", "SIP/2.0/UDP 10.9.9.9:5080;maddr=10.9.9.9;branch=z9hG4bKmaddr")
    flow.datagram_received(serialise(req), p.addr, T0)
    [(resp, addr)] = ep.take()
    assert resp.response.status == 200 and addr[0] == "127.0.0.1"


def test_failed_authentications_silence_the_source(sip):
    core, flow, ep = sip
    bad = Peer(sip, "alice", ("127.0.0.9", 7005))
    for _ in range(3):
        out = bad.transact(bad.request("REGISTER", "sip:localhost", to="sip:alice@localhost",
                                       extra=[("Contact", "<sip:alice@127.0.0.9:7005>")]), password="wrong")
        assert out[-1].response.status == 403
    assert bad.send(bad.request("OPTIONS", "sip:localhost")) == []  # no answer at all now
    good = Peer(sip, "bob", ("127.0.0.1", 7006))
    assert good.register().status == 200                             # others are served


def test_token_buckets_refill_with_time_and_stay_bounded():
    b = TokenBuckets(rate=2, burst=4, max_sources=3)
    assert [b.allow("a", 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert b.allow("a", 0.5) and not b.allow("a", 0.5)
    for k in "bcdef":
        b.allow(k, 1.0)
    assert len(b) <= 3
