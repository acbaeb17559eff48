"""`module load mqtt` while the server serves: the stored state is read without stalling the loop
(Storage.read), MQTT clients are accepted only once it is in, and the restored sessions are whole.
On PostgreSQL the database is stalled (a lock on the sessions table) during the load: the reply,
IRC and the control socket answer meanwhile, the MQTT listener stays closed, and everything comes
up when the lock goes."""

from __future__ import annotations

import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mqtt"))

from mqttsupport import MqttServer, RawMqtt, uniq  # noqa: E402
from support import RawClient, wait_for  # noqa: E402

from bridges.mqtt.codec import Puback, Publish  # noqa: E402


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def stored_session(srv, n: int) -> str:
    """A persistent session, offline, with `n` QoS 1 messages queued for it."""
    cid = uniq("keep")
    sub = RawMqtt(srv.mqtt_port)
    sub.connect(cid, properties={"session_expiry_interval": 3600})
    sub.subscribe("kept/#", qos=1)
    sub.disconnect()
    wait_for(lambda: not {s["client_id"]: s for s in srv.call("mqtt", "sessions")}[cid]["connected"],
             what="the subscriber offline")
    pub = RawMqtt(srv.mqtt_port)
    pub.connect(uniq("pub"))
    for i in range(n):
        pub.send(Publish("kept/x", str(i).encode(), 1, packet_id=i + 1))
        pub.expect(Puback)
    pub.disconnect()
    wait_for(lambda: {s["client_id"]: s for s in srv.call("mqtt", "sessions")}[cid]["queued"] == n,
             what="the messages queued")
    return cid


def resumed(srv, cid: str, n: int) -> list[bytes]:
    sub = RawMqtt(srv.mqtt_port)
    assert sub.connect(cid, clean=False, properties={"session_expiry_interval": 3600}).session_present
    got = []
    for _ in range(n):
        p = sub.expect(Publish)
        got.append(p.payload)
        sub.send(Puback(p.packet_id))
    sub.sync()
    sub.disconnect()
    return got


def test_module_load_mqtt_while_serving_reads_the_state_without_stalling(tmp_path, storage_section):
    srv = MqttServer(tmp_path / "m", storage=storage_section)
    srv.start()
    try:
        cid = stored_session(srv, 3)
        srv.ctl("module", "unload", "mqtt")
        wait_for(lambda: not accepts(srv.mqtt_port), what="the MQTT listener closed")
        srv.ctl("flush")
        blocker = None
        if storage_section["backend"] == "postgresql":
            import psycopg
            blocker = psycopg.connect(storage_section["dsn"])
            blocker.execute("LOCK TABLE mqtt_sessions IN ACCESS EXCLUSIVE MODE")
        try:
            out = srv.ctl("module", "load", "mqtt", timeout=20).stdout
            assert out.startswith("module mqtt loaded") and "accepted once it is in" in out
            if blocker is not None:
                # The load's read waits on the lock; the loop does not.
                irc = RawClient(srv.irc_port)
                irc.register("watcher")
                irc.send("PING :still-here")
                irc.read_until(lambda l: "still-here" in l and "PONG" in l)
                irc.close()
                assert srv.call("status")["storage"]["queued"] == 0
                assert not accepts(srv.mqtt_port)      # no MQTT client before the state is in
        finally:
            if blocker is not None:
                blocker.close()
        wait_for(lambda: accepts(srv.mqtt_port), what="MQTT served once the state is read")
        assert resumed(srv, cid, 3) == [b"0", b"1", b"2"]
        assert "serving MQTT clients" in srv.log()
    finally:
        srv.stop()
