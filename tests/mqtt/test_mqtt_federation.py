"""MQTT federation between Core objects wired by an in-memory router (no sockets, no clock).

The fake router implements the link layer's interface as federation.py uses it:
`send_extension(ftype, payload, servers, exclude_link)` and the `link_extension`,
`link_up`, `link_down` hooks; payloads take a JSON round trip, as on a real link.
"""

from __future__ import annotations

import json
from collections import deque

import pytest

from bridges.mqtt.codec import (Connack, Connect, MqttConnection, Puback, Publish, Pubrec, Pubrel, Suback,
                                Subscribe, SubscriptionOptions, Unsubscribe)
from bridges.mqtt.client import Client
from relay.core.config import parse
from relay.core.server import Core

T0 = 1000.0


class Hub:
    """Servers and links; frames are queued and delivered by `settle`."""

    def __init__(self):
        self.cores: dict[str, Core] = {}
        self.links: set[frozenset] = set()
        self.queue: deque = deque()
        self.frames: list[tuple[str, str, frozenset | None, dict]] = []
        self.now = T0

    def reachable(self, sid: str) -> set[str]:
        seen, todo = {sid}, [sid]
        while todo:
            x = todo.pop()
            for link in self.links:
                if x in link:
                    (y,) = link - {x}
                    if y not in seen:
                        seen.add(y)
                        todo.append(y)
        return seen

    def link(self, a: str, b: str) -> None:
        self.links.add(frozenset((a, b)))
        self.cores[a].hooks.run("link_up", b)
        self.cores[b].hooks.run("link_up", a)

    def unlink(self, a: str, b: str) -> None:
        """A split whose hold window has ended: every server hears that the unreachable ones are gone."""
        self.links.discard(frozenset((a, b)))
        for x in self.cores:
            lost = sorted(set(self.cores) - self.reachable(x))
            if x in (a, b):
                self.cores[x].hooks.run("link_down", b if x == a else a, lost)
            if lost:
                self.cores[x].hooks.run("servers_gone", lost)

    def settle(self, dt: float = 0.0) -> None:
        """Advance the clock by dt, run due timers everywhere, deliver frames until quiet."""
        self.now += dt
        for _ in range(100):
            for c in self.cores.values():
                c.tick(self.now)
            if not self.queue:
                return
            while self.queue:
                target, ftype, origin, payload = self.queue.popleft()
                claimed = self.cores[target].hooks.run("link_extension", ftype, origin, payload, origin)
                assert claimed is not None, f"{ftype} not claimed by {target}"
        raise AssertionError("frames keep flowing")


class FakeRouter:
    def __init__(self, hub: Hub, sid: str):
        self.hub, self.sid = hub, sid

    def send_extension(self, ftype, payload, servers=None, exclude_link=None):
        reach = self.hub.reachable(self.sid) - {self.sid}
        targets = reach if servers is None else reach & set(servers)
        data = json.loads(json.dumps(payload))
        self.hub.frames.append((self.sid, ftype, None if servers is None else frozenset(servers), data))
        for t in sorted(targets):
            self.hub.queue.append((t, ftype, self.sid, data))

    def __getattr__(self, name):
        # The rest of the router interface (users, channels, messages): nothing crosses in these tests.
        return lambda *a, **k: None


class FakeTransport:
    def __init__(self, host="127.0.0.1"):
        self.peer_host, self.peer_port, self.tls = host, 1, False
        self.out: list[bytes] = []
        self.closed = False
        self.backlog = 0

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out.append(data)

    def close(self, reason: str = "") -> None:
        self.closed = True


