"""The broker over real sockets with real clients: paho-mqtt (3.1.1 and 5.0) and a raw codec client."""

from __future__ import annotations

import time

import pytest
from mqttsupport import PASSWORD, Paho, RawMqtt, uniq, wait_for

from bridges.mqtt.codec import (Connack, Connect, Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback,
                                Unsuback, Unsubscribe, Will)


@pytest.fixture(scope="module")
def srv(mqtt_server):
    mqtt_server.register("alice")
    mqtt_server.register("bob")
    return mqtt_server


# ---------------------------------------------------------------------- CONNECT / CONNACK

def test_connack_codes(srv):
    # MQTT 3.1 ("MQIsdp", level 3) is refused with return code 1.
    c = RawMqtt(srv.mqtt_port)
    assert c.connect(uniq(), version=3).reason_code == 1
    assert c.wait_closed()
    # An unknown protocol level: "unacceptable protocol version" (a 3.1.1 CONNACK).
    c = RawMqtt(srv.mqtt_port)
    c.codec.send(Connect("x", protocol_level=4))        # the codec's state only; the bytes below go out
    c.send_raw(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01x")
    ack = c.expect(Connack)
    assert ack.reason_code == 1 and c.wait_closed()
    # Bad password / unknown user: 0x86 (5.0), 4 (3.1.1).
    assert RawMqtt(srv.mqtt_port).connect(uniq(), username="alice", password="wrong").reason_code == 0x86
    assert RawMqtt(srv.mqtt_port).connect(uniq(), version=4, username="alice",
                                          password="wrong").reason_code == 4
    assert RawMqtt(srv.mqtt_port).connect(uniq(), username="nobody", password="x").reason_code == 0x86
    # A good account.
    ok = RawMqtt(srv.mqtt_port).connect(uniq(), username="alice", password=PASSWORD)
    assert ok.reason_code == 0 and not ok.session_present
    props = ok.properties
    assert props["receive_maximum"] == 100 and props["maximum_packet_size"] > 0
    assert props["topic_alias_maximum"] == 10 and props["shared_subscription_available"] == 1
    # An empty client id: 5.0 gets one assigned; 3.1.1 needs clean session for it.
    ack = RawMqtt(srv.mqtt_port).connect("")
    assert ack.reason_code == 0 and ack.properties["assigned_client_identifier"].startswith("auto-")
    assert RawMqtt(srv.mqtt_port).connect("", version=4, clean=False).reason_code == 2
    assert RawMqtt(srv.mqtt_port).connect("", version=4, clean=True).reason_code == 0
    # paho sees the same codes.
    p = Paho(srv.mqtt_port, uniq(), username="bob", password="nope", connect=False)
    assert p.connect(expect_ok=False)[1].value == 0x86
    p.close()
    p = Paho(srv.mqtt_port, uniq(), version=4, username="bob", password=PASSWORD)
    p.close()


def test_session_takeover(srv):
    cid = uniq("take")
    a = RawMqtt(srv.mqtt_port)
    assert a.connect(cid, properties={"session_expiry_interval": 60}).reason_code == 0
    a.subscribe("to/" + cid, qos=1)
    b = RawMqtt(srv.mqtt_port)
    ack = b.connect(cid, clean=False, properties={"session_expiry_interval": 60})
    assert ack.reason_code == 0 and ack.session_present
    assert a.expect(Disconnect).reason_code == 0x8E
    assert a.wait_closed()
    # The session (its subscription) moved to the new connection.
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish("to/" + cid, b"x", 1, packet_id=1))
    pub.expect(Puback)
    assert b.expect(Publish).payload == b"x"
    # 3.1.1: the old connection is simply closed.
    c1 = RawMqtt(srv.mqtt_port)
    c1.connect(cid + "v4", version=4)
    c2 = RawMqtt(srv.mqtt_port)
    assert c2.connect(cid + "v4", version=4).reason_code == 0
    assert c1.wait_closed()
    assert srv.stats()["takeovers"] >= 2


# ---------------------------------------------------------------------- QoS flows

