#!/usr/bin/env python3
"""psycopg 3 against `audiolake serve`: the client most Python tools use now.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE),
runs every check below over the `music` table of tests/music, and exits 1 naming each failed
check. AUDIOLAKE_MUSIC (the folder behind `music`) lets it compare sizes and times with the files;
AUDIOLAKE_RO_USER / AUDIOLAKE_RO_PASSWORD name a read-only user whose writes must be refused.

    PGHOST=127.0.0.1 PGPORT=5432 PGUSER=alice PGPASSWORD=... python3 psycopg3_client.py
"""
import datetime as dt
import math
import os
import sys
import threading
import time
import traceback

import psycopg
from psycopg import errors, sql

FILES = ["a_minor_120.mp3", "broken.mp3", "c_major_90.flac", "d_minor_140.ogg", "g_major_100.m4a"]
RATES = {"a_minor_120.mp3": 44100, "c_major_90.flac": 48000, "d_minor_140.ogg": 44100,
         "g_major_100.m4a": 22050, "broken.mp3": None}
# Type OIDs of the columns, as pg_type numbers them.
INT4, INT8, TEXT, VARCHAR, FLOAT4, FLOAT8, TIMESTAMPTZ, FLOAT4_ARRAY = 23, 20, 25, 1043, 700, 701, 1184, 1021
# Long enough to be cancelled a second after it starts: 10 billion rows in small batches. (A
# cross join made batches so large that, in the unoptimised test build, one took 40 s, and a
# query is cancelled between batches.)
LONG_QUERY = "SELECT count(*) FROM generate_series(1, 10000000000) t(v) WHERE v % 7 = 3"

failures = []


def check(fn):
    """Runs one check; a failure is recorded with its traceback and the next check goes on."""
    name = fn.__name__
    try:
        fn()
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)
    return fn


def connect(**kwargs):
    kwargs.setdefault("dbname", os.environ.get("PGDATABASE", "audiolake"))
    return psycopg.connect(**kwargs)


def expect_error(sqlstate, fn):
    """fn must raise a psycopg error with `sqlstate`; returns the error."""
    try:
        fn()
    except psycopg.Error as e:
        assert e.sqlstate == sqlstate, f"SQLSTATE {e.sqlstate!r} ({type(e).__name__}: {e}), expected {sqlstate}"
        return e
    raise AssertionError(f"no error, expected SQLSTATE {sqlstate}")


@check
def connection_and_tls():
    with connect() as conn:
        mode = os.environ.get("PGSSLMODE", "prefer")
        ssl = conn.pgconn.ssl_in_use
        if mode in ("require", "verify-ca", "verify-full"):
            assert ssl, f"sslmode={mode} but the connection is not encrypted"
        if mode == "disable":
            assert not ssl, "sslmode=disable but the connection is encrypted"
        version = conn.execute("SELECT version()").fetchone()[0]
        assert isinstance(version, str) and version, version
        assert conn.info.server_version > 0, conn.info.server_version
        enc = conn.info.parameter_status("server_encoding")
        assert enc in (None, "UTF8"), enc
        assert conn.info.encoding == "utf-8", conn.info.encoding
        print(f"     server {conn.info.server_version}, ssl={ssl}, {version}")


@check
def wrong_password_is_refused():
    if not os.environ.get("PGPASSWORD"):
        print("     (no password given: a server without auth)")
        return
    try:
        connect(password="not-" + os.environ["PGPASSWORD"]).close()
    except psycopg.OperationalError as e:
        assert "password" in str(e).lower() or "authentication" in str(e).lower(), str(e)
        return
    raise AssertionError("a wrong password was accepted")


@check
def count_rows():
    with connect() as conn:
        cur = conn.execute("SELECT count(*) FROM music")
        assert cur.description[0].type_code == INT8, cur.description[0]
        (n,) = cur.fetchone()
        assert n == 5 and type(n) is int, repr(n)


