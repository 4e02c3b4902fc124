"""What the peer scripts share: the command line, JSON lines out, and running on one core."""

import importlib
import json
import os
import sys
import time

# Exit status telling the Rust benches that the peer's package is not installed.
MISSING = 3


def require(module):
    """Imports `module`, or exits with MISSING so that the bench can say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"cannot import {module}: {e}", file=sys.stderr)
        sys.exit(MISSING)


def emit(record):
    print(json.dumps(record), flush=True)


def one_core():
    """Pins this process to one CPU, so that the speed figures compare single cores."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def timed(work):
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main(accuracy, speed):
    """`accuracy FILE...`: one JSON line per file; `speed FILE`: one JSON line of seconds, on one
    core; `throughput FILE...`: the speed work on each file in turn, one JSON line each, on
    whichever core the system gives (the bench runs one such process per core)."""
    mode, files = sys.argv[1], sys.argv[2:]
    if mode == "accuracy":
        for path in files:
            try:
                emit({"file": os.path.basename(path)} | accuracy(path))
            except Exception as e:  # a file the peer cannot read must not end the run
                emit({"file": os.path.basename(path), "error": str(e)})
    elif mode == "speed":
        one_core()
        emit(speed(files[0]))
    elif mode == "throughput":
        for path in files:
            emit({"file": os.path.basename(path)} | speed(path))
    else:
        sys.exit(f"unknown mode {mode!r}: use accuracy FILE..., speed FILE or throughput FILE...")
