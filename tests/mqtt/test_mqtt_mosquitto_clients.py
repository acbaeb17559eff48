"""Debian's mosquitto_pub / mosquitto_sub against the broker (skipped when not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from mqttsupport import PASSWORD, RawMqtt, uniq, wait_for

pytestmark = pytest.mark.skipif(not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
                                reason="mosquitto-clients is not installed")


@pytest.fixture(scope="module")
def srv(mqtt_server):
    mqtt_server.register("mosq")
    return mqtt_server


def _pub(srv, *args, check=True):
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), *args],
                       capture_output=True, text=True, timeout=20)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _sub(srv, *args, check=True):
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-W", "15", *args],
                       capture_output=True, text=True, timeout=20)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _subscribed(srv, client_id: str, topic: str) -> bool:
    sessions = json.loads(srv.ctl("mqtt", "--json", "sessions").stdout)
    return any(s["client_id"] == client_id and topic in s["subscriptions"] and s["connected"] for s in sessions)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_pub_sub_live_and_retained(srv, version):
    topic = f"mosq/{uniq()}"
    cid = uniq("ms")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(srv.mqtt_port), "-V", version,
                            "-i", cid, "-t", topic + "/#", "-C", "3", "-v", "-q", "2", "-W", "15"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _subscribed(srv, cid, topic + "/#"), what="mosquitto_sub subscribed")
        _pub(srv, "-V", version, "-t", topic + "/a", "-m", "zero")
        _pub(srv, "-V", version, "-t", topic + "/b", "-m", "one", "-q", "1")
        _pub(srv, "-V", version, "-t", topic + "/c", "-m", "two", "-q", "2", "-r")
        out, err = sub.communicate(timeout=20)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    assert out.splitlines() == [f"{topic}/a zero", f"{topic}/b one", f"{topic}/c two"]
    # The retained one is there for a later subscriber; an empty retained publish clears it.
    assert _sub(srv, "-V", version, "-t", topic + "/#", "-C", "1").stdout.strip() == "two"
    _pub(srv, "-V", version, "-t", topic + "/c", "-n", "-r")
    probe = RawMqtt(srv.mqtt_port)
    probe.connect(uniq())
    probe.subscribe(topic + "/#", qos=0)
    probe.sync()                       # the server answers PINGREQ after any retained message
    assert probe.publishes() == []
    probe.close()


def test_auth_and_persistent_session(srv):
    r = _pub(srv, "-t", "x", "-m", "y", "-u", "mosq", "-P", "wrong", check=False)
    assert r.returncode != 0 and ("not authori" in r.stderr.lower() or "bad user" in r.stderr.lower())
    r = _pub(srv, "-V", "mqttv5", "-t", "x", "-m", "y", "-u", "mosq", "-P", "wrong", check=False)
    assert r.returncode != 0
    _pub(srv, "-t", "x", "-m", "y", "-u", "mosq", "-P", PASSWORD)
    # A persistent session (clean session off) keeps QoS 1 messages for the client while it is away.
    cid, topic = uniq("mp"), f"mq/{uniq()}"
    _sub(srv, "-c", "-i", cid, "-q", "1", "-t", topic, "-E", "-u", "mosq", "-P", PASSWORD)
    _pub(srv, "-t", topic, "-m", "while away", "-q", "1")
    r = _sub(srv, "-c", "-i", cid, "-q", "1", "-t", topic, "-C", "1", "-u", "mosq", "-P", PASSWORD)
    assert r.stdout.strip() == "while away"
