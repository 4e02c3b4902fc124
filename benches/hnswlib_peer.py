#!/usr/bin/env python3
"""hnswlib on the data written by engine/benches/hnsw.rs, measured the same way.

Usage: hnswlib_peer.py DIR --m 16 --ef-construction 200 --ef-search 10,40,100,200
DIR holds base.npy (N x D float32), queries.npy (Q x D float32) and truth.npy (Q x k int64, the
true nearest row numbers). Prints one JSON line: build_s, index_mib (VmHWM after the build minus
VmRSS before it), peak_mib (VmHWM), runs [{ef, recall, qps}] with queries searched one after another on
one thread, and open_s: the time to load the saved index and answer one query at ef 40. Installs hnswlib and numpy with bench_venv.py on first use.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_venv import ensure  # noqa: E402


def proc_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--m", type=int, required=True)
    p.add_argument("--ef-construction", type=int, required=True)
    p.add_argument("--ef-search", required=True)
    args = p.parse_args()
    ensure({"hnswlib": "hnswlib", "numpy": "numpy"})
    import hnswlib
    import numpy as np

    base = np.load(os.path.join(args.dir, "base.npy"))
    queries = np.load(os.path.join(args.dir, "queries.npy"))
    truth = np.load(os.path.join(args.dir, "truth.npy"))
    n, dims = base.shape
    k = truth.shape[1]

    rss_before = proc_mib("VmRSS")
    start = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=dims)
    index.init_index(max_elements=n, ef_construction=args.ef_construction, M=args.m, random_seed=100)
    index.add_items(base, np.arange(n), num_threads=-1)
    build_s = time.perf_counter() - start
    peak = proc_mib("VmHWM")

    runs = []
    for ef in (int(e) for e in args.ef_search.split(",")):
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        hits = sum(len(set(labels[i]) & set(truth[i])) for i in range(len(queries)))
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            # One call for all queries: hnswlib loops over them in C++ on one thread, so the
            # figure is the library's, without Python's per-call cost.
            index.knn_query(queries, k=k, num_threads=1)
            done += len(queries)
        runs.append({"ef": ef, "recall": hits / truth.size, "qps": done / (time.perf_counter() - start)})

    saved = os.path.join(args.dir, "hnswlib.bin")
    index.save_index(saved)
    del index
    start = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=dims)
    index.load_index(saved, max_elements=n)
    index.set_ef(40)
    index.knn_query(queries[:1], k=k, num_threads=1)
    open_s = time.perf_counter() - start

    print(json.dumps({"build_s": build_s, "index_mib": peak - rss_before, "peak_mib": peak, "runs": runs,
                      "open_s": open_s}))


if __name__ == "__main__":
    main()
