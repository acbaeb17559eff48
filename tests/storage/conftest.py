"""Every storage test runs on both backends: the `db` fixture is a real SQLite file or a real
PostgreSQL database (a fresh one per test, on the session's throw-away cluster)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from relay.core.storage import Storage, WriteQueue  # noqa: E402


@pytest.fixture
def db(storage_section, tmp_path):
    if storage_section["backend"] == "sqlite":
        from relay.storage.sqlite import SqliteDatabase
        d = SqliteDatabase(str(tmp_path / "relay.db"))
    else:
        from relay.storage.postgresql import PostgresDatabase
        d = PostgresDatabase(storage_section["dsn"], 2)
    yield d
    d.close()


@pytest.fixture
def storage(db):
    return Storage(db, WriteQueue(1000), "001")
