"""Helpers for the MQTT scenario tests: a server with MQTT listeners, a raw codec-level
client, and a paho-mqtt wrapper that records what arrives.

Nothing here sleeps a fixed time: every wait polls with a deadline. "Nothing else
arrived" is checked with a PINGREQ/PINGRESP round trip (the server answers in order)
for raw clients, and with a marker message for paho clients.
"""

from __future__ import annotations

import itertools
import queue
import socket
import time

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import Server, free_port, server_config, wait_for

from bridges.mqtt.codec import (Connack, Connect, Disconnect, MqttConnection, MqttError, Pingreq, Pingresp,
                                Publish, Suback, Subscribe, SubscriptionOptions)

_ids = itertools.count(1)
PASSWORD = "s3cret-pass"


def uniq(prefix: str = "t") -> str:
    return f"{prefix}{next(_ids):x}{int(time.time() * 1000) % 100000:x}"


class MqttServer(Server):
    """A server process with irc, mqtt and http listeners (MQTT over WebSocket at /mqtt) and the mqtt module."""

    def __init__(self, directory, mqtt_options: dict | None = None, **overrides):
        self.mqtt_port, self.ws_port = free_port(), free_port()
        cfg = server_config(**overrides)
        cfg["listen"] += [{"proto": "mqtt", "host": "127.0.0.1", "port": self.mqtt_port},
                          {"proto": "http", "host": "127.0.0.1", "port": self.ws_port}]
        cfg.setdefault("modules", {})["mqtt"] = {"sys_interval": 0.5, "sweep_interval": 0.2,
                                                 **(mqtt_options or {})}
        super().__init__(directory, cfg)

    def alive(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=2).close()
            return True
        except OSError:
            return False

    def register(self, name: str, password: str = PASSWORD) -> str:
        self.ctl("register", name, password)
        return name

    def stats(self) -> dict:
        import json
        return json.loads(self.ctl("mqtt", "--json", "stats").stdout)


# ---------------------------------------------------------------------- raw client (our codec, client side)

