#!/usr/bin/env python3
"""Load on the PostgreSQL front door: `audiolake serve` next to a real PostgreSQL, under pgbench.

    python3 benches/pg_load.py                      # 64 clients, 20 s per server
    python3 benches/pg_load.py --duration 60 --clients 32
    PG_LOAD_DURATION=5 AUDIOLAKE_BIN=target/release/audiolake python3 benches/pg_load.py
    python3 benches/pg_load.py --rows 1000000 --storage parquet

Needs pgbench and psql (postgresql-client) and Debian's PostgreSQL server (package postgresql,
/usr/lib/postgresql/*/bin); `.ci/clients.sh` installs them. Build the binary first, preferably in
release (`cargo build --release -p audiolake-server`): the binary is AUDIOLAKE_BIN, else
$CARGO_TARGET_DIR/release/audiolake, else .../debug/audiolake (the script says which it took;
debug figures say little).

For each server in turn, on loopback ports of this machine only:
  * audiolake: `audiolake serve --dev-no-auth` over a temporary store; PostgreSQL: initdb into a
    temporary folder (as user postgres when run as root) and pg_ctl start with its socket there;
  * the same table of --rows rows, made with SQL through psql:
    tracks(id bigint, bpm double precision, key text, title text), with a primary key on
    PostgreSQL; audiolake has no indexes on ordinary columns: with `--storage memory` (default)
    its table is in memory, with `--storage parquet` it is a Parquet file sorted by id (row
    groups of 65,536 rows, pages of 1,024 rows, no dictionary, LZ4; DataFusion's page index), where a point query reads only the row
    group and pages whose statistics may hold the id (the script prints EXPLAIN ANALYZE's
    pruning figures);
  * a check that both give the same answers, then a warm-up run, then three measured runs, each
    with two scripts of equal weight, a point query `SELECT * FROM tracks WHERE id = :id` and a
    range query `SELECT count(*), avg(bpm) FROM tracks WHERE id BETWEEN :lo AND :lo + 100`:
      - closed loop: `pgbench -n -M extended -c 64 -j 2 -T 20 --log`, the maximum throughput;
      - one client (`-c 1`): the service time of a query with nothing else running;
      - a fixed offered rate (`-R`) of a quarter of PostgreSQL's closed-loop throughput (so
        PostgreSQL runs first; --rate sets another), 64 clients: latency when the server is not
        saturated, schedule lag included (a server slower than the rate falls behind: its p95
        then grows with the run's length).

Each transaction is one query, so queries/s is pgbench's transactions per second; p50/p95/p99 are
computed from the per-transaction logs (all queries, and each script apart). CPU ms/query is the
server's CPU time (user and system, from /proc/<pid>/stat) over the closed-loop run divided by its
queries: audiolake's one process; PostgreSQL's postmaster with its ended children, the backends,
which end when pgbench disconnects. The table ends with
the ratio audiolake / PostgreSQL and whether the goals are met: p95 under 10 ms at the fixed rate
and at least half of PostgreSQL's throughput. The benchmark reports; it does not fail on a missed
goal (it exits 1 only when a server cannot be started or pgbench itself fails).
"""
import argparse
import glob
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

POINT = "\\set id random(1, {rows})\nSELECT * FROM tracks WHERE id = :id;\n"
RANGE = ("\\set lo random(1, {rows_less_100})\n"
         "SELECT count(*), avg(bpm) FROM tracks WHERE id BETWEEN :lo AND :lo + 100;\n")

# A table both servers make from the same SQL: generate_series, integer arithmetic and chr.
CREATE = """CREATE TABLE tracks AS
SELECT CAST(v AS BIGINT) AS id,
       CAST(60 + (v % 140) * 0.75 AS DOUBLE PRECISION) AS bpm,
       chr(CAST(65 + (v % 7) AS INT)) || CASE WHEN v % 2 = 0 THEN ' major' ELSE ' minor' END AS key,
       'track ' || CAST(v AS TEXT) AS title
FROM generate_series(1, {rows}) AS t(v)"""

