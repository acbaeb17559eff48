"""topology.link: the link handshake, two machines wired together in memory."""

import pytest

from relay.proto.link import PROTOCOL_VERSION, Frame, LinkCodec, LinkProtocolError
from topology.link import LinkAuthenticated, LinkHandshake, LinkRefused, SendFrame, State

SECRET = "correct horse battery"


def dialer(**kw):
    args = dict(my_id="001", my_name="a.test", secret=SECRET, peer_expected_id="002", role="dial", now=0.0,
                rand=b"\x01" * 16)
    return LinkHandshake(**{**args, **kw})


def acceptor(**kw):
    args = dict(my_id="002", my_name="b.test", secret=SECRET, peer_expected_id=None, role="accept", now=0.0,
                rand=b"\x02" * 16)
    return LinkHandshake(**{**args, **kw})


def wire(a: LinkHandshake, b: LinkHandshake):
    """Run both machines to the end over real bytes; returns the events each emitted."""
    codecs = {a: LinkCodec(), b: LinkCodec()}
    events = {a: [], b: []}
    inbox = {a: b"", b: b""}

    def handle(who, outputs):
        peer = b if who is a else a
        for o in outputs:
            if isinstance(o, SendFrame):
                inbox[peer] += codecs[who].send(o.frame)
            else:
                events[who].append(o)

    handle(a, a.start(0.0))
    handle(b, b.start(0.0))
    while inbox[a] or inbox[b]:
        for who in (a, b):
            data, inbox[who] = inbox[who], b""
            for frame in codecs[who].receive_data(data):
                if who.state is State.ESTABLISHED:
                    raise AssertionError(f"{frame.type} after the handshake")
                handle(who, who.receive(frame, 1.0))
    return events[a], events[b]


def sent(outputs):
    return [o.frame for o in outputs if isinstance(o, SendFrame)]


def hello(origin="002", **payload):
    p = {"version": PROTOCOL_VERSION, "id": origin, "name": "b.test", "caps": ["EOB"], "challenge": "cd" * 16}
    return Frame("HELLO", origin, 0, {**p, **payload})


@pytest.mark.parametrize("first", ["dialer", "acceptor"])
def test_success_both_directions(first):
    d, a = dialer(caps={"EOB", "REPLAY"}), acceptor(caps={"EOB", "ENCAP"})
    ev_d, ev_a = wire(d, a) if first == "dialer" else wire(a, d)[::-1]
    assert ev_d == [LinkAuthenticated("002", "b.test", frozenset({"EOB"}))]
    assert ev_a == [LinkAuthenticated("001", "a.test", frozenset({"EOB"}))]
    assert d.state is a.state is State.ESTABLISHED


def test_roles_reversed():
    d = dialer(my_id="002", my_name="b.test", peer_expected_id="001")
    a = acceptor(my_id="001", my_name="a.test")
    assert wire(d, a) == ([LinkAuthenticated("001", "a.test", frozenset({"ENCAP", "EOB", "REPLAY"}))],
                          [LinkAuthenticated("002", "b.test", frozenset({"ENCAP", "EOB", "REPLAY"}))])


def test_message_order():
    d, a = dialer(), acceptor()
    assert a.start(0.0) == []
    [h] = sent(d.start(0.0))
    assert h.type == "HELLO" and h.payload["id"] == "001" and "secret" not in str(h.payload)
    assert [f.type for f in sent(a.receive(h, 0.0))] == ["HELLO", "AUTH"]
    assert a.state is State.WAIT_AUTH


def test_acceptor_looks_up_the_secret_by_peer():
    asked = []

    def lookup(peer_id, peer_name):
        asked.append((peer_id, peer_name))
        return SECRET if peer_name == "a.test" else None

    ev_d, ev_a = wire(dialer(), acceptor(secret=lookup))
    assert asked == [("001", "a.test")] and ev_a[0].peer_id == "001"
    _, ev_a = wire(dialer(my_name="x.test"), acceptor(secret=lookup))
    assert ev_a == [LinkRefused("no link configured for x.test (001)")]


def test_wrong_secret():
    ev_d, ev_a = wire(dialer(), acceptor(secret="not the secret"))
    assert ev_d == ev_a == [LinkRefused("authentication failed")]


