#!/usr/bin/env python3
"""kNN queries through the PostgreSQL protocol: audiolake's HNSW index in SQL beside pgvector's.

    python3 benches/knn_pg.py                       # 100,000 vectors of 200 dimensions
    python3 benches/knn_pg.py --rows 1000000 --queries 500
    AUDIOLAKE_BIN=target/release/audiolake python3 benches/knn_pg.py --no-pgvector
    python3 benches/knn_pg.py --bind     # the query vector as a parameter, as clients send it

Needs a built `audiolake` binary, found as in benches/pg_load.py (AUDIOLAKE_BIN, else release,
else debug; it says which), and psql; numpy, pyarrow, psycopg, hnswlib and pgserver (PostgreSQL
16 with pgvector, as binaries in a wheel) are installed with bench_venv.py on first use.

Data: clustered synthetic vectors, the distribution of the core benchmark (engine/benches/
hnsw.rs): --rows float4 vectors of --dims elements around 1000 centres drawn uniformly in
[-1, 1]^dims, with normal noise of standard deviation 0.1 (seeded, the same on every run), and
`bucket = id * 2654435761 % 1000003 % 100`, a hash of the id unrelated to the cluster. Queries
are new points of the same distribution; their exact 10 nearest rows are computed with numpy.

audiolake: `audiolake serve --dev-no-auth` over a temporary store, the rows as a Parquet file
(pyarrow) made table `vecs(id bigint, v float4[], bucket int)`, and
`CREATE INDEX ON vecs USING hnsw (v vector_l2_ops) WITH (m, ef_construction)` through psql.

pgvector (--no-pgvector skips it): the PostgreSQL 16 and pgvector of the `pgserver` package
(pgvector 0.6.2 in pgserver 0.1.4), its cluster made by pgserver.get_server in the temporary
folder (as a user `pgserver` it adds when run as root: PostgreSQL refuses root) and restarted on
a loopback port, as audiolake listens, with shared_buffers a quarter of the machine's memory so
that table and index stay in PostgreSQL's cache, and fsync off. The same rows are loaded by a
binary COPY into `vecs(id bigint, v vector(dims), bucket int)` and the same index is built with
maintenance_work_mem 2GB and max_parallel_maintenance_workers = the cores (PostgreSQL starts
fewer for a small table); the build time is that of the CREATE INDEX. enable_seqscan is off, so
every query uses the index, as the script checks with EXPLAIN on both servers.

Over one psycopg connection to each server in turn (each stopped before the next starts),
--queries queries
`SELECT id FROM vecs ORDER BY v <-> '[...]' LIMIT 10` run one after another for each
hnsw.ef_search in --ef; one table prints, per ef, each server's recall@10 and p50/p95/p99
latency as the client sees it and queries/s, and hnswlib's (PyPI) recall@10 and queries/s with
the same m and ef_construction on the same rows and queries, in-process, one query per call
(--no-hnswlib skips it); above it, each build's time.

Filtered (--no-filtered skips it): `... WHERE bucket < 1 / 10 / 50 ORDER BY ... LIMIT 10` (1 %,
10 %, 50 % of the rows) at ef_search 40 for each hnsw.iterative_scan (off, relaxed_order,
strict_order; max_scan_tuples left at its default, 20,000, on both), over the first
--filtered-queries queries: rows returned per query (mean, of 10), recall@10 against the exact
filtered answer (rows not returned count as missed), the first query's latency and the p50,
and for audiolake the way its scan went (exact or graph, from EXPLAIN ANALYZE). pgvector before 0.8 has no iterative scans:
its SET is refused, the script prints "-" for those modes and says why; its scans are one
round, as `off`.

The goal of issue 7: recall@10 >= 0.95 at 1,000,000 vectors with p99 under 10 ms. It reports;
it does not fail on a missed goal.
"""
import argparse
import importlib.metadata
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_venv import ensure  # noqa: E402

# Importing pgserver asks platformdirs for a runtime folder, which warns where XDG_RUNTIME_DIR is
# unset (a root shell); pgserver's fallback under /tmp is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
ensure({"numpy": "numpy", "pyarrow": "pyarrow", "psycopg": "psycopg[binary]",
        "hnswlib": "hnswlib", "pgserver": "pgserver"})
