#!/usr/bin/env python3
"""Regenerates tests/music/: a small mixed folder of synthetic songs with a known tempo and key,
for the analysis columns and functions. Needs Python 3 (standard library) and ffmpeg with
libmp3lame, libvorbis, aac and flac encoders.

    python3 tests/music/make_music.py

Each song is a kick drum on every beat (a sine burst falling from 150 to 50 Hz and decaying in
80 ms, plus a 2 ms noise click) over a four-chord progression, i-iv-V-i in minor or I-IV-V-I in major, one chord per bar
of four beats, 16 s long.
"""
import math
import os
import random
import struct
import subprocess
import tempfile
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
SECONDS = 16


def song(bpm, rate, tonic_hz, minor):
    """Mono samples of one song."""
    rng = random.Random(7)
    beat = 60.0 / bpm
    third = 3 if minor else 4
    # Roots and thirds of i, iv, V, i; V is a major triad in both modes.
    chords = [(0, third), (5, third), (7, 4), (0, third)]
    out = []
    for n in range(int(SECONDS * rate)):
        t = n / rate
        root, chord_third = chords[int(t / (4 * beat)) % 4]
        f = tonic_hz * 2 ** (root / 12)
        pad = sum(math.sin(2 * math.pi * f * 2 ** (s / 12) * t) for s in (0, chord_third, 7))
        since = t % beat
        # The kick's pitch falls from 150 to 50 Hz, as drum machines do, so it has no pitch class.
        phase = 2 * math.pi * (50 * since + 100 * 0.02 * (1 - math.exp(-since / 0.02)))
        kick = 0.7 * math.exp(-since / 0.08) * math.sin(phase)
        click = 0.3 * (rng.random() * 2 - 1) if since < 0.002 else 0.0
        out.append(0.12 * pad + kick + click)
    return out


def write_wav(path, samples, rate, channels):
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for s in samples:
            v = int(max(-1.0, min(1.0, s)) * 32767)
            frames += struct.pack("<h", v) * channels
        w.writeframes(bytes(frames))


SONGS = [
    # file, bpm, rate, channels, tonic Hz, minor, encoder arguments
    ("a_minor_120.mp3", 120, 44100, 2, 220.00, True, ["-c:a", "libmp3lame", "-b:a", "96k"]),
    ("c_major_90.flac", 90, 48000, 1, 261.63, False, ["-c:a", "flac", "-compression_level", "8"]),
    ("d_minor_140.ogg", 140, 44100, 1, 293.66, True, ["-c:a", "libvorbis", "-q:a", "1"]),
    ("g_major_100.m4a", 100, 22050, 2, 196.00, False, ["-c:a", "aac", "-b:a", "64k"]),
]

with tempfile.TemporaryDirectory() as tmp:
    for name, bpm, rate, channels, tonic, minor, codec in SONGS:
        wav = os.path.join(tmp, "song.wav")
        write_wav(wav, song(bpm, rate, tonic, minor), rate, channels)
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", wav,
             "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", *codec,
             os.path.join(HERE, name)],
            check=True,
        )

# A file that is not audio at all behind an audio extension: an error row.
with open(os.path.join(HERE, "broken.mp3"), "wb") as f:
    f.write(bytes(range(256)) * 32)
