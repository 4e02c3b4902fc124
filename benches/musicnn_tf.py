#!/usr/bin/env python3
"""The original musicnn 0.1.0 on TensorFlow: patches/s and seconds per 4-minute track.

    python3 benches/musicnn_tf.py FILE.wav [FILE.wav ...]
    python3 benches/musicnn_tf.py --throughput FILE [FILE ...]
    python3 benches/musicnn_tf.py --install

The peer of models/benches/musicnn.rs, which runs this script when AUDIOLAKE_BENCH_PEER=1, and
of server/benches/analyze.rs, which runs --throughput (one process per core) after --install.
On first use it makes a venv at $HOME/.cache/audiolake-musicnn-tf (tensorflow-cpu 2.15.1,
numpy 1.26.4, librosa 0.11.0 and musicnn 0.1.0 with --no-deps, since musicnn's own pins do not
build on Python 3.11), then re-runs itself there. Runs after that reuse the venv.

For each file, with 1 thread and with all cores, it builds musicnn's own graph
(musicnn.models.define_model), restores MTT_musicnn with no silent fallback, computes the input
with musicnn.extractor.batch_data (librosa) and runs the taggram and penultimate outputs in
batches of 1 (musicnn's shipped BATCH_SIZE) and of 64. Each timing is the best of 2 runs, with
the model already loaded. Printed per setting:

    RESULT threads=N batch=B patches_per_s=X seconds_per_4min=Y

seconds_per_4min is (log-mel time + network time) scaled to 240 s of audio.

--throughput does, on one thread, what audiolake's musicnn group does with every patch: for
each file in turn, the input from musicnn.extractor.batch_data, then the taggram and
penultimate outputs of MTT_musicnn and of MSD_musicnn in batches of 64, printing

    RESULT patches=P seconds=S file=NAME

--install only makes the venv, so that a timed run does not include installing.
"""
import os
import subprocess
import sys
import time

VENV = os.path.join(os.path.expanduser("~"), ".cache", "audiolake-musicnn-tf")
PY = os.path.join(VENV, "bin", "python")
READY = os.path.join(VENV, ".installed-1")


def ensure_venv():
    if os.path.exists(READY):
        return
    print(f"installing TensorFlow musicnn into {VENV} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    pip = [PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["tensorflow-cpu==2.15.1", "numpy==1.26.4", "librosa==0.11.0"], check=True)
    subprocess.run(pip + ["--no-deps", "musicnn==0.1.0"], check=True)
    open(READY, "w").close()


N_FRAMES = 187
BATCH = 64


def load(model, threads):
    """musicnn's own graph for `model` (musicnn.models.define_model), restored from its
    checkpoint with no silent fallback, in a session of `threads` threads. Returns the function
    from a batch of patches to (tags, penultimate)."""
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import models

    labels = config.MTT_LABELS if model.startswith("MTT") else config.MSD_LABELS
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, config.N_MELS])
        training = tf.compat.v1.placeholder(tf.bool)
        y, *_, penultimate = models.define_model(x, training, model, len(labels))
        tags = tf.nn.sigmoid(y)
        session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads
        )
        sess = tf.compat.v1.Session(graph=graph, config=session_config)
        ckpt = os.path.join(os.path.dirname(models.__file__), model) + "/"
        tf.compat.v1.train.Saver().restore(sess, ckpt)
    return lambda batch: sess.run([tags, penultimate], {x: batch, training: False})


def start_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()


def run(files):
    start_tensorflow()
    from musicnn import configuration as config
    from musicnn import extractor

    cores = os.cpu_count() or 1
    for path in files:
        for threads in sorted({1, cores}):
            net = load("MTT_musicnn", threads)
            best_pre = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                batch, spec = extractor.batch_data(path, N_FRAMES, N_FRAMES)
                best_pre = min(best_pre, time.perf_counter() - start)
            seconds = len(spec) * config.FFT_HOP / config.SR
            for batch_size in (1, BATCH):
                net(batch[:batch_size])  # warm-up
                best = float("inf")
                for _ in range(2):
                    start = time.perf_counter()
                    for i in range(0, len(batch), batch_size):
                        net(batch[i : i + batch_size])
                    best = min(best, time.perf_counter() - start)
                per_4min = (best_pre + best) * 240.0 / seconds
                print(
                    f"RESULT threads={threads} batch={batch_size} patches_per_s={len(batch) / best:.2f} "
                    f"seconds_per_4min={per_4min:.3f} file={os.path.basename(path)} patches={len(batch)}",
                    flush=True,
                )


def throughput(files):
    start_tensorflow()
    from musicnn import extractor

    nets = [load(model, 1) for model in ("MTT_musicnn", "MSD_musicnn")]
    for path in files:
        start = time.perf_counter()
        batch, _ = extractor.batch_data(path, N_FRAMES, N_FRAMES)
        for net in nets:
            for i in range(0, len(batch), BATCH):
                net(batch[i : i + BATCH])
        seconds = time.perf_counter() - start
        # The name last: it may hold spaces.
        print(f"RESULT patches={len(batch)} seconds={seconds:.3f} file={os.path.basename(path)}", flush=True)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    in_venv = os.path.realpath(sys.prefix) == os.path.realpath(VENV)
    if not in_venv:
        ensure_venv()
    if args == ["--install"]:
        return
    if not in_venv:
        os.execv(PY, [PY, os.path.abspath(__file__), *args])
    if args[0] == "--throughput":
        throughput(args[1:])
    else:
        run(args)


if __name__ == "__main__":
    main()