import hnswlib  # noqa: E402
import numpy as np  # noqa: E402
import pgserver  # noqa: E402
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pg_load import audiolake_bin, die, free_port, pg_env, psql, terminate  # noqa: E402

CLUSTERS = 1000
NOISE_SD = 0.1
K = 10
BLOCK = 100_000  # rows drawn, written and copied at a time
FILTERED_PERCENTS = (1, 10, 50)
FILTERED_EF = 40
MODES = ("off", "relaxed_order", "strict_order")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dims", type=int, default=200)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--filtered-queries", type=int, default=50,
                   help="queries of the filtered part (the first of --queries)")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", default="10,40,100,200", help="hnsw.ef_search values, comma-separated")
    p.add_argument("--no-hnswlib", action="store_true",
                   help="skip hnswlib on the same data (its build takes minutes at 1,000,000)")
    p.add_argument("--no-pgvector", action="store_true",
                   help="skip PostgreSQL with pgvector on the same data")
    p.add_argument("--no-filtered", action="store_true", help="skip the filtered queries")
    p.add_argument("--bind", action="store_true",
                   help="send the query vector as a parameter ($1) rather than in the text")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return p.parse_args()


def clustered(rng, centres, n):
    """n points around randomly chosen centres, float32."""
    which = rng.integers(0, len(centres), size=n)
    return (centres[which] + rng.normal(0.0, NOISE_SD, size=(n, centres.shape[1]))).astype(np.float32)


def make_rows(rows, rng, centres):
    """ids 1..rows, their vectors and buckets. The vectors are drawn a block at a time, as
    earlier versions of this script drew them: the rows are those of the runs in the docs."""
    vectors = np.concatenate([clustered(rng, centres, min(BLOCK, rows - start))
                              for start in range(0, rows, BLOCK)])
    ids = np.arange(1, rows + 1, dtype=np.int64)
    # A multiplicative hash of the id: which rows pass a filter says nothing of their cluster.
    buckets = (ids * 2654435761 % 1000003 % 100).astype(np.int32)
    return ids, vectors, buckets


def write_parquet(path, ids, vectors, buckets):
    """Table vecs(id, v, bucket) as one Parquet file, in row groups of BLOCK rows."""
    schema = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float32())), ("bucket", pa.int32())])
    dims = vectors.shape[1]
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(ids), BLOCK):
            rows = slice(start, start + BLOCK)
            block = vectors[rows]
            offsets = pa.array(np.arange(0, block.size + 1, dims, dtype=np.int32))
            column = pa.ListArray.from_arrays(offsets, pa.array(block.ravel()))
            writer.write_table(pa.Table.from_arrays(
                [pa.array(ids[rows]), column, pa.array(buckets[rows])], schema=schema))


def exact_nearest(ids, vectors, queries):
    """The ids of each query's K nearest rows, by brute force."""
    base = vectors.astype(np.float64)
    norms = (base ** 2).sum(axis=1)
    truth = []
    for start in range(0, len(queries), 50):
        block = queries[start:start + 50].astype(np.float64)
        # |x - q|^2 without the |q|^2 every row shares.
        d = norms[:, None] - 2.0 * (base @ block.T)
        for column in range(d.shape[1]):
            nearest = np.argpartition(d[:, column], K)[:K]
            truth.append(set(ids[nearest].tolist()))
    return truth


def hnswlib_recall(ids, vectors, queries, truth, args, efs):
    """hnswlib (PyPI) on the same rows and queries, same m and ef_construction: build seconds
    and, per ef, recall@K and queries/s (one thread, one query per call, as the client sends)."""
    started = time.monotonic()
    index = hnswlib.Index(space="l2", dim=vectors.shape[1])
    index.init_index(max_elements=len(ids), ef_construction=args.ef_construction, M=args.m,
                     random_seed=100)
    index.add_items(vectors, ids, num_threads=-1)
    build_s = time.monotonic() - started
    runs = {}
    for ef in efs:
        index.set_ef(ef)
        hits, started = 0, time.monotonic()
        for q, want in zip(queries, truth):
            labels, _ = index.knn_query(q[None, :], k=K, num_threads=1)
            hits += len(want & set(labels[0].tolist()))
        runs[ef] = (hits / (K * len(truth)), len(queries) / (time.monotonic() - started))
    return build_s, runs


