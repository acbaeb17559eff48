"""Persistent sessions (subscriptions, queued and in-flight QoS 1/2 messages) and retained messages
survive `relayctl stop` + start."""

from __future__ import annotations

import json

from mqttsupport import PASSWORD, RawMqtt, uniq, wait_for
from support import RawClient

from bridges.mqtt.codec import Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel


def _sessions(srv) -> dict:
    return {s["client_id"]: s for s in json.loads(srv.ctl("mqtt", "--json", "sessions").stdout)}


def test_restart_keeps_persistent_sessions_and_retained(start_mqtt, storage_section):
    srv = start_mqtt(storage=storage_section)     # on SQLite and on PostgreSQL
    srv.register("rita")
    room = uniq("rr")
    v5, v4, inflight, clean = uniq("v5"), uniq("v4"), uniq("if"), uniq("cl")
    a = RawMqtt(srv.mqtt_port)
    a.connect(v5, username="rita", password=PASSWORD, properties={"session_expiry_interval": 3600})
    assert a.subscribe("rs/a", f"chan/{room}", qos=1, properties={"subscription_identifier": 5}).reason_codes == [1, 1]
    a.disconnect()
    b = RawMqtt(srv.mqtt_port)
    b.connect(v4, version=4, clean=False)
    b.subscribe("rs/b", qos=2)
    b.disconnect()
    # A session with messages in flight when the server stops: a QoS 1 not acknowledged,
    # and a QoS 2 whose PUBREC was answered with PUBREL but not completed.
    c = RawMqtt(srv.mqtt_port)
    c.connect(inflight, properties={"session_expiry_interval": 3600})
    c.subscribe("rs/c/+", qos=2)
    cl = RawMqtt(srv.mqtt_port)
    cl.connect(clean)
    cl.subscribe("rs/#", qos=1)
    cl.close()
    wait_for(lambda: not _sessions(srv)[v5]["connected"] and not _sessions(srv)[v4]["connected"], what="offline")

    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq())
    pub.send(Publish("rs/a", b"for v5", 1, packet_id=1))
    pub.send(Publish("rs/b", b"for v4", 2, packet_id=2))
    pub.send(Publish("rs/c/1", b"in flight 1", 1, packet_id=3))
    pub.send(Publish("rs/c/2", b"in flight 2", 2, packet_id=4))
    pub.send(Publish("rs/ret", b"kept", 1, retain=True, packet_id=5))
    pub.send(Publish("rs/gone", b"soon cleared", 1, retain=True, packet_id=6))
    pub.send(Publish("rs/gone", b"", 1, retain=True, packet_id=7))
    for _ in range(5):
        pub.expect(Puback)
    for pid in (2, 4):
        pub.expect(Pubrec, pred=lambda p: p.packet_id == pid)
        pub.send(Pubrel(pid))
        pub.expect(Pubcomp)
    first = c.expect(Publish)
    second = c.expect(Publish)
    two = first if first.qos == 2 else second
    c.send(Pubrec(two.packet_id))
    c.expect(Pubrel)
    c.close()
    pub.close()
    wait_for(lambda: _sessions(srv)[v5]["queued"] == 1 and _sessions(srv)[inflight]["inflight"] == 2,
             what="queued state")

    live = RawMqtt(srv.mqtt_port)
    live.connect(uniq())
    srv.stop()
    d = live.expect(Disconnect)                 # a clean shutdown tells 5.0 clients why
    assert d.reason_code == 0x8B and live.wait_closed()
    srv.start()

    sessions = _sessions(srv)
    assert {v5, v4, inflight} <= set(sessions) and clean not in sessions
    assert sessions[v5]["subscriptions"] == sorted(["rs/a", f"chan/{room}"])

    irc = RawClient(srv.irc_port).register(uniq("i"))
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")
    a = RawMqtt(srv.mqtt_port)
    ack = a.connect(v5, clean=False, username="rita", password=PASSWORD,
                    properties={"session_expiry_interval": 3600})
    assert ack.session_present
    m = a.expect(Publish)
    assert (m.topic, m.payload, m.qos, m.properties.get("subscription_identifier")) == ("rs/a", b"for v5", 1, [5])
    a.send(Puback(m.packet_id))
    # The restored channel subscription made it a member again.
    irc.read_until(lambda l: " JOIN " in l and l.startswith(":rita!"))
    irc.send(f"PRIVMSG #{room} :welcome back")
    assert a.expect(Publish).payload == b"welcome back"

    b = RawMqtt(srv.mqtt_port)
    assert b.connect(v4, version=4, clean=False).session_present
    m = b.expect(Publish)
    assert (m.payload, m.qos) == (b"for v4", 2)

    c = RawMqtt(srv.mqtt_port)
    assert c.connect(inflight, clean=False, properties={"session_expiry_interval": 3600}).session_present
    again = c.expect(Publish)
    assert (again.payload, again.dup, again.qos) == (b"in flight 1", True, 1)
    assert c.expect(Pubrel).packet_id == two.packet_id
    c.send(Puback(again.packet_id))
    c.send(Pubcomp(two.packet_id))
    c.sync()

    fresh = RawMqtt(srv.mqtt_port)
    fresh.connect(uniq())
    fresh.subscribe("rs/#", qos=1)
    fresh.sync()
    got = [(p.topic, p.payload, p.retain) for p in fresh.publishes()]
    assert got == [("rs/ret", b"kept", True)]
    for x in (a, b, c, fresh):
        x.disconnect()
    irc.close()
