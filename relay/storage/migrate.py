"""The one migration runner: a `schema_versions` table holds each store's version.

Each step runs in its own transaction with the version bump, so a crash mid-migration leaves the
store at the last complete version. A store newer than this code refuses to start.
"""

from __future__ import annotations

from typing import Callable

from relay.core.storage import Schema, StorageError

VERSIONS_DDL = "CREATE TABLE IF NOT EXISTS schema_versions (store TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def migrate(schema: Schema, backend: str, where: str, query: Callable[[str, tuple], list],
            run_in_transaction: Callable[[list[tuple[str, tuple]]], None]) -> int:
    run_in_transaction([(VERSIONS_DDL, ())])
    rows = query("SELECT version FROM schema_versions WHERE store = ?", (schema.name,))
    old = rows[0][0] if rows else 0
    if old > schema.version:
        raise StorageError(f"{where}: store {schema.name} has schema version {old}, newer than this "
                           f"server's {schema.version}")
    for i in range(old, schema.version):
        stmts = [(s, ()) for s in schema.statements(backend, i)]
        stmts.append(("INSERT INTO schema_versions(store, version) VALUES (?, ?) ON CONFLICT(store) DO UPDATE "
                      "SET version = excluded.version", (schema.name, i + 1)))
        run_in_transaction(stmts)
    return old