@pytest.mark.parametrize("version", [4, 5])
def test_qos_levels(srv, version):
    topic = f"q/{uniq()}"
    sub = Paho(srv.mqtt_port, uniq(), version=version)
    pub = Paho(srv.mqtt_port, uniq(), version=version)
    rcs = sub.subscribe(topic + "/+", qos=2) if version == 5 else sub.subscribe(topic + "/+", 2)
    assert [getattr(r, "value", r) for r in rcs] == [2]
    sub1 = Paho(srv.mqtt_port, uniq(), version=version)
    sub1.subscribe(topic + "/+", qos=1)
    for q in (0, 1, 2):
        pub.publish(f"{topic}/{q}", f"m{q}".encode(), qos=q)
    got = [sub.get() for _ in range(3)]
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        (f"{topic}/0", b"m0", 0), (f"{topic}/1", b"m1", 1), (f"{topic}/2", b"m2", 2)]
    got1 = sorted((m.topic, m.qos) for m in (sub1.get() for _ in range(3)))
    assert got1 == [(f"{topic}/0", 0), (f"{topic}/1", 1), (f"{topic}/2", 1)]   # min(publish, subscription)
    for c in (sub, sub1, pub):
        c.close()


def test_qos2_exactly_once_with_raw_flow(srv):
    topic = f"q2/{uniq()}"
    sub = RawMqtt(srv.mqtt_port)
    sub.connect(uniq())
    sub.subscribe(topic, qos=2)
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish(topic, b"once", 2, packet_id=7))
    assert pub.expect(Pubrec).packet_id == 7
    pub.send(Publish(topic, b"once", 2, dup=True, packet_id=7))   # resent before PUBREL: not routed again
    assert pub.expect(Pubrec).packet_id == 7
    pub.send(Pubrel(7))
    assert pub.expect(Pubcomp).reason_code == 0
    pub.send(Pubrel(7))                                            # unknown now
    assert pub.expect(Pubcomp).reason_code == 0x92
    p = sub.expect(Publish)
    assert p.qos == 2 and p.payload == b"once"
    sub.send(Pubrec(p.packet_id))
    assert sub.expect(Pubrel).packet_id == p.packet_id
    sub.send(Pubcomp(p.packet_id))
    sub.sync()
    assert sub.publishes() == []


# ---------------------------------------------------------------------- sessions

@pytest.mark.parametrize("version", [4, 5])
def test_persistent_session_gets_queued_messages(srv, version):
    cid, topic = uniq("ps"), f"ps/{uniq()}"
    props = {"SessionExpiryInterval": 300} if version == 5 else None
    c = Paho(srv.mqtt_port, cid, version=version, clean=False, properties=props)
    c.subscribe(topic, qos=2)
    c.close()
    wait_for(lambda: any(s["client_id"] == cid and not s["connected"] for s in _sessions(srv)),
             what="session offline")
    pub = Paho(srv.mqtt_port, uniq())
    pub.publish(topic, b"zero", qos=0)
    pub.publish(topic, b"one", qos=1)
    pub.publish(topic, b"two", qos=2)
    wait_for(lambda: next(s for s in _sessions(srv) if s["client_id"] == cid)["queued"] == 2, what="queued")
    c = Paho(srv.mqtt_port, cid, version=version, clean=False, properties=props)
    assert c.connack[0].session_present
    got = [c.get() for _ in range(2)]
    assert [(m.payload, m.qos) for m in got] == [(b"one", 1), (b"two", 2)]   # QoS 0 is not queued offline
    # Clean start discards the session.
    c.close()
    c = Paho(srv.mqtt_port, cid, version=version, clean=True)
    assert not c.connack[0].session_present
    c.close()
    pub.close()


def test_unacknowledged_messages_are_redelivered(srv):
    cid, topic = uniq("rd"), f"rd/{uniq()}"
    s = RawMqtt(srv.mqtt_port)
    s.connect(cid, clean=True, properties={"session_expiry_interval": 300})
    s.subscribe(topic + "/1", qos=1, pid=1)
    s.subscribe(topic + "/2", qos=2, pid=2)
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish(topic + "/1", b"a", 1, packet_id=1))
    pub.send(Publish(topic + "/2", b"b", 2, packet_id=2))
    pub.expect(Puback)
    pub.expect(Pubrec)
    pub.send(Pubrel(2))
    p1 = s.expect(Publish, pred=lambda p: p.payload == b"a")
    p2 = s.expect(Publish, pred=lambda p: p.payload == b"b")
    s.send(Pubrec(p2.packet_id))           # QoS 2 half done; QoS 1 not acknowledged at all
    s.expect(Pubrel)
    s.close()
    s = RawMqtt(srv.mqtt_port)
    ack = s.connect(cid, clean=False, properties={"session_expiry_interval": 300})
    assert ack.session_present
    again = s.expect(Publish)
    assert (again.payload, again.packet_id, again.dup) == (b"a", p1.packet_id, True)
    assert s.expect(Pubrel).packet_id == p2.packet_id
    s.send(Puback(p1.packet_id))
    s.send(Pubcomp(p2.packet_id))
    s.sync()
    assert s.publishes() == []
    assert next(x for x in _sessions(srv) if x["client_id"] == cid)["inflight"] == 0


