"""Channels across protocols: an IRC client in #NAME and MQTT clients on chan/NAME talk both ways."""

from __future__ import annotations

import pytest
from mqttsupport import PASSWORD, Paho, RawMqtt, uniq, user_props
from support import RawClient

from bridges.mqtt.codec import Puback, Publish, Suback


@pytest.fixture(scope="module")
def srv(mqtt_server):
    for name in ("carol", "dave", "erin", "averyverylongname"):
        mqtt_server.register(name)
    return mqtt_server


def _payloads_until(client: Paho, marker: bytes) -> list[bytes]:
    out = []
    while True:
        m = client.get()
        out.append(m.payload)
        if m.payload == marker:
            return out


def test_irc_and_mqtt_talk_in_a_channel(srv):
    room = uniq("room")
    topic = f"chan/{room}"
    nick = uniq("i")
    irc = RawClient(srv.irc_port).register(nick)
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")

    carol = Paho(srv.mqtt_port, uniq("c"), username="carol", password=PASSWORD)
    assert [r.value for r in carol.subscribe(topic, qos=1)] == [1]
    join = irc.read_until(lambda l: " JOIN " in l and l.startswith(":carol!"))
    assert "@mqtt.test.relay.local" in join
    irc.send("WHOIS carol")
    assert "mqtt.test.relay.local" in irc.read_until(" 311 ")
    assert "MQTT" in irc.read_until(" 320 ")
    irc.read_until(" 318 ")

    dave = Paho(srv.mqtt_port, uniq("d"), username="dave", password=PASSWORD)
    dave.subscribe(topic, qos=1)
    dave.subscribe("chan/#", qos=0)             # a member with a wildcard too: still one copy
    irc.read_until(lambda l: " JOIN " in l and l.startswith(":dave!"))
    anon = Paho(srv.mqtt_port, uniq("a"))
    anon.subscribe(topic, qos=1)                # anonymous: not a member, the topic tree serves it

    # IRC -> MQTT
    irc.send(f"PRIVMSG #{room} :hello from irc")
    for c in (carol, dave, anon):
        m = c.get()
        assert (m.topic, m.payload) == (topic, b"hello from irc")
        assert user_props(m)["nick"] == nick
    # MQTT -> IRC (and to the other MQTT subscribers, once each; back to the publisher too)
    carol.publish(topic, "héllo from mqtt".encode(), qos=1)
    line = irc.read_until("PRIVMSG #" + room)
    assert line.startswith(":carol!") and line.endswith(":héllo from mqtt")
    irc.send(f"PRIVMSG #{room} :marker")
    for c in (carol, dave, anon):
        got = _payloads_until(c, b"marker")
        assert got == ["héllo from mqtt".encode(), b"marker"], got
    assert anon.drain() == [] and dave.drain() == []

    # NAMES shows the MQTT members.
    irc.send(f"NAMES #{room}")
    names = irc.read_until(" 353 ")
    assert "carol" in names and "dave" in names

    # Unsubscribe is a PART, disconnect a QUIT.
    carol.c.unsubscribe(topic)
    irc.read_until(lambda l: l.startswith(":carol!") and f" PART #{room}" in l)
    dave.close()
    irc.read_until(lambda l: l.startswith(":dave!") and " QUIT " in l)
    for c in (carol, anon):
        c.close()
    irc.close()