@check
def server_side_parameters():
    with connect() as conn:
        # psycopg 3 sends %s parameters separately (extended protocol: Parse/Bind with $1).
        cur = conn.execute(
            "SELECT file_name, sample_rate FROM music WHERE sample_rate = %s ORDER BY file_name",
            (44100,))
        assert cur.fetchall() == [("a_minor_120.mp3", 44100), ("d_minor_140.ogg", 44100)], cur.fetchall()
        cur = conn.execute("SELECT file_name, channels FROM music WHERE file_name = %s", ("c_major_90.flac",))
        assert cur.fetchall() == [("c_major_90.flac", 1)]
        cur = conn.execute(
            "SELECT count(*) FROM music WHERE duration_s > %s AND file_name <> %s", (10.5, "g_major_100.m4a"))
        assert cur.fetchone()[0] == 3
        # The same statement twice, then prepared explicitly (a named statement reused).
        for rate, want in ((48000, ["c_major_90.flac"]), (22050, ["g_major_100.m4a"])):
            cur = conn.execute("SELECT file_name FROM music WHERE sample_rate = %s", (rate,), prepare=True)
            assert [r[0] for r in cur] == want
        # Binary results for the same query.
        cur = conn.cursor(binary=True)
        cur.execute("SELECT file_name, sample_rate, duration_s FROM music WHERE file_name = %s",
                    ("a_minor_120.mp3",))
        name, rate, duration = cur.fetchone()
        assert (name, rate) == ("a_minor_120.mp3", 44100) and abs(duration - 16.0) < 0.2, (name, rate, duration)
        # A NULL parameter and the NULL rows of the broken file.
        cur = conn.execute("SELECT file_name FROM music WHERE sample_rate IS NULL AND %s::text IS NULL", (None,))
        assert cur.fetchall() == [("broken.mp3",)]


@check
def typed_values():
    music = os.environ.get("AUDIOLAKE_MUSIC")
    with connect() as conn:
        cur = conn.execute(
            "SELECT path, file_name, size_bytes, last_modified, sample_rate, channels, duration_s, error "
            "FROM music ORDER BY file_name")
        types = {c.name: c.type_code for c in cur.description}
        assert types["size_bytes"] == INT8 and types["sample_rate"] == INT4 and types["channels"] == INT4, types
        assert types["duration_s"] == FLOAT8 and types["last_modified"] == TIMESTAMPTZ, types
        assert types["file_name"] in (TEXT, VARCHAR) and types["path"] in (TEXT, VARCHAR), types
        rows = cur.fetchall()
        assert [r[1] for r in rows] == FILES, [r[1] for r in rows]
        for path, name, size, modified, rate, channels, duration, error in rows:
            assert isinstance(path, str) and path.endswith(name), path
            assert type(size) is int and size > 0, size
            assert isinstance(modified, dt.datetime) and modified.tzinfo is not None, repr(modified)
            assert rate == RATES[name], (name, rate)
            if name == "broken.mp3":
                assert rate is None and duration is None and channels is None, (rate, duration, channels)
                assert isinstance(error, str) and error, repr(error)
            else:
                assert type(rate) is int and type(channels) is int and channels in (1, 2), (rate, channels)
                assert type(duration) is float and abs(duration - 16.0) < 0.2, (name, duration)
                assert error is None, (name, error)
            if music:
                st = os.stat(os.path.join(music, name))
                assert size == st.st_size, (name, size, st.st_size)
                mtime = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
                assert abs((modified - mtime).total_seconds()) < 1, (name, modified, mtime)


@check
def float4_list():
    with connect() as conn:
        cur = conn.execute("SELECT file_name, chroma FROM music WHERE file_name = %s", ("c_major_90.flac",))
        assert cur.description[1].type_code == FLOAT4_ARRAY, cur.description[1]
        name, chroma = cur.fetchone()
        assert name == "c_major_90.flac"
        assert isinstance(chroma, list) and len(chroma) == 12, repr(chroma)
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in chroma), chroma
        # C major: the tonic C (bin 0) is one of the three strongest pitch classes.
        top3 = sorted(range(12), key=lambda i: -chroma[i])[:3]
        assert 0 in top3, (top3, chroma)


@check
def vector_parameters_use_the_index():
    """A query vector sent as a parameter, as pgvector's clients send it, is searched through
    the index and answers as the literal does."""
    with connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE vp AS SELECT id, make_array(CAST(id % 7 AS FLOAT), "
                     "CAST(id % 5 AS FLOAT), CAST(id AS FLOAT) / 100) AS v "
                     "FROM generate_series(1, 300) t(id)")
        conn.execute("CREATE INDEX vp_v ON vp USING hnsw (v vector_l2_ops)")
        q = "[3, 2, 1.5]"
        literal = conn.execute(f"SELECT id FROM vp ORDER BY v <-> '{q}' LIMIT 5").fetchall()
        knn = "SELECT id FROM vp ORDER BY v <-> %s LIMIT 5"
        bound = conn.execute(knn, (q,)).fetchall()
        assert bound == literal == [(157,), (122,), (192,), (87,), (227,)], (bound, literal)
        plan = "\n".join(str(r[-1]) for r in conn.execute("EXPLAIN " + knn, (q,)).fetchall())
        assert "HnswIndexScan: index=vp_v" in plan, plan