def server_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def plan_text(conn, prefix, query):
    """`prefix` (EXPLAIN, EXPLAIN ANALYZE) of `query`, a (sql, parameters) pair."""
    sql, params = query
    # audiolake's EXPLAIN has (plan_type, plan) rows, PostgreSQL's one column: the plan is last.
    return "\n".join(str(r[-1]) for r in conn.execute(f"{prefix} {sql}", params).fetchall())


# With --bind the query vector is a parameter, as applications send it, else a literal.
BIND = False


def knn_sql(engine, text, where=""):
    """The query as (sql, parameters)."""
    if BIND:
        return (f"SELECT id FROM vecs{where} ORDER BY v <-> {engine.PARAMETER} LIMIT {K}",
                (text,))
    return (f"SELECT id FROM vecs{where} ORDER BY v <-> '{text}' LIMIT {K}", None)


class Audiolake:
    """`audiolake serve --dev-no-auth` over a temporary store; vecs is the Parquet file."""

    PARAMETER = "%s"

    def __init__(self, binary, tmp, data):
        self.binary, self.tmp, self.data = binary, tmp, data
        self.label = "audiolake"
        self.proc = self.conn = None

    def start(self):
        self.log = open(os.path.join(self.tmp, "server.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", "127.0.0.1:0", "--store",
             os.path.join(self.tmp, "store"), "--allow", self.data, "--dev-no-auth"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            die(f"audiolake serve did not start: {line!r}, see {self.log.name}")
        self.port = int(line.split()[3].rsplit(":", 1)[1].rstrip(")"))
        self.conn = psycopg.connect(host="127.0.0.1", port=self.port, user="bench",
                                    dbname="audiolake", sslmode="disable", autocommit=True)

    def build(self, args):
        env = pg_env(self.port, "bench")
        psql(env, f"CREATE EXTERNAL TABLE vecs STORED AS PARQUET LOCATION '{self.data}/'")
        rss_before = server_rss_mib(self.proc.pid)
        started = time.monotonic()
        psql(env, f"CREATE INDEX vecs_v ON vecs USING hnsw (v vector_l2_ops) "
                  f"WITH (m = {args.m}, ef_construction = {args.ef_construction})",
             timeout=4 * 3600)
        wall = time.monotonic() - started
        rows, build_s, size = psql(
            env, "SELECT rows, build_seconds, size_bytes FROM audiolake_indexes").split("|")
        print(f"  audiolake: index of {rows} rows, graph built in {float(build_s):.1f} s "
              f"({wall:.1f} s with reading the table and saving), {int(size) / 2**20:.0f} MiB "
              f"saved, server memory {rss_before:.0f} -> {server_rss_mib(self.proc.pid):.0f} MiB")

    def uses_index(self, plan):
        return "HnswIndexScan" in plan

    def way(self, sql):
        """How the scan went: `exact` or `graph`, as EXPLAIN ANALYZE says on the scan's line."""
        found = re.search(r"\bsearch=(\w+)", plan_text(self.conn, "EXPLAIN ANALYZE", sql))
        return found.group(1) if found else "?"

    def stop(self):
        if self.proc:
            if self.conn:
                self.conn.close()
            terminate(self.proc, 30)
            self.proc = None


class PgVector:
    """PostgreSQL 16 with pgvector from the pgserver package, in a folder of the temporary one."""

    MAINTENANCE_WORK_MEM = "2GB"
    PARAMETER = "%s::vector"

    def __init__(self, tmp, ids, vectors, buckets):
        self.pgdata = os.path.join(tmp, "postgresql")
        self.rows = (ids, vectors, buckets)
        self.label = "pgvector"
        self.running, self.conn = False, None

    def start(self):
        # get_server makes the cluster and starts it on a Unix socket only; when run as root it
        # runs PostgreSQL as a user `pgserver` it adds. Restart it on a loopback port, as
        # audiolake listens, with a cache that holds table and index (a quarter of the memory).
        server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.user = server.system_user
        self.running = True
        self.port = free_port()
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 2**20
        pgserver.pg_ctl(["-w", "-m", "fast", "-l", os.path.join(self.pgdata, "server.log"),
                         "-o", f"-p {self.port} -k {self.pgdata} -c listen_addresses=127.0.0.1 "
                               f"-c shared_buffers={memory_mb}MB -c fsync=off", "restart"],
                        pgdata=self.pgdata, user=self.user, timeout=300)
        self.conn = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                    dbname="postgres", sslmode="disable", autocommit=True)
        self.conn.execute("SET enable_seqscan = off")
        # CREATE EXTENSION loads pgvector into this session: it then reserves the `hnsw.` prefix,
        # so a setting it does not have is refused rather than kept as a placeholder.
        self.conn.execute("CREATE EXTENSION vector")
        pg = self.conn.execute("SHOW server_version").fetchone()[0]
        vector = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        self.label = f"pgvector {vector}"
        print(f"  pgvector: PostgreSQL {pg}, pgvector {vector} (pgserver "
              f"{importlib.metadata.version('pgserver')}) on 127.0.0.1:{self.port}; "
              f"shared_buffers {memory_mb}MB, fsync off; enable_seqscan off, so every query "
              f"uses the index")

    def build(self, args):
        ids, vectors, buckets = self.rows
        dims = vectors.shape[1]
        conn = self.conn
        conn.execute(f"CREATE TABLE vecs (id bigint, v vector({dims}), bucket int)")
        started = time.monotonic()
        copy_binary(conn, ids, vectors, buckets)
        loaded = time.monotonic() - started
        workers = os.cpu_count()
        conn.execute(f"SET maintenance_work_mem = '{self.MAINTENANCE_WORK_MEM}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
        # pgvector says so when the graph outgrows maintenance_work_mem (a slower build follows).
        conn.add_notice_handler(lambda n: print(f"  pgvector notice: {n.message_primary}"))
        started = time.monotonic()
        conn.execute(f"CREATE INDEX vecs_v ON vecs USING hnsw (v vector_l2_ops) "
                     f"WITH (m = {args.m}, ef_construction = {args.ef_construction})")
        build_s = time.monotonic() - started
        size = conn.execute("SELECT pg_relation_size('vecs_v')").fetchone()[0]
        print(f"  pgvector: {len(ids)} rows loaded by COPY in {loaded:.1f} s; index built in "
              f"{build_s:.1f} s (maintenance_work_mem {self.MAINTENANCE_WORK_MEM}, "
              f"max_parallel_maintenance_workers {workers}: fewer start for a small table), "
              f"{size / 2**20:.0f} MiB")

    def uses_index(self, plan):
        return "Index Scan using vecs_v" in plan

    def way(self, sql):
        return "graph"  # uses_index has checked that the plan is the HNSW index scan

    def stop(self):
        if self.running:
            if self.conn:
                self.conn.close()
            pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user,
                            timeout=120)
            self.running = False


def copy_binary(conn, ids, vectors, buckets):
    """COPY ... FROM STDIN (FORMAT BINARY), each block of rows laid out by numpy: per row the
    field count, then each field's length and value, big-endian; a vector is its dimensions, a
    reserved int16 and the float4s (pgvector's vector_recv)."""
    dims = vectors.shape[1]
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("v_len", ">i4"),
                    ("dims", ">i2"), ("unused", ">i2"), ("v", ">f4", (dims,)),
                    ("bucket_len", ">i4"), ("bucket", ">i4")])
    with conn.cursor().copy("COPY vecs (id, v, bucket) FROM STDIN (FORMAT BINARY)") as copy:
        # The header: signature, flags, length of the header extension.
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for start in range(0, len(ids), BLOCK):
            stop = min(start + BLOCK, len(ids))
            block = np.zeros(stop - start, dtype=row)  # `unused` stays 0, as vector_recv wants
            block["fields"], block["dims"] = 3, dims
            block["id_len"], block["v_len"], block["bucket_len"] = 8, 4 + 4 * dims, 4
            block["id"], block["v"] = ids[start:stop], vectors[start:stop]
            block["bucket"] = buckets[start:stop]
            copy.write(block.tobytes())
        copy.write(struct.pack(">h", -1))  # the trailer


