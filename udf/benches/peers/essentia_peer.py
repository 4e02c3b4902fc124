"""Essentia as a peer: RhythmExtractor2013 (multifeature) tempo and KeyExtractor's key under
each of its key profiles (accuracy), and MusicExtractor's time on one file (speed)."""

from common import main, require, timed

es = require("essentia.standard")

# KeyExtractor's profile types that run on any input ("weichai" fails on most music).
PROFILES = [
    "diatonic",
    "krumhansl",
    "temperley",
    "temperley2005",
    "tonictriad",
    "thpcp",
    "shaath",
    "gomez",
    "noland",
    "edmm",
    "edma",
    "bgate",
    "braw",
]


def accuracy(path):
    # Both algorithms are designed for 44.1 kHz.
    audio = es.MonoLoader(filename=path, sampleRate=44100)()
    bpm = es.RhythmExtractor2013(method="multifeature")(audio)[0]
    keys = {}
    for profile in PROFILES:
        key, scale, _strength = es.KeyExtractor(profileType=profile)(audio)
        keys[profile] = [key, scale]
    return {"bpm": float(bpm), "keys": keys}


def speed(path):
    extractor = es.MusicExtractor()
    return {"seconds": timed(lambda: extractor(path))}


if __name__ == "__main__":
    main(accuracy, speed)