def _sessions(srv) -> list[dict]:
    import json
    return json.loads(srv.ctl("mqtt", "--json", "sessions").stdout)


# ---------------------------------------------------------------------- retained, wills, expiry

def test_retained_set_replace_clear(srv):
    topic = f"ret/{uniq()}"
    pub = Paho(srv.mqtt_port, uniq(), version=4)
    pub.publish(topic, b"first", qos=1, retain=True)
    pub.publish(topic, b"second", qos=1, retain=True)
    s = Paho(srv.mqtt_port, uniq())
    s.subscribe(topic, qos=1)
    m = s.get()
    assert (m.payload, m.retain) == (b"second", True)
    pub.publish(topic, b"live", qos=1, retain=True)
    m = s.get()
    assert (m.payload, m.retain) == (b"live", False)   # live delivery: retain cleared (no RAP)
    pub.publish(topic, b"", qos=1, retain=True)          # clears it
    assert s.get().payload == b""
    s2 = Paho(srv.mqtt_port, uniq())
    s2.subscribe(topic, qos=1)
    s2.subscribe(f"mark/{topic}", qos=1)
    pub.publish(f"mark/{topic}", b"m", qos=1)
    assert [m.topic for m in s2.until(f"mark/{topic}")] == [f"mark/{topic}"]
    for c in (pub, s, s2):
        c.close()


def test_will_published_on_abnormal_close_only(srv):
    topic = f"will/{uniq()}"
    watcher = Paho(srv.mqtt_port, uniq())
    watcher.subscribe(topic + "/#", qos=1)
    a = RawMqtt(srv.mqtt_port)
    a.connect(uniq(), will=Will(topic + "/a", b"a died", 1, False, {"user_property": [("k", "v")]}))
    a.close()                                  # no DISCONNECT: the will goes out
    m = watcher.get()
    assert (m.topic, m.payload) == (topic + "/a", b"a died")
    b = RawMqtt(srv.mqtt_port)
    b.connect(uniq(), version=4, will=Will(topic + "/b", b"b died", 0))
    b.disconnect()                             # a normal DISCONNECT: no will
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq(), will=Will(topic + "/c", b"c asked", 0))
    c.disconnect(0x04)                         # "disconnect with will message"
    assert watcher.get().topic == topic + "/c"
    watcher.close()


def test_will_delay(srv):
    topic = f"wd/{uniq()}"
    watcher = Paho(srv.mqtt_port, uniq())
    watcher.subscribe(topic + "/#", qos=1)
    # Reconnecting within the will delay cancels the will.
    cid = uniq("wd")
    a = RawMqtt(srv.mqtt_port)
    a.connect(cid, properties={"session_expiry_interval": 60},
              will=Will(topic + "/cancelled", b"x", 1, False, {"will_delay_interval": 30}))
    a.close()
    wait_for(lambda: next(s for s in _sessions(srv) if s["client_id"] == cid)["will_pending"], what="will pending")
    a = RawMqtt(srv.mqtt_port)
    assert a.connect(cid, clean=False, properties={"session_expiry_interval": 60}).session_present
    assert not next(s for s in _sessions(srv) if s["client_id"] == cid)["will_pending"]
    a.disconnect()
    # A short delay: the will comes, but not at once.
    b = RawMqtt(srv.mqtt_port)
    b.connect(uniq(), properties={"session_expiry_interval": 60},
              will=Will(topic + "/late", b"late", 1, False, {"will_delay_interval": 1}))
    closed = time.monotonic()
    b.close()
    m = watcher.get()
    assert m.topic == topic + "/late" and time.monotonic() - closed >= 0.8
    assert watcher.drain() == []
    watcher.close()


