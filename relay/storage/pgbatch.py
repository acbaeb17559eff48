"""PostgreSQL: consecutive writes of one statement as one set-based statement over a JSON array.

A flush holds runs of the same write with different rows (a message stored for 100 sessions,
100 acknowledgements deleting them). One statement per row costs the server a statement each
and the writer thread Python work per row, holding the GIL the event loop needs. Instead, a run
of the simple forms below goes as one statement whose one parameter is the rows as a JSON array
(`json.dumps`, in C), each value cast to its column's type from the catalog:

    INSERT INTO t (c1, ..) VALUES (?, ..) [ON CONFLICT [(k1, ..)] DO NOTHING | DO UPDATE SET ..]
        -> INSERT INTO t (c1, ..) SELECT (_r->>0)::type1, .. FROM jsonb_array_elements(?) _r [the same tail]
    DELETE FROM t WHERE k1 = ? AND ..
        -> DELETE FROM t WHERE (k1, ..) IN (SELECT (_r->>0)::type1, .. FROM jsonb_array_elements(?) _r)
    UPDATE t SET c1 = ?, .. WHERE k1 = ? AND ..
        -> UPDATE t SET c1 = _v.a0, .. FROM (SELECT .. FROM jsonb_array_elements(?) _r) _v WHERE t.k1 = _v.an ..

The result is the one of the writes run in order: where one statement could not touch a row
twice (an upsert's conflict key, an update's key), a run is cut before a key it already holds.
Any other SQL, or a value that is not None, int, float, str or bytes (for a bytea column), goes
row by row.

A long run of inserts (`copy_form`: COPY_MIN_ROWS rows or more, a message stored for many sessions)
goes as COPY instead, the server's cheapest way in (no statement, no cast, no conflict check per
row): an insert with ON CONFLICT is copied inside a savepoint, and a conflict (a key already
stored or met twice in the run, which the writes rarely do) rolls back to it and the run goes as
the statements above. A long run of one keyed delete (the acknowledgements of that message) copies
its keys into a temporary table and deletes through one join, a third of the server's work of
the JSON form. The COPY data is built a column at a time (`copy_text`: one escape call per text
column, one conversion for a column that holds one value), not per row through the driver, so the
writer thread holds the GIL the event loop needs less.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
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
MIN_ROWS = 2
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _names(text: str) -> list[str]:
    return [n.strip().lower() for n in text.split(",")]


def _assigned(text: str) -> list[str]:
    return [p.split("=")[0].strip().lower() for p in re.split(r"\s*(?:,|\bAND\b)\s*", text, flags=re.I)]


_ROWS = "jsonb_array_elements(%s::jsonb) AS _r"


@dataclass(frozen=True)
class Plan:
    """How one portable write becomes a statement over a JSON array of rows."""

    table: str
    columns: tuple[str, ...]     # the column of each `?`, in order
    key: tuple[int, ...] | None  # positions of the row key one statement must not repeat; None: no limit
    build: Callable[[str], str]  # the columns' values ("(_r->>0)::text, ...") -> SQL with one %s


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
        head = f"INSERT INTO {table} ({', '.join(cols)}) SELECT "
        tail_sql = " " + tail if tail else ""
        return Plan(table, tuple(cols), key, lambda values: f"{head}{values} FROM {_ROWS}{tail_sql}")
    m = _DELETE.fullmatch(text)
    if m:
        table, keys = m.group(1), _assigned(m.group(2))
        head = f"DELETE FROM {table} WHERE ({', '.join(keys)}) IN (SELECT "
        return Plan(table, tuple(keys), None, lambda values: f"{head}{values} FROM {_ROWS})")
    m = _UPDATE.fullmatch(text)
    if m:
        table, sets, keys = m.group(1), _assigned(m.group(2)), _assigned(m.group(3))
        n = len(sets) + len(keys)
        set_sql = ", ".join(f"{c} = _v.a{i}" for i, c in enumerate(sets))
        where = " AND ".join(f"_t.{c} = _v.a{len(sets) + i}" for i, c in enumerate(keys))

        def build(values: str, table=table) -> str:
            return f"UPDATE {table} AS _t SET {set_sql} FROM (SELECT {values} FROM {_ROWS}) AS _v WHERE {where}"
        return Plan(table, tuple(sets + keys), tuple(range(len(sets), n)), build)
    return None


def _chunks(rows: Sequence[tuple], key: tuple[int, ...] | None) -> Iterator[Sequence[tuple]]:
    """`rows` cut so that no chunk holds one key twice (in order: a later write sees the earlier)."""
    if key is None:
        yield rows
        return
    get = operator.itemgetter(*key)
    seen: set = set()
    start = 0
    for i, r in enumerate(rows):
        k = get(r)
        if k in seen:
            yield rows[start:i]
            start, seen = i, set()
        seen.add(k)
    yield rows[start:]


def _json(rows: Sequence[tuple], blobs: list[int]) -> str | None:
    """The rows as a JSON array of arrays; None if a value cannot go this way (the run goes row by row)."""
    if blobs:        # bytes only in bytea columns, whose input reads \x and hex digits
        conv = []
        for r in rows:
            r = list(r)
            for i in blobs:
                v = r[i]
                if type(v) is bytes:
                    r[i] = "\\x" + v.hex()
            conv.append(r)
        rows = conv
    for r in rows:
        for v in r:
            t = type(v)
            if t is str or t is int or v is None or (t is float and math.isfinite(v)):
                continue
            return None      # bool, NaN, bytes elsewhere, an array, a date...
    try:
        return _dumps(rows)
    except (TypeError, ValueError):
        return None


COPY_MIN_ROWS = 64


@dataclass(frozen=True)
class Copy:
    """A run of writes as COPY: `sql` the COPY statement, `data` the rows in COPY's text format.
    An insert: `guarded` when it has an ON CONFLICT clause, so the copy runs in a savepoint and a
    conflict runs `statements` over `rows` instead. A delete: the keys go into the temporary table
    `temp` makes (once per connection; emptied at each commit, and by `clear` before it takes a
    second run within one), and `then` deletes through them."""

    sql: str
    rows: Sequence[tuple]
    guarded: bool
    data: str
    temp: str | None = None
    then: str | None = None
    clear: str | None = None     # empties the temporary table (before a second run in one transaction)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


_FLOATS = ("double precision", "real", "numeric")


def _column_text(values: tuple, coltype: str) -> list[str] | None:
    """One column of a run in COPY's text format, or None (a value COPY or the column cannot take).
    Per column, not per value: a column's values are mostly of one type, escaped in one call."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and len(values) > 1 and values.count(values[0]) == len(values):
        one = _column_text(values[:1], coltype)      # one value for the whole run (the server, a topic...)
        return None if one is None else one * len(values)
    nulls = type(None) in kinds
    kinds.discard(type(None))
    if not kinds:
        return [_NULL] * len(values)
    present = [v for v in values if v is not None] if nulls else values
    if kinds == {str}:
        joined = "\x00".join(present)
        if joined.count("\x00") != len(present) - 1:        # a NUL inside a value: PostgreSQL refuses it
            return None
        out = joined.translate(_ESCAPES).split("\x00")
    elif kinds <= {int, float}:
        if float in kinds and (coltype not in _FLOATS or not all(map(math.isfinite, present))):
            return None
        out = list(map(str, present))
    elif kinds == {bytes} and coltype == "bytea":
        out = ["\\\\x" + v.hex() for v in present]
    else:
        return None                                        # bool, bytes in a text column, a date...
    if not nulls:
        return out
    it = iter(out)
    return [_NULL if v is None else next(it) for v in values]


