"""Shared fixtures; the helpers they use live in support.py."""

import pytest
from support import Server, server_config


@pytest.fixture
def make_server(tmp_path):
    started: list[Server] = []

    def make(name: str = "s", start: bool = True, **overrides) -> Server:
        srv = Server(tmp_path / name, server_config(**overrides))
        if start:
            srv.start()
            started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()
