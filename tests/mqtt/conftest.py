"""Fixtures for the MQTT scenario tests: real server processes with the mqtt module.

`mqtt_server` is module-scoped (tests use unique client ids and topics, see
mqttsupport.uniq); a test module that needs other options calls `start_mqtt(...)`.
At module end each server must still be up and must not have logged a traceback.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from mqttsupport import MqttServer  # noqa: E402


@pytest.fixture(scope="module")
def start_mqtt(tmp_path_factory):
    started: list[MqttServer] = []

    def start(mqtt_options: dict | None = None, **overrides) -> MqttServer:
        srv = MqttServer(tmp_path_factory.mktemp("mqtt"), mqtt_options, **overrides)
        srv.start()
        started.append(srv)
        return srv

    yield start
    problems = []
    for srv in started:
        alive = srv.pid() is not None and srv.alive()
        srv.stop()
        log = srv.log()
        if not alive and not getattr(srv, "expect_down", False):
            problems.append(f"server on port {srv.mqtt_port} died during the tests")
        if "Traceback" in log:
            problems.append(f"server on port {srv.mqtt_port} logged a traceback:\n{log[-4000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def mqtt_server(start_mqtt) -> MqttServer:
    return start_mqtt()
