"""psycopg 3 through the dyngate gateway, checked the way an application would use it.

Usage: psycopg_check.py GATEWAY_DSN DIRECT_DSN

Both DSNs name the same database: one through the gateway, one straight to PostgreSQL, so results,
column descriptions and error fields seen through the gateway can be compared with PostgreSQL's own.
Covers server-side binding (psycopg's default cursor), prepared statements, binary results and
parameters, COPY FROM STDIN / TO STDOUT in text and binary, type round-trips (numeric,
timestamptz, jsonb, arrays, bytea, NULL), error diagnostics, transactions with rollback and
savepoints, pipeline mode, server-side (named) cursors, notices, LISTEN/NOTIFY and cancel.
Any failed assert makes the script exit non-zero; the Rust test prints its output.
"""

import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Jsonb

GW, DIRECT = sys.argv[1], sys.argv[2]


def step(name):
    print(f"--- {name}", flush=True)


def connect(dsn, **kw):
    return psycopg.connect(dsn, **kw)


gw = connect(GW, autocommit=True)
direct = connect(DIRECT, autocommit=True)

# The gateway must relay the session parameters libpq and psycopg depend on.
step("session parameters")
for p in ("server_version", "client_encoding", "DateStyle", "integer_datetimes", "TimeZone"):
    assert gw.info.parameter_status(p) == direct.info.parameter_status(p), p
assert gw.info.server_version == direct.info.server_version
assert gw.info.dbname == direct.info.dbname

step("schema")
gw.execute(
    """
    CREATE TABLE items (
        id int PRIMARY KEY,
        name text NOT NULL,
        price numeric(12,4),
        added timestamptz,
        doc jsonb,
        nums int[],
        words text[],
        blob bytea
    )
    """
)

# Values chosen to catch lossy transfers: many numeric digits, a non-UTC offset with
# microseconds, nested JSON with null, arrays with NULL and characters that need quoting,
# every byte value.
ROWS = [
    (
        1,
        "plain",
        Decimal("12345678.1234"),
        datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        {"a": [1, 2, None], "b": {"c": "d\u00e9j\u00e0 vu"}},
        [1, -2, 2147483647],
        ["x", None, 'with "quotes", commas'],
        bytes(range(256)),
    ),
    (2, "nulls", None, None, None, None, None, None),
    (
        3,
        "unicode \u2603 \U0001f600",
        Decimal("-0.0001"),
        datetime(1999, 12, 31, 0, 0, tzinfo=timezone.utc),
        [],
        [],
        [],
        b"",
    ),
]


def as_params(row):
    r = list(row)
    if r[4] is not None:
        r[4] = Jsonb(r[4])
    return r


INSERT = "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
SELECT_ALL = "SELECT id, name, price, added, doc, nums, words, blob FROM items ORDER BY id"

step("server-side binding")
with gw.cursor() as cur:
    # The default client-side Cursor still sends parameters separately ($1, $2, ...).
    assert type(cur) is psycopg.Cursor
    cur.execute("SELECT %s::int + %s::int, %s::text || %s", (40, 2, "a'b", "; DROP"))
    assert cur.fetchone() == (42, "a'b; DROP")
    cur.execute(INSERT, as_params(ROWS[0]))
    assert cur.rowcount == 1
    assert cur.statusmessage == "INSERT 0 1"
    cur.executemany(INSERT, [as_params(r) for r in ROWS[1:]])
    cur.execute(SELECT_ALL)
    got = cur.fetchall()
    assert got == ROWS, got
    names = [d.name for d in cur.description]
    assert names == ["id", "name", "price", "added", "doc", "nums", "words", "blob"], names
    oids = [d.type_code for d in cur.description]
    # int4, text, numeric, timestamptz, jsonb, int4[], text[], bytea
    assert oids == [23, 25, 1700, 1184, 3802, 1007, 1009, 17], oids
    assert cur.description[2].precision == 12 and cur.description[2].scale == 4

def describe(cur):
    res = cur.pgresult
    return [
        (*tuple(col), res.ftable(i), res.ftablecol(i), res.fformat(i), res.fmod(i))
        for i, col in enumerate(cur.description)
    ]


step("same results and description as direct")
with gw.cursor() as g, direct.cursor() as d:
    for q in (
        SELECT_ALL,
        "SELECT n, n::text, n * 1.5 AS f, now() - now() AS zero FROM generate_series(1, 500) n",
        "SELECT oid, typname, typlen, typarray FROM pg_type ORDER BY oid LIMIT 100",
    ):
        g.execute(q)
        d.execute(q)
        assert g.fetchall() == d.fetchall(), q
        # Everything RowDescription says: name, type, size, modifier, source table and column.
        assert describe(g) == describe(d), (q, describe(g), describe(d))
        assert g.statusmessage == d.statusmessage