@check
def errors_keep_connection_usable():
    with connect(autocommit=True) as conn:
        e = expect_error("42P01", lambda: conn.execute("SELECT * FROM no_such_table"))
        assert isinstance(e, errors.UndefinedTable), type(e)
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        expect_error("42601", lambda: conn.execute("SELEC 1"))
        expect_error("42703", lambda: conn.execute("SELECT no_such_column FROM music"))
        assert conn.execute("SELECT 1 + %s", (1,)).fetchone()[0] == 2
    # In a transaction (psycopg's default): the error aborts it; after rollback all is well.
    with connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        expect_error("42P01", lambda: conn.execute("SELECT * FROM no_such_table WHERE x = %s", (1,)))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        conn.commit()


@check
def transactions():
    with connect() as conn:
        with conn.transaction():
            assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@check
def set_and_show():
    with connect(autocommit=True) as conn:
        conn.execute("SET application_name = 'psycopg3-check'")
        assert conn.execute("SHOW application_name").fetchone()[0] == "psycopg3-check"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] in ("0", "0ms", "0s")


@check
def server_side_cursor():
    # DECLARE ... CURSOR and FETCH, as a named psycopg cursor does. psycopg learns the columns with
    # a Describe of the portal named like the cursor (as PostgreSQL answers it: the cursor's row
    # description), and reads FETCH results with that shape: a server that answers NoData makes
    # psycopg's C extension crash on the FETCH, so that answer is checked first.
    with connect() as conn:
        conn.execute("DECLARE probe CURSOR FOR SELECT file_name, sample_rate FROM music ORDER BY file_name")
        res = conn.pgconn.describe_portal(b"probe")
        fields = [res.fname(i).decode() for i in range(res.nfields)]
        assert fields == ["file_name", "sample_rate"], \
            f"Describe(portal 'probe') of a DECLAREd cursor gave columns {fields} (status {psycopg.pq.ExecStatus(res.status).name}), " \
            "expected the cursor's [file_name, sample_rate]"
        conn.execute("CLOSE probe")
        conn.rollback()
    with connect() as conn:
        with conn.cursor(name="files") as cur:
            cur.itersize = 2
            cur.execute("SELECT file_name FROM music ORDER BY file_name")
            assert [r[0] for r in cur.fetchmany(2)] == FILES[:2]
            assert [r[0] for r in cur] == FILES[2:]
        conn.commit()


def run_and_cancel(conn, cancel, query=LONG_QUERY):
    """Runs query on conn, calling cancel(conn) from another thread after a second."""
    result = {}

    def worker():
        try:
            result["rows"] = conn.execute(query).fetchall()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=worker, daemon=True)
    start = time.monotonic()
    t.start()
    time.sleep(1.0)
    cancel(conn)
    t.join(30)
    if t.is_alive():
        print("FAIL the cancelled query was still running 30 s after the cancel request")
        sys.stdout.flush()
        os._exit(1)
    return result, time.monotonic() - start


@check
def cancel_long_query():
    with connect(autocommit=True) as conn:
        result, took = run_and_cancel(conn, lambda c: c.cancel())
        e = result.get("error")
        assert e is not None, f"the query was not cancelled but returned {result.get('rows')}"
        assert isinstance(e, errors.QueryCanceled) and e.sqlstate == "57014", f"{type(e).__name__}: {e} ({e.sqlstate})"
        print(f"     cancelled after {took:.1f} s")
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
    if hasattr(psycopg.Connection, "cancel_safe"):
        with connect(autocommit=True) as conn:
            result, _ = run_and_cancel(conn, lambda c: c.cancel_safe(timeout=10))
            e = result.get("error")
            assert isinstance(e, errors.QueryCanceled), f"cancel_safe: {type(e).__name__}: {e}"
            assert conn.execute("SELECT 1").fetchone()[0] == 1


@check
def pg_sleep_is_cancelled():
    # pg_sleep is how clients test cancellation; it must end at once when cancelled.
    with connect(autocommit=True) as conn:
        assert conn.execute("SELECT pg_sleep(0.1)").fetchone() == (None,)
        result, took = run_and_cancel(conn, lambda c: c.cancel(), "SELECT pg_sleep(60)")
        e = result.get("error")
        assert isinstance(e, errors.QueryCanceled), f"{type(e).__name__}: {e} ({result})"
        assert took < 10, f"pg_sleep(60) cancelled after a second ended after {took:.1f} s"
        conn.execute("SET statement_timeout = 200")
        expect_error("57014", lambda: conn.execute("SELECT pg_sleep(60)"))
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SELECT 1").fetchone()[0] == 1


