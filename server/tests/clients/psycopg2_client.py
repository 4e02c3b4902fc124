#!/usr/bin/env python3
"""psycopg2 against `audiolake serve`: the older Python driver (SQLAlchemy's default, pandas).

psycopg2 fills %s parameters in on the client and sends plain simple-protocol queries. Connects
with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE), runs the
checks below over `music` (tests/music) and exits 1 naming each failed check.
"""
import datetime as dt
import os
import sys
import traceback

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
import psycopg2.extras

FILES = ["a_minor_120.mp3", "broken.mp3", "c_major_90.flac", "d_minor_140.ogg", "g_major_100.m4a"]
RATES = {"a_minor_120.mp3": 44100, "c_major_90.flac": 48000, "d_minor_140.ogg": 44100,
         "g_major_100.m4a": 22050, "broken.mp3": None}
INT4, INT8, TEXT, VARCHAR, FLOAT8, TIMESTAMPTZ, FLOAT4_ARRAY = 23, 20, 25, 1043, 701, 1184, 1021

failures = []


def check(fn):
    try:
        fn()
        print(f"ok   {fn.__name__}")
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failures.append(fn.__name__)
        print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)
    return fn


def connect():
    return psycopg2.connect(dbname=os.environ.get("PGDATABASE", "audiolake"))


def expect_error(cur, sqlstate, query, params=None):
    try:
        cur.execute(query, params)
    except psycopg2.Error as e:
        assert e.pgcode == sqlstate, f"SQLSTATE {e.pgcode!r} ({type(e).__name__}: {e}), expected {sqlstate}"
        return e
    raise AssertionError(f"{query!r}: no error, expected SQLSTATE {sqlstate}")


@check
def connect_and_count():
    with connect() as conn, conn.cursor() as cur:
        assert conn.server_version > 0, conn.server_version
        cur.execute("SELECT count(*) FROM music")
        assert cur.description[0].type_code == INT8, cur.description
        assert cur.fetchone() == (5,)
    conn.close()


@check
def parameters():
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT file_name, sample_rate FROM music WHERE sample_rate = %s ORDER BY file_name",
                    (44100,))
        assert cur.fetchall() == [("a_minor_120.mp3", 44100), ("d_minor_140.ogg", 44100)]
        cur.execute("SELECT file_name FROM music WHERE file_name = %(name)s OR file_name = %(other)s "
                    "ORDER BY file_name", {"name": "g_major_100.m4a", "other": "it's not there"})
        assert cur.fetchall() == [("g_major_100.m4a",)]
        cur.execute("SELECT count(*) FROM music WHERE file_name IN %s", (("broken.mp3", "c_major_90.flac"),))
        assert cur.fetchone() == (2,)
    conn.close()


@check
def typed_values():
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT file_name, size_bytes, last_modified, sample_rate, duration_s, chroma "
                    "FROM music WHERE file_name = %s", ("c_major_90.flac",))
        types = [c.type_code for c in cur.description]
        assert types[0] in (TEXT, VARCHAR) and types[1:5] == [INT8, TIMESTAMPTZ, INT4, FLOAT8], types
        assert types[5] == FLOAT4_ARRAY, types
        name, size, modified, rate, duration, chroma = cur.fetchone()
        assert name == "c_major_90.flac"
        assert type(size) is int and size > 0, size
        music = os.environ.get("AUDIOLAKE_MUSIC")
        if music:
            assert size == os.path.getsize(os.path.join(music, name)), size
        assert isinstance(modified, dt.datetime) and modified.utcoffset() is not None, repr(modified)
        assert rate == 48000 and type(rate) is int
        assert type(duration) is float and abs(duration - 16.0) < 0.2, duration
        assert isinstance(chroma, list) and len(chroma) == 12, repr(chroma)
        assert all(isinstance(v, float) and v >= 0 for v in chroma), chroma
        cur.execute("SELECT file_name, sample_rate, error FROM music ORDER BY file_name")
        rows = cur.fetchall()
        assert [r[0] for r in rows] == FILES, rows
        assert [r[1] for r in rows] == [RATES[f] for f in FILES], rows
        assert rows[1][2] and all(r[2] is None for r in rows if r[0] != "broken.mp3"), rows
    conn.close()


@check
def dict_cursor():
    conn = connect()
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT file_name, channels FROM music WHERE channels = 2 ORDER BY file_name")
        assert cur.fetchall() == [{"file_name": "a_minor_120.mp3", "channels": 2},
                                  {"file_name": "g_major_100.m4a", "channels": 2}]
    conn.close()


@check
def error_then_usable():
    conn = connect()
    cur = conn.cursor()
    expect_error(cur, psycopg2.errorcodes.UNDEFINED_TABLE, "SELECT * FROM no_such_table")
    assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR, \
        conn.get_transaction_status()
    conn.rollback()
    cur.execute("SELECT count(*) FROM music")
    assert cur.fetchone() == (5,)
    expect_error(cur, psycopg2.errorcodes.SYNTAX_ERROR, "SELEC 1")
    conn.rollback()
    conn.autocommit = True
    expect_error(cur, psycopg2.errorcodes.UNDEFINED_COLUMN, "SELECT nope FROM music")
    cur.execute("SELECT %s + 1", (41,))
    assert cur.fetchone() == (42,)
    conn.close()


@check
def named_cursor():
    # A server-side cursor: DECLARE ... CURSOR, then FETCH FORWARD.
    conn = connect()
    with conn.cursor("files") as cur:
        cur.itersize = 2
        cur.execute("SELECT file_name FROM music ORDER BY file_name")
        assert [r[0] for r in cur] == FILES
    conn.commit()
    conn.close()


@check
def copy_expert():
    import io

    conn = connect()
    with conn.cursor() as cur:
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT file_name, sample_rate FROM music ORDER BY file_name) "
                        "TO STDOUT WITH (FORMAT csv)", out)
        assert out.getvalue().splitlines() == [
            f"{f},{'' if RATES[f] is None else RATES[f]}" for f in FILES], out.getvalue()
    conn.close()


if failures:
    print(f"psycopg2: {len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("psycopg2: all checks passed")
