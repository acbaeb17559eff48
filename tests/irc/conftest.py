"""Fixtures for the IRC scenario tests: real server processes started with `relayctl start --detach`.

`server` is module-scoped (tests use unique nicks and channels, see ircsupport.uniq/chan), so each
test module on each xdist worker starts one server; `irc` is the per-test view of it, closing the
clients a test opened. Modules that need another configuration (default shaper, short timeouts)
call `start_server(...)` from their own module-scoped fixture.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from ircsupport import OPER_PASSWORD, IrcServer  # noqa: E402
from support import relayctl  # noqa: E402


@pytest.fixture(scope="session")
def oper_hash() -> str:
    """An oper block password made the operator's way: `relayctl mkpasswd`."""
    return relayctl("mkpasswd", OPER_PASSWORD).stdout.strip()


@pytest.fixture(scope="module")
def start_server(tmp_path_factory, oper_hash):
    """Factory: start_server(**config overrides) -> a started IrcServer, stopped at module end."""
    started: list[IrcServer] = []

    def start(**overrides) -> IrcServer:
        srv = IrcServer(tmp_path_factory.mktemp("irc"), oper_hash, **overrides)
        srv.start()
        started.append(srv)
        return srv

    yield start
    problems = []
    for srv in started:
        alive = srv.alive()
        srv.stop()
        log = srv.log()
        if not alive:
            problems.append(f"server on port {srv.port} died during the tests")
        if "Traceback" in log:
            problems.append(f"server on port {srv.port} logged a traceback:\n{log[-3000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def server(start_server) -> IrcServer:
    """One server per module, with the relaxed shaper of tests/support.py and an oper block."""
    return start_server()


@pytest.fixture
def irc(server):
    """The module's server; the clients a test opens through it are closed when the test ends."""
    yield server
    server.close_clients()