@dataclass
class Run:
    recall: float  # hits over K per query: rows not returned count as missed
    rows: float  # rows returned per query, mean
    p50: float
    p95: float
    p99: float
    qps: float


def run_queries(conn, sqls, truth):
    """Each query once, one after another, timed from sending to the last row received."""
    latencies, hits, returned = [], 0, 0
    started = time.monotonic()
    for sql, want in zip(sqls, truth):
        t = time.monotonic()
        got = [r[0] for r in conn.execute(*sql).fetchall()]
        latencies.append((time.monotonic() - t) * 1000)
        hits += len(want & set(got))
        returned += len(got)
    elapsed = time.monotonic() - started
    return Run(hits / (K * len(truth)), returned / len(truth), statistics.median(latencies),
               percentile(latencies, 0.95), percentile(latencies, 0.99), len(sqls) / elapsed)


def bench(engine, texts, truth, efs, filtered):
    """Per ef_search, the plain queries; then, at FILTERED_EF, each filtered case in each
    iterative_scan mode, as {(percent, mode): (way, first query's ms, Run)}, without the modes the server refused,
    and its first refusal."""
    conn = engine.conn
    runs = {}
    for ef in efs:
        conn.execute(f"SET hnsw.ef_search = {ef}")
        check_index(engine, knn_sql(engine, texts[0]))
        runs[ef] = run_queries(conn, [knn_sql(engine, t) for t in texts], truth)
    results, refusal = {}, None
    if not filtered:
        return runs, results, refusal
    conn.execute(f"SET hnsw.ef_search = {FILTERED_EF}")
    for mode in MODES:
        try:
            conn.execute(f"SET hnsw.iterative_scan = {mode}")
        except psycopg.Error as e:
            refusal = refusal or str(e).splitlines()[0]
            # A server without the setting scans one round, which is what `off` asks.
            if mode != "off":
                continue
        for percent, case_truth in filtered:
            where = f" WHERE bucket < {percent}"
            sqls = [knn_sql(engine, t, where) for t in texts[:len(case_truth)]]
            check_index(engine, sqls[0])
            started = time.monotonic()
            conn.execute(*sqls[0]).fetchall()
            first = (time.monotonic() - started) * 1000
            results[(percent, mode)] = (engine.way(sqls[0]), first,
                                        run_queries(conn, sqls, case_truth))
    return runs, results, refusal