class Conn:
    """An MQTT client talking to one Core's broker through a fake transport."""

    ids = iter(range(1, 1 << 20))

    def __init__(self, core: Core, cid: str, version: int = 5):
        self.broker = core.modules.loaded["mqtt"].state["broker"]
        self.t = FakeTransport()
        self.client = Client(self.broker, self.t, core.now())
        self.codec = MqttConnection(server_side=False)
        self.packets: list = []
        self.now = core.now
        self.send(Connect(cid, True, 0, protocol_level=version))
        assert self.take(Connack)[0].reason_code == 0

    def send(self, packet) -> None:
        self.client.data_received(self.codec.send(packet), self.now())

    def _read(self) -> None:
        data, self.t.out = b"".join(self.t.out), []
        if data:
            self.packets.extend(self.codec.receive_data(data))

    def take(self, kind) -> list:
        self._read()
        got = [p for p in self.packets if type(p) is kind]
        self.packets = [p for p in self.packets if type(p) is not kind]
        return got

    def subscribe(self, *filters, qos: int = 1) -> None:
        pid = next(self.ids) % 65535 + 1
        self.send(Subscribe(pid, [(f, SubscriptionOptions(qos)) for f in filters]))
        assert all(rc < 0x80 for rc in self.take(Suback)[0].reason_codes)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        pid = next(self.ids) % 65535 + 1 if qos else None
        self.send(Publish(topic, payload, qos, retain, packet_id=pid))
        if qos == 2:
            self.take(Pubrec)
            self.send(Pubrel(pid))

    def received(self) -> list[Publish]:
        got = self.take(Publish)
        for p in got:
            if p.qos == 1:
                self.send(Puback(p.packet_id))
        return got


@pytest.fixture
def net(tmp_path):
    hub = Hub()
    for sid, name in (("001", "a.relay.local"), ("002", "b.relay.local"), ("003", "c.relay.local")):
        cfg = parse({"server": {"id": sid, "name": name}, "data_dir": str(tmp_path / sid)})
        core = Core(cfg, T0)
        core.net.router = FakeRouter(hub, sid)
        core.modules.load("mqtt", {"persist": False, "sys_interval": 0})
        hub.cores[sid] = core
    yield hub
    for c in hub.cores.values():
        c.modules.unload_all()
        c.storage.close()


def _fed(hub, sid):
    return hub.cores[sid].modules.loaded["mqtt"].state["broker"].fed


def test_publish_goes_only_to_servers_with_matching_subscriptions(net):
    net.link("001", "002")
    net.link("002", "003")
    net.settle()
    a, b, c = (Conn(net.cores[s], f"c{s}") for s in ("001", "002", "003"))
    b.subscribe("sensors/+/temp", qos=1)
    net.settle(0.3)
    assert _fed(net, "001").sets["002"][1] == {"sensors/+/temp"}
    assert _fed(net, "003").sets["002"][1] == {"sensors/+/temp"}
    net.frames.clear()
    a.publish("sensors/1/temp", b"21.5", qos=2)
    a.publish("other/x", b"nobody", qos=1)
    net.settle()
    pubs = [(src, servers, p["topic"]) for src, ftype, servers, p in net.frames if ftype == "MQTT_PUB"]
    assert pubs == [("001", frozenset({"002"}), "sensors/1/temp")]
    got = b.received()
    assert [(p.topic, p.payload, p.qos) for p in got] == [("sensors/1/temp", b"21.5", 1)]  # min(2, 1)
    assert c.received() == [] and a.received() == []
    # Unsubscribing empties the set: nothing is forwarded any more.
    b.send(Unsubscribe(99, ["sensors/+/temp"]))
    net.settle(0.3)
    assert _fed(net, "001").sets["002"][1] == frozenset()
    net.frames.clear()
    a.publish("sensors/2/temp", b"x")
    net.settle()
    assert [f for f in net.frames if f[1] == "MQTT_PUB"] == []


def test_subscription_changes_are_debounced(net):
    net.link("001", "002")
    net.settle(1.0)
    b = Conn(net.cores["002"], "cb")
    net.frames.clear()
    for i in range(20):
        b.subscribe(f"x/{i}")
    net.settle(0.05)
    net.settle(0.05)
    net.settle(0.3)
    subs = [p for src, ftype, _, p in net.frames if ftype == "MQTT_SUB" and src == "002"]
    assert len(subs) == 1 and len(subs[0]["filters"]) == 20
    for i in range(5):
        b.subscribe(f"y/{i}")
        net.settle(0.05)
    net.settle(0.3)
    subs = [p for src, ftype, _, p in net.frames if ftype == "MQTT_SUB" and src == "002"]
    assert 2 <= len(subs) <= 3                     # at most one every 0.2 s
    assert len(subs[-1]["filters"]) == 25