class RawMqtt:
    """A byte-level MQTT client over a plain socket, speaking through the sans-IO codec."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.codec = MqttConnection(server_side=False)
        self.packets: list = []
        self.eof = False

    def send(self, packet) -> None:
        self.sock.sendall(self.codec.send(packet))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, client_id: str = "", version: int = 5, clean: bool = True, keepalive: int = 60,
                username: str | None = None, password: str | None = None, properties: dict | None = None,
                will=None) -> Connack:
        self.send(Connect(client_id, clean, keepalive, username, password.encode() if password else None, will,
                          properties or {}, version))
        return self.expect(Connack)

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.packets.extend(self.codec.receive_data(data))
        return True

    def expect(self, kind, timeout: float = 10.0, pred=None):
        """Wait for (and remove) the first packet of type `kind` (matching `pred`)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, p in enumerate(self.packets):
                if type(p) is kind and (pred is None or pred(p)):
                    return self.packets.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no {kind.__name__} (eof={self.eof}); have {self.packets}")
            self._fill(left)

    def sync(self, timeout: float = 10.0) -> list:
        """PINGREQ and wait for PINGRESP: everything the server sent before is in `packets`."""
        self.send(Pingreq())
        self.expect(Pingresp, timeout)
        return self.packets

    def subscribe(self, *filters, qos: int = 0, pid: int = 1, properties: dict | None = None,
                  **opts) -> Suback:
        self.send(Subscribe(pid, [(f, SubscriptionOptions(qos, **opts)) for f in filters], properties or {}))
        return self.expect(Suback, pred=lambda p: p.packet_id == pid)

    def publishes(self) -> list[Publish]:
        out = [p for p in self.packets if type(p) is Publish]
        self.packets = [p for p in self.packets if type(p) is not Publish]
        return out

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the server closed the connection (packets received meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except MqttError:
                return True
        return True

    def disconnect(self, rc: int = 0) -> None:
        try:
            self.send(Disconnect(rc))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- paho

class Paho:
    """A paho-mqtt 2.x client on its own network thread; messages and events land in queues."""

    def __init__(self, port: int, client_id: str | None = None, version: int = 5, transport: str = "tcp",
                 clean: bool = True, username: str | None = None, password: str | None = None,
                 keepalive: int = 60, properties: dict | None = None, will: tuple | None = None,
                 will_props: dict | None = None, host: str = "127.0.0.1", connect: bool = True):
        self.version = version
        proto = paho.MQTTv5 if version == 5 else paho.MQTTv311
        kw = {} if version == 5 else {"clean_session": clean}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=proto,
                             transport=transport, **kw)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            wp = None
            if will_props:
                wp = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will_props.items():
                    setattr(wp, k, v)
            self.c.will_set(*will, properties=wp)
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.pubacks: queue.Queue = queue.Queue()      # (mid, reason code, properties) of our QoS 1/2 publishes
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc, props))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put((rc, props))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put((mid, rcs, props))
        self.c.on_publish = lambda c, u, mid, rc, props: self.pubacks.put((mid, rc, props))
        self.host, self.port, self.keepalive, self.clean = host, port, keepalive, clean
        self.properties = properties
        self.connack = None
        if connect:
            self.connect()

    def connect(self, expect_ok: bool = True):
        props = None
        if self.version == 5:
            props = Properties(PacketTypes.CONNECT)
            for k, v in (self.properties or {}).items():
                setattr(props, k, v)
        kw = {"clean_start": self.clean, "properties": props} if self.version == 5 else {}
        self.c.connect(self.host, self.port, self.keepalive, **kw)
        self.c.loop_start()
        self.connack = self.connacks.get(timeout=10)
        if expect_ok:
            assert not self.connack[1].is_failure, f"connect failed: {self.connack[1]}"
        return self.connack

    def subscribe(self, topic: str, qos: int = 0, properties: dict | None = None, **opts):
        props = None
        if properties:
            props = Properties(PacketTypes.SUBSCRIBE)
            for k, v in properties.items():
                setattr(props, k, v)
        if self.version == 5:
            so = paho.SubscribeOptions(qos=qos, **opts)
            rc, mid = self.c.subscribe(topic, options=so, properties=props)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0
        got = self.subacks.get(timeout=10)
        assert got[0] == mid
        return got[1]

    def publish(self, topic: str, payload, qos: int = 0, retain: bool = False, properties: dict | None = None,
                wait: bool = True):
        props = None
        if properties:
            props = Properties(PacketTypes.PUBLISH)
            for k, v in properties.items():
                setattr(props, k, v)
        info = self.c.publish(topic, payload, qos, retain, properties=props)
        if wait and qos:
            info.wait_for_publish(10)
        return info

    def publish_acked(self, topic: str, payload, qos: int = 1):
        """Publish at QoS 1 or 2 and return the server's (reason code, 5.0 reason string or None)."""
        info = self.c.publish(topic, payload, qos)
        while True:
            mid, rc, props = self.pubacks.get(timeout=10)
            if mid == info.mid:
                return rc.value, getattr(props, "ReasonString", None)

    def get(self, timeout: float = 10.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def until(self, topic: str, timeout: float = 10.0) -> list:
        """Messages up to and including the first on `topic` (a marker), in order."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.get(max(0.01, deadline - time.monotonic()))
            out.append(m)
            if m.topic == topic:
                return out

    def close(self, clean: bool = True):
        if clean:
            self.c.disconnect()
        else:
            # Drop the TCP connection without DISCONNECT (the will fires).
            sock = self.c.socket()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.c.loop_stop()


def user_props(msg) -> dict:
    p = getattr(msg, "properties", None)
    return dict(getattr(p, "UserProperty", []) or []) if p is not None else {}


__all__ = ["MqttServer", "RawMqtt", "Paho", "uniq", "user_props", "wait_for", "PASSWORD"]
