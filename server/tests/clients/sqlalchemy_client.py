#!/usr/bin/env python3
"""SQLAlchemy 2 (psycopg2 dialect; psycopg 3 for savepoints) and pandas against `audiolake serve`.

SQLAlchemy's reflection (`inspect(engine)`) reads pg_catalog the way BI tools and notebooks do.
Connects with PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (default audiolake) and PGSSLMODE,
and exits 1 naming each failed check.
"""
import os
import sys
import traceback

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import types as sat
from sqlalchemy.engine import URL

FILES = ["a_minor_120.mp3", "broken.mp3", "c_major_90.flac", "d_minor_140.ogg", "g_major_100.m4a"]
RATES = [44100, None, 48000, 44100, 22050]

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


url = URL.create(
    "postgresql+psycopg2",
    username=os.environ.get("PGUSER"),
    password=os.environ.get("PGPASSWORD"),
    host=os.environ.get("PGHOST", "127.0.0.1"),
    port=int(os.environ.get("PGPORT", "5432")),
    database=os.environ.get("PGDATABASE", "audiolake"),
    query={"sslmode": os.environ.get("PGSSLMODE", "prefer")},
)
engine = sa.create_engine(url)


class LazyInspector:
    """sa.inspect(engine), made on first use: each check then fails with its own error."""

    def __getattr__(self, name):
        return getattr(sa.inspect(engine), name)


insp = LazyInspector()


@check
def version_string():
    # SQLAlchemy's PostgreSQL dialects read the server's version from version() with the pattern
    # "PostgreSQL N.N"; without it no engine connects.
    import re

    import psycopg2

    with psycopg2.connect(dbname=os.environ.get("PGDATABASE", "audiolake")) as conn, conn.cursor() as cur:
        cur.execute("SELECT version()")
        version = cur.fetchone()[0]
    conn.close()
    assert re.match(r"PostgreSQL \d+\.\d+", version), f"version() is {version!r}, not 'PostgreSQL N.N ...'"


@check
def connect():
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM music")).scalar_one() == 5
        rows = conn.execute(sa.text("SELECT file_name FROM music WHERE sample_rate = :rate ORDER BY file_name"),
                            {"rate": 44100}).scalars().all()
        assert rows == ["a_minor_120.mp3", "d_minor_140.ogg"], rows
    print(f"     dialect server_version_info={engine.dialect.server_version_info}, "
          f"default_schema_name={engine.dialect.default_schema_name!r}")
    assert engine.dialect.default_schema_name == "public", engine.dialect.default_schema_name


@check
def table_names():
    names = insp.get_table_names()
    assert "music" in names, names
    assert "music" in insp.get_table_names(schema="public"), insp.get_table_names(schema="public")


@check
def has_table():
    assert insp.has_table("music"), "has_table('music') is false"
    assert not insp.has_table("no_such_table"), "has_table('no_such_table') is true"


@check
def schema_names():
    schemas = insp.get_schema_names()
    assert "public" in schemas, schemas


@check
def columns():
    cols = {c["name"]: c for c in insp.get_columns("music")}
    names = list(cols)
    assert names[:4] == ["path", "file_name", "size_bytes", "last_modified"], names
    assert names[-1] == "error", names
    for name in ("sample_rate", "duration_s", "chroma", "mfcc", "bpm", "key"):
        assert name in cols, (name, names)

    def is_a(name, kind):
        t = cols[name]["type"]
        assert isinstance(t, kind), f"{name}: {t!r} is not a {kind.__name__}"

    is_a("path", sat.String)
    is_a("file_name", sat.String)
    is_a("size_bytes", sat.BigInteger)
    is_a("sample_rate", sat.Integer)
    assert not isinstance(cols["sample_rate"]["type"], sat.BigInteger), cols["sample_rate"]["type"]
    is_a("duration_s", sat.Float)
    is_a("last_modified", sat.DateTime)
    assert cols["last_modified"]["type"].timezone, "last_modified is not WITH TIME ZONE"
    is_a("chroma", sat.ARRAY)
    is_a("error", sat.String)
    assert all("nullable" in c for c in cols.values())


@check
def pk_constraint():
    pk = insp.get_pk_constraint("music")
    assert pk["constrained_columns"] == [], pk


@check
def foreign_keys():
    assert insp.get_foreign_keys("music") == []


@check
def indexes():
    assert insp.get_indexes("music") == []


@check
def unique_and_check_constraints():
    assert insp.get_unique_constraints("music") == []
    assert insp.get_check_constraints("music") == []


@check
def views():
    insp.get_view_names()


@check
def reflect_table():
    meta = sa.MetaData()
    music = sa.Table("music", meta, autoload_with=engine)
    query = sa.select(music.c.file_name, music.c.channels).where(music.c.channels == 1).order_by(music.c.file_name)
    with engine.connect() as conn:
        assert conn.execute(query).all() == [("c_major_90.flac", 1), ("d_minor_140.ogg", 1)]


@check
def pandas_read_sql():
    df = pd.read_sql("SELECT file_name, sample_rate FROM music ORDER BY file_name", engine)
    assert list(df.columns) == ["file_name", "sample_rate"], df.columns
    assert len(df) == 5, df
    assert df["file_name"].tolist() == FILES, df
    # The NULL rate of broken.mp3 makes the int column a float one with NaN, as pandas does.
    assert str(df["sample_rate"].dtype) == "float64", df.dtypes
    assert df["sample_rate"].isna().tolist() == [r is None for r in RATES], df
    assert df["sample_rate"].dropna().astype(int).tolist() == [r for r in RATES if r is not None], df
    df = pd.read_sql("SELECT file_name, size_bytes, duration_s, last_modified FROM music "
                     "WHERE error IS NULL ORDER BY file_name", engine)
    assert str(df["size_bytes"].dtype) == "int64", df.dtypes
    assert str(df["duration_s"].dtype) == "float64", df.dtypes
    assert str(df["last_modified"].dtype).startswith("datetime64") and df["last_modified"].dt.tz is not None, df.dtypes
    assert ((df["duration_s"] - 16.0).abs() < 0.2).all(), df
    df = pd.read_sql(sa.text("SELECT file_name FROM music WHERE channels = :c ORDER BY 1"), engine, params={"c": 2})
    assert df["file_name"].tolist() == ["a_minor_120.mp3", "g_major_100.m4a"], df


@check
def nested_transactions_with_psycopg3():
    # SQLAlchemy's begin_nested() sends SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT.
    nested_engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    try:
        with nested_engine.connect() as conn:
            with conn.begin():
                with conn.begin_nested():
                    assert conn.execute(sa.text("SELECT count(*) FROM music")).scalar_one() == 5
                nested = conn.begin_nested()
                assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
                nested.rollback()
                assert conn.execute(sa.text("SELECT file_name FROM music ORDER BY 1 LIMIT 1")).scalar_one() == FILES[0]
    finally:
        nested_engine.dispose()


engine.dispose()
if failures:
    print(f"sqlalchemy: {len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("sqlalchemy: all checks passed")