step("prepared statements")
with gw.cursor() as cur:
    q = "SELECT name, price FROM items WHERE id = %s"
    for i in (1, 2, 3, 1, 3):
        cur.execute(q, (i,), prepare=True)
        assert cur.fetchone() == (ROWS[i - 1][1], ROWS[i - 1][2])
    cur.execute("SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE '%FROM items WHERE id = $1'")
    prepared = cur.fetchall()
    assert len(prepared) == 1, prepared
    assert prepared[0][0].startswith("_pg3_"), prepared
    # Automatic preparation after prepare_threshold executions, with binary parameters.
    gw.prepare_threshold = 2
    for i in range(5):
        cur.execute("SELECT %b::int * 2", (i,))
        assert cur.fetchone() == (i * 2,)
    cur.execute("SELECT statement FROM pg_prepared_statements WHERE name LIKE '_pg3_%'")
    assert ("SELECT $1::int * 2",) in cur.fetchall()
    gw.prepare_threshold = 5

step("binary results and parameters")
with gw.cursor(binary=True) as cur:
    cur.execute(SELECT_ALL)
    assert cur.pgresult.fformat(0) == 1, "binary cursor got text results"
    assert cur.fetchall() == ROWS
with gw.cursor() as cur:
    cur.execute("SELECT %b, %b, %b, %b, %b", (Decimal("3.14159"), ROWS[0][3], b"\x00\xff", None, [1, 2]), binary=True)
    assert cur.pgresult.fformat(0) == 1
    assert cur.fetchone() == (Decimal("3.14159"), ROWS[0][3], b"\x00\xff", None, [1, 2])
    cur.execute("SELECT %t::int4[], %t::jsonb", ([5, None], Jsonb({"k": True})))
    assert cur.pgresult.fformat(0) == 0
    assert cur.fetchone() == ([5, None], {"k": True})

step("copy from stdin, text")
gw.execute("CREATE TABLE copied (LIKE items)")
with gw.cursor() as cur:
    with cur.copy("COPY copied FROM STDIN") as copy:
        for r in ROWS:
            copy.write_row(as_params(r))
    assert cur.rowcount == 3
    cur.execute(SELECT_ALL.replace("items", "copied"))
    assert cur.fetchall() == ROWS
    # Raw text data, including an escaped tab and a NULL.
    with cur.copy("COPY copied (id, name, price) FROM STDIN") as copy:
        copy.write("10\ttab\\there\t\\N\n11\tx\t1.5\n")
    cur.execute("SELECT id, name, price FROM copied WHERE id >= 10 ORDER BY id")
    assert cur.fetchall() == [(10, "tab\there", None), (11, "x", Decimal("1.5"))]

