"""The sip module in-process, sans sockets: datagrams in through its UDP flow, what it sends captured,
time passed in (core.tick), so timers (retransmission, Timer F, binding expiry) run without sleeping."""

from __future__ import annotations

from sipcore import ME, T0, Peer, sip  # noqa: F401 - sip is a fixture

from bridges.sip.codec import RequestReceived, ResponseReceived, serialise
from bridges.sip.message import Request
from bridges.sip.ratelimit import TokenBuckets


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
