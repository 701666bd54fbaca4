#!/usr/bin/env bash
# Renders the Specs of the nft fuzz corpus (what the fuzzer kept: the most varied ones; up to 100
# that build_ruleset accepts) and has `nft -c -f` (check only, in a fresh network namespace)
# accept each rendered ruleset. Needs root (CAP_NET_ADMIN in the new namespace).
#   tests/fuzz/check_nft.sh BUILD_DIR CORPUS_DIR
set -euo pipefail
build=$1
corpus=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# -runs=0: execute every corpus input once, no fuzzing.
PORTCULLIS_NFT_OUT_DIR="$out" "$build/fuzz/fuzz_nft" -runs=0 "$corpus" >"$out/run.log" 2>&1 || {
  echo "nft -c: fuzz_nft failed on its corpus"
  tail -5 "$out/run.log"
  exit 1
}
checked=0
bad=0
for f in "$out"/*.nft; do
  [ -e "$f" ] || continue
  checked=$((checked + 1))
  if ! unshare -n nft -c -f "$f" >"$out/err" 2>&1; then
    bad=$((bad + 1))
    mkdir -p "$build/fuzz-findings"
    cp "$f" "$build/fuzz-findings/nft-rejected-$(basename "$f")"
    echo "nft -c rejected a rendered ruleset (kept in $build/fuzz-findings/):"
    head -5 "$out/err"
  fi
done
echo "nft -c: $checked rendered rulesets checked, $bad rejected"
[ "$checked" -gt 0 ] && [ "$bad" -eq 0 ]