@check
def savepoints():
    # Nested transaction blocks are savepoints in psycopg (SAVEPOINT, RELEASE, ROLLBACK TO).
    with connect() as conn:
        with conn.transaction():
            with conn.transaction():
                assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
            with conn.transaction() as inner:
                conn.execute("SELECT 1")
                raise psycopg.Rollback(inner)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            # An error inside a savepoint: ROLLBACK TO SAVEPOINT resumes the outer block.
            try:
                with conn.transaction():
                    conn.execute("SELECT * FROM no_such_table")
            except errors.UndefinedTable:
                pass
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # Outside autocommit, psycopg opens a block first; the error aborts it, as in PostgreSQL.
        e = expect_error("3B001", lambda: conn.execute("RELEASE SAVEPOINT never_made"))
        assert str(e).startswith('savepoint "never_made" does not exist'), str(e)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        # What follows in the failed block is refused with PostgreSQL's 25P02.
        expect_error("25P02", lambda: conn.execute("SELECT count(*) FROM music"))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        conn.rollback()
    with connect(autocommit=True) as conn:
        e = expect_error("25P01", lambda: conn.execute("SAVEPOINT outside"))
        assert str(e).startswith("SAVEPOINT can only be used in transaction blocks"), str(e)


@check
def current_database():
    # The database the client named, as PostgreSQL answers; also in pg_database (psql's \l).
    with connect(autocommit=True) as conn:
        want = os.environ.get("PGDATABASE", "audiolake")
        assert conn.execute("SELECT current_database()").fetchone()[0] == want
        assert conn.execute("SELECT current_catalog").fetchone()[0] == want
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY datname")]
        assert want in names and "datafusion" not in names, names
    with connect(dbname="Archive " + "x" * 100, autocommit=True) as conn:
        got = conn.execute("SELECT current_database() FROM music").fetchall()
        assert got == [("Archive " + "x" * 55,)] * 5, got


@check
def repeated_column_names():
    # PostgreSQL sends result columns of one name as they are; so must the server (psycopg uses
    # the extended protocol; pg_server.rs checks the simple one with psql).
    with connect(autocommit=True) as conn:
        cur = conn.execute("SELECT 1, 1")
        assert [d.name for d in cur.description] == ["?column?", "?column?"], cur.description
        assert cur.fetchall() == [(1, 1)]
        cur = conn.execute("SELECT file_name, file_name, size_bytes AS n, 2 AS n FROM music "
                           "ORDER BY file_name LIMIT %s", (1,))
        assert [d.name for d in cur.description] == ["file_name", "file_name", "n", "n"], cur.description
        row = cur.fetchone()
        assert row[0] == row[1] == FILES[0] and row[3] == 2, row
        cur = conn.cursor()
        cur.execute("SELECT 1 AS x, 2 AS x", prepare=True)
        assert [d.name for d in cur.description] == ["x", "x"] and cur.fetchall() == [(1, 2)]


@check
def statement_timeout():
    with connect(autocommit=True) as conn:
        conn.execute("SET statement_timeout = 200")
        start = time.monotonic()
        e = expect_error("57014", lambda: conn.execute(LONG_QUERY))
        took = time.monotonic() - start
        assert took < 10, f"the timeout of 200 ms fired after {took:.1f} s"
        print(f"     timed out after {took:.2f} s: {e}")
        # Quick statements still run under the timeout, and it can be lifted.
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SHOW statement_timeout").fetchone()[0] in ("0", "0ms", "0s")


@check
def copy_to_stdout():
    with connect(autocommit=True) as conn:
        cur = conn.cursor()
        query = "COPY (SELECT file_name, sample_rate FROM music ORDER BY file_name) TO STDOUT"
        with cur.copy(query) as copy:
            rows = list(copy.rows())
        want = [(f, None if RATES[f] is None else str(RATES[f])) for f in FILES]
        assert rows == want, rows
        with cur.copy(query) as copy:
            copy.set_types(["text", "int4"])
            assert list(copy.rows()) == [(f, RATES[f]) for f in FILES]
        csv = bytearray()
        with cur.copy(sql.SQL("COPY (SELECT file_name, channels FROM music ORDER BY file_name) "
                              "TO STDOUT WITH (FORMAT csv, HEADER)")) as copy:
            for block in copy:
                csv += block
        lines = csv.decode().splitlines()
        assert lines[0] == "file_name,channels", lines
        assert lines[1:] == ["a_minor_120.mp3,2", "broken.mp3,", "c_major_90.flac,1",
                             "d_minor_140.ogg,1", "g_major_100.m4a,2"], lines
        assert conn.execute("SELECT 1").fetchone()[0] == 1


@check
def read_only_user():
    user, password = os.environ.get("AUDIOLAKE_RO_USER"), os.environ.get("AUDIOLAKE_RO_PASSWORD")
    if not user:
        print("     (no read-only user given)")
        return
    with connect(user=user, password=password, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5
        expect_error("42501", lambda: conn.execute("CREATE TABLE t_ro AS SELECT 1 AS x"))
        assert conn.execute("SELECT count(*) FROM music").fetchone()[0] == 5


if failures:
    print(f"psycopg3: {len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("psycopg3: all checks passed")
