"""MQTT is one protocol on the core's topic service: a second, test-only protocol subscribes and
publishes on the same topics as MQTT clients, here and across in-memory server links, and obeys
the same access rules (MQTT's `acl:`)."""

from __future__ import annotations

import pytest
from support_net import Wire

from bridges.mqtt.client import Client
from bridges.mqtt.codec import Connack, Connect, MqttConnection, Puback, Publish, Suback, Subscribe, SubscriptionOptions
from relay.core.interfaces import TopicSubscriber
from relay.core.topics import TopicItem


class FakeTransport:
    def __init__(self):
        self.peer_host, self.peer_port, self.tls, self.proto = "127.0.0.1", 1, False, "mqtt"
        self.out: list[bytes] = []
        self.closed = False
        self.closing = False
        self.backlog = 0

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out.append(data)

    def close(self, reason: str = "") -> None:
        self.closed = True


class Mqtt:
    """An MQTT 5.0 client of one core's broker, without sockets."""

    def __init__(self, w: Wire, core: str, cid: str, username: str | None = None):
        self.w = w
        broker = w.cores[core].modules.loaded["mqtt"].state["broker"]
        self.t = FakeTransport()
        self.client = Client(broker, self.t, w.now)
        self.codec = MqttConnection(server_side=False)
        self.packets: list = []
        self.pid = 0
        self.send(Connect(cid, True, 0, protocol_level=5, username=username))
        assert self.take(Connack)[0].reason_code == 0

    def send(self, packet) -> None:
        self.client.data_received(self.codec.send(packet), self.w.now)
        self.w.pump()

    def take(self, kind) -> list:
        data, self.t.out = b"".join(self.t.out), []
        if data:
            self.packets.extend(self.codec.receive_data(data))
        got = [p for p in self.packets if type(p) is kind]
        self.packets = [p for p in self.packets if type(p) is not kind]
        return got

    def subscribe(self, f: str, qos: int = 1) -> int:
        self.pid += 1
        self.send(Subscribe(self.pid, [(f, SubscriptionOptions(qos))]))
        return self.take(Suback)[0].reason_codes[0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, props=None) -> int | None:
        self.pid += 1
        self.send(Publish(topic, payload, qos, retain, packet_id=self.pid if qos else None, properties=props or {}))
        return self.take(Puback)[0].reason_code if qos == 1 else None

    def received(self) -> list[tuple[str, bytes, int]]:
        return [(p.topic, p.payload, p.qos) for p in self.take(Publish)]


class Probe(TopicSubscriber):
    """The test-only protocol: a subscriber that records items."""

    online = True

    def __init__(self):
        self.items: list = []

    def item_published(self, item, options, now):
        self.items.append(item)

    def got(self) -> list[tuple[str, bytes]]:
        return [(i.topic, i.payload) for i in self.items]


MQTT = {"persist": False, "sys_interval": 0,
        "acl": [{"action": "all", "topic": "secret/#", "allow": False}]}


@pytest.fixture
def w(tmp_path):
    w = Wire(tmp_path, ["a", "b"], modules={"mqtt": MQTT})
    w.link("a", "b")
    yield w
    for c in w.cores.values():
        c.modules.unload_all()
        c.storage.close()


def test_mqtt_and_another_protocol_share_topics_in_both_directions(w):
    a, b = w.cores["a"].topics, w.cores["b"].topics
    probe_a, probe_b = Probe(), Probe()
    a.subscribe("sensors/#", probe_a, "probe-options")
    b.subscribe("sensors/+", probe_b)
    m_a, m_b = Mqtt(w, "a", "ma"), Mqtt(w, "b", "mb")
    assert m_b.subscribe("sensors/#") == 1
    w.tick(0.3)
    # MQTT publishes: the other protocol gets the item (metadata: the MQTT properties), here and there.
    assert m_a.publish("sensors/1", b"21.5", props={"content_type": "text/plain"}) == 0
    assert probe_a.got() == [("sensors/1", b"21.5")] and probe_b.got() == [("sensors/1", b"21.5")]
    assert probe_a.items[0].metadata == {"content_type": "text/plain"}
    assert probe_a.items[0].publisher == "ma"
    assert m_b.received() == [("sensors/1", b"21.5", 1)]
    # The other protocol publishes: MQTT clients here and on the other server get it as a PUBLISH,
    # with only MQTT's forwardable properties.
    a.publish(TopicItem("sensors/2", b"from-probe", qos=1, metadata={"content_type": "x", "node": "n1"},
                        publisher="probe@a"), w.now)
    w.pump()
    assert m_b.received() == [("sensors/2", b"from-probe", 1)]
    assert probe_b.got()[-1] == ("sensors/2", b"from-probe")
    assert m_a.subscribe("sensors/#", qos=0) == 0
    b.publish(TopicItem("sensors/3", b"q0"), w.now)
    w.pump()
    assert m_a.received() == [("sensors/3", b"q0", 0)] and probe_a.got()[-1] == ("sensors/3", b"q0")


def test_a_retained_item_of_another_protocol_is_an_mqtt_retained_message(w):
    w.cores["a"].topics.publish(TopicItem("state/door", b"open", qos=1, retain=True), w.now)
    w.pump()
    m = Mqtt(w, "b", "late")
    assert m.subscribe("state/#") == 1
    [p] = m.take(Publish)
    assert (p.topic, p.payload, p.retain) == ("state/door", b"open", True)
    # MQTT clears it (empty retained payload): gone for the other protocol too, on both servers.
    Mqtt(w, "b", "clearer").publish("state/door", b"", retain=True)
    assert w.cores["a"].topics.retained.get("state/door") is None
    assert w.cores["b"].topics.retained.get("state/door") is None


def test_one_set_of_access_rules_for_every_protocol(w):
    svc = w.cores["a"].topics
    m = Mqtt(w, "a", "m")
    assert m.subscribe("secret/x") == 0x87
    assert m.publish("secret/x", b"no") == 0x87
    # The same rules, asked by another protocol, from MQTT's acl: option.
    assert not svc.may_subscribe("secret/x", None, "probe", None, None)
    assert not svc.may_publish("secret/x", None, "probe", None, None)
    assert svc.may_publish("public/x", None, "probe", None, None)


def test_unloading_mqtt_leaves_the_service_to_the_other_protocols(w):
    svc = w.cores["a"].topics
    probe = Probe()
    svc.subscribe("t/#", probe)
    m = Mqtt(w, "a", "m")
    m.subscribe("t/#")
    assert svc.filter_refs == {"t/#": 2}
    w.cores["a"].modules.unload("mqtt")
    assert svc.filter_refs == {"t/#": 1} and svc.acl is None
    svc.publish(TopicItem("t/1", b"still"), w.now)
    assert probe.got() == [("t/1", b"still")]