def test_message_expiry(srv):
    cid, topic = uniq("mx"), f"mx/{uniq()}"
    s = RawMqtt(srv.mqtt_port)
    s.connect(cid, properties={"session_expiry_interval": 300})
    s.subscribe(topic, qos=1)
    s.close()
    wait_for(lambda: next(x for x in _sessions(srv) if x["client_id"] == cid)["connected"] is False,
             what="offline")
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish(topic, b"short", 1, packet_id=1, properties={"message_expiry_interval": 1}))
    pub.send(Publish(topic, b"long", 1, packet_id=2, properties={"message_expiry_interval": 120}))
    # A retained message with the same 1 s expiry: when the server drops it, 1 s has passed there.
    pub.send(Publish(topic + "/clock", b"tick", 1, retain=True, packet_id=3,
                     properties={"message_expiry_interval": 1}))
    for _ in range(3):
        pub.expect(Puback)
    probe = RawMqtt(srv.mqtt_port)
    probe.connect(uniq())
    assert probe.subscribe(topic + "/clock", qos=1, pid=1).reason_codes == [1]
    assert probe.expect(Publish).properties["message_expiry_interval"] <= 1
    wait_for(lambda: _retained_gone(srv, topic + "/clock"), timeout=10, interval=0.1, what="retained expiry")
    s = RawMqtt(srv.mqtt_port)
    assert s.connect(cid, clean=False, properties={"session_expiry_interval": 300}).session_present
    p = s.expect(Publish)
    assert p.payload == b"long" and 110 <= p.properties["message_expiry_interval"] <= 120
    s.sync()
    assert s.publishes() == []


def _retained_gone(srv, topic) -> bool:
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq())
    c.subscribe(topic, qos=0)
    c.sync()
    gone = not c.publishes()
    c.close()
    return gone


# ---------------------------------------------------------------------- 5.0 features

def test_topic_aliases_both_directions(srv):
    topic = f"alias/{uniq()}/long/topic/name"
    sub = RawMqtt(srv.mqtt_port)
    sub.connect(uniq(), properties={"topic_alias_maximum": 4})
    sub.subscribe(topic, qos=0)
    plain = RawMqtt(srv.mqtt_port)
    plain.connect(uniq())
    plain.subscribe(topic, qos=0)
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.codec.peer_topic_alias_maximum = 10
    pub.send(Publish(topic, b"1", properties={"topic_alias": 3}))
    pub.send(Publish("", b"2", properties={"topic_alias": 3}))       # the alias alone
    first, second = sub.expect(Publish), sub.expect(Publish)
    # Outbound: the server uses its own alias towards a client that allows them.
    assert first.properties["topic_alias"] == second.properties["topic_alias"]
    assert sub.codec._aliases[first.properties["topic_alias"]] == topic
    assert (first.topic, first.payload, second.topic, second.payload) == (topic, b"1", topic, b"2")
    # A client that allows none gets full topics.
    a, b = plain.expect(Publish), plain.expect(Publish)
    assert (a.topic, b.topic) == (topic, topic) and "topic_alias" not in a.properties
    # An alias above the server's maximum is a protocol violation: DISCONNECT 0x94.
    pub.codec.peer_topic_alias_maximum = 100
    pub.send(Publish(topic, b"3", properties={"topic_alias": 50}))
    assert pub.expect(Disconnect).reason_code == 0x94


def test_receive_maximum_limits_inflight(srv):
    topic = f"rm/{uniq()}"
    sub = RawMqtt(srv.mqtt_port)
    sub.connect(uniq(), properties={"receive_maximum": 2})
    sub.subscribe(topic, qos=1)
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    for i in range(5):
        pub.send(Publish(topic, str(i).encode(), 1, packet_id=i + 1))
    for _ in range(5):
        pub.expect(Puback)
    sub.sync()
    got = sub.publishes()
    assert [p.payload for p in got] == [b"0", b"1"]
    sub.send(Puback(got[0].packet_id))
    nxt = sub.expect(Publish)
    assert nxt.payload == b"2"
    sub.sync()
    assert sub.publishes() == []
    for p in (got[1], nxt):
        sub.send(Puback(p.packet_id))
    assert [sub.expect(Publish).payload for _ in range(2)] == [b"3", b"4"]


