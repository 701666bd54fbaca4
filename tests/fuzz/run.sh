#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in ${FUZZ_BUILD_DIR:-build-fuzz} if needed and
# runs each for SECONDS (default 30) on its seed corpus, in a scratch copy so the seeds stay
# small. Fails on any crash, leak, sanitizer report or invariant failure; the reproducer is kept
# in ${FUZZ_BUILD_DIR}/fuzz-findings/<target>/. Then `nft -c -f` checks rendered rulesets.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
shift || true
build=${FUZZ_BUILD_DIR:-build-fuzz}
all=(config normalize policy http_head kube docker nft)
targets=("$@")
if [ $# -eq 0 ]; then targets=("${all[@]}"); fi

cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPORTCULLIS_FUZZ=ON -DPORTCULLIS_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_all -j"$(nproc)"

export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/fuzz_$t"
  work="$build/fuzz-work/$t"
  findings="$build/fuzz-findings/$t"
  rm -rf "$work"
  mkdir -p "$work" "$findings"
  cp tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  echo "fuzz: $t for ${seconds}s"
  # -timeout: one input may not take more than 10 s; -rss_limit_mb bounds memory per input.
  if ! "$bin" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 -artifact_prefix="$findings/" >"$build/fuzz-$t.log" 2>&1; then
    echo "fuzz: $t FAILED (log: $build/fuzz-$t.log, reproducer in $findings/)"
    grep -E "ERROR|invariant failed|runtime error|SUMMARY|Test unit written" "$build/fuzz-$t.log" | head -10 || true
    failed+=("$t")
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$build/fuzz-$t.log" | tr '\n' ' ' || true
    echo
  fi
done

if [[ " ${targets[*]} " == *" nft "* ]]; then
  bash tests/fuzz/check_nft.sh "$build" "$build/fuzz-work/nft" || failed+=("nft -c")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${targets[*]}: no finding in ${seconds}s each"
