"""Fixtures for the IRC scenario tests: real server processes started with `relayctl start --detach`.

`server` is session-scoped (tests use unique nicks and channels, see ircsupport.uniq/chan), so each
xdist worker starts one shared server; `irc` is the per-test view of it, closing the clients a test
opened. Modules that need another configuration (default shaper, short timeouts)
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


def _stop(srv: IrcServer) -> list[str]:
    """Stop a server; what went wrong with it while it ran."""
    problems = []
    alive = srv.alive()
    srv.stop()
    log = srv.log()
    if not alive:
        problems.append(f"server on port {srv.port} died during the tests")
    if "Traceback" in log:
        problems.append(f"server on port {srv.port} logged a traceback:\n{log[-3000:]}")
    return problems


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
    problems = [p for srv in started for p in _stop(srv)]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def server(tmp_path_factory, oper_hash) -> IrcServer:
    """One shared server per xdist worker, with the relaxed shaper of tests/support.py and an oper block.

    Tests never interfere on it: nicks and channels are unique (ircsupport.uniq/chan), and a test that
    needs exact global counts (LUSERS) or another configuration starts its own with `start_server`.
    """
    srv = IrcServer(tmp_path_factory.mktemp("irc-shared"), oper_hash).start()
    yield srv
    problems = _stop(srv)
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def restricted(tmp_path_factory, oper_hash) -> IrcServer:
    """A second shared server for the limits tests: no MOTD, CHANLIMIT 2, OPER denied by the access rule,
    sendq 64 KiB."""
    srv = IrcServer(tmp_path_factory.mktemp("irc-restricted"), oper_hash, irc={"motd": "", "chanlimit": 2},
                    limits={"sendq": 65536},
                    access_rules={"oper": [{"deny": "all"}], "register": [{"allow": "all"}],
                                  "create_channel": [{"allow": "all"}]}).start()
    yield srv
    problems = _stop(srv)
    assert not problems, "\n".join(problems)


@pytest.fixture
def irc(server):
    """The shared server; the clients a test opens through it are closed when the test ends."""
    yield server
    server.close_clients()
