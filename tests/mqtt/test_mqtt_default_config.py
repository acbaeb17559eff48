"""MQTT is served by the default configuration; loading the module without a listener says what to add."""

from __future__ import annotations

import re

import yaml
from mqttsupport import Paho, uniq
from support import ROOT, RawClient, Server, free_port, server_config

from relay.core.config import parse


def test_default_yaml_serves_irc_and_mqtt(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    ports = {}
    for l in cfg["listen"]:
        ports[l["proto"], l["tls"]] = l["port"] = free_port()      # the default's, on free ports
    assert ("mqtt", False) in ports and cfg["modules"] == {"mqtt": {}, "xmpp": {}, "pubsub": {}, "sip": {}, "muc": {}}
    srv = Server(tmp_path / "default", cfg).start()
    try:
        listeners = {(l["proto"], l["port"]) for l in srv.status()["listeners"]}
        assert ("mqtt", ports["mqtt", False]) in listeners
        sub = Paho(ports["mqtt", False], uniq("s"))
        sub.subscribe("hello/world", qos=1)
        pub = Paho(ports["mqtt", False], uniq("p"), version=4)
        pub.publish("hello/world", b"from the default", qos=1)
        assert sub.get().payload == b"from the default"
        RawClient(ports["irc", False]).register("dflt").close()
        for c in (sub, pub):
            c.close()
        assert "no MQTT listener" not in srv.log()
    finally:
        srv.stop()


def test_module_load_mqtt_without_a_listener_says_how_to_add_one(tmp_path):
    srv = Server(tmp_path / "nomqtt", server_config(modules={})).start()
    try:
        out = srv.ctl("module", "load", "mqtt").stdout
        assert out.startswith("module mqtt loaded\nno MQTT listener is configured")
        assert "under `listen:`" in out and "restart" in out
        # The lines it shows are YAML that makes a valid listener.
        entries = yaml.safe_load("\n".join(l for l in out.splitlines() if l.startswith("  - ")))
        assert entries[0] == {"proto": "mqtt", "host": "127.0.0.1", "port": 1883}
        assert parse({"listen": [{"proto": "irc", "port": 6667}, *entries]}).listen[1].proto == "mqtt"
        assert re.search(r" INFO +relay\.mod\.mqtt: no MQTT listener is configured.*port: 1883", srv.log())
    finally:
        srv.stop()
