"""The portable dump: the same file from and for both backends (`backup`, `restore`, `export`).

JSON lines. The first is the header:
    {"format": "relaynet-dump", "version": 1, "stores": {"accounts": 1, "mqtt": 1}}
(each store with its schema version), then one line per table and one per row:
    {"table": "accounts", "store": "accounts", "columns": ["key", "name", ...]}
    {"row": ["alice", "alice", ...]}
A bytes value is {"b64": "..."}. Tables come in each store's dump order (parents first).
A dump of an older schema version restores where the store says so (`Schema.dumps_from`), through
its `Schema.convert` where the tables changed since.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Iterable

from relay.core.storage import Database, Op, Schema, StorageError

FORMAT, VERSION = "relaynet-dump", 1


def stores(core) -> list[Schema]:
    return list(core.storage.schemas.values())


def _enc(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(v)).decode()}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"b64"}:
        return base64.b64decode(v["b64"])
    return v


def write_dump(db: Database, schemas: Iterable[Schema], out) -> dict:
    schemas = list(schemas)
    out.write(json.dumps({"format": FORMAT, "version": VERSION,
                          "stores": {s.name: s.version for s in schemas}}) + "\n")
    counts: dict[str, int] = {}
    for s in schemas:
        for t in s.tables:
            cols, rows = db.dump_table(t)
            out.write(json.dumps({"table": t, "store": s.name, "columns": cols}) + "\n")
            for r in rows:
                out.write(json.dumps({"row": [_enc(v) for v in r]}, separators=(",", ":")) + "\n")
            counts[t] = len(rows)
    return counts


def backup(db: Database, schemas: Iterable[Schema], path: Path) -> dict:
    tmp = Path(f"{path}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # secrets inside: this user only
    with os.fdopen(fd, "w") as f:
        counts = write_dump(db, schemas, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"file": str(path), "rows": counts}


def read_dump(path: Path) -> tuple[dict, list[tuple[str, str, list[str], list[list]]]]:
    """The header and (store, table, columns, rows); StorageError says what is wrong with the file."""
    tables: list[tuple[str, str, list[str], list[list]]] = []
    try:
        f = open(path)
    except OSError as e:
        raise StorageError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        try:
            header = json.loads(f.readline() or "null")
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise StorageError(f"{path}: not a relaynet dump")
        if header.get("version") != VERSION:
            raise StorageError(f"{path}: dump format version {header.get('version')} (this server reads {VERSION})")
        for n, line in enumerate(f, 2):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                raise StorageError(f"{path}:{n}: not JSON") from None
            if isinstance(d, dict) and "table" in d:
                tables.append((d.get("store"), d["table"], d.get("columns") or [], []))
            elif isinstance(d, dict) and isinstance(d.get("row"), list) and tables:
                tables[-1][3].append([_dec(v) for v in d["row"]])
            else:
                raise StorageError(f"{path}:{n}: neither a table nor a row")
    return header, tables


def _converted(versions: dict, known: dict[str, Schema], tables: list) -> list:
    """The dump's tables, those of a store dumped at an older version that has a converter made this
    version's (the order of the stores kept)."""
    out, i = [], 0
    while i < len(tables):
        store = tables[i][0]
        j = i
        while j < len(tables) and tables[j][0] == store:
            j += 1
        s, v = known.get(store), versions.get(store)
        if s is not None and s.convert is not None and isinstance(v, int) and v < s.version:
            done = s.convert(v, {t: (cols, rows) for _, t, cols, rows in tables[i:j]})
            out += [(store, t, list(cols), list(rows)) for t, (cols, rows) in done.items()]
        else:
            out += tables[i:j]
        i = j
    return out


def load_dump(db: Database, schemas: Iterable[Schema], path: Path, replace: bool = True) -> dict:
    """Put a dump's rows into `db` (its stores migrated first), in one transaction.

    replace: the stores' tables are emptied first (restore); otherwise rows already there are kept
    (export onto a database another server may already use)."""
    header, tables = read_dump(path)
    known = {s.name: s for s in schemas}
    for name, v in header.get("stores", {}).items():
        s = known.get(name)
        if s is None:
            raise StorageError(f"{path}: store {name} is unknown to this server (is its module installed?)")
        if not isinstance(v, int) or not s.restores(v):
            raise StorageError(f"{path}: store {name} is at schema version {v}, this server's is {s.version}")
    ops: list[Op] = []
    for name in header.get("stores", {}):
        db.migrate(known[name])
        if replace:
            ops += [Op(f'DELETE FROM "{t}"') for t in reversed(known[name].tables)]
    tables = _converted(header.get("stores", {}), known, tables)
    counts = {}
    for store, table, cols, rows in tables:
        if store not in known or table not in known[store].tables:
            raise StorageError(f"{path}: table {table} is not part of store {store}")
        sql = (f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
               + ("" if replace else " ON CONFLICT DO NOTHING"))
        ops += [Op(sql, tuple(r)) for r in rows]
        counts[table] = len(rows)
    db.execute(ops)
    return {"file": str(path), "rows": counts}


def export(db: Database, schemas: Iterable[Schema], dsn: str, config) -> dict:
    """Copy `db` onto the PostgreSQL database at `dsn` (like ejabberd's export2sql)."""
    import tempfile

    from relay.storage.postgresql import PostgresDatabase
    schemas = list(schemas)
    target = PostgresDatabase(dsn, 1, server_id=config.server.id)
    try:
        with tempfile.TemporaryDirectory(dir=config.data_path) as d:
            p = Path(d, "export.jsonl")
            with open(p, "w") as f:
                write_dump(db, schemas, f)
            res = load_dump(target, schemas, p, replace=False)
    finally:
        target.close()
    res["to"] = target.where
    res.pop("file", None)
    return res
