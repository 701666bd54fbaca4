#!/usr/bin/env bash
# The README's second command (CI runs it through .ci/run): set up, then three phases, each timed:
#   suite  build in ${BUILD_DIR:-build} and run every test (unit and integration)
#   asan   the same suite built with PORTCULLIS_SANITIZE=address,undefined in build-asan
#          (-O1, line tables only, no benchmark binaries but the load generator: a sanitizer
#          finding fails the test that hit it)
#   fuzz   each libFuzzer target for ${PORTCULLIS_FUZZ_SECONDS:-30} s (tests/fuzz/run.sh, clang)
# PORTCULLIS_TEST_PHASES="suite asan fuzz" picks phases; extra arguments go to both ctest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
phases=${PORTCULLIS_TEST_PHASES:-suite asan fuzz}
bash scripts/setup.sh

declare -a report=()
status=0
run_phase() {
  local name=$1
  shift
  local start=$SECONDS rc=0
  echo "=== phase $name"
  "$@" || rc=$?
  local took=$((SECONDS - start))
  report+=("$(printf '%-6s %4dm%02ds  %s' "$name" $((took / 60)) $((took % 60)) "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")")")
  echo "=== phase $name: $([ $rc -eq 0 ] && echo ok || echo FAILED) in ${took}s"
  [ $rc -eq 0 ] || status=1
}

# (Functions run under `||`, where bash ignores set -e: every step says `|| return`.)
suite() {
  bash scripts/build.sh || return
  (cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j1 "$@")
}

# Sanitizer findings must fail: abort on the first report (no recovery is compiled in either).
asan() {
  local werror=OFF
  [ -n "${CI:-}" ] && werror=ON
  cmake -S . -B build-asan -G Ninja -DPORTCULLIS_WERROR=$werror -DPORTCULLIS_TESTS=ON \
    -DPORTCULLIS_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_FLAGS="-O1 -g1" -DCMAKE_C_FLAGS="-O1 -g1" >/dev/null || return
  # Every executable but the benchmarks (portcullis-*-bench): the tests need the proxy, the unit
  # test binaries and the load generator (tests/integration/test_benchmarks.py), which then runs
  # under the sanitizers too.
  local targets
  targets=$(ninja -C build-asan -t targets all | sed -n 's/^\([^:]*\): CXX_EXECUTABLE_LINKER.*/\1/p' | grep -v '\.cmake$' |
    xargs -n1 basename | grep -v -- '-bench$') || return
  cmake --build build-asan -j"$(nproc)" --target $targets || return
  export ASAN_OPTIONS=abort_on_error=1:halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j1 "$@")
}

fuzz() {
  bash tests/fuzz/run.sh "${PORTCULLIS_FUZZ_SECONDS:-30}"
}

for p in $phases; do
  case $p in
    suite) run_phase suite suite "$@" ;;
    asan) run_phase asan asan "$@" ;;
    fuzz) run_phase fuzz fuzz ;;
    *) echo "unknown phase '$p' (suite, asan, fuzz)" >&2; exit 2 ;;
  esac
done
echo "=== summary (total ${SECONDS}s)"
printf '%s\n' "${report[@]}"
exit $status
