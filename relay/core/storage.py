"""The storage API of the core and its modules (the backends are in relay/storage).

A store (`accounts`, `mqtt`, `xmpp_roster`, `muc`, `pubsub`, `sip`...) declares its tables once
as a `Schema`: a name, its migrations (append only), its tables in dump order and the reads it
loads what it keeps in memory with (`loads`, read through `Storage.load`). At start those reads
block (before the server serves anyone); a module loaded while serving has them read first
through the asynchronous `Storage.read` (`Storage.preload`, run by the module manager). After
that a store only enqueues `Op`s on the `WriteQueue`, which the runtime's storage writer commits
in batches, one transaction per flush. The core never waits on a database.

SQL is written once for both backends: `?` placeholders, `INSERT ... ON CONFLICT (...) DO UPDATE`
or `DO NOTHING`, and in DDL the type names of `TYPES` in braces (`{blob}`, `{real}`, `{int}`).
A migration that cannot be portable is a dict with one text per backend.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

BACKENDS = ("sqlite", "postgresql")

# DDL type names per backend; a migration writes {blob}, {real}, {int}.
TYPES = {
    "sqlite": {"blob": "BLOB", "real": "REAL", "int": "INTEGER"},
    "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION", "int": "BIGINT"},
}


class StorageError(Exception):
    """The database cannot be used (unreachable, wrong DSN, a schema newer than this code)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One write: portable SQL with `?` placeholders and its arguments."""

    sql: str
    args: tuple = ()


@dataclass(frozen=True)
class Schema:
    """A named, versioned store. `migrations[i]` takes it from version i to i+1."""

    name: str
    migrations: tuple[str | dict[str, str], ...]
    tables: tuple[str, ...]           # dump and restore order: parents first
    # The oldest version whose dump restores; None: only a dump of this version. A dump older than
    # this version restores as it is (the migrations since then changed only constraints or indexes)
    # unless `convert` is given.
    dumps_from: int | None = None
    # convert(version, tables) -> tables: an older dump's tables, {table: (columns, rows)}, as this
    # version's (what the migrations since `version` do to the rows).
    convert: Callable[[int, dict[str, tuple[list[str], list[list]]]],
                      dict[str, tuple[list[str], list[list]]]] | None = None
    # The reads the store makes when it opens (what it keeps in memory), through `Storage.load`: SQL
    # whose every `?` is the server's id. Declared so that a module loaded while the server serves
    # has them read first, without waiting (`Storage.preload`), then opens its stores as at start.
    loads: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return len(self.migrations)

    def restores(self, version: int) -> bool:
        """Does a dump of this store at `version` load into this schema as it is?"""
        return (self.version if self.dumps_from is None else self.dumps_from) <= version <= self.version

    def statements(self, backend: str, i: int) -> list[str]:
        m = self.migrations[i]
        text = m[backend] if isinstance(m, dict) else m
        text = text.format(**TYPES[backend])
        return [s.strip() for s in text.split(";") if s.strip()]


@runtime_checkable
class Database(Protocol):
    """A backend. Every call blocks: the runtime calls it at start and from its writer, never the core
    after start."""

    backend: str       # "sqlite" or "postgresql"
    where: str         # for messages: the file or the DSN without its password

    def migrate(self, schema: Schema) -> int:
        """Bring `schema` to its latest version; returns the version it had (0: it was created)."""

    def query(self, sql: str, args: tuple = ()) -> list[tuple]: ...

    def execute(self, ops: Sequence[Op]) -> None:
        """Run `ops` in one transaction (all or nothing)."""

    def dump_table(self, table: str) -> tuple[list[str], list[tuple]]:
        """Column names and every row (backups and exports)."""

    def close(self) -> None: ...


class Unit:
    """The ops of one `put`, committed whole. `cancel()` withdraws it while the writer has not taken
    it yet (a change undone within one flush interval never reaches the database), `replace()`
    rewrites it."""

    __slots__ = ("ops", "taken")

    def __init__(self, ops: tuple[Op, ...]):
        self.ops = ops
        self.taken = False

    def cancel(self) -> bool:
        if self.taken:
            return False
        self.ops = ()
        return True

    def replace(self, *ops: Op) -> bool:
        """Rewrite it while the writer has not taken it (a change made again within one flush interval
        is written once, as it last was)."""
        if self.taken:
            return False
        self.ops = ops
        return True


class Writes(Protocol):
    """What a store writes through (WriteQueue implements it): never blocks, never fails."""

    def put(self, *ops: Op) -> Unit:
        """Enqueue `ops` as one unit (committed whole)."""

    def write(self, sql: str, args: tuple = ()) -> Unit: ...

    def mark(self) -> int:
        """The position of the last unit enqueued (the runtime may wait for `committed >= mark`)."""


class WriteQueue:
    """What the core and the modules write through. A unit (the ops of one `put`) is committed whole.

    Positions count units: `mark()` after a change is the position a caller may wait for
    (`committed >= mark`); only the runtime waits (operator commands), never the core.
    Bounded: past `limit` units the queue is `full` and the runtime stops reading from clients
    until the writer catches up (no write is ever refused or dropped).
    """

    def __init__(self, limit: int = 100_000, discard: bool = False):
        self.units: deque[Unit] = deque()
        self.limit = limit
        self.discard = discard        # no database (a bare core in tests): nothing is kept
        self.enqueued = 0
        self.committed = 0
        self.wakeup: Callable[[], None] | None = None   # the writer: a first unit is waiting, or a full queue

    def put(self, *ops: Op) -> Unit:
        u = Unit(ops)
        self.enqueued += 1
        if self.discard:
            u.taken = True
            self.committed = self.enqueued
            return u
        self.units.append(u)
        if self.wakeup is not None and (len(self.units) == 1 or len(self.units) >= self.limit):
            self.wakeup()
        return u

    def write(self, sql: str, args: tuple = ()) -> Unit:
        return self.put(Op(sql, args))

    def mark(self) -> int:
        return self.enqueued

    def __len__(self) -> int:
        return len(self.units)

    @property
    def full(self) -> bool:
        return len(self.units) >= self.limit

    def take(self, max_ops: int) -> list[Unit]:
        """The writer: the oldest units, up to `max_ops` ops (withdrawn units cost none), left in
        place until `done` and no longer cancellable."""
        out, n = [], 0
        for u in self.units:
            if n >= max_ops:
                break
            u.taken = True
            n += len(u.ops)
            out.append(u)
        return out

    def done(self, n: int) -> None:
        for _ in range(n):
            self.units.popleft()
        self.committed += n


@dataclass
class Storage:
    """What the core holds: the database (reads at start) and the write queue."""

    db: Database | None
    queue: WriteQueue = field(default_factory=WriteQueue)     # a Writes
    server_id: str = "001"
    # Set by the runtime: operator commands that dump or copy the whole database.
    backup: Callable[[str], dict] | None = None
    export: Callable[[str], dict] | None = None
    schemas: dict[str, Schema] = field(default_factory=dict)   # the stores opened, for backups
    # Set by the runtime: runs an asynchronous read (see `read`).
    reader: Callable[[str, tuple, Callable[[list[tuple] | None], None]], None] | None = None
    # What `preload` read, for the stores' `load` and `open_store` while a module opens them.
    preloaded: dict[str, list[tuple]] = field(default_factory=dict)      # a load's SQL -> its rows
    current: set[str] = field(default_factory=set)                       # stores found at their version

    @classmethod
    def none(cls, server_id: str = "001") -> "Storage":
        """No database (a bare core in tests): loads nothing, writes are discarded."""
        return cls(None, WriteQueue(discard=True), server_id)

    def open_store(self, schema: Schema, legacy: Callable[[], Iterable[tuple[Op, ...]]] | None = None) -> int:
        """Migrate `schema`; when it was just created, import `legacy()` (an older deployment's files)."""
        self.schemas[schema.name] = schema
        if self.db is None or schema.name in self.current:      # preload found it current: nothing to do
            return schema.version
        old = self.db.migrate(schema)
        if old == 0 and legacy is not None:
            for unit in legacy():
                self.db.execute(unit)
        return old

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """A read at start (loading a store into memory)."""
        return [] if self.db is None else self.db.query(sql, args)

    def load(self, sql: str) -> list[tuple]:
        """One of a store's `Schema.loads` as it opens: the rows `preload` read (a module loaded while
        serving), else a blocking read (at start, before the server serves anyone)."""
        rows = self.preloaded.pop(sql, None)
        return rows if rows is not None else self.query(sql, (self.server_id,) * sql.count("?"))

    def preload(self, schemas: Sequence[Schema], done: Callable[[str | None], None]) -> None:
        """Read the `loads` of `schemas` through `read`, never waiting: `done(None)` later on the loop,
        once every read is in `preloaded`; `done(error)` if one failed. A store never made reads
        nothing (it is created, empty but for an older deployment's files, when it opens); one of an
        older version is migrated here, in place (a blocking step, once per deployment)."""
        if self.db is None or self.reader is None:       # no database, or not running: read as at start
            done(None)
            return

        def versions(rows: list[tuple] | None) -> None:
            if rows is None:
                done("the stored schema versions could not be read")
                return
            have = {name: v for name, v in rows}
            todo: list[str] = []
            for s in schemas:
                if not have.get(s.name):
                    continue
                if have[s.name] != s.version:
                    try:
                        self.db.migrate(s)
                    except Exception as e:       # a schema newer than this code, a database gone
                        done(f"store {s.name}: {e}")
                        return
                self.current.add(s.name)
                todo += s.loads

            def next_read(rows: list[tuple] | None = None, sql: str | None = None) -> None:
                if sql is not None:
                    if rows is None:
                        done(f"a read failed: {sql[:60]}")
                        return
                    self.preloaded[sql] = rows
                if not todo:
                    done(None)
                    return
                q = todo.pop(0)
                self.read(q, (self.server_id,) * q.count("?"), lambda r, q=q: next_read(r, q))
            next_read()
        self.read("SELECT store, version FROM schema_versions", (), versions)

    def loaded(self) -> None:
        """The stores `preload` read for are open: forget what they did not take."""
        self.preloaded.clear()
        self.current.clear()

    def read(self, sql: str, args: tuple, done: Callable[[list[tuple] | None], None]) -> None:
        """A read after start, for what is not kept in memory (archive queries): never waits.

        `done(rows)` is called later on the loop, once every write enqueued before this call is
        committed (a store reads its own writes); `done(None)` if the read failed (the runtime logs
        why). With no database (a bare core) there is nothing to read: `done([])` at once."""
        if self.reader is None:
            done([] if self.db is None else self.query(sql, args))
        else:
            self.reader(sql, args, done)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