def test_client_exceeding_our_receive_maximum_is_disconnected(srv):
    c = RawMqtt(srv.mqtt_port)
    ack = c.connect(uniq())
    n = ack.properties["receive_maximum"]
    for i in range(n + 1):
        c.send(Publish(f"rmx/{i}", b"x", 2, packet_id=i + 1))
    assert c.expect(Disconnect).reason_code == 0x93
    assert c.wait_closed()


def test_shared_subscription_round_robin(srv):
    topic = f"work/{uniq()}"
    mark = f"mark/{topic}"
    workers = [Paho(srv.mqtt_port, uniq()) for _ in range(3)]
    for w in workers:
        w.subscribe(f"$share/g1/{topic}", qos=1)
        w.subscribe(mark, qos=1)
    watcher = Paho(srv.mqtt_port, uniq())
    watcher.subscribe(topic, qos=1)
    pub = Paho(srv.mqtt_port, uniq())
    for i in range(6):
        pub.publish(topic, f"job{i}".encode(), qos=1)
    pub.publish(mark, b"m", qos=1)
    assert sorted(watcher.get().payload for _ in range(6)) == [f"job{i}".encode() for i in range(6)]
    got = [[m.payload for m in w.until(mark)][:-1] for w in workers]
    assert [len(g) for g in got] == [2, 2, 2]                   # strict round robin
    assert sorted(sum(got, [])) == [f"job{i}".encode() for i in range(6)]
    for c in (*workers, watcher, pub):
        c.close()


def test_no_local_and_retain_options(srv):
    topic = f"opt/{uniq()}"
    me = Paho(srv.mqtt_port, uniq())
    me.subscribe(topic, qos=1, noLocal=True)
    other = Paho(srv.mqtt_port, uniq())
    me.publish(topic, b"mine", qos=1)
    other.publish(topic, b"theirs", qos=1)
    assert me.get().payload == b"theirs"
    assert me.drain() == []
    # Retain handling: 0 sends on every subscribe, 1 only when new, 2 never.
    rtopic = f"rh/{uniq()}"
    other.publish(rtopic, b"kept", qos=1, retain=True)
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq())
    c.subscribe(rtopic, qos=1, pid=1, retain_handling=0)
    assert c.expect(Publish).retain
    c.subscribe(rtopic, qos=1, pid=2, retain_handling=0)
    assert c.expect(Publish).retain
    c.subscribe(rtopic, qos=1, pid=3, retain_handling=1)      # exists already: nothing
    c.sync()
    assert [p for p in c.publishes() if p.qos] == []
    c.send(Unsubscribe(4, [rtopic]))
    c.expect(Unsuback)
    c.subscribe(rtopic, qos=1, pid=5, retain_handling=1)      # new again: sent
    p = c.expect(Publish)
    c.send(Puback(p.packet_id))
    c.subscribe(rtopic + "/x", qos=1, pid=6, retain_handling=2)
    c.subscribe(rtopic, qos=1, pid=7, retain_handling=2)
    c.sync()
    assert [x for x in c.publishes()] == []
    # Retain As Published: a live retained message keeps its flag only for RAP subscribers.
    rap = RawMqtt(srv.mqtt_port)
    rap.connect(uniq())
    rap.subscribe(rtopic, qos=0, pid=1, retain_handling=2, retain_as_published=True)
    other.publish(rtopic, b"again", qos=1, retain=True)
    assert rap.expect(Publish).retain is True
    live = c.expect(Publish, pred=lambda p: p.payload == b"again")
    assert live.retain is False
    me.close()
    other.close()


def test_subscription_identifiers(srv):
    topic = f"sid/{uniq()}"
    c = Paho(srv.mqtt_port, uniq())
    c.subscribe(topic + "/+", qos=1, properties={"SubscriptionIdentifier": 7})
    c.subscribe(topic + "/#", qos=0, properties={"SubscriptionIdentifier": 9})
    pub = Paho(srv.mqtt_port, uniq())
    pub.publish(topic + "/a", b"x", qos=1)
    m = c.get()
    assert sorted(m.properties.SubscriptionIdentifier) == [7, 9] and m.qos == 1
    pub.publish(topic + "/a/b", b"y", qos=1)
    m = c.get()
    assert m.properties.SubscriptionIdentifier == [9] and m.qos == 0
    c.close()
    pub.close()