# Answers both servers must agree on before any timing.
CHECKS = [
    "SELECT count(*), sum(id), min(id), max(id) FROM tracks",
    "SELECT id, bpm, key, title FROM tracks WHERE id = 4242",
    "SELECT count(*), round(CAST(avg(bpm) AS NUMERIC), 6) FROM tracks WHERE id BETWEEN 500 AND 600",
]


def env_default(name, default, kind=str):
    value = os.environ.get(name)
    return kind(value) if value not in (None, "") else default


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=env_default("PG_LOAD_DURATION", 20, int),
                   help="seconds of measured load per server (env PG_LOAD_DURATION, default 20)")
    p.add_argument("--warmup", type=int, default=env_default("PG_LOAD_WARMUP", 3, int),
                   help="seconds of unmeasured load first (env PG_LOAD_WARMUP, default 3)")
    p.add_argument("--clients", type=int, default=env_default("PG_LOAD_CLIENTS", 64, int),
                   help="pgbench -c (env PG_LOAD_CLIENTS, default 64)")
    p.add_argument("--threads", type=int, default=env_default("PG_LOAD_THREADS", 2, int),
                   help="pgbench -j (env PG_LOAD_THREADS, default 2)")
    p.add_argument("--rows", type=int, default=env_default("PG_LOAD_ROWS", 10000, int),
                   help="rows in the table (env PG_LOAD_ROWS, default 10000)")
    p.add_argument("--mode", default=env_default("PG_LOAD_MODE", "extended"),
                   choices=["simple", "extended", "prepared"], help="pgbench -M (default extended)")
    p.add_argument("--storage", default=env_default("PG_LOAD_STORAGE", "memory"),
                   choices=["memory", "parquet"],
                   help="audiolake's table: in memory, or a sorted Parquet file (default memory)")
    p.add_argument("--rate", type=float, default=env_default("PG_LOAD_RATE", 0.0, float),
                   help="offered queries/s of the fixed-rate run (default: a quarter of the "
                        "closed-loop throughput of the first server run, PostgreSQL's)")
    p.add_argument("--only", choices=["audiolake", "postgresql"], help="run one server only")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = p.parse_args()
    if args.rows < 200:
        p.error("--rows must be at least 200")
    return args


def die(message):
    print(f"pg_load: {message}", file=sys.stderr)
    sys.exit(1)


