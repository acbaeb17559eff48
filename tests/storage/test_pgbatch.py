"""PostgreSQL runs of one write as one statement over a JSON array (relay/storage/pgbatch.py): the forms it
takes, the ones it leaves row by row, and, on both backends, that a flush gives exactly what the
writes run one by one would (a model in Python), whatever the keys repeat and the values hold."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.storage import Op, Schema
from relay.storage import pgbatch

SCHEMA = Schema("pgbatch_test", ("""
CREATE TABLE b (
    k INTEGER NOT NULL,
    j TEXT NOT NULL,
    v TEXT,
    n {real},
    d {blob},
    PRIMARY KEY (k, j)
)""",), ("b",))

UPSERT = ("INSERT INTO b(k, j, v, n, d) VALUES (?, ?, ?, ?, ?) ON CONFLICT(k, j) DO UPDATE SET v = excluded.v, "
          "n = excluded.n, d = excluded.d")
IGNORE = "INSERT INTO b(k, j, v, n, d) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"
UPDATE = "UPDATE b SET v = ?, n = ? WHERE k = ? AND j = ?"
DELETE = "DELETE FROM b WHERE k = ? AND j = ?"
DELETE_K = "DELETE FROM b WHERE k = ?"
TYPES = {"k": "integer", "j": "text", "v": "text", "n": "double precision", "d": "bytea"}


# ---------------------------------------------------------------- which SQL becomes one statement
@pytest.mark.parametrize("sql", [UPSERT, IGNORE, UPDATE, DELETE, DELETE_K,
                                 "insert into b (k, j) values (?, ?)",
                                 "INSERT INTO b(k, j, v) VALUES (?,?,?) ON CONFLICT (k, j) DO NOTHING",
                                 "DELETE FROM b WHERE k = ? AND j = ?;"])
def test_simple_forms_are_batched(sql):
    n = sql.count("?")
    rows = [tuple(i if TYPES[c] == "integer" else (float(i) if TYPES[c].startswith("double") else
                                                   (b"b" if TYPES[c] == "bytea" else f"s{i}"))
                  for c in pgbatch.plan(sql).columns) for i in range(50)]
    out = pgbatch.statements(sql, rows, lambda t: TYPES)
    assert out is not None and len(out) == 1, sql
    q, params = out[0]
    assert "jsonb_array_elements(" in q and len(params) == 1 and len(json.loads(params[0])) == 50
    assert q.count("%s") == 1 and n == len(json.loads(params[0])[0])


@pytest.mark.parametrize("sql", [
    "INSERT INTO b(k, j, v) VALUES (?, ?, 0)",                         # a literal among the values
    "INSERT INTO b(k, j) VALUES (?, ?) RETURNING k",
    "INSERT INTO b(k, j, v) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET v = excluded.v",   # no target
    "INSERT INTO b(k, j, v) VALUES (?, ?, ?) ON CONFLICT(k, j) DO UPDATE SET v = ?",      # a ? in the tail
    "INSERT INTO b(k, j, v) VALUES (?, ?, ?) ON CONFLICT(k, j) DO UPDATE SET v = b.v || '%'",
    "INSERT INTO b(k, j, v) SELECT ?, ?, ?",
    'INSERT INTO "b"(k, j) VALUES (?, ?)',
    "UPDATE b SET n = n + ? WHERE k = ?",
    "UPDATE b SET v = ? WHERE k = ? OR j = ?",
    "UPDATE b SET v = ? WHERE k > ?",
    "DELETE FROM b WHERE k IN (?, ?)",
    "DELETE FROM b WHERE k = ? OR j = ?",
    "DELETE FROM b",
    "CREATE TABLE x (a INTEGER)",
])
def test_other_sql_goes_row_by_row(sql):
    assert pgbatch.plan(sql) is None


def test_one_row_odd_values_unknown_tables_go_row_by_row():
    types = lambda t: TYPES if t == "b" else None   # noqa: E731
    assert pgbatch.statements(DELETE, [(1, "a")], types) is None                     # one row: as it is
    assert pgbatch.statements(DELETE, [(True, "a"), (2, "a")], types) is None        # bool is no int here
    assert pgbatch.statements(DELETE, [([1], "a"), (2, "a")], types) is None         # an array parameter
    assert pgbatch.statements(UPDATE, [("v", float("nan"), 1, "a"), ("v", 1.0, 2, "a")], types) is None
    assert pgbatch.statements(UPDATE, [(b"v", 1.0, 1, "a"), ("v", 1.0, 2, "a")], types) is None   # bytes as text
    assert pgbatch.statements(UPDATE, [("v", 1, 1, "a"), ("v", 1.5, 2, "a")], types) is not None  # int and float
    assert pgbatch.statements(DELETE, [(1, "a"), (2, "a", 3)], types) is None         # a wrong row
    assert pgbatch.statements("DELETE FROM c WHERE k = ?", [(1,), (2,)], types) is None
    assert pgbatch.statements("DELETE FROM b WHERE zz = ?", [(1,), (2,)], types) is None    # a column it has not
    assert pgbatch.statements(DELETE, [(None, "a"), (2, None)], types) is not None          # NULLs are fine


def test_a_key_met_again_starts_a_new_statement():
    rows = [(1, "a", "v1", None, None), (2, "a", "v2", None, None), (1, "a", "v3", None, None),
            (1, "b", "v4", None, None), (1, "a", "v5", None, None)]
    out = pgbatch.statements(UPSERT, rows, lambda t: TYPES)
    assert [len(json.loads(p[0])) for _, p in out] == [2, 2, 1]
    ups = [("x", 1.0, 1, "a"), ("y", 2.0, 1, "a")]
    assert len(pgbatch.statements(UPDATE, ups, lambda t: TYPES)) == 2
    # a delete, or an insert that does nothing on a conflict, may meet a key twice in one statement
    assert len(pgbatch.statements(DELETE, [(1, "a"), (1, "a")], lambda t: TYPES)) == 1
    assert len(pgbatch.statements(IGNORE, [r for r in rows], lambda t: TYPES)) == 1


# ---------------------------------------------------------------- same result as row by row, both backends
@pytest.fixture
def btable(db):
    db.migrate(SCHEMA)
    return db


def model(ops: list[Op]) -> dict:
    rows: dict = {}
    for op in ops:
        a = op.args
        if op.sql == UPSERT:
            rows[(a[0], a[1])] = a[2:]
        elif op.sql == IGNORE:
            rows.setdefault((a[0], a[1]), a[2:])
        elif op.sql == UPDATE:
            if (a[2], a[3]) in rows:
                rows[(a[2], a[3])] = (a[0], a[1], rows[(a[2], a[3])][2])
        elif op.sql == DELETE:
            rows.pop((a[0], a[1]), None)
        elif op.sql == DELETE_K:
            for key in [key for key in rows if key[0] == a[0]]:
                del rows[key]
    return rows


def table(db) -> dict:
    return {(r[0], r[1]): (r[2], r[3], None if r[4] is None else bytes(r[4]))
            for r in db.query("SELECT k, j, v, n, d FROM b")}


keys_k = st.integers(0, 4)
keys_j = st.sampled_from(["a", "b", "é"])
texts = st.one_of(st.none(), st.text(max_size=5).filter(lambda s: "\x00" not in s))
reals = st.one_of(st.none(), st.integers(-2**53, 2**53), st.floats(allow_nan=False, allow_infinity=False))
blobs = st.one_of(st.none(), st.binary(max_size=4))
rows_of = {
    UPSERT: st.tuples(keys_k, keys_j, texts, reals, blobs),
    IGNORE: st.tuples(keys_k, keys_j, texts, reals, blobs),
    UPDATE: st.tuples(texts, reals, keys_k, keys_j),
    DELETE: st.tuples(keys_k, keys_j),
    DELETE_K: st.tuples(keys_k),
}
runs = st.lists(st.sampled_from(list(rows_of)).flatmap(
    lambda sql: st.lists(rows_of[sql], min_size=1, max_size=8).map(lambda rs: [Op(sql, r) for r in rs])),
    max_size=8).map(lambda rs: [op for r in rs for op in r])


@pytest.fixture(params=["copy-long-runs", "copy-every-run"])
def copy_min(request, monkeypatch):
    """PostgreSQL copies runs of COPY_MIN_ROWS inserts; the tests' runs are short, so also with every run."""
    if request.param == "copy-every-run":
        monkeypatch.setattr(pgbatch, "COPY_MIN_ROWS", 1)
    return pgbatch.COPY_MIN_ROWS


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=runs, second=runs)
def test_a_flush_gives_what_the_writes_one_by_one_give(btable, copy_min, first, second):
    btable.execute([Op("DELETE FROM b")])
    btable.execute(first)           # two flushes: the second meets rows the first left
    btable.execute(second)
    assert table(btable) == model(first + second)


