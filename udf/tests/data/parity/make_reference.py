"""Writes reference.json: what pyloudnorm and librosa compute on the parity fixtures.

Run from anywhere after `pip install -r udf/benches/peers/requirements.txt`:

    python udf/tests/data/parity/make_reference.py

`udf/tests/parity.rs` compares audiolake's values with these. Loudness is measured on every
fixture; the librosa features only on the 22050 Hz ones, the rate our spectral and timbre groups
analyse at, so that no resampler enters the comparison.

The music excerpts were cut from the shared corpus (music21 scores rendered with FluidR3_GM):

    ffmpeg -ss 20 -t 8 -i m21_bach_bwv402.mp3 -ac 1 -ar 22050 -sample_fmt s16 \
        bach_bwv402_excerpt.flac
    ffmpeg -ss 30 -t 3 -i m21_oneill_kitty_ohara.ogg -ar 44100 -ac 2 -sample_fmt s16 \
        kitty_ohara_excerpt_44k.flac
"""

import json
import os
from importlib.metadata import version

import librosa
import numpy as np
import pyloudnorm
import soundfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)

FIXTURES = {
    "bach_bwv402_excerpt.flac": os.path.join(HERE, "bach_bwv402_excerpt.flac"),
    "kitty_ohara_excerpt_44k.flac": os.path.join(HERE, "kitty_ohara_excerpt_44k.flac"),
    "tone.wav": os.path.join(DATA, "tone.wav"),
}
FEATURE_RATE = 22050


def mean_frames(feature):
    return [float(v) for v in np.mean(feature, axis=1)]


def reference(path):
    # pyloudnorm measures every channel as it is in the file.
    data, rate = soundfile.read(path, always_2d=True)
    lufs = pyloudnorm.Meter(rate).integrated_loudness(data)
    out = {"sample_rate": rate, "channels": data.shape[1], "loudness_lufs": float(lufs)}
    if rate != FEATURE_RATE:
        return out

    # librosa's defaults throughout (n_fft 2048, hop 512, centred frames, zero padding), on
    # the mono mix at the file's own rate.
    y, sr = librosa.load(path, sr=None, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr)
    return out | {
        "mfcc": mean_frames(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)),
        # The same without power_to_db's top_db=80 clip, which needs the whole file's peak.
        "mfcc_no_top_db": mean_frames(
            librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=13)
        ),
        "chroma": mean_frames(librosa.feature.chroma_stft(y=y, sr=sr)),
        # Tuned to A4 = 440 Hz, as ours is, instead of estimating the tuning.
        "chroma_tuning_0": mean_frames(librosa.feature.chroma_stft(y=y, sr=sr, tuning=0.0)),
        "spectral_centroid_hz": float(np.mean(librosa.feature.spectral_centroid(y=y, sr=sr))),
        "zero_crossing_rate": float(np.mean(librosa.feature.zero_crossing_rate(y))),
    }


def main():
    out = {
        "generator": {
            package: version(package)
            for package in ("librosa", "pyloudnorm", "numpy", "scipy", "soundfile")
        },
        "files": {name: reference(path) for name, path in FIXTURES.items()},
    }
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