def check_index(engine, sql):
    plan = plan_text(engine.conn, "EXPLAIN", sql)
    if not engine.uses_index(plan):
        die(f"{engine.label}: the query did not use the index:\n{plan}")


def print_plain(efs, benched, peer):
    """One row per ef_search: each server's recall, latency and queries/s, then hnswlib's."""
    cells = f"{'recall@10':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'queries/s':>9}"
    top = f"  {'':>9}" + "".join(f" | {b[0]:<{len(cells)}}" for b in benched)
    head = f"  {'ef_search':>9}" + f" | {cells}" * len(benched)
    if peer:
        top += " | hnswlib"
        head += f" | {'recall@10':>9} {'queries/s':>9}"
    print(f"\n  kNN, {K} nearest; latency in ms as the client sees it, one query at a time"
          f"\n{top.rstrip()}\n{head}")
    for ef in efs:
        line = f"  {ef:>9}"
        for _, runs, _, _ in benched:
            r = runs[ef]
            line += f" | {r.recall:>9.3f} {r.p50:>7.2f} {r.p95:>7.2f} {r.p99:>7.2f} {r.qps:>9.1f}"
        if peer:
            line += f" | {peer[ef][0]:>9.3f} {peer[ef][1]:>9.1f}"
        print(line)


def print_filtered(filtered, shares, benched):
    """One row per share of rows passing and iterative_scan mode: each server's way of
    scanning, rows returned, recall, the first query's latency and p50 latency."""
    cells = f"{'search':>6} {'rows':>5} {'recall@10':>9} {'first ms':>8} {'p50 ms':>7}"
    print(f"\n  Filtered kNN, WHERE bucket < N, ef_search {FILTERED_EF}, {len(filtered[0][1])} "
          f"queries: rows returned per query (mean, of {K}), recall@10 against the exact "
          f"filtered answer; first: the first query with this WHERE in this mode (audiolake\n"
          f"  reads the rows that pass once per table version and keeps them, so only the first "
          f"mode's first query reads the table)")
    print((f"  {'':>21}" + "".join(f" | {b[0]:<{len(cells)}}" for b in benched)).rstrip())
    print(f"  {'passes':>6} {'iterative_scan':>14}" + f" | {cells}" * len(benched))
    for percent, _ in filtered:
        for mode in MODES:
            line = f"  {shares[percent]:>5.1f}% {mode:>14}"
            for _, _, results, _ in benched:
                if (percent, mode) in results:
                    way, first, r = results[(percent, mode)]
                    line += (f" | {way:>6} {r.rows:>5.1f} {r.recall:>9.3f} {first:>8.2f} "
                             f"{r.p50:>7.2f}")
                else:
                    line += f" | {'-':>6} {'-':>5} {'-':>9} {'-':>8} {'-':>7}"
            print(line)
    for label, _, _, refusal in benched:
        if refusal:
            print(f"  {label} refused SET hnsw.iterative_scan ({refusal}): iterative index "
                  f"scans came with pgvector 0.8.0;\n  without them a scan is one round, as "
                  f"`off`, and \"-\" marks the other modes")


