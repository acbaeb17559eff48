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


# ---------------------------------------------------------------- storage backends (see pgsupport.py)
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster per test process (so per xdist worker)."""
    from pgsupport import PgCluster
    try:
        import psycopg  # noqa: F401
        cluster = PgCluster().start()
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"PostgreSQL unavailable: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def storage_section(request) -> dict:
    """The `storage:` config section of a test's server, for each backend (a fresh database for each)."""
    if request.param == "sqlite":
        return {"backend": "sqlite"}
    cluster = request.getfixturevalue("pg_cluster")
    return {"backend": "postgresql", "dsn": cluster.new_database(), "pool_size": 2}


# ---------------------------------------------------------------- no server outlives the run
def pytest_sessionfinish(session, exitstatus):
    """A test cut off by its timeout may not stop the servers it started: stop those of this
    process's run (their configs lie under its base temp dir), so none keeps running after it."""
    import psutil
    try:
        base = str(session.config._tmp_path_factory.getbasetemp())
    except Exception:
        return
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "relay.runtime.daemon" in cmd and any(a.startswith(base + "/") for a in cmd):
            try:
                p.kill()
            except psutil.Error:
                pass