def copy_text(rows: Sequence[tuple], coltypes: Sequence[str]) -> str | None:
    """`rows` as COPY text data (tab-separated, one line each), or None if a value cannot go so."""
    cols = []
    for values, coltype in zip(zip(*rows), coltypes):
        col = _column_text(values, coltype)
        if col is None:
            return None
        cols.append(col)
    return "\n".join(map("\t".join, zip(*cols))) + "\n"


def _temp_name(table: str, keys: Sequence[str], coltypes: dict[str, str]) -> str:
    sig = ",".join(f"{k} {coltypes[k]}" for k in keys)
    return f"_rn_keys_{hashlib.sha1(f'{table}({sig})'.encode()).hexdigest()[:12]}"


def copy_form(sql: str, rows: Sequence[tuple], types: Callable[[str], dict[str, str] | None]) -> Copy | None:
    """A run of one INSERT or keyed DELETE over `rows` as COPY, or None (too short, another form,
    odd values)."""
    verb = sql.lstrip()[:6].upper()
    if len(rows) < COPY_MIN_ROWS or verb not in ("INSERT", "DELETE"):
        return None
    p = plan(sql)
    if p is None or set(map(len, rows)) != {len(p.columns)}:
        return None
    coltypes = types(p.table)
    if not coltypes or any(c not in coltypes for c in p.columns):
        return None
    data = copy_text(rows, [coltypes[c] for c in p.columns])
    if data is None:
        return None
    cols = ", ".join(p.columns)
    if verb == "INSERT":
        guarded = bool(re.search(r"\bON\s+CONFLICT\b", sql, re.I))
        return Copy(f"COPY {p.table} ({cols}) FROM STDIN", rows, guarded, data)
    # DELETE ... WHERE k1 = ? AND ..: the keys copied into a temporary table, one join deletes the rows
    # (a key matches as `=` does: a NULL never). About a third of the server's work of the JSON form.
    temp = _temp_name(p.table, p.columns, coltypes)
    ddl = f"CREATE TEMPORARY TABLE IF NOT EXISTS {temp} (" + ", ".join(
        f"{c} {coltypes[c]}" for c in p.columns) + ") ON COMMIT DELETE ROWS"
    match = " AND ".join(f"_t.{c} = _k.{c}" for c in p.columns)
    then = f"DELETE FROM {p.table} AS _t USING {temp} AS _k WHERE {match}"
    return Copy(f"COPY {temp} ({cols}) FROM STDIN", rows, False, data, ddl, then, f"DELETE FROM {temp}")


def statements(sql: str, rows: Sequence[tuple], types: Callable[[str], dict[str, str] | None]
               ) -> list[tuple[str, tuple]] | None:
    """The set-based statements (SQL with %s, parameters) for a run of `sql` over `rows`, or None
    to run them row by row. `types(table)` gives each column's SQL type (None: unknown table)."""
    if len(rows) < MIN_ROWS:
        return None
    p = plan(sql)
    if p is None or set(map(len, rows)) != {len(p.columns)}:
        return None
    coltypes = types(p.table)
    if not coltypes or any(c not in coltypes for c in p.columns):
        return None
    query = p.build(", ".join(f"(_r->>{i})::{coltypes[c]} AS a{i}" for i, c in enumerate(p.columns)))
    blobs = [i for i, c in enumerate(p.columns) if coltypes[c] == "bytea"]
    out = []
    for chunk in _chunks(rows, p.key):
        doc = _json(chunk, blobs)
        if doc is None:
            return None
        out.append((query, (doc,)))
    return out