def main():
    args = parse_args()
    global BIND
    BIND = args.bind
    binary, profile = audiolake_bin()
    print(f"knn_pg: {args.rows} vectors of {args.dims} dimensions, m {args.m}, "
          f"ef_construction {args.ef_construction}; query vector as "
          f"{'a parameter' if BIND else 'a literal'}; audiolake binary: {binary} ({profile})")
    tmp = tempfile.mkdtemp(prefix="knn_pg-")
    data = os.path.join(tmp, "vectors")
    os.makedirs(data)
    engines = []
    try:
        rng = np.random.default_rng(42)
        centres = rng.uniform(-1.0, 1.0, size=(CLUSTERS, args.dims))
        started = time.monotonic()
        ids, vectors, buckets = make_rows(args.rows, rng, centres)
        write_parquet(os.path.join(data, "vecs.parquet"), ids, vectors, buckets)
        queries = clustered(rng, centres, args.queries)
        truth = exact_nearest(ids, vectors, queries)
        filtered, shares = [], {}
        if not args.no_filtered:
            for percent in FILTERED_PERCENTS:
                passing = buckets < percent
                shares[percent] = 100.0 * passing.mean()
                filtered.append((percent, exact_nearest(ids[passing], vectors[passing],
                                                        queries[:args.filtered_queries])))
        print(f"  data written and exact answers computed in {time.monotonic() - started:.1f} s")
        texts = ["[" + ",".join(repr(float(x)) for x in q) + "]" for q in queries]
        efs = [int(e) for e in args.ef.split(",")]

        engines.append(Audiolake(binary, tmp, data))
        if not args.no_pgvector:
            engines.append(PgVector(tmp, ids, vectors, buckets))
        benched = []
        # One server at a time, each stopped before the next starts: neither slows the other.
        for engine in engines:
            engine.start()
            engine.build(args)
            benched.append((engine.label, *bench(engine, texts, truth, efs, filtered)))
            engine.stop()
        peer = None
        if not args.no_hnswlib:
            peer_build, peer = hnswlib_recall(ids, vectors, queries, truth, args, efs)
            print(f"  hnswlib on the same data: built in {peer_build:.1f} s")
        print_plain(efs, benched, peer)
        if filtered:
            print_filtered(filtered, shares, benched)
    finally:
        for engine in engines:
            engine.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