def test_long_runs_of_inserts_are_copied_and_odd_ones_are_not():
    rows = [(i, "a", f"v{i}", 0.5, b"\x00") for i in range(pgbatch.COPY_MIN_ROWS)]
    for sql, guarded in [(UPSERT, True), (IGNORE, True), ("INSERT INTO b(k, j, v, n, d) VALUES (?,?,?,?,?)", False)]:
        c = pgbatch.copy_form(sql, rows, lambda t: TYPES)
        assert c is not None and c.guarded == guarded and c.rows == rows
        assert c.sql == "COPY b (k, j, v, n, d) FROM STDIN"
    assert pgbatch.copy_form(UPSERT, rows[:-1], lambda t: TYPES) is None          # too short
    assert pgbatch.copy_form(UPDATE, [("v", 1.0, i, "a") for i in range(100)], lambda t: TYPES) is None
    assert pgbatch.copy_form(UPSERT, rows, lambda t: None) is None                  # unknown table
    odd = [(i, b"bytes in a text column", None, None, None) for i in range(100)]
    assert pgbatch.copy_form(UPSERT, odd, lambda t: TYPES) is None
    assert pgbatch.copy_form(UPSERT, [(i, "a", None, True, None) for i in range(100)], lambda t: TYPES) is None


def test_long_runs_of_keyed_deletes_are_copied_into_a_temporary_table():
    c = pgbatch.copy_form(DELETE, [(i, "a") for i in range(100)], lambda t: TYPES)
    assert c is not None and not c.guarded and c.temp.startswith("CREATE TEMPORARY TABLE IF NOT EXISTS _rn_keys_")
    name = c.temp.split()[6]
    assert c.sql == f"COPY {name} (k, j) FROM STDIN" and c.data.splitlines()[:2] == ["0\ta", "1\ta"]
    assert c.then == f"DELETE FROM b AS _t USING {name} AS _k WHERE _t.k = _k.k AND _t.j = _k.j"
    assert c.clear == f"DELETE FROM {name}"
    assert pgbatch.copy_form(DELETE_K, [(i,) for i in range(100)], lambda t: TYPES).temp != c.temp   # its own keys
    assert pgbatch.copy_form(DELETE, [(i, "a") for i in range(pgbatch.COPY_MIN_ROWS - 1)], lambda t: TYPES) is None


