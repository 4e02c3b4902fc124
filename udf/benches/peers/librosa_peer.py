"""librosa as a peer: beat_track tempo and a key from mean chroma (accuracy), and the time of
the work our analysis does (speed).

librosa has no key estimator. The key here is the usual recipe: the mean CQT chroma
correlated with the 24 rotations of the Krumhansl-Schmuckler (Krumhansl-Kessler) profiles.
"""

from common import main, require, timed

librosa = require("librosa")
np = require("numpy")

RATE = 22050
NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
# Krumhansl & Kessler's probe-tone ratings, tonic first.
MAJOR = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]
MINOR = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]


def tempo(y, sr):
    bpm, _beats = librosa.beat.beat_track(y=y, sr=sr)
    return float(np.atleast_1d(bpm)[0])


def key(chroma):
    best = None
    for tonic in range(12):
        for scale, profile in (("major", MAJOR), ("minor", MINOR)):
            r = np.corrcoef(np.roll(profile, tonic), chroma)[0, 1]
            if best is None or r > best[0]:
                best = (r, NAMES[tonic], scale)
    return [best[1], best[2]]


def accuracy(path):
    y, sr = librosa.load(path, sr=RATE, mono=True)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
    return {"bpm": tempo(y, sr), "keys": {"krumhansl": key(chroma)}}


def features(path, duration=None):
    """What audiolake computes: load and resample, then MFCC, chroma, centroid, ZCR, tempo
    and RMS."""
    y, sr = librosa.load(path, sr=RATE, mono=True, duration=duration)
    librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)
    librosa.feature.chroma_stft(y=y, sr=sr)
    librosa.feature.spectral_centroid(y=y, sr=sr)
    librosa.feature.zero_crossing_rate(y)
    tempo(y, sr)
    librosa.feature.rms(y=y)


def speed(path):
    # The first call compiles librosa's numba kernels; that is start-up, not analysis.
    warmup = timed(lambda: features(path, duration=10.0))
    return {"seconds": timed(lambda: features(path)), "warmup_seconds": warmup}


if __name__ == "__main__":
    main(accuracy, speed)