def test_wrong_version():
    a = acceptor()
    out = a.receive(hello(origin="001", id="001", version=2), 0.0)
    assert out == [SendFrame(Frame("ERROR", "002", 0, {"reason": "protocol version 2 not supported (we speak 1)"})),
                   LinkRefused("protocol version 2 not supported (we speak 1)")]
    assert a.state is State.FAILED
    assert a.receive(hello(), 0.0) == []  # the rest of the batch is ignored


def test_peer_error_ends_the_handshake():
    d = dialer()
    d.start(0.0)
    assert d.receive(Frame("ERROR", "002", 0, {"reason": "authentication failed"}), 0.0) == [
        LinkRefused("refused by peer: authentication failed")]
    assert d.state is State.FAILED


@pytest.mark.parametrize("frame, reason", [
    (hello(origin="001", id="001"), "duplicate server id 001"),
    (hello(name="A.TEST"), "duplicate server name A.TEST"),
    (hello(origin="003", id="003", name="c.test"), "unexpected server id 003 (expected 002)"),
    (hello(origin="003", id="002"), "HELLO from 003 claims id 002"),
    (hello(caps=["EOB", 1]), "caps must be strings"),
    (hello(challenge="cd"), "challenge must be"),
    (hello(challenge="CD" * 16), "challenge must be"),
    (hello(challenge=("01" * 16)), "reflects our own challenge"),
    (Frame("AUTH", "002", 0, {"response": "00"}), "AUTH before HELLO"),
    (Frame("PRIVMSG", "002", 1, {"source": "002", "target": "#c", "text": "hi"}),
     "unexpected PRIVMSG frame before authentication"),
    (Frame("WHATEVER", "002", 0, {}, known=False), "unexpected WHATEVER frame before authentication"),
])
def test_refusals(frame, reason):
    d = dialer()
    d.start(0.0)
    out = d.receive(frame, 1.0)
    assert [type(o) for o in out] == [SendFrame, LinkRefused]
    assert reason in out[1].reason and out[0].frame.payload["reason"] == out[1].reason
    assert d.state is State.FAILED


def test_second_hello_and_forged_auth():
    d = dialer()
    d.start(0.0)
    d.receive(hello(), 0.0)
    assert d.receive(hello(), 0.0)[1] == LinkRefused("HELLO sent twice")
    d = dialer()
    d.start(0.0)
    d.receive(hello(), 0.0)
    assert d.receive(Frame("AUTH", "003", 0, {"response": "00"}), 0.0)[1] == LinkRefused("AUTH from 003, not 002")


def test_replayed_response_is_refused():
    """An AUTH recorded from one handshake is worthless in another (new challenges)."""
    [h] = sent(dialer().start(0.0))
    hello_from_b, auth_from_b = sent(acceptor().receive(h, 0.0))
    d = dialer(rand=b"\x03" * 16)
    d.start(0.0)
    d.receive(hello_from_b, 0.0)
    assert d.receive(auth_from_b, 0.0)[1] == LinkRefused("authentication failed")


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x05hello", LinkCodec().send(hello(version="1"))])
def test_garbage_never_reaches_the_handshake(data):
    """The codec refuses malformed bytes and mistyped HELLOs; the runtime then drops the link."""
    with pytest.raises(LinkProtocolError):
        LinkCodec().receive_data(data)


def test_timeout():
    d = dialer(now=100.0)
    d.start(100.0)
    assert d.check_timeout(129.9) == []
    out = d.check_timeout(130.0)
    assert out[1] == LinkRefused("handshake timed out after 30s") and d.state is State.FAILED
    assert d.check_timeout(200.0) == []


def test_late_frame_times_out():
    d = dialer(timeout=5)
    d.start(0.0)
    assert d.receive(hello(), 6.0)[1] == LinkRefused("handshake timed out after 5s")


def test_no_timeout_once_established():
    d, a = dialer(), acceptor()
    wire(d, a)
    assert d.check_timeout(1e9) == []
    with pytest.raises(RuntimeError):
        d.receive(hello(), 2.0)


def test_bad_role():
    with pytest.raises(ValueError):
        dialer(role="listen")
