#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: the small audio files of tests/data and tests/music
# (prefixed with the bytes the audio targets read first) and the committed seeds of
# fuzz/seeds/. Idempotent; libFuzzer adds what it finds next to them.
set -euo pipefail

fuzz=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$fuzz")
max_bytes=65536

# The first byte of an audio target's input picks the extension hint (see src/lib.rs).
extension_byte() {
  case "${1,,}" in
    mp3) echo 0 ;; wav) echo 1 ;; flac) echo 2 ;; ogg) echo 3 ;; m4a) echo 4 ;; aiff) echo 5 ;;
    *) echo 6 ;;
  esac
}

mkdir -p "$fuzz/corpus/probe" "$fuzz/corpus/analyze"
find "$repo/tests/data" "$repo/tests/music" -type f -size -$((max_bytes + 1))c \
  -not -name '*.md' -not -name '*.sh' -not -name '*.py' -not -name '*.csv' -print0 |
  while IFS= read -r -d '' file; do
    name=$(basename "$file")
    byte=$(extension_byte "${name##*.}")
    # probe: extension byte, then the file.
    { printf "\\x$(printf %02x "$byte")"; cat "$file"; } >"$fuzz/corpus/probe/seed-$name"
    # analyze: extension byte, group mask 0 (every group), then the file.
    { printf "\\x$(printf %02x "$byte")\\x00"; cat "$file"; } >"$fuzz/corpus/analyze/seed-$name"
  done

for target in analyze store_part location; do
  mkdir -p "$fuzz/corpus/$target"
  cp "$fuzz/seeds/$target/"* "$fuzz/corpus/$target/"
done