def test_channel_publish_rules(srv):
    room = uniq("r")
    topic = f"chan/{room}"
    irc = RawClient(srv.irc_port).register(uniq("i"))
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")
    member, member_id = RawMqtt(srv.mqtt_port), uniq()
    member.connect(member_id, username="erin", password=PASSWORD)
    assert member.subscribe(topic, qos=1).reason_codes == [1]
    irc.read_until(lambda l: " JOIN " in l and ":erin" in l)
    # Invalid UTF-8 on a channel topic: 5.0 gets 0x99, nothing reaches IRC.
    member.send(Publish(topic, b"\xff\xfe bad", 1, packet_id=1))
    assert member.expect(Puback).reason_code == 0x99
    before = srv.stats()["invalid_utf8"]
    old = RawMqtt(srv.mqtt_port)
    old.connect(uniq(), version=4, username="erin", password=PASSWORD)
    assert old.subscribe(topic, qos=0).reason_codes == [0]
    old.send(Publish(topic, b"\xc3\x28", 0))     # 3.1.1 QoS 0: dropped and counted
    old.sync()
    assert srv.stats()["invalid_utf8"] == before + 1
    # A non-member (anonymous) may not speak in the channel.
    anon = RawMqtt(srv.mqtt_port)
    anon.connect(uniq())
    anon.send(Publish(topic, b"let me in", 1, packet_id=1))
    assert anon.expect(Puback).reason_code == 0x87
    # Moderated channel: a member without voice may not speak (0x87).
    irc.send(f"MODE #{room} +m")
    irc.read_until(" MODE ")
    member.send(Publish(topic, b"muted", 1, packet_id=2))
    assert member.expect(Puback).reason_code == 0x87
    irc.send(f"MODE #{room} -m")
    irc.read_until(" MODE ")
    member.send(Publish(topic, b"valid line", 1, packet_id=3))
    assert member.expect(Puback).reason_code == 0
    line = irc.read_until("PRIVMSG")
    assert line.endswith(":valid line") and "bad" not in " ".join(irc.lines)
    # A ban refuses the join: SUBACK 0x87.
    room2 = uniq("b")
    irc.send(f"JOIN #{room2}")
    irc.read_until(" 366 ")
    irc.send(f"MODE #{room2} +b erin*!*@*")
    irc.read_until(" MODE ")
    assert member.subscribe(f"chan/{room2}", qos=0, pid=9).reason_codes == [0x87]
    assert old.subscribe(f"chan/{room2}", qos=0, pid=9).reason_codes == [0x80]
    # A KICK leaves the subscription as a plain one.
    irc.send(f"KICK #{room} {_nick_of(srv, member_id)} :out")
    irc.read_until(" KICK ")
    member.send(Publish(topic, b"after kick", 1, packet_id=4))
    assert member.expect(Puback).reason_code == 0x87
    member.close()
    old.close()
    irc.close()


def _nick_of(srv, client_id: str) -> str:
    import json
    sessions = json.loads(srv.ctl("mqtt", "--json", "sessions").stdout)
    return next(s["nick"] for s in sessions if s["client_id"] == client_id)


def test_direct_messages_and_nicks(srv):
    irc = RawClient(srv.irc_port).register("erin")      # takes the nick an MQTT user would want
    m = Paho(srv.mqtt_port, uniq(), username="erin", password=PASSWORD)
    m.subscribe("users/erin/inbox", qos=1)
    room = uniq("d")
    m.subscribe(f"chan/{room}", qos=0)
    irc.send(f"WHOIS erin1")
    assert " 311 " in irc.read_until(lambda l: " 311 " in l or " 401 " in l)
    irc.send("PRIVMSG erin1 :psst")
    msg = m.get()
    assert (msg.topic, msg.payload, msg.qos) == ("users/erin/inbox", b"psst", 1)
    assert user_props(msg)["nick"] == "erin"
    # nicks are cut to NICKLEN (9)
    long = Paho(srv.mqtt_port, uniq(), username="averyverylongname", password=PASSWORD)
    long.subscribe(f"chan/{room}", qos=0)
    irc.send(f"NAMES #{room}")
    names = irc.read_until(" 353 ").split(":")[-1].split()
    assert any(n.lstrip("@+") == "averyvery" for n in names), names
    for c in (m, long):
        c.close()
    irc.close()


def test_filter_module_rewrites_mqtt_channel_messages(start_mqtt):
    srv = start_mqtt(modules={"filter": {"rules": [{"channel": "*", "pattern": "darn", "action": "rewrite",
                                                      "replacement": "d**n"}]}})
    srv.register("fred")
    room = uniq("f")
    irc = RawClient(srv.irc_port).register(uniq("i"))
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")
    fred = Paho(srv.mqtt_port, uniq(), username="fred", password=PASSWORD)
    fred.subscribe(f"chan/{room}", qos=0)
    anon = Paho(srv.mqtt_port, uniq())
    anon.subscribe(f"chan/{room}", qos=0)
    fred.publish(f"chan/{room}", b"oh darn", qos=1)
    assert irc.read_until("PRIVMSG").endswith(":oh d**n")
    assert anon.get().payload == b"oh d**n"
    assert fred.get().payload == b"oh d**n"
    for c in (fred, anon):
        c.close()
    irc.close()


def test_suback_for_refused_channel_creation(srv):
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq(), username="dave", password=PASSWORD)
    s = c.subscribe("chan/ok" + uniq(), "chan/a/b", qos=0)
    assert isinstance(s, Suback) and s.reason_codes == [0, 0]   # chan/a/b is a plain topic
