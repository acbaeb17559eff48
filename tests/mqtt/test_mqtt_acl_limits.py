"""Authentication, per-topic rules (%u, %c, `who`), bounded queues and QoS 0 shedding on a real server."""

from __future__ import annotations

import socket
import time

import pytest
from mqttsupport import PASSWORD, Paho, RawMqtt, uniq, wait_for

from bridges.mqtt.codec import Puback, Publish, Pubrec

ACL = [
    {"action": "subscribe", "topic": "users/%u/#", "allow": True},
    {"action": "all", "topic": "users/#", "allow": False},
    {"action": "publish", "topic": "ro/#", "allow": False},
    {"action": "all", "topic": "staff/#", "allow": True, "who": "staff"},
    {"action": "all", "topic": "staff/#", "allow": False},
    {"action": "all", "topic": "client/%c/#", "allow": True},
    {"action": "all", "topic": "client/#", "allow": False},
]


@pytest.fixture(scope="module")
def srv(start_mqtt):
    s = start_mqtt({"allow_anonymous": False, "acl": ACL, "max_queued": 3, "qos0_backlog": 65536,
                    "max_keepalive": 30},
                   acl={"staff": {"account": ["sam"]}}, limits={"sendq": 8 * 1024 * 1024})
    for name in ("uma", "sam", "vic"):
        s.register(name)
    return s


def _raw(srv, cid=None, version=5, user="uma", **kw) -> RawMqtt:
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(cid or uniq(), version=version, username=user, password=PASSWORD, **kw).reason_code == 0
    return c


def test_anonymous_refused(srv):
    assert RawMqtt(srv.mqtt_port).connect(uniq()).reason_code == 0x87
    assert RawMqtt(srv.mqtt_port).connect(uniq(), version=4).reason_code == 5
    p = Paho(srv.mqtt_port, uniq(), connect=False)
    assert p.connect(expect_ok=False)[1].value == 0x87
    p.close()


def test_server_keep_alive(srv):
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(uniq(), keepalive=0, username="uma", password=PASSWORD).properties["server_keep_alive"] == 30
    c = RawMqtt(srv.mqtt_port)
    assert "server_keep_alive" not in c.connect(uniq(), keepalive=20, username="uma", password=PASSWORD).properties


def test_subscribe_rules(srv):
    c = _raw(srv)
    assert c.subscribe("users/uma/inbox", "users/uma/#", "users/vic/#", "users/#", "users/+/inbox",
                       qos=1).reason_codes == [1, 1, 0x87, 0x87, 0x87]
    old = _raw(srv, version=4)
    assert old.subscribe("users/uma/x", "users/vic/x", qos=2).reason_codes == [2, 0x80]
    # `who`: the staff acl (account sam) may use staff/#, others may not.
    assert c.subscribe("staff/news", qos=0, pid=2).reason_codes == [0x87]
    sam = _raw(srv, user="sam")
    assert sam.subscribe("staff/news", qos=0).reason_codes == [0]
    # %c: a client's own subtree.
    cid = uniq("cx")
    mine = _raw(srv, cid=cid)
    assert mine.subscribe(f"client/{cid}/#", f"client/{cid}x/#", qos=0).reason_codes == [0, 0x87]
    for x in (c, old, sam, mine):
        x.close()


def test_publish_rules(srv):
    watcher = _raw(srv, user="sam")
    watcher.subscribe("ro/#", "staff/#", qos=1)
    before = srv.stats()["refused_publish"]
    c = _raw(srv)
    c.send(Publish("ro/x", b"no", 1, packet_id=1))
    assert c.expect(Puback).reason_code == 0x87
    c.send(Publish("ro/x", b"no", 2, packet_id=2))
    assert c.expect(Pubrec).reason_code == 0x87
    c.send(Publish("ro/x", b"no", 0))
    c.send(Publish("staff/x", b"no", 1, packet_id=3))
    assert c.expect(Puback).reason_code == 0x87
    old = _raw(srv, version=4)
    old.send(Publish("ro/y", b"no", 1, packet_id=1))
    assert old.expect(Puback).packet_id == 1          # 3.1.1: acknowledged, not delivered
    sam = _raw(srv, user="sam")
    sam.send(Publish("staff/x", b"yes", 1, packet_id=1))
    sam.expect(Puback)
    p = watcher.expect(Publish)
    assert (p.topic, p.payload) == ("staff/x", b"yes")
    watcher.sync()
    assert watcher.publishes() == []
    assert srv.stats()["refused_publish"] == before + 5


def test_queue_is_bounded_and_overflow_counted(srv):
    cid, topic = uniq("q"), f"q/{uniq()}"
    c = _raw(srv, cid=cid, properties={"session_expiry_interval": 600})
    c.subscribe(topic, qos=1)
    c.close()
    wait_for(lambda: _offline(srv, cid), what="offline")
    before = srv.stats()["dropped_overflow"]
    pub = _raw(srv, user="sam")
    for i in range(5):
        pub.send(Publish(topic, str(i).encode(), 1, packet_id=i + 1))
    for _ in range(5):
        pub.expect(Puback)
    assert srv.stats()["dropped_overflow"] == before + 2
    assert "queue full" in srv.log()
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(cid, clean=False, username="uma", password=PASSWORD,
                     properties={"session_expiry_interval": 600}).session_present
    got = [c.expect(Publish).payload for _ in range(3)]
    assert got == [b"0", b"1", b"2"]


def _offline(srv, cid) -> bool:
    import json
    return any(s["client_id"] == cid and not s["connected"]
               for s in json.loads(srv.ctl("mqtt", "--json", "sessions").stdout))


def test_qos0_to_a_stalled_reader_is_dropped_and_counted(srv):
    topic = f"open/{uniq()}"
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", srv.mqtt_port))
    slow = RawMqtt.__new__(RawMqtt)
    slow.sock, slow.packets, slow.eof = stalled, [], False
    from bridges.mqtt.codec import MqttConnection
    slow.codec = MqttConnection(server_side=False)
    assert slow.connect(uniq(), username="vic", password=PASSWORD).reason_code == 0
    slow.subscribe(topic, qos=0)
    pub = _raw(srv, user="vic")
    before = srv.stats()["dropped_qos0"]
    chunk = b"x" * 60000
    deadline = time.monotonic() + 20
    sent = 0
    while srv.stats()["dropped_qos0"] == before and time.monotonic() < deadline:
        for _ in range(50):
            pub.send(Publish(topic, chunk, 0))
            sent += 1
        pub.sync()
    assert srv.stats()["dropped_qos0"] > before
    # The slow reader is still connected and gets what was not shed.
    stalled.settimeout(10)
    slow.sync(timeout=20)
    assert 0 < len(slow.publishes()) < sent
    slow.close()
