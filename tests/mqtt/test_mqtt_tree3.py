"""MQTT across configs/tree-3: federation along the tree, and IRC <-> MQTT in one channel."""

import pytest
from mqttsupport import Paho
from support import RawClient, TreeNetwork, wait_for


@pytest.fixture
def mqtt3(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("mqtt",), modules={"mqtt": {}}).start()
    yield net
    net.stop()


def mqtt_out(net, a, b) -> int:
    return net.links(a)[f"{b}.relay.test"]["frames_out"].get("ENCAP", 0)


def test_publish_on_near_server_reaches_far_subscribers_only_where_needed(mqtt3):
    net = mqtt3
    far = Paho(net.port("c", "mqtt"), client_id="far-sub")
    far.subscribe("sensors/+/temp", qos=1)
    mid = Paho(net.port("b", "mqtt"), client_id="mid-sub")
    mid.subscribe("other/#")
    near = Paho(net.port("a", "mqtt"), client_id="near-pub")
    # The far subscription's filter has propagated when a probe publish gets through.
    wait_for(lambda: (near.publish("sensors/probe/temp", b"p", qos=1), far.drain())[1], timeout=15,
             what="subscription filters propagated")
    for i in range(10):
        near.publish(f"sensors/k{i}/temp", f"{i}".encode(), qos=1)
    got = []
    wait_for(lambda: got.extend(far.drain()) or len([m for m in got if m.topic != "sensors/probe/temp"]) >= 10,
             what="10 messages on the far server")
    payloads = sorted(m.payload for m in got if m.topic != "sensors/probe/temp")
    assert payloads == sorted(f"{i}".encode() for i in range(10))
    assert mid.drain() == []
    # Nothing goes towards a server without a matching subscription: publish where only a has subscribers.
    local = Paho(net.port("a", "mqtt"), client_id="near-sub")
    local.subscribe("private/topic")
    before = mqtt_out(net, "a", "b")
    for i in range(5):
        near.publish("private/topic", b"x")
    wait_for(lambda: len(local.drain()) >= 1, what="local delivery")
    assert mqtt_out(net, "a", "b") == before


def test_irc_client_and_mqtt_client_talk_in_one_channel_across_servers(mqtt3):
    net = mqtt3
    irc = RawClient(net["a"].irc_port).register("ircuser")
    irc.send("JOIN #talk")
    irc.read_until(lambda l: " 366 " in l)
    net["c"].ctl("register", "mqttuser", "mqtt-pw")
    m = Paho(net.port("c", "mqtt"), client_id="talker", username="mqttuser", password="mqtt-pw")
    m.subscribe("chan/talk", qos=1)
    irc.read_until(lambda l: "JOIN #talk" in l and "mqttuser" in l, timeout=15)   # a member on IRC's side
    irc.send("PRIVMSG #talk :hello from irc")
    got = m.until("chan/talk")
    assert any(msg.payload == b"hello from irc" for msg in got)
    m.publish("chan/talk", b"hello from mqtt", qos=1)
    line = irc.read_until("hello from mqtt")
    assert line.startswith(":mqttuser!") and "PRIVMSG #talk" in line
    irc.send("WHOIS mqttuser")
    assert "mqtt." in irc.read_until(" 311 ")   # its host shows the protocol
    # A direct message it cannot receive (no users/mqttuser/inbox subscription) is answered from c.
    irc.send("PRIVMSG mqttuser :psst")
    notice = irc.read_until(" NOTICE ircuser :")
    assert notice.startswith(":mqttuser!") and notice.endswith(
        ":*** Message to mqttuser not delivered: mqttuser is an MQTT client that receives direct messages "
        "only on users/mqttuser/inbox, and it has not subscribed to it")
    m.subscribe("users/mqttuser/inbox", qos=1)
    irc.send("PRIVMSG mqttuser :psst again")
    assert m.until("users/mqttuser/inbox")[-1].payload == b"psst again"
    assert len(set(net.digests().values())) == 1


def test_qos1_across_a_short_split_is_not_lost(mqtt3):
    net = mqtt3
    far = Paho(net.port("c", "mqtt"), client_id="far-q1")
    far.subscribe("plant/#", qos=1)
    near = Paho(net.port("a", "mqtt"), client_id="near-q1")
    wait_for(lambda: (near.publish("plant/probe", b"p", qos=1), far.drain())[1], timeout=15,
             what="subscription filters propagated")
    net["c"].ctl("unlink", "b.relay.test")
    wait_for(lambda: net.server_count("b") == 2, what="split")
    for i in range(5):
        near.publish("plant/valve", f"v{i}".encode(), qos=1)
    net["c"].ctl("link", "b.relay.test")
    net.wait_linked()
    got = []
    wait_for(lambda: got.extend(far.drain()) or sum(m.topic == "plant/valve" for m in got) >= 5, timeout=20,
             what="the messages published during the split")
    assert [m.payload for m in got if m.topic == "plant/valve"] == [f"v{i}".encode() for i in range(5)]


def test_retained_messages_reach_a_server_that_joins_later(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("mqtt",), modules={"mqtt": {}})
    net["a"].start()
    net["b"].start()
    try:
        wait_for(lambda: net.server_count("b") == 2, what="a and b linked")
        pub = Paho(net.port("a", "mqtt"), client_id="retainer")
        pub.publish("config/mode", b"eco", qos=1, retain=True)
        pub.publish("config/mode", b"turbo", qos=1, retain=True)    # the newest one counts
        net["c"].start()                                            # c was not there when they were published
        net.wait_linked()
        late = Paho(net.port("c", "mqtt"), client_id="late-sub")
        got = []
        wait_for(lambda: (late.subscribe("config/#", qos=1), got.extend(late.drain()), got)[2] or
                 (late.c.unsubscribe("config/#"), False)[1], timeout=15, what="the retained message on c")
        assert got[0].payload == b"turbo" and got[0].retain
    finally:
        net.stop()
