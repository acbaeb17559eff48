"""Channels across protocols: an IRC client in #NAME and MQTT clients on chan/NAME talk both ways."""

from __future__ import annotations

import json
import os
import sys

import pytest
from mqttsupport import PASSWORD, Paho, RawMqtt, uniq, user_props
from support import RawClient, wait_for

from bridges.mqtt.codec import Puback, Publish, Pubrec, Suback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "irc"))
from ircsupport import JIrc  # noqa: E402  (the jaraco `irc` client wrapper of the IRC tests)


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


def test_non_member_subscribers_get_irc_messages_as_filtered(start_mqtt):
    """The tap that puts an IRC user's channel message into the topic tree runs after filter_packet:
    a non-member subscriber gets the rewritten text, and nothing of a dropped message."""
    srv = start_mqtt(modules={"filter": {"rules": [
        {"channel": "*", "pattern": "darn", "action": "rewrite", "replacement": "d**n"},
        {"channel": "*", "pattern": "spam", "action": "drop"}]}})
    room = uniq("t")
    irc = RawClient(srv.irc_port).register(uniq("i"))
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")
    anon = Paho(srv.mqtt_port, uniq())
    anon.subscribe(f"chan/{room}", qos=0)
    irc.send(f"PRIVMSG #{room} :buy spam now")
    irc.send(f"PRIVMSG #{room} :oh darn")
    assert anon.get().payload == b"oh d**n"
    irc.send(f"PRIVMSG #{room} :last")
    assert anon.get().payload == b"last"
    anon.close()
    irc.close()


def test_suback_for_refused_channel_creation(srv):
    c = RawMqtt(srv.mqtt_port)
    c.connect(uniq(), username="dave", password=PASSWORD)
    s = c.subscribe("chan/ok" + uniq(), "chan/a/b", qos=0)
    assert isinstance(s, Suback) and s.reason_codes == [0, 0]   # chan/a/b is a plain topic


def test_refused_channel_publishes_are_counted_logged_and_explained(srv):
    room = uniq("q")
    topic = f"chan/{room}"
    irc = RawClient(srv.irc_port).register(uniq("i"))
    irc.send(f"JOIN #{room}")
    irc.read_until(" 366 ")
    before = srv.stats()["refused_channel_publish"]
    # MQTT 5, authenticated, not subscribed: 0x87 and how to become a member.
    outsider = Paho(srv.mqtt_port, uniq("o"), username="dave", password=PASSWORD)
    assert outsider.publish_acked(topic, b"hello?", qos=1) == (
        0x87, f"subscribe to {topic} to be a member of #{room}")
    # MQTT 5, anonymous: it cannot become a member at all, and is told so.
    anon = Paho(srv.mqtt_port, uniq("a"))
    rc, why = anon.publish_acked(topic, b"hi", qos=1)
    assert rc == 0x87 and why.startswith(f"anonymous clients cannot speak in #{room}")
    # QoS 2: PUBREC 0x87 with the reason string.
    raw = RawMqtt(srv.mqtt_port)
    raw.connect(uniq("r"), username="dave", password=PASSWORD)
    raw.send(Publish(topic, b"qos2", 2, packet_id=7))
    rec = raw.expect(Pubrec)
    assert (rec.reason_code, rec.properties.get("reason_string")) == (
        0x87, f"subscribe to {topic} to be a member of #{room}")
    # MQTT 3.1.1 has no reason codes in PUBACK: acked, counted, logged. QoS 0: no ack at all.
    old = Paho(srv.mqtt_port, uniq("v"), version=4, username="dave", password=PASSWORD)
    assert old.publish_acked(topic, b"old", qos=1)[0] == 0
    old.publish(topic, b"qos0")
    # A member of a moderated channel without voice; a banned member.
    member = Paho(srv.mqtt_port, uniq("m"), username="carol", password=PASSWORD)
    member.subscribe(topic, qos=1)
    join = irc.read_until(lambda l: " JOIN " in l and l.startswith(":carol"))
    nick = join[1:].split("!")[0]
    irc.send(f"MODE #{room} +m")
    irc.read_until(" MODE ")
    rc, why = member.publish_acked(topic, b"muted", qos=1)
    assert rc == 0x87 and why == f"#{room} is moderated (+m): only members with voice or ops may speak"
    irc.send(f"MODE #{room} -m+b {nick}!*@*")
    irc.read_until(" MODE ")
    assert member.publish_acked(topic, b"banned", qos=1) == (0x87, f"you are banned from #{room}")
    irc.send(f"MODE #{room} -b {nick}!*@*")
    irc.read_until(" MODE ")
    assert member.publish_acked(topic, b"allowed", qos=1) == (0, None)
    assert irc.read_until("PRIVMSG").endswith(" allowed")
    assert not any(w in " ".join(irc.lines) for w in ("hello?", "qos2", "old", "muted", "banned"))
    # Seven refusals counted (the QoS 0 one too, though it is acked by no one)...
    wait_for(lambda: srv.stats()["refused_channel_publish"] == before + 7, what="7 refusals counted")
    # ... and one info line per refused client (at most one per 10 s each: a QoS 0 flood stays out of the log).
    log = srv.log()
    for cid, why in ((outsider.c._client_id.decode(), f"subscribe to {topic} to be a member of #{room}"),
                     (old.c._client_id.decode(), f"subscribe to {topic} to be a member of #{room}"),
                     (member.c._client_id.decode(), f"#{room} is moderated (+m)")):
        lines = [l for l in log.splitlines() if f"refused for client {cid} " in l]
        assert len(lines) == 1 and " INFO " in lines[0] and f"on {topic} " in lines[0] and why in lines[0], lines
    for c in (outsider, anon, old, member):
        c.close()
    raw.close()
    irc.close()


@pytest.mark.parametrize("version", [5, 4])
def test_direct_message_to_a_member_without_inbox_subscription_tells_the_irc_sender(srv, version):
    name = srv.register(uniq("k"))
    room = uniq("dm")
    m = Paho(srv.mqtt_port, uniq(), version=version, username=name, password=PASSWORD)
    m.subscribe(f"chan/{room}", qos=0)             # a member, but no users/<name>/inbox subscription
    sender = JIrc(srv.irc_port, uniq("j"))          # a real IRC client library
    sender.conn.join(f"#{room}")
    sender.expect(lambda ev: ev.type == "endofnames")
    nick = next(s["nick"] for s in json.loads(srv.ctl("mqtt", "--json", "sessions").stdout)
                if s["username"] == name)
    sender.conn.privmsg(nick, "are you there?")
    ev = sender.expect("privnotice")
    assert ev.source == "test.relay.local"
    assert ev.arguments[0] == (f"*** Message to {nick} not delivered: {nick} is an MQTT client that receives "
                               f"direct messages only on users/{name}/inbox, and it has not subscribed to it")
    # A NOTICE never triggers an automatic reply.
    sender.conn.notice(nick, "fyi")
    assert not [e for e in sender.sync() if e.type == "privnotice"]
    # Subscribed to its inbox, it receives the next one; the sender is told nothing.
    m.subscribe(f"users/{name}/inbox", qos=1)
    sender.conn.privmsg(nick, "now?")
    got = m.get()
    assert (got.topic, got.payload) == (f"users/{name}/inbox", b"now?")
    assert not [e for e in sender.sync() if e.type == "privnotice"]
    m.close()
    sender.close()
