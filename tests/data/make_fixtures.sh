#!/usr/bin/env bash
# Regenerates the audio test fixtures in tests/data/.
#
#   bash tests/data/make_fixtures.sh
#
# Needs (Debian): ffmpeg (with libmp3lame, libvorbis, native aac, flac encoders),
# flac (for metaflac), perl-base (Essential), coreutils.
#
# Every signal is synthetic (sums of sine waves computed by ffmpeg's aevalsrc),
# so the fixtures carry no third-party content. The script is idempotent: it
# overwrites the files it owns and leaves everything else alone. Output is
# byte-for-byte reproducible with the same ffmpeg/LAME/libvorbis build; other
# builds may produce slightly different bytes but the same metadata.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

command -v ffmpeg >/dev/null || { echo "ffmpeg is required (apt-get install ffmpeg)" >&2; exit 1; }
command -v metaflac >/dev/null || { echo "metaflac is required (apt-get install flac)" >&2; exit 1; }
command -v perl   >/dev/null || { echo "perl is required" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Common ffmpeg flags: quiet, overwrite, no version strings / random ids in output.
FF=(ffmpeg -hide_banner -nostdin -loglevel error -y)
BITEXACT=(-fflags +bitexact -flags:a +bitexact -map_metadata -1)

# Chords (Hz). A minor: A3 C4 E4.  C major: C4 E4 G4.
AMIN="220.00,261.63,329.63"
CMAJ="261.63,329.63,392.00"

# src RATE CHANNELS SECONDS CHORD -> prints an lavfi input spec for ffmpeg.
# The chord is three sines at 0.2 amplitude each with a 4 Hz tremolo; the right
# channel is a slightly detuned (+1 Hz) copy so stereo files are really stereo.
# A 20 ms fade in/out avoids clicks. The frame count is exactly RATE*SECONDS.
src() {
  local rate=$1 ch=$2 secs=$3 chord=$4
  local f1 f2 f3
  IFS=, read -r f1 f2 f3 <<<"$chord"
  local env="(0.8+0.2*sin(2*PI*4*t))"
  local left="0.2*${env}*(sin(2*PI*${f1}*t)+sin(2*PI*${f2}*t)+sin(2*PI*${f3}*t))"
  local right="0.2*${env}*(sin(2*PI*(${f1}+1)*t)+sin(2*PI*(${f2}+1)*t)+sin(2*PI*(${f3}+1)*t))"
  local exprs="$left"
  [ "$ch" = 2 ] && exprs="$left|$right"
  local fo
  fo=$(awk -v s="$secs" 'BEGIN{printf "%.3f", s-0.02}')
  printf 'aevalsrc=exprs=%s:s=%s:d=%s,afade=t=in:d=0.02,afade=t=out:st=%s:d=0.02' \
    "$exprs" "$rate" "$secs" "$fo"
}

# tags TITLE ARTIST ALBUM GENRE TRACK YEAR -> ffmpeg -metadata args in TAGS array
tags() {
  TAGS=(-metadata "title=$1" -metadata "artist=$2" -metadata "album=$3"
        -metadata "genre=$4" -metadata "track=$5" -metadata "date=$6")
}

mkdir -p sub/dir

# 1. cbr.mp3 — MP3 CBR 128k, 44.1 kHz stereo, ID3v2.4, Xing/Info (LAME) header. 2.0 s.
tags "Fixture CBR" "audiolake" "Fixtures" "Rock" 1 2019
"${FF[@]}" -f lavfi -i "$(src 44100 2 2 "$AMIN")" "${BITEXACT[@]}" \
  -c:a libmp3lame -b:a 128k -id3v2_version 4 -write_xing 1 "${TAGS[@]}" cbr.mp3

# 2. vbr_noxing.mp3 — MP3 VBR (LAME -V2), 48 kHz stereo, ID3v2.3, NO Xing/Info/VBRI. 3.0 s.
tags "Fixture VBR" "audiolake" "Fixtures" "Jazz" 2 2020
"${FF[@]}" -f lavfi -i "$(src 48000 2 3 "$CMAJ")" "${BITEXACT[@]}" \
  -c:a libmp3lame -q:a 2 -id3v2_version 3 -write_xing 0 "${TAGS[@]}" vbr_noxing.mp3

# 3. id3v1.mp3 — MP3 (MPEG-2 layer III) 22.05 kHz mono, only an ID3v1.1 tag. 1.5 s.
#    (ID3v1 genre must be one of the standard names; "Blues" is genre 0.)
#    ffmpeg 5.1 silently drops the ID3v1 tag when given -id3v2_version 0, so we
#    write ID3v2.4 + ID3v1 and then cut the leading ID3v2 tag off (its size is the
#    syncsafe integer in header bytes 6..9; ffmpeg writes no ID3v2 footer).
tags "Fixture ID3v1" "audiolake" "Fixtures v1" "Blues" 7 1999
"${FF[@]}" -f lavfi -i "$(src 22050 1 1.5 "$AMIN")" "${BITEXACT[@]}" \
  -c:a libmp3lame -b:a 32k -id3v2_version 4 -write_id3v1 1 "${TAGS[@]}" \
  -f mp3 "$TMP/id3v1_with_v2.mp3"
perl -e '
  binmode STDIN; binmode STDOUT; local $/; my $d = <STDIN>;
  substr($d, 0, 3) eq "ID3" or die "expected a leading ID3v2 tag\n";
  my @s = unpack("C4", substr($d, 6, 4));
  my $len = 10 + (($s[0] << 21) | ($s[1] << 14) | ($s[2] << 7) | $s[3]);
  substr($d, -128, 3) eq "TAG" or die "expected a trailing ID3v1 tag\n";
  print substr($d, $len);
' < "$TMP/id3v1_with_v2.mp3" > id3v1.mp3

# 4. tagged.flac — FLAC 16-bit 48 kHz stereo, Vorbis comments. 1.5 s.
tags "Fixture FLAC" "audiolake" "Fixtures" "Electronic" 3 2021
"${FF[@]}" -f lavfi -i "$(src 48000 2 1.5 "$CMAJ")" "${BITEXACT[@]}" \
  -c:a flac -sample_fmt s16 -compression_level 8 tagged.flac
#    ffmpeg writes lower-case Vorbis comment keys ("title=") except TRACKNUMBER;
#    rewrite this file's tags with metaflac in the usual upper-case form so the
#    fixtures cover both spellings (tagged.ogg and nested.flac keep ffmpeg's).
metaflac --remove-all-tags \
  --set-tag="TITLE=Fixture FLAC" --set-tag="ARTIST=audiolake" \
  --set-tag="ALBUM=Fixtures" --set-tag="GENRE=Electronic" \
  --set-tag="TRACKNUMBER=3" --set-tag="DATE=2021" tagged.flac

# 5. tagged.ogg — Ogg Vorbis 44.1 kHz stereo, Vorbis comments, non-ASCII title. 2.0 s.
tags "Café Ünïcode" "audiolake" "Fixtures" "Classical" 4 2022
"${FF[@]}" -f lavfi -i "$(src 44100 2 2 "$AMIN")" "${BITEXACT[@]}" \
  -c:a libvorbis -q:a 2 "${TAGS[@]}" tagged.ogg

# 6. tagged.m4a — AAC-LC in MP4 (ipod brand), 44.1 kHz stereo, iTunes ilst atoms. 2.0 s.
tags "Fixture M4A" "audiolake" "Fixtures" "Pop" 5 2023
"${FF[@]}" -f lavfi -i "$(src 44100 2 2 "$CMAJ")" "${BITEXACT[@]}" \
  -c:a aac -profile:a aac_low -b:a 96k "${TAGS[@]}" tagged.m4a

# 7. plain.wav — 16-bit PCM WAV 16 kHz mono, NO tags (no LIST/INFO chunk). 1.5 s.
"${FF[@]}" -f lavfi -i "$(src 16000 1 1.5 "$AMIN")" "${BITEXACT[@]}" \
  -c:a pcm_s16le plain.wav

# 8. tagged.aiff — AIFF 24-bit 44.1 kHz stereo, tags in an "ID3 " chunk (ID3v2.4)
#    plus the NAME/AUTH chunks ffmpeg writes for title/artist. 0.4 s (24-bit stereo
#    is 264.6 KB/s, so 0.4 s keeps the file under ~110 KB).
tags "Fixture AIFF" "audiolake" "Fixtures" "Ambient" 6 2024
"${FF[@]}" -f lavfi -i "$(src 44100 2 0.4 "$CMAJ")" "${BITEXACT[@]}" \
  -c:a pcm_s24be -write_id3v2 1 -id3v2_version 4 "${TAGS[@]}" tagged.aiff

# 9. sub/dir/nested.flac — FLAC 24-bit 32 kHz mono in a nested folder. 1.0 s.
tags "Nested FLAC" "audiolake" "Fixtures Nested" "Techno" 9 2018
"${FF[@]}" -f lavfi -i "$(src 32000 1 1 "$AMIN")" "${BITEXACT[@]}" \
  -c:a flac -sample_fmt s32 -bits_per_raw_sample 24 -compression_level 8 \
  "${TAGS[@]}" sub/dir/nested.flac

# Hidden and non-audio entries that a listing must skip.
"${FF[@]}" -f lavfi -i "$(src 8000 1 0.1 "$AMIN")" "${BITEXACT[@]}" \
  -c:a pcm_s16le .hidden.wav
cat > notes.txt <<'EOF'
This is not audio. A directory listing of tests/data must skip this file
(non-audio extension), just as it must skip .hidden.wav (hidden name).
EOF

# ---------------------------------------------------------------- bad files

# 10. empty.mp3 — zero bytes.
: > empty.mp3

# 11. not_audio.mp3 — plain text with an .mp3 extension.
cat > not_audio.mp3 <<'EOF'
This file is plain text, not MPEG audio, even though its name ends in .mp3.
An audio reader must report an error for it (one error row) and carry on
with the other files instead of crashing or hanging. Being 7-bit ASCII it has
no MPEG frame sync (0xFFE..) and it avoids the magic strings of the other
container formats (tag, chunk and page markers), so no reader can lock on
to anything. audiolake test fixture, public domain.
EOF

# 12. truncated.flac — first 40% of a valid FLAC (1.0 s, 16-bit 48 kHz stereo),
#     cut inside the audio frames. STREAMINFO, the Vorbis comments and ffmpeg's
#     8 KiB PADDING block (together ~8.4 KB) are intact, so a reader can still read
#     the header (it claims 48000 frames) but decoding hits EOF mid-frame.
tags "Truncated FLAC" "audiolake" "Fixtures" "Noise" 10 2017
"${FF[@]}" -f lavfi -i "$(src 48000 2 1 "$AMIN")" "${BITEXACT[@]}" \
  -c:a flac -sample_fmt s16 -compression_level 5 "${TAGS[@]}" "$TMP/full.flac"
full_size=$(stat -c %s "$TMP/full.flac")
head -c $(( full_size * 40 / 100 )) "$TMP/full.flac" > truncated.flac

# 13. bad_header.wav — RIFF/WAVE whose fmt chunk says PCM with 0 channels,
#     0 Hz sample rate, 0 byte rate, 0 block align, 16 bits; then 1000 bytes
#     of (valid-looking) 16-bit data.
perl -e '
  my $data = pack("s<*", map { int(8000 * sin($_ / 5)) } 0 .. 499);  # 1000 bytes
  my $fmt  = pack("v v V V v v", 1, 0, 0, 0, 0, 16);
  my $body = "WAVE" . "fmt " . pack("V", length $fmt) . $fmt
           . "data" . pack("V", length $data) . $data;
  binmode STDOUT;
  print "RIFF", pack("V", length $body), $body;
' > bad_header.wav

# 14. garbage.ogg — 4096 pseudo-random bytes from a fixed seed (SHA-256 counter
#     stream, so it does not depend on any RNG implementation).
for i in $(seq 0 127); do                      # 128 * 32 = 4096 bytes
  printf 'audiolake-garbage-%d' "$i" | sha256sum | cut -c1-64
done | perl -ne 'chomp; binmode STDOUT; print pack("H*", $_)' > garbage.ogg

echo "fixtures written to $DIR"
