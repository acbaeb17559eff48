"""PostgreSQL: consecutive writes of one statement as one set-based statement over arrays.

A flush holds runs of the same write with different rows (a message stored for 100 sessions,
100 acknowledgements deleting them). One statement per row costs the server a statement each
and the writer thread Python work per row, holding the GIL the event loop needs. Instead, a run
of the simple forms below goes as one statement whose parameters are one array per column,
typed from the catalog:

    INSERT INTO t (c1, ..) VALUES (?, ..) [ON CONFLICT [(k1, ..)] DO NOTHING | DO UPDATE SET ..]
        -> INSERT INTO t (c1, ..) SELECT * FROM unnest(?::type1[], ..) [the same ON CONFLICT]
    DELETE FROM t WHERE k1 = ? AND ..
        -> DELETE FROM t WHERE (k1, ..) IN (SELECT * FROM unnest(?::type1[], ..))
    UPDATE t SET c1 = ?, .. WHERE k1 = ? AND ..
        -> UPDATE t SET c1 = v.a1, .. FROM unnest(..) AS v(a1, ..) WHERE t.k1 = v.an AND ..

The result is the one of the writes run in order: where one statement could not touch a row
twice (an upsert's conflict key, an update's key), a run is cut before a key it already holds.
Any other SQL, or a column whose values are not of one plain type, goes row by row.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_KEYS = rf"{_NAME}\s*=\s*\?(?:\s+AND\s+{_NAME}\s*=\s*\?)*"
_INSERT = re.compile(rf"INSERT\s+INTO\s+({_NAME})\s*\(([^()?]*)\)\s*VALUES\s*\(([\s?,]*)\)(.*)", re.I | re.S)
_CONFLICT = re.compile(rf"ON\s+CONFLICT\s*(?:\(([^()]*)\))?\s*DO\s+(NOTHING|UPDATE\s+SET\s+.*)", re.I | re.S)
_DELETE = re.compile(rf"DELETE\s+FROM\s+({_NAME})\s+WHERE\s+({_KEYS})", re.I | re.S)
_UPDATE = re.compile(rf"UPDATE\s+({_NAME})\s+SET\s+({_NAME}\s*=\s*\?(?:\s*,\s*{_NAME}\s*=\s*\?)*)\s+WHERE\s+({_KEYS})",
                     re.I | re.S)
_PLAIN = (int, float, str, bytes)     # the Python types an array parameter carries (bool is an int: no)
MIN_ROWS = 2


def _names(text: str) -> list[str]:
    return [n.strip().lower() for n in text.split(",")]


def _assigned(text: str) -> list[str]:
    return [p.split("=")[0].strip().lower() for p in re.split(r"\s*(?:,|\bAND\b)\s*", text, flags=re.I)]


@dataclass(frozen=True)
class Plan:
    """How one portable write becomes a statement over arrays."""

    table: str
    columns: tuple[str, ...]     # the column of each `?`, in order
    key: tuple[int, ...] | None  # positions of the row key one statement must not repeat; None: no limit
    build: Callable[[list[str]], str]  # the array casts ("$1::text[]", ...) -> SQL with %s placeholders


@functools.lru_cache(maxsize=512)
def plan(sql: str) -> Plan | None:
    """The set-based form of `sql`, or None when it is not one of the simple forms."""
    text = sql.strip().rstrip(";").strip()
    m = _INSERT.fullmatch(text)
    if m:
        table, cols, marks, tail = m.group(1), _names(m.group(2)), m.group(3), m.group(4).strip()
        if marks.count("?") != len(cols) or len(set(cols)) != len(cols) or "?" in tail or "%" in tail:
            return None
        key: tuple[int, ...] | None = None
        if tail:
            c = _CONFLICT.fullmatch(tail)
            if c is None or re.search(r"\bRETURNING\b", tail, re.I):
                return None
            if c.group(2).upper().startswith("UPDATE"):
                if c.group(1) is None:
                    return None
                target = _names(c.group(1))
                if any(t not in cols for t in target):
                    return None
                key = tuple(cols.index(t) for t in target)
        head = f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest("
        return Plan(table, tuple(cols), key, lambda casts: head + ", ".join(casts) + ")" + (" " + tail if tail else ""))
    m = _DELETE.fullmatch(text)
    if m:
        table, keys = m.group(1), _assigned(m.group(2))
        sql_head = f"DELETE FROM {table} WHERE ({', '.join(keys)}) IN (SELECT * FROM unnest("
        return Plan(table, tuple(keys), None, lambda casts: sql_head + ", ".join(casts) + "))")
    m = _UPDATE.fullmatch(text)
    if m:
        table, sets, keys = m.group(1), _assigned(m.group(2)), _assigned(m.group(3))
        n = len(sets) + len(keys)
        alias = [f"a{i}" for i in range(n)]
        set_sql = ", ".join(f"{c} = v.{alias[i]}" for i, c in enumerate(sets))
        where = " AND ".join(f"t.{c} = v.{alias[len(sets) + i]}" for i, c in enumerate(keys))

        def build(casts: list[str], table=table) -> str:
            return (f"UPDATE {table} AS t SET {set_sql} FROM unnest({', '.join(casts)}) AS v({', '.join(alias)}) "
                    f"WHERE {where}")
        return Plan(table, tuple(sets + keys), tuple(range(len(sets), n)), build)
    return None


def _chunks(rows: Sequence[tuple], key: tuple[int, ...] | None) -> Iterator[Sequence[tuple]]:
    """`rows` cut so that no chunk holds one key twice (in order: a later write sees the earlier)."""
    if key is None:
        yield rows
        return
    seen: set = set()
    start = 0
    for i, r in enumerate(rows):
        k = tuple(r[j] for j in key)
        if k in seen:
            yield rows[start:i]
            start, seen = i, set()
        seen.add(k)
    yield rows[start:]


def _columns(rows: Sequence[tuple]) -> list[list] | None:
    """One list per column, or None if a column mixes types (psycopg dumps a list of one type)."""
    cols = [list(c) for c in zip(*rows)]
    for c in cols:
        kind = None
        for v in c:
            if v is None:
                continue
            t = type(v)
            if t is not kind:
                if kind is not None or t not in _PLAIN:
                    return None
                kind = t
    return cols


def statements(sql: str, rows: Sequence[tuple], types: Callable[[str], dict[str, str] | None]
               ) -> list[tuple[str, tuple]] | None:
    """The set-based statements (SQL with %s, parameters) for a run of `sql` over `rows`, or None
    to run them row by row. `types(table)` gives each column's SQL type (None: unknown table)."""
    if len(rows) < MIN_ROWS:
        return None
    p = plan(sql)
    if p is None or any(len(r) != len(p.columns) for r in rows):
        return None
    coltypes = types(p.table)
    if not coltypes or any(c not in coltypes for c in p.columns):
        return None
    query = p.build([f"%s::{coltypes[c]}[]" for c in p.columns])
    out = []
    for chunk in _chunks(rows, p.key):
        cols = _columns(chunk)
        if cols is None:
            return None
        out.append((query, tuple(cols)))
    return out
