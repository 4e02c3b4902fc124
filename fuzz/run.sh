#!/usr/bin/env bash
# Builds every fuzz target once and runs each for FUZZ_SECONDS (default 60) under a memory
# limit. Exits non-zero if any target finds a crash, a timeout, a leak or memory over the
# limit, after printing the input that did it (it stays in fuzz/artifacts/<target>/).
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Builds with AddressSanitizer (cargo-fuzz's default) into a persistent target directory.
set -euo pipefail

fuzz=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-60}
target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/audiolake-fuzz-target}
export RUSTC_BOOTSTRAP=1
# AddressSanitizer's fake stacks (stack-use-after-return, which only unsafe code can cause) took
# a fifth of the analyze target's time in per-sample loops: without them its seed corpus
# replays 2.3x faster (54 s to 23 s here).
export ASAN_OPTIONS="detect_stack_use_after_return=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

# Target, then the longest input libFuzzer makes for it.
targets=(probe:65536 analyze:65536 store_part:16384 location:512)

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

cd "$fuzz"
nice -n 10 cargo fuzz build --sanitizer address --codegen-units 16 --target-dir "$target_dir"
./seed.sh

bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
failed=()
for entry in "${targets[@]}"; do
  target=${entry%%:*}
  max_len=${entry##*:}
  artifacts="$fuzz/artifacts/$target"
  mkdir -p "$artifacts"
  log="$artifacts/run.log"
  dict=()
  [[ -f "$fuzz/$target.dict" ]] && dict=("-dict=$fuzz/$target.dict")
  echo "fuzz: $target for ${seconds}s"
  if nice -n 10 "$bin_dir/$target" "$fuzz/corpus/$target" "${dict[@]}" \
    -artifact_prefix="$artifacts/" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -max_len="$max_len" -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
    # No stats is no finding, but say so rather than let grep's status end the run unexplained.
    stats=$(grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true)
    if [[ -n $stats ]]; then
      sed "s/^/fuzz: $target /" <<<"$stats"
    else
      echo "fuzz: $target ended without final stats; the end of its log ($log):"
      tail -n 20 "$log"
    fi
  else
    failed+=("$target")
    echo "fuzz: $target FAILED; the end of its log ($log):"
    tail -n 60 "$log"
    for found in $(grep -oE "(crash|timeout|oom|leak)-[0-9a-f]+" "$log" | sort -u); do
      echo "fuzz: input $artifacts/$found (base64):"
      base64 "$artifacts/$found"
    done
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}; reproduce with: $bin_dir/<target> <input>"
  exit 1
fi
echo "fuzz: no findings"
