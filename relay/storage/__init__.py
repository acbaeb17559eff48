"""Storage backends behind relay.core.storage: SQLite (default, embedded) and PostgreSQL.

`open_database(config)` picks one from the `storage:` section; `migrate.py` is the one migration
runner both use; `dump.py` the portable backup format (the same for both backends).
"""

from __future__ import annotations

from relay.core.config import Config
from relay.core.storage import Database, StorageError


def open_database(config: Config) -> Database:
    """Open (and check) the configured database; StorageError's text names the config key."""
    st = config.storage
    if st.backend == "postgresql":
        from relay.storage.postgresql import PostgresDatabase
        return PostgresDatabase(st.dsn, st.pool_size, server_id=config.server.id)
    from relay.storage.sqlite import SqliteDatabase
    config.data_path.mkdir(parents=True, exist_ok=True)
    return SqliteDatabase(config.path(str(config.data_path / st.file)))


__all__ = ["open_database", "StorageError"]