step("copy from stdin, binary")
gw.execute("TRUNCATE copied")
with gw.cursor() as cur:
    with cur.copy("COPY copied FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "text", "numeric", "timestamptz", "jsonb", "int4[]", "text[]", "bytea"])
        for r in ROWS:
            copy.write_row(as_params(r))
    cur.execute(SELECT_ALL.replace("items", "copied"))
    assert cur.fetchall() == ROWS

step("copy to stdout, text and binary")
with gw.cursor() as cur, direct.cursor() as dcur:
    with cur.copy("COPY (SELECT * FROM items ORDER BY id) TO STDOUT") as copy:
        text_gw = b"".join(bytes(b) for b in copy)
    with dcur.copy("COPY (SELECT * FROM items ORDER BY id) TO STDOUT") as copy:
        text_direct = b"".join(bytes(b) for b in copy)
    assert text_gw == text_direct and text_gw.count(b"\n") == 3
    with cur.copy("COPY (SELECT * FROM items ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "text", "numeric", "timestamptz", "jsonb", "int4[]", "text[]", "bytea"])
        assert list(copy.rows()) == ROWS
    with cur.copy("COPY (SELECT * FROM items ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
        bin_gw = b"".join(bytes(b) for b in copy)
    with dcur.copy("COPY (SELECT * FROM items ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
        bin_direct = b"".join(bytes(b) for b in copy)
    assert bin_gw == bin_direct and bin_gw.startswith(b"PGCOPY\n\xff\r\n\x00")
    # A large COPY OUT: many CopyData messages through the relay.
    with cur.copy("COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g) TO STDOUT") as copy:
        n = sum(bytes(b).count(b"\n") for b in copy)
    assert n == 20000, n

step("copy errors")
with gw.cursor() as cur:
    try:
        with cur.copy("COPY copied (id, name) FROM STDIN") as copy:
            copy.write("100\tok\nnot-a-number\tbad\n")
        raise AssertionError("bad COPY data accepted")
    except errors.InvalidTextRepresentation as e:
        assert e.sqlstate == "22P02"
        assert e.diag.context is not None and "COPY copied" in e.diag.context, e.diag.context
    # An exception inside the block makes psycopg abort the COPY (CopyFail); the rows sent so far
    # must be discarded and the session must survive it.
    try:
        with cur.copy("COPY copied (id, name) FROM STDIN") as copy:
            copy.write("101\tok\n")
            raise RuntimeError("client gives up")
    except RuntimeError as e:
        assert str(e) == "client gives up"
    cur.execute("SELECT count(*) FROM copied WHERE id >= 100")
    assert cur.fetchone() == (0,)

step("error diagnostics")


def diag_of(conn, q, params=None):
    try:
        conn.execute(q, params)
    except psycopg.Error as e:
        d = e.diag
        return (
            type(e).__name__,
            e.sqlstate,
            d.severity,
            d.severity_nonlocalized,
            d.message_primary,
            d.message_detail,
            d.message_hint,
            d.statement_position,
            d.context,
            d.schema_name,
            d.table_name,
            d.column_name,
            d.datatype_name,
            d.constraint_name,
            d.source_function,
        )
    raise AssertionError(f"no error from {q}")


FAILING = [
    ("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "dup")),
    ("INSERT INTO items (id, name) VALUES (%s, NULL)", (99,)),
    ("SELECT nme FROM items", None),
    ("SELEC 1", None),
    ("SELECT 1/0", None),
    (
        "DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'P0042', DETAIL = 'det', HINT = 'hnt'; END $$",
        None,
    ),
    ("SELECT %s::int", ("nope",)),
]
for q, params in FAILING:
    g = diag_of(gw, q, params)
    d = diag_of(direct, q, params)
    assert g == d, (q, g, d)

dup = diag_of(gw, *FAILING[0])
assert dup[0] == "UniqueViolation" and dup[1] == "23505", dup
assert dup[2] == "ERROR" and dup[5] == "Key (id)=(1) already exists.", dup
assert dup[10] == "items" and dup[13] == "items_pkey", dup
notnull = diag_of(gw, *FAILING[1])
assert notnull[1] == "23502" and notnull[11] == "name", notnull
missing = diag_of(gw, *FAILING[2])
assert missing[1] == "42703" and missing[7] == "8" and "items.name" in missing[6], missing
syntax = diag_of(gw, *FAILING[3])
assert syntax[0] == "SyntaxError" and syntax[1] == "42601" and syntax[7] == "1", syntax
custom = diag_of(gw, *FAILING[5])
assert custom[1:7] == ("P0042", "ERROR", "ERROR", "custom", "det", "hnt"), custom
assert "PL/pgSQL" in custom[8], custom

step("notices")
seen = []
gw.add_notice_handler(lambda d: seen.append((d.severity, d.sqlstate, d.message_primary)))
gw.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
assert seen == [("NOTICE", "00000", "hello 42"), ("WARNING", "01000", "careful")], seen

step("transactions")
tx = connect(GW)  # not autocommit: psycopg opens transactions implicitly
with tx.cursor() as cur:
    cur.execute("INSERT INTO items (id, name) VALUES (100, 'rolled back')")
    assert tx.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    # Another session must not see the uncommitted row.
    assert direct.execute("SELECT count(*) FROM items WHERE id = 100").fetchone() == (0,)
    tx.rollback()
    assert tx.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    cur.execute("SELECT count(*) FROM items WHERE id = 100")
    assert cur.fetchone() == (0,)
    tx.rollback()

    # An error aborts the transaction: the next statement gets 25P02 until rollback.
    cur.execute("INSERT INTO items (id, name) VALUES (101, 'lost')")
    try:
        cur.execute("INSERT INTO items (id, name) VALUES (1, 'dup')")
        raise AssertionError("duplicate accepted")
    except errors.UniqueViolation:
        pass
    assert tx.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    try:
        cur.execute("SELECT 1")
        raise AssertionError("statement ran in an aborted transaction")
    except errors.InFailedSqlTransaction as e:
        assert e.sqlstate == "25P02"
        assert "current transaction is aborted" in str(e)
    tx.rollback()
    cur.execute("SELECT count(*) FROM items WHERE id IN (100, 101)")
    assert cur.fetchone() == (0,)
    tx.commit()

    # Savepoints through the transaction() context manager.
    with tx.transaction():
        cur.execute("INSERT INTO items (id, name) VALUES (102, 'outer')")
        try:
            with tx.transaction():
                cur.execute("INSERT INTO items (id, name) VALUES (103, 'inner')")
                cur.execute("INSERT INTO items (id, name) VALUES (1, 'dup')")
        except errors.UniqueViolation:
            pass
        cur.execute("INSERT INTO items (id, name) VALUES (104, 'after savepoint')")
    assert tx.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
tx.close()
got = direct.execute("SELECT id FROM items WHERE id >= 100 ORDER BY id").fetchall()
assert got == [(102,), (104,)], got

step("pipeline mode")
with gw.pipeline():
    curs = [gw.execute("SELECT %s::int * 10, pg_backend_pid()", (i,)) for i in range(20)]
with gw.cursor() as cur:
    with gw.pipeline():
        cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)", [(1000 + i, f"p{i}") for i in range(50)])
results = [c.fetchone() for c in curs]
assert [r[0] for r in results] == [i * 10 for i in range(20)], results
# All on the client's one backend session. (Its pid is not gw.info.backend_pid: the gateway gives
# clients a cancel key of its own.)
assert {r[1] for r in results} == {gw.execute("SELECT pg_backend_pid()").fetchone()[0]}
assert direct.execute("SELECT count(*) FROM items WHERE id >= 1000").fetchone() == (50,)
# An error inside a pipeline skips the rest until the next Sync, and since psycopg syncs only at
# the end, all three statements formed one implicit transaction: the first insert is rolled back
# too. The connection stays usable.
try:
    with gw.pipeline() as p:
        gw.execute("INSERT INTO items (id, name) VALUES (2000, 'before error')")
        gw.execute("SELECT 1/0")
        gw.execute("INSERT INTO items (id, name) VALUES (2001, 'skipped')")
    raise AssertionError("pipeline error not raised")
except errors.DivisionByZero:
    pass
assert gw.execute("SELECT array_agg(id ORDER BY id) FROM items WHERE id >= 2000").fetchone() == (None,)

step("server-side cursor")
with gw.transaction():
    with gw.cursor(name="big_cursor") as cur:
        cur.itersize = 7
        cur.execute("SELECT g, g::text FROM generate_series(1, 100) g")
        assert [d.name for d in cur.description] == ["g", "g"]
        rows = list(cur)
assert rows == [(i, str(i)) for i in range(1, 101)]

step("listen/notify")
listener = connect(GW, autocommit=True)
chan = f"chan_{direct.info.backend_pid}"
listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(chan)))
# Sent from a direct session, so the notification reaches the listener while it is idle.
direct.execute("SELECT pg_notify(%s, 'payload 1')", (chan,))
got = [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=1)]
assert got == [(chan, "payload 1")], got
listener.close()

step("cancel")
# libpq's cancel request carries the key the gateway gave this client.
timer = threading.Timer(0.5, gw.cancel_safe)
timer.start()
started = time.monotonic()
try:
    gw.execute("SELECT pg_sleep(30)")
    raise AssertionError("pg_sleep was not cancelled")
except errors.QueryCanceled as e:
    assert e.sqlstate == "57014"
    assert "canceling statement due to user request" in str(e), str(e)
timer.join()
assert time.monotonic() - started < 10
assert gw.execute("SELECT 'still usable'").fetchone() == ("still usable",)

# The last checks are about what libpq promises beyond the data; each failure is collected, so one
# does not hide the others.
problems = []


def expect(ok, what):
    if not ok:
        problems.append(what)
        print("PROBLEM:", what, flush=True)


step("idle cancel")
# libpq returns from a cancel only once the server has closed the cancel connection, i.e. has
# acted on the request, so a cancel sent while nothing runs can never hit a later statement.
# Applications rely on that (cancel, then go on using the connection).
hits = 0
for i in range(20):
    gw.cancel_safe()
    try:
        gw.execute("SELECT pg_sleep(0.05)")
    except errors.QueryCanceled:
        hits += 1
expect(hits == 0, f"a cancel sent while idle cancelled the next statement in {hits} of 20 rounds")

step("backend pid")
# libpq reports the pid from BackendKeyData, and applications use it: to find their own session
# in pg_stat_activity or pg_locks, or to ignore the notifications they sent themselves.
pid = gw.execute("SELECT pg_backend_pid()").fetchone()[0]
expect(
    gw.info.backend_pid == pid,
    f"info.backend_pid is {gw.info.backend_pid}, the session's pg_backend_pid() is {pid}",
)
own = f"own_{pid}"
gw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(own)))
gw.execute("SELECT pg_notify(%s, 'mine')", (own,))
mine = list(gw.notifies(timeout=10, stop_after=1))
assert [(n.channel, n.payload) for n in mine] == [(own, "mine")], mine
expect(
    mine[0].pid == gw.info.backend_pid,
    f"a notification the session sent itself has pid {mine[0].pid}, info.backend_pid is {gw.info.backend_pid}",
)

assert not problems, problems

gw.close()
direct.close()
print("psycopg: all checks passed", flush=True)
