"""PostgreSQL through psycopg 3 (blocking: the runtime calls it from gevent's thread pool).

Several servers may share one database: the stores key per-server rows by server id, and the
network-wide ones (accounts) are one set of rows. A small pool of `pool_size` connections: the
writer holds one per flush, start-up reads, backups and exports take others.
"""

from __future__ import annotations

import functools
import itertools
import operator
import queue
import re
import threading
import weakref
from typing import Sequence

from relay.core.storage import Op, Schema, StorageError
from relay.storage import pgbatch
from relay.storage.migrate import migrate

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is an install requirement
    psycopg = None

CONNECT_TIMEOUT = 5


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """Portable `?` placeholders to psycopg's `%s` (a literal `%` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


_first, _sql = operator.itemgetter(0), operator.attrgetter("sql")


def safe_dsn(dsn: str) -> str:
    """The DSN for messages: without its password."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


class PostgresDatabase:
    backend = "postgresql"

    def __init__(self, dsn: str | None, pool_size: int = 4, server_id: str = ""):
        if psycopg is None:
            raise StorageError("storage.backend: postgresql needs psycopg (pip install 'psycopg[binary]')")
        if not dsn:
            raise StorageError("storage.dsn: required when storage.backend is postgresql")
        self.dsn = dsn
        self.where = safe_dsn(dsn)
        self.pool_size = pool_size
        self.application = f"relaynet {server_id}".strip()
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._types: dict[str, dict[str, str] | None] = {}
        self._temps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # connection -> its temporary tables
        # Connect now: a wrong DSN or an unreachable database refuses to start.
        self._release(self._connect())

    def _connect(self):
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT, application_name=self.application,
                                   autocommit=True)
        except psycopg.ProgrammingError as e:
            raise StorageError(f"storage.dsn: invalid: {str(e).strip().splitlines()[0]}") from None
        except psycopg.Error as e:
            text = " ".join(str(e).split())
            raise StorageError(f"storage.dsn: cannot connect to {self.where}: {text}") from None
        with self._lock:
            self._made += 1
        return conn

    def _acquire(self):
        self._slots.acquire()
        try:
            while True:
                try:
                    conn = self._idle.get_nowait()
                except queue.Empty:
                    return self._connect()
                if not conn.closed and not conn.broken:
                    return conn
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn) -> None:
        if self._closed or conn.closed or conn.broken:
            conn.close()
        else:
            self._idle.put(conn)
        try:
            self._slots.release()
        except ValueError:
            pass  # the first connection, made before any acquire

    def _column_types(self, conn, table: str) -> dict[str, str] | None:
        """Each column's SQL type without its modifier (pgbatch casts to it, the column then checks its
        length or precision as for a row written alone), cached until the next migration."""
        if table not in self._types:
            rows = self._fetch(conn, "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                               "WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped", (table,))
            self._types[table] = dict(rows) or None
        return self._types[table]

    def _run(self, conn, stmts: Sequence[tuple[str, tuple]]) -> None:
        runs = [(sql, [args for _, args in group]) for sql, group in itertools.groupby(stmts, key=_first)]
        self._run_runs(conn, runs)

    def _run_runs(self, conn, runs: list[tuple[str, list[tuple]]]) -> None:
        """One transaction of runs (consecutive writes of one statement, with their rows)."""
        # Pipeline mode: the statements go out without waiting for each result (one round trip per
        # flush, not per write); an error surfaces at the end and rolls the transaction back.
        # Consecutive writes of one statement (a message fanned out to many sessions) go as one
        # statement over a JSON array where pgbatch knows the form (far less work per row on both sides,
        # and the writer thread holds the GIL the loop needs far less), else as one executemany; a long
        # run of inserts or keyed deletes goes as COPY (outside the pipeline, which cannot carry it).
        types = functools.partial(self._column_types, conn)
        # catalog reads and the temporary tables of keyed deletes: before the transaction
        plans = []
        for sql, rows in runs:
            copy = pgbatch.copy_form(sql, rows, types)
            if copy is not None and copy.temp is not None:
                self._make_temp(conn, copy.temp)
            plans.append((sql, rows, None if copy else pgbatch.statements(sql, rows, types), copy))
        filled: set[str] = set()        # the temporary tables a copy filled in this transaction
        try:
            with conn.transaction(), conn.cursor() as cur:
                for copying, group in itertools.groupby(plans, key=lambda p: p[3] is not None):
                    if copying:
                        for sql, rows, sets, copy in group:
                            if copy.clear is not None:
                                if copy.temp in filled:
                                    cur.execute(copy.clear)
                                filled.add(copy.temp)
                            self._copy(conn, cur, copy, sql, rows, types)
                        continue
                    with conn.pipeline():
                        for sql, rows, sets, _ in group:
                            self._statements(cur, sql, rows, sets)
        except psycopg.Error:
            self._types.clear()       # a table changed under us (another server migrated it): read again
            raise

    @staticmethod
    def _statements(cur, sql: str, rows: list[tuple], sets) -> None:
        if sets is not None:
            for q, params in sets:
                cur.execute(q, params)
        elif len(rows) == 1:
            cur.execute(_placeholders(sql), rows[0])
        else:
            cur.executemany(_placeholders(sql), rows)

    def _copy(self, conn, cur, copy: pgbatch.Copy, sql: str, rows: list[tuple], types) -> None:
        if not copy.guarded:
            self._copy_rows(cur, copy)
            return
        try:
            with conn.transaction():       # a savepoint: a conflict rolls back to it
                self._copy_rows(cur, copy)
        except (psycopg.errors.UniqueViolation, psycopg.errors.ExclusionViolation):
            sets = pgbatch.statements(sql, rows, types)     # the types are read already
            with conn.pipeline():
                self._statements(cur, sql, rows, sets)

    @staticmethod
    def _copy_rows(cur, copy: pgbatch.Copy) -> None:
        with cur.copy(copy.sql) as cp:
            cp.write(copy.data)
        if copy.then is not None:
            cur.execute(copy.then)

    def _make_temp(self, conn, ddl: str) -> None:
        """A temporary table of this connection (outside any transaction: it stays for the session)."""
        made = self._temps.setdefault(conn, set())
        if ddl not in made:
            conn.execute(ddl)
            made.add(ddl)

    @staticmethod
    def _fetch(conn, sql: str, args: tuple) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(_placeholders(sql), args)
            return cur.fetchall() if cur.description else []

    def migrate(self, schema: Schema) -> int:
        # Servers sharing the database may start together: one migrates at a time (a session lock).
        conn = self._acquire()
        try:
            conn.execute("SELECT pg_advisory_lock(7314159)")
            try:
                return migrate(schema, self.backend, self.where, lambda q, a: self._fetch(conn, q, a),
                               lambda stmts: self._run(conn, stmts))
            finally:
                self._types.clear()
                conn.execute("SELECT pg_advisory_unlock(7314159)")
        finally:
            self._release(conn)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn = self._acquire()
        try:
            return self._fetch(conn, sql, args)
        finally:
            self._release(conn)

    def execute(self, ops: Sequence[Op]) -> None:
        conn = self._acquire()
        try:
            self._run_runs(conn, [(sql, [o.args for o in group]) for sql, group in itertools.groupby(ops, key=_sql)])
        finally:
            self._release(conn)

    def dump_table(self, table: str) -> tuple[list[str], list[tuple]]:
        conn = self._acquire()
        try:
            with conn.cursor() as cur:
                cur.execute(f'SELECT * FROM "{table}"')
                return [d.name for d in cur.description], cur.fetchall()
        finally:
            self._release(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