def test_copy_text_escapes_what_copy_reads_as_special_and_refuses_what_it_cannot_carry():
    types = ["integer", "text", "text", "double precision", "bytea"]
    got = pgbatch.copy_text([(1, "a\tb\nc\\d\re", None, 0.5, b"\x00\xff"), (2, "\\N", "x", 3, None)], types)
    assert got == "1\ta\\tb\\nc\\\\d\\re\t\\N\t0.5\t\\\\x00ff\n2\t\\\\N\tx\t3\t\\N\n"
    assert pgbatch.copy_text([(1, "nul\x00inside", None, None, None)], types) is None
    assert pgbatch.copy_text([(1, "a", None, float("inf"), None)], types) is None
    assert pgbatch.copy_text([(1.5, "a", None, None, None)], types) is None          # a float into an integer
    assert pgbatch.copy_text([(True, "a", None, None, None)], types) is None
    assert pgbatch.copy_text([(1, b"bytes", None, None, None)], types) is None       # bytes into text


def test_a_copied_run_that_meets_a_stored_key_goes_as_the_upsert(btable):
    if btable.backend != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    n = pgbatch.COPY_MIN_ROWS
    btable.execute([Op(UPSERT, (5, "a", "old", None, None)), Op(UPSERT, (1000, "a", "gone", None, None))])
    # one run: a key stored before, and a key met twice within it (COPY fails on both; the upsert does not)
    run = [Op(UPSERT, (i, "a", f"new{i}", float(i), b"\x01\xff")) for i in range(n)]
    run.append(Op(UPSERT, (1, "a", "last", None, None)))
    btable.execute([Op(DELETE, (1000, "a"))] + run + [Op(UPDATE, ("upd", 2.0, 2, "a"))])
    got = table(btable)
    assert got[(5, "a")] == ("new5", 5.0, b"\x01\xff") and got[(1, "a")] == ("last", None, None)
    assert got[(2, "a")] == ("upd", 2.0, b"\x01\xff") and (1000, "a") not in got and len(got) == n
    # and a run with no conflict is copied whole, bytes and all
    btable.execute([Op(IGNORE, (i, "b", None, None, bytes([i % 256]) * 3)) for i in range(n)])
    assert table(btable)[(n - 1, "b")] == (None, None, bytes([(n - 1) % 256]) * 3)


