"""topology.session and topology.dialer on their own: they need only relay.proto and a small owner."""

from types import SimpleNamespace

from relay.proto.link import LinkCodec
from topology.dialer import Dialer
from topology.session import LinkSession

SECRET = "a-shared-link-secret"


class Owner:
    """The least a session needs of its link layer (SessionOwner)."""

    def __init__(self, my_id, my_name):
        self.my_id, self.my_name = my_id, my_name
        self.last_error: dict[str, str] = {}
        self.timers = SimpleNamespace(handshake_timeout=30.0, timeout=60.0, ping_interval=20.0)
        self.events: list = []

    def secret_for(self, peer_id, peer_name):
        return SECRET

    def session_started(self, s):
        self.events.append("started")

    def authenticated(self, s, ev, now):
        s.peer_id, s.peer_name, s.established_at = ev.peer_id, ev.peer_name, now
        self.events.append(("authenticated", ev.peer_id))

    def handle(self, s, f, now):
        self.events.append(("frame", f.type))

    def send_to(self, s, ftype, payload):
        s.write_frame(ftype, s.codec.encode(ftype, self.my_id, 1, payload))

    def lost(self, s, reason, now):
        self.events.append(("lost", reason))


class End:
    def __init__(self):
        self.peer_host, self.peer_port = "127.0.0.1", 0
        self.out: list[bytes] = []
        self.closed = None

    def write(self, data):
        self.out.append(data)

    def close(self, reason=""):
        self.closed = reason


def _pair():
    a, b = Owner("001", "a.test"), Owner("002", "b.test")
    ta, tb = End(), End()
    block = SimpleNamespace(name="b.test", id="002", secret=SECRET)
    sb = LinkSession(b, tb, "accept", 0.0)
    sa = LinkSession(a, ta, "dial", 0.0, block)
    for _ in range(4):                       # pass the bytes back and forth until the handshake is done
        for src, dst in ((ta, sb), (tb, sa)):
            data, src.out[:] = b"".join(src.out), []
            if data:
                dst.data_received(data, 0.0)
    return a, b, sa, sb, ta, tb


def test_two_sessions_authenticate_each_other():
    a, b, sa, sb, *_ = _pair()
    assert ("authenticated", "002") in a.events and ("authenticated", "001") in b.events
    assert sa.established and sb.established


def test_frames_after_authentication_go_to_the_owner_and_bad_bytes_drop_the_link():
    a, b, sa, sb, ta, tb = _pair()
    sb.data_received(LinkCodec().encode("PING", "001", 0, {"token": "1.0"}), 1.0)
    assert b.events[-1] == ("frame", "PING")
    sb.data_received(b"\x00\x00\x00\x05hello", 2.0)
    assert sb.closed and tb.closed.startswith("protocol error: frame body is not JSON")
    [err] = LinkCodec().receive_data(tb.out[-1])
    assert err.type == "ERROR" and err.payload["reason"].startswith("protocol error")
    assert b.events[-1][0] == "lost"


def test_pings_then_a_silent_peer_times_out():
    a, b, sa, sb, ta, tb = _pair()
    ta.out.clear()
    sa.check(20.0)
    [ping] = LinkCodec().receive_data(b"".join(ta.out))
    assert ping.type == "PING" and ping.payload == {"token": "20.0"}
    sa.pong("20.0", 20.5)
    assert sa.lag == 0.5 and sa.ping_sent is None
    sa.check(61.0)
    assert sa.closed and a.events[-1] == ("lost", "Ping timeout: 61 seconds")


def test_the_dialer_backs_off_and_autoconnects_only_what_is_due():
    blocks = [SimpleNamespace(name="b.test", host="h", port=1, autoconnect=True),
              SimpleNamespace(name="c.test", host="h", port=2, autoconnect=False)]
    dialled, linked, errors = [], set(), {}
    d = Dialer(lambda: blocks, lambda: SimpleNamespace(retry_min=10.0, retry_max=40.0), linked.__contains__,
               lambda b: ("factory", b.name), lambda: 100.0, errors)
    d.dial = lambda block, factory, on_fail: dialled.append((block.name, factory, on_fail))
    d.sweep(0.0)
    assert [x[:2] for x in dialled] == [("b.test", ("factory", "b.test"))]
    d.sweep(0.0)
    assert len(dialled) == 1                            # still connecting
    dialled[0][2]("connection refused")                 # fails at now() == 100
    assert errors == {"b.test": "connection refused"} and 105.0 <= d.retry["b.test"][1] <= 115.0
    d.sweep(104.9)
    assert len(dialled) == 1
    d.sweep(115.0)
    assert len(dialled) == 2
    dialled[1][2]("refused again")
    assert d.retry["b.test"][0] == 2 and 110.0 <= d.retry["b.test"][1] <= 130.0
    d.suppressed.add("b.test")
    d.sweep(1000.0)
    assert len(dialled) == 2                            # unlinked by an operator: left alone
    assert d.connect("b.test", 1000.0) == "connecting to b.test (h:1)" and "b.test" not in d.suppressed
    linked.add("c.test")
    assert d.connect("c.test", 1000.0) == "already linked to c.test"