def test_retained_messages_are_copied_to_every_server(net):
    net.link("001", "002")
    net.link("001", "003")
    net.settle(0.3)
    a = Conn(net.cores["001"], "ca")
    a.publish("state/door", b"open", qos=1, retain=True)
    net.settle()
    for sid in ("002", "003"):
        late = Conn(net.cores[sid], f"late{sid}")
        late.subscribe("state/#", qos=1)
        got = late.received()
        assert [(p.topic, p.payload, p.retain) for p in got] == [("state/door", b"open", True)]
    a.publish("state/door", b"", qos=1, retain=True)       # cleared everywhere
    net.settle()
    late = Conn(net.cores["003"], "later")
    late.subscribe("state/#")
    assert late.received() == []


def test_shared_group_is_served_round_robin_across_servers(net):
    net.link("001", "002")
    net.link("002", "003")
    net.settle()
    a1 = Conn(net.cores["001"], "a1")
    b1, b2 = Conn(net.cores["002"], "b1"), Conn(net.cores["002"], "b2")
    for w in (a1, b1, b2):
        w.subscribe("$share/g/jobs/#", qos=1)
    net.settle(0.3)
    assert _fed(net, "003").sets["002"][1] == {"$share/g/jobs/#"}
    # Published on C (no local member): its slots are server 001 and server 002, in turn;
    # 002 rotates over its own two members.
    c = Conn(net.cores["003"], "pc")
    for i in range(8):
        c.publish(f"jobs/{i}", str(i).encode(), qos=1)
    net.settle()
    counts = {w: len(w.received()) for w in (a1, b1, b2)}
    assert counts == {a1: 4, b1: 2, b2: 2}
    # Published on A: slots are its own member and server 002; each message goes to one member only.
    for i in range(6):
        a1.publish(f"jobs/a{i}", b"x", qos=1)
    net.settle()
    counts = {w: len(w.received()) for w in (a1, b1, b2)}
    assert counts[a1] == 3 and counts[b1] + counts[b2] == 3
    frames = [p for _, ftype, _, p in net.frames if ftype == "MQTT_PUB"]
    assert all(list(p["shares"]) in (["001"], ["002"]) for p in frames if p["topic"].startswith("jobs/"))


def test_link_up_relays_known_sets_and_link_down_forgets(net):
    a, c = Conn(net.cores["001"], "a"), Conn(net.cores["003"], "c")
    a.subscribe("from/a")
    c.subscribe("from/c")
    net.settle(0.3)
    net.link("001", "002")
    net.settle(0.3)
    net.link("002", "003")          # C joins through B: A learns C's set, C learns A's (relayed by B)
    net.settle(0.3)
    assert _fed(net, "001").sets["003"][1] == {"from/c"}
    assert _fed(net, "003").sets["001"][1] == {"from/a"}
    c.publish("from/a", b"hello a")
    net.settle()
    assert [p.payload for p in a.received()] == [b"hello a"]
    net.unlink("002", "003")
    net.settle()
    assert "003" not in _fed(net, "001").sets and "001" not in _fed(net, "003").sets
    net.frames.clear()
    a.publish("from/c", b"gone")
    net.settle()
    assert [f for f in net.frames if f[1] == "MQTT_PUB"] == []


def test_stale_filter_sets_are_ignored(net):
    fed = _fed(net, "001")
    fed.on_extension("MQTT_SUB", "002", {"server": "002", "filters": ["new/#"], "ver": [5.0, 2]})
    fed.on_extension("MQTT_SUB", "003", {"server": "002", "filters": ["old/#"], "ver": [5.0, 1]})
    assert fed.sets["002"][1] == {"new/#"}
    fed.on_extension("MQTT_SUB", "002", {"server": "002", "filters": ["restarted/#"], "ver": [6.0, 1]})
    assert fed.sets["002"][1] == {"restarted/#"}
    assert fed.shared_candidates("x") == {}
    assert fed.on_extension("SOMETHING_ELSE", "002", {}) is None


def test_module_loaded_on_a_linked_server_learns_the_network(net):
    net.link("001", "002")
    net.settle()
    a = Conn(net.cores["001"], "a")
    a.subscribe("news/#")
    net.settle(0.3)
    core = net.cores["002"]
    core.modules.unload("mqtt")
    net.settle()
    core.modules.load("mqtt", {"persist": False, "sys_interval": 0})    # hello: A answers with its set
    net.settle()
    assert _fed(net, "002").sets["001"][1] == {"news/#"}
    b = Conn(core, "b")
    b.publish("news/today", b"extra", qos=1)
    net.settle()
    assert [p.payload for p in a.received()] == [b"extra"]
