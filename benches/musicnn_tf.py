#!/usr/bin/env python3
"""The original musicnn 0.1.0 on TensorFlow: patches/s and seconds per 4-minute track.

    python3 benches/musicnn_tf.py FILE.wav [FILE.wav ...]

The peer of models/benches/musicnn.rs, which runs this script when AUDIOLAKE_BENCH_PEER=1.
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


def run(files):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import extractor, models

    tf.compat.v1.disable_eager_execution()
    n_frames = 187
    model = "MTT_musicnn"
    ckpt = os.path.join(os.path.dirname(models.__file__), model) + "/"
    cores = os.cpu_count() or 1
    for path in files:
        for threads in sorted({1, cores}):
            tf.compat.v1.reset_default_graph()
            x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
            training = tf.compat.v1.placeholder(tf.bool)
            y, *_, penultimate = models.define_model(x, training, model, len(config.MTT_LABELS))
            tags = tf.nn.sigmoid(y)
            session_config = tf.compat.v1.ConfigProto(
                intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads
            )
            with tf.compat.v1.Session(config=session_config) as sess:
                tf.compat.v1.train.Saver().restore(sess, ckpt)
                best_pre = float("inf")
                for _ in range(2):
                    start = time.perf_counter()
                    batch, spec = extractor.batch_data(path, n_frames, n_frames)
                    best_pre = min(best_pre, time.perf_counter() - start)
                seconds = len(spec) * config.FFT_HOP / config.SR
                for batch_size in (1, 64):
                    sess.run([tags, penultimate], {x: batch[:batch_size], training: False})  # warm-up
                    best = float("inf")
                    for _ in range(2):
                        start = time.perf_counter()
                        for i in range(0, len(batch), batch_size):
                            sess.run([tags, penultimate], {x: batch[i : i + batch_size], training: False})
                        best = min(best, time.perf_counter() - start)
                    per_4min = (best_pre + best) * 240.0 / seconds
                    print(
                        f"RESULT threads={threads} batch={batch_size} patches_per_s={len(batch) / best:.2f} "
                        f"seconds_per_4min={per_4min:.3f} file={os.path.basename(path)} patches={len(batch)}",
                        flush=True,
                    )


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        ensure_venv()
        os.execv(PY, [PY, os.path.abspath(__file__), *sys.argv[1:]])
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
