"""kill -9 in the middle of a burst of QoS 1 publishes to an offline persistent session: after the
restart the session's queue is exactly the first K messages (in order, none twice, no gap), and K
covers every message acknowledged before the server last reported a commit (the operator command
`flush` replies once everything queued before it is committed). What may be lost is the tail
acknowledged after that: at most the last flush interval of queue changes."""

from __future__ import annotations

import os
import signal
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mqtt"))

from mqttsupport import MqttServer, RawMqtt, uniq  # noqa: E402
from support import process_gone, wait_for  # noqa: E402

from bridges.mqtt.codec import Puback, Publish  # noqa: E402

WINDOW = 50   # QoS 1 publishes in flight at once (under the broker's receive maximum)


def _sessions(srv) -> dict:
    return {s["client_id"]: s for s in srv.call("mqtt", "sessions")}


def test_kill_9_mid_burst_keeps_every_message_acknowledged_before_the_last_commit(tmp_path, storage_section):
    # A long flush interval: what the commit point promises is kept by its wait, not by luck.
    srv = MqttServer(tmp_path / "m", {"max_queued": 100000}, storage={**storage_section, "flush_interval": 0.5})
    srv.start()
    try:
        sub_id = uniq("sub")
        sub = RawMqtt(srv.mqtt_port)
        sub.connect(sub_id, properties={"session_expiry_interval": 3600})
        sub.subscribe("burst/#", qos=1)
        sub.disconnect()
        wait_for(lambda: not _sessions(srv)[sub_id]["connected"], what="subscriber offline")

        pub = RawMqtt(srv.mqtt_port)
        pub.connect(uniq("pub"))
        acked: list[int] = []

        def window(start: int) -> None:
            for i in range(start, start + WINDOW):
                pub.send(Publish("burst/x", str(i).encode(), 1, packet_id=i % 60000 + 1))
            for i in range(start, start + WINDOW):
                pub.expect(Puback)
                acked.append(i)

        for start in range(0, 200, WINDOW):
            window(start)
        srv.call("flush")                   # a commit point: everything acknowledged so far is durable
        committed = len(acked)

        stop = threading.Event()

        def burst() -> None:
            start = committed
            try:
                while not stop.is_set():
                    window(start)
                    start += WINDOW
            except (AssertionError, OSError):
                pass                        # the server is gone

        t = threading.Thread(target=burst)
        t.start()
        wait_for(lambda: len(acked) >= committed + 300, what="the burst under way")
        pid = srv.pid()
        os.kill(pid, signal.SIGKILL)
        stop.set()
        t.join(30)
        wait_for(lambda: process_gone(pid), what="the killed server gone")
        acked_before_kill = len(acked)

        srv.start()
        queued = _sessions(srv)[sub_id]["queued"]
        assert committed <= queued <= acked_before_kill + WINDOW
        sub = RawMqtt(srv.mqtt_port)
        assert sub.connect(sub_id, clean=False, properties={"session_expiry_interval": 3600}).session_present
        got: list[int] = []
        while len(got) < queued:
            p = sub.expect(Publish)
            got.append(int(p.payload))
            sub.send(Puback(p.packet_id))
        assert got == list(range(queued))   # a prefix: in order, nothing twice, no gap
        sub.sync()
        assert sub.publishes() == []
        sub.disconnect()
    finally:
        srv.stop()