def test_integer_and_float_in_one_column_still_written(btable):
    btable.execute([Op(UPSERT, (1, "a", "x", 1, None)), Op(UPSERT, (2, "a", "y", 2.5, None)),
                    Op(UPSERT, (1, "b", "z", 0.5, b"")), Op(UPSERT, (3, "b", "w", None, None))])
    assert table(btable) == {(1, "a"): ("x", 1.0, None), (2, "a"): ("y", 2.5, None), (1, "b"): ("z", 0.5, b""),
                             (3, "b"): ("w", None, None)}


def test_a_failing_run_rolls_the_whole_flush_back_and_the_next_flush_works(btable):
    btable.execute([Op(UPSERT, (1, "a", "kept", None, None))])
    bad = "INSERT INTO b(k, j, v) VALUES (?, ?, ?)"      # no conflict clause: a duplicate key fails
    with pytest.raises(Exception):
        btable.execute([Op(DELETE, (1, "a")), Op(bad, (5, "a", "x")), Op(bad, (5, "a", "y"))])
    assert table(btable) == {(1, "a"): ("kept", None, None)}
    btable.execute([Op(bad, (6, "a", "x")), Op(bad, (7, "a", "y"))])
    assert set(table(btable)) == {(1, "a"), (6, "a"), (7, "a")}


def test_a_table_changed_by_another_server_is_read_again(btable):
    """Servers sharing a PostgreSQL database: one may add a column after this one read the types."""
    btable.execute([Op(UPSERT, (1, "a", "x", None, None)), Op(UPSERT, (2, "a", "y", None, None))])
    btable.execute([Op("ALTER TABLE b ADD COLUMN extra TEXT")])
    ins = "INSERT INTO b(k, j, extra) VALUES (?, ?, ?)"
    btable.execute([Op(ins, (3, "a", "e3")), Op(ins, (4, "a", "e4"))])
    assert btable.query("SELECT k, extra FROM b WHERE extra IS NOT NULL ORDER BY k") == [(3, "e3"), (4, "e4")]
