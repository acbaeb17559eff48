"""SQLite: the embedded default, one file in the data directory (WAL).

synchronous=NORMAL in WAL mode: a commit is an append to the log, durable across a process crash
(kill -9), not across a power cut. One connection, used by one thread at a time (the lock): the
runtime's writer thread, or the start-up reads.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from typing import Sequence

from relay.core.storage import Op, Schema, StorageError
from relay.storage.migrate import migrate


class SqliteDatabase:
    backend = "sqlite"

    def __init__(self, path: str):
        self.where = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise StorageError(f"storage.file: cannot open {path}: {e}") from None
        self.lock = threading.Lock()

    def migrate(self, schema: Schema) -> int:
        return migrate(schema, self.backend, self.where, self.query, self._transaction)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def _transaction(self, stmts: Sequence[tuple[str, tuple]]) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                for sql, group in itertools.groupby(stmts, key=lambda s: s[0]):
                    self.db.executemany(sql, [args for _, args in group])
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def execute(self, ops: Sequence[Op]) -> None:
        self._transaction([(o.sql, o.args) for o in ops])

    def dump_table(self, table: str) -> tuple[list[str], list[tuple]]:
        with self.lock:
            cur = self.db.execute(f'SELECT * FROM "{table}"')
            return [d[0] for d in cur.description], cur.fetchall()

    def close(self) -> None:
        with self.lock:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