def audiolake_bin():
    explicit = os.environ.get("AUDIOLAKE_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            die(f"AUDIOLAKE_BIN={explicit} is not an executable")
        return explicit, "AUDIOLAKE_BIN"
    targets = [os.environ.get("CARGO_TARGET_DIR"), os.path.expanduser("~/.cache/audiolake-target"),
               os.path.join(REPO, "target")]
    for profile in ("release", "debug"):
        for target in filter(None, targets):
            path = os.path.join(target, profile, "audiolake")
            if os.access(path, os.X_OK):
                return path, profile
    die("no audiolake binary: set AUDIOLAKE_BIN or run `cargo build --release -p audiolake-server`")


def postgres_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        die("no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    return os.path.dirname(found[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_env(port, user):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER=user, PGDATABASE="audiolake",
               PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
    return env


def psql(env, sql, timeout=300):
    """Runs sql (statements separated by ;) and returns psql's unaligned output."""
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        die(f"psql failed on {sql!r}:\n{r.stderr}")
    return r.stdout.strip()


def terminate(proc, timeout):
    """Asks `proc` to stop and kills it if it has not within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Audiolake:
    name = "audiolake"

    def __init__(self, tmp, binary):
        self.dir = os.path.join(tmp, "audiolake")
        os.makedirs(self.dir)
        self.binary = binary
        self.proc = None
        self.port = None
        self.user = "bench"

    def start(self):
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", "127.0.0.1:0", "--store", os.path.join(self.dir, "store"),
             "--allow", os.path.join(self.dir, "tables"),
             "--dev-no-auth", "--max-connections", str(ARGS.clients + 16)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            die(f"audiolake serve did not start: {line!r}, see {self.log.name}")
        self.port = int(line.split()[3].rsplit(":", 1)[1].rstrip(")"))
        print(f"  {line.strip()}")

    def create(self, rows):
        env = pg_env(self.port, self.user)
        if ARGS.storage == "memory":
            psql(env, CREATE.format(rows=rows))
            return
        # The same rows through a memory table, written sorted by id, then read as Parquet.
        # One file: COPY to a folder writes several in parallel, each with ids from all over.
        folder = os.path.join(self.dir, "tables", "tracks")
        psql(env, CREATE.format(rows=rows).replace("CREATE TABLE tracks", "CREATE TABLE staged"))
        psql(env, f"COPY (SELECT * FROM staged ORDER BY id) TO '{folder}/part-0.parquet' STORED AS PARQUET "
                  f"OPTIONS ('format.max_row_group_size' '65536', "
                  f"'format.data_page_row_count_limit' '1024', 'format.dictionary_enabled' 'false', "
                  f"'format.compression' 'lz4_raw')")
        psql(env, f"DROP TABLE staged; CREATE EXTERNAL TABLE tracks STORED AS PARQUET "
                  f"LOCATION '{folder}/' WITH ORDER (id ASC)")
        plan = psql(env, "EXPLAIN ANALYZE SELECT * FROM tracks WHERE id = 4242")
        pruning = [part.strip(" []+") for part in plan.replace("\n", ", ").split(", ")
                   if "pruned" in part or part.strip().startswith("output_rows")]
        print("  EXPLAIN ANALYZE of a point query (rows out of each operator, pruning):")
        for part in pruning:
            print(f"    {part}")

    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            terminate(self.proc, 20)
        self.proc = None


class Postgres:
    name = "postgresql"

    def __init__(self, tmp):
        self.bindir = postgres_bindir()
        self.dir = os.path.join(tmp, "postgresql")
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user = "postgres"
        self.as_user = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the postgres user Debian's package makes.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                die("running as root and there is no postgres user to run PostgreSQL as")
            for d in (tmp, self.dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.started = False

    def run(self, *argv):
        r = subprocess.run(self.as_user + list(argv), capture_output=True, text=True, cwd=self.dir, timeout=120)
        if r.returncode != 0:
            die(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def start(self):
        self.run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                f"-c max_connections={ARGS.clients + 16} -c fsync=off -c shared_buffers=128MB")
        self.run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts, "-w",
                 "-l", os.path.join(self.dir, "server.log"), "start")
        self.started = True
        version = self.run(os.path.join(self.bindir, "postgres"), "--version").strip()
        print(f"  {version} on 127.0.0.1:{self.port}")
        env = pg_env(self.port, self.user)
        env["PGDATABASE"] = "postgres"
        psql(env, "CREATE DATABASE audiolake")

    def create(self, rows):
        env = pg_env(self.port, self.user)
        psql(env, CREATE.format(rows=rows))
        psql(env, "ALTER TABLE tracks ADD PRIMARY KEY (id); ANALYZE tracks")

    def pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def stop(self):
        if self.started:
            subprocess.run(self.as_user + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast",
                                           "-w", "stop"], capture_output=True, cwd=self.dir, timeout=60)
            self.started = False


def cpu_seconds(pid):
    """CPU time of process pid and of its ended children (utime, stime, cutime, cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least q% of the values at or below it.
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def pgbench(server, scripts, seconds, log_dir=None, clients=None, rate=None):
    """Runs pgbench against server (--clients, or `clients`; at `rate` queries/s if given);
    returns (pgbench's output, its parsed numbers)."""
    clients = clients or ARGS.clients
    argv = ["pgbench", "-n", "-M", ARGS.mode, "-c", str(clients), "-j", str(min(ARGS.threads, clients)),
            "-T", str(seconds)]
    if rate:
        argv += ["-R", f"{rate:.0f}"]
    for s in scripts:
        argv += ["-f", s]
    if log_dir:
        argv += ["--log", f"--log-prefix={os.path.join(log_dir, 'txn')}"]
    argv.append("audiolake")
    r = subprocess.run(argv, env=pg_env(server.port, server.user), capture_output=True, text=True,
                       timeout=seconds + 300)
    out = r.stdout + r.stderr
    numbers = {"exit": r.returncode}
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("tps = "):
            numbers["tps"] = float(line.split()[2])
        elif line.startswith("number of transactions actually processed:"):
            numbers["processed"] = line.split(":", 1)[1].strip()
        elif line.startswith("number of failed transactions:"):
            numbers["failed"] = int(line.split(":", 1)[1].split()[0])
    return out, numbers


def read_logs(log_dir, lagged=False):
    """Latencies in ms from pgbench's per-transaction logs: all, and by script number; with
    `lagged` (a -R run) each with its schedule lag added."""
    every, by_script = [], {}
    for path in glob.glob(os.path.join(log_dir, "txn.*")):
        with open(path) as f:
            for line in f:
                fields = line.split()
                # client_id transaction_no time script_no time_epoch time_us [schedule_lag] [...]
                if len(fields) < 6 or fields[2] in ("failed", "skipped"):
                    continue
                ms = int(fields[2]) / 1000.0
                if lagged and len(fields) > 6:
                    ms += int(fields[6]) / 1000.0
                every.append(ms)
                by_script.setdefault(int(fields[3]), []).append(ms)
    every.sort()
    for v in by_script.values():
        v.sort()
    return every, by_script


def measured(server, scripts, tmp, label, clients=None, rate=None):
    """One measured pgbench run with per-transaction logs: its numbers and latencies."""
    log_dir = os.path.join(tmp, f"logs-{server.name}-{label}")
    os.makedirs(log_dir)
    out, numbers = pgbench(server, scripts, ARGS.duration, log_dir, clients, rate)
    if numbers["exit"] != 0 or "tps" not in numbers:
        print(out)
        die(f"{server.name}: pgbench ({label}) failed (exit {numbers['exit']})")
    every, by_script = read_logs(log_dir, lagged=rate is not None)
    return numbers, every, by_script


def bench(server, tmp, rate):
    print(f"\n== {server.name}")
    server.start()
    try:
        t0 = time.monotonic()
        server.create(ARGS.rows)
        print(f"  table tracks: {ARGS.rows} rows in {time.monotonic() - t0:.1f} s")
        env = pg_env(server.port, server.user)
        answers = [psql(env, q) for q in CHECKS]
        n = answers[0].split("|")[0]
        if n != str(ARGS.rows):
            die(f"{server.name}: tracks has {n} rows, not {ARGS.rows}")
        scripts = []
        for name, text in (("point", POINT), ("range", RANGE)):
            path = os.path.join(tmp, f"{name}.sql")
            with open(path, "w") as f:
                f.write(text.format(rows=ARGS.rows, rows_less_100=ARGS.rows - 100))
            scripts.append(path)
        if ARGS.warmup > 0:
            out, numbers = pgbench(server, scripts, ARGS.warmup)
            if numbers["exit"] != 0:
                die(f"{server.name}: the warm-up pgbench failed:\n{out}")
        print(f"  pgbench -M {ARGS.mode} -c {ARGS.clients} -j {ARGS.threads} -T {ARGS.duration} "
              f"(point and range queries)")
        # The warm-up's backends have ended (PostgreSQL's count once they have).
        time.sleep(0.5)
        cpu = cpu_seconds(server.pid())
        numbers, every, by_script = measured(server, scripts, tmp, "closed")
        time.sleep(0.5)
        cpu = cpu_seconds(server.pid()) - cpu
        _, alone, _ = measured(server, scripts, tmp, "one-client", clients=1)
        rate = rate or numbers["tps"] / 4
        _, offered, _ = measured(server, scripts, tmp, "rate", rate=rate)
        result = {
            "qps": numbers["tps"],
            "queries": len(every),
            "failed": numbers.get("failed", 0),
            "p50": percentile(every, 50),
            "p95": percentile(every, 95),
            "p99": percentile(every, 99),
            "point_p95": percentile(by_script.get(0, []), 95),
            "range_p95": percentile(by_script.get(1, []), 95),
            "answers": answers,
            "cpu_ms": 1000 * cpu / max(len(every), 1),
            "alone_p50": percentile(alone, 50),
            "rate": rate,
            "rate_p95": percentile(offered, 95),
        }
        print(f"  {result['queries']} queries, {result['qps']:.0f}/s, {result['failed']} failed; "
              f"one client: p50 {result['alone_p50']:.2f} ms; at {rate:.0f}/s: p95 "
              f"{result['rate_p95']:.2f} ms")
        return result
    finally:
        server.stop()


def main():
    binary, which = audiolake_bin()
    print(f"audiolake binary: {binary} ({which})")
    if which == "debug":
        print("  (a debug build: build with --release for figures that mean something)")
    for tool in ("pgbench", "psql"):
        if not shutil.which(tool):
            die(f"{tool} is missing: apt-get install postgresql-client")
    tmp = tempfile.mkdtemp(prefix="pg_load-")
    os.chmod(tmp, 0o755)
    results = {}
    servers = []
    try:
        # PostgreSQL first: its throughput sets the offered rate of both.
        if ARGS.only in (None, "postgresql"):
            servers.append(Postgres(tmp))
        if ARGS.only in (None, "audiolake"):
            servers.append(Audiolake(tmp, binary))
        rate = ARGS.rate
        for server in servers:
            results[server.name] = bench(server, tmp, rate)
            rate = results[server.name]["rate"]
    finally:
        for server in servers:
            server.stop()
        if ARGS.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rate = next(iter(results.values()))["rate"]
    print(f"\npgbench -M {ARGS.mode}, {ARGS.clients} clients, {ARGS.threads} threads, {ARGS.duration} s, "
          f"{ARGS.rows} rows ({ARGS.storage} table in audiolake); latency in ms; closed loop, then "
          f"one client (p50), then {rate:.0f} queries/s offered (p95, schedule lag included)")
    header = (f"{'server':<12}{'queries/s':>11}{'p50':>9}{'p95':>9}{'p99':>9}{'point p95':>11}{'range p95':>11}"
              f"{'cpu ms/q':>10}{'failed':>8}{'1 client':>10}{'at rate':>9}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<12}{r['qps']:>11.0f}{r['p50']:>9.2f}{r['p95']:>9.2f}{r['p99']:>9.2f}"
              f"{r['point_p95']:>11.2f}{r['range_p95']:>11.2f}{r['cpu_ms']:>10.3f}{r['failed']:>8}"
              f"{r['alone_p50']:>10.2f}{r['rate_p95']:>9.2f}")
    al, pg = results.get("audiolake"), results.get("postgresql")
    if al and pg:
        print(f"{'ratio a/p':<12}{al['qps'] / pg['qps']:>11.2f}{al['p50'] / pg['p50']:>9.1f}"
              f"{al['p95'] / pg['p95']:>9.1f}{al['p99'] / pg['p99']:>9.1f}"
              f"{al['point_p95'] / pg['point_p95']:>11.1f}{al['range_p95'] / pg['range_p95']:>11.1f}"
              f"{al['cpu_ms'] / pg['cpu_ms']:>10.1f}{'':>8}{al['alone_p50'] / pg['alone_p50']:>10.1f}"
              f"{al['rate_p95'] / pg['rate_p95']:>9.1f}")
        if al["answers"] != pg["answers"]:
            print("\nWARNING: the servers answered the check queries differently:")
            for q, a, p in zip(CHECKS, al["answers"], pg["answers"]):
                if a != p:
                    print(f"  {q}\n    audiolake:  {a}\n    postgresql: {p}")
    if al:
        print()
        ok = al["rate_p95"] < 10.0
        print(f"goal p95 < 10 ms at {al['rate']:.0f}/s:{'':<9}{'met' if ok else 'NOT met'} ({al['rate_p95']:.2f} ms)")
        if pg:
            ratio = al["qps"] / pg["qps"]
            print(f"goal throughput >= 0.5 x PostgreSQL: {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f} x)")
        if al["failed"]:
            print(f"audiolake had {al['failed']} failed transactions: the figures are not comparable")


if __name__ == "__main__":
    ARGS = parse_args()  # a global of the functions above; set only when run, not imported
    main()