def test_sys_topics(srv):
    c = Paho(srv.mqtt_port, uniq())
    c.subscribe("$SYS/broker/#", qos=0)
    seen = {}
    deadline = time.monotonic() + 10
    want = {"$SYS/broker/clients/connected", "$SYS/broker/messages/received", "$SYS/broker/messages/sent",
            "$SYS/broker/subscriptions/count", "$SYS/broker/retained messages/count", "$SYS/broker/uptime"}
    # The first values are the retained ones, possibly published before this client connected:
    # wait for an update (every 0.5 s here) that counts it.
    while not (want <= set(seen) and int(seen["$SYS/broker/clients/connected"]) >= 1) \
            and time.monotonic() < deadline:
        m = c.get()
        seen[m.topic] = m.payload.decode()
    assert want <= set(seen)
    assert int(seen["$SYS/broker/clients/connected"]) >= 1
    assert seen["$SYS/broker/uptime"].endswith(" seconds")
    # '#' does not match $SYS topics.
    w = RawMqtt(srv.mqtt_port)
    w.connect(uniq())
    w.subscribe("#", qos=0)
    w.subscribe("+/broker/#", qos=0, pid=2)
    w.sync()
    assert not [p for p in w.publishes() if p.topic.startswith("$")]
    # Clients may not publish into $SYS.
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish("$SYS/broker/uptime", b"fake", 1, packet_id=1))
    assert pub.expect(Puback).reason_code == 0x87
    c.close()


def test_keepalive_timeout(srv):
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq(), keepalive=1, will=Will(f"ka/{uniq()}", b"gone", 0))
    started = time.monotonic()
    d = c.expect(Disconnect, timeout=10)
    assert d.reason_code == 0x8D and time.monotonic() - started >= 1.4
    assert c.wait_closed()


def test_unsubscribe_reason_codes(srv):
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq())
    c.subscribe("u/a", qos=0)
    c.send(Unsubscribe(9, ["u/a", "u/never"]))
    assert c.expect(Unsuback).reason_codes == [0, 0x11]
    assert isinstance(c.subscribe("u/b", qos=2, pid=3), Suback)


def test_properties_forwarded_and_client_maximum_packet_size(srv):
    topic = f"props/{uniq()}"
    small = RawMqtt(srv.mqtt_port)
    small.connect(uniq(), properties={"maximum_packet_size": 200})
    small.subscribe(topic, qos=1)
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    props = {"payload_format_indicator": 1, "content_type": "text/plain", "response_topic": "reply/here",
             "correlation_data": b"\x00\x01", "user_property": [("a", "1"), ("a", "2"), ("b", "x")]}
    before = srv.stats()["dropped_too_large"]
    pub.send(Publish(topic, b"y" * 500, 1, packet_id=1))       # larger than the client accepts: not sent
    pub.send(Publish(topic, b"small", 1, packet_id=2, properties=props))
    pub.expect(Puback)
    pub.expect(Puback)
    p = small.expect(Publish)
    assert p.payload == b"small"
    assert {k: p.properties[k] for k in props} == props
    small.send(Puback(p.packet_id))
    small.sync()
    assert small.publishes() == []
    assert srv.stats()["dropped_too_large"] == before + 1


def test_session_expires(srv):
    cid = uniq("exp")
    c = RawMqtt(srv.mqtt_port)
    c.connect(cid, properties={"session_expiry_interval": 1})
    c.subscribe("exp/x", qos=1)
    c.disconnect()
    wait_for(lambda: cid not in {s["client_id"] for s in _sessions(srv)}, what="session expiry")
    c = RawMqtt(srv.mqtt_port)
    assert not c.connect(cid, clean=False, properties={"session_expiry_interval": 1}).session_present
    # A DISCONNECT may shorten the expiry to 0: the session ends at once.
    c.send(Disconnect(0, {"session_expiry_interval": 0}))
    wait_for(lambda: cid not in {s["client_id"] for s in _sessions(srv)}, what="session gone")


def test_refusals_carry_reason_strings(srv):
    ack = RawMqtt(srv.mqtt_port).connect(uniq(), username="alice", password="bad")
    assert ack.reason_code == 0x86 and ack.properties["reason_string"]
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq())
    c.send_raw(b"\x30\x06\x00\x03a/#\x00")          # wildcard in a topic name
    d = c.expect(Disconnect)
    assert d.reason_code == 0x90 and "wildcard" in d.properties["reason_string"]
