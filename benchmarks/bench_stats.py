#!/usr/bin/env python3
"""Helpers for compare.sh: read fields from portcullis-loadgen's JSON lines, and turn the
per-round results into one line per scenario with medians and the ratio to the best peer.

  bench_stats.py get FILE KEY[.KEY...]         print one field of the JSON line in FILE
  bench_stats.py clean FILE                    exit 1 (and say why) unless the run had no errors
                                               and only 2xx responses
  bench_stats.py line RESULTS SCENARIO high|low
      RESULTS is a TSV of "scenario proxy round value"; prints
      SCENARIO portcullis=X haproxy=Y nginx=Z ratio_vs_best=R
      where R > 1 always means Portcullis did better than the best peer (portcullis/best for
      `high`-is-better metrics, best/portcullis for `low`-is-better ones), followed by
      paired_ratio=P: the same ratio taken in each round (against that round's best peer), then
      the median of those. The proxies of one round run back to back, so a slow minute of a
      shared machine weighs on all of them alike in P; R compares medians taken from different
      minutes. R is the target; P says how much of R is the machine.
      With rows for portcullis_copy (an A/A control: a second, identical Portcullis), the line
      ends with portcullis_copy=C copy_ratio=Q, Q being R with the copy as the only peer: two
      identical proxies differ only by the machine's noise, so |Q - 1| is what a ratio of this
      run can be trusted to. The copy is never one of the peers of R and P.
"""
import json
import statistics
import sys

PROXIES = ("portcullis", "haproxy", "nginx")
COPY = "portcullis_copy"  # the A/A control, never a peer


def load(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
    raise SystemExit(f"no JSON line in {path}")


def get(path, key):
    value = load(path)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "n/a"
        value = value[part]
    return value


def clean(path):
    r = load(path)
    problems = []
    if r.get("error_total", 0):
        problems.append(f"errors {r['errors']}")
    if r.get("ok", 0) != r.get("responses", 0):
        problems.append(f"non-2xx statuses {r['status']}")
    if r.get("responses", 0) == 0:
        problems.append("no responses")
    if problems:
        print("; ".join(problems))
        return 1
    return 0


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def ratio_vs_best(ours, peers, better):
    """Portcullis against the best of peers, above 1 when Portcullis is better; None if undefined."""
    if ours is None or not peers:
        return None
    if better == "high":
        best = max(peers)
        return ours / best if best > 0 else None
    return min(peers) / ours if ours > 0 else None


def line(results, scenario, better):
    by_round = {p: {} for p in PROXIES + (COPY,)}  # proxy -> round -> value
    with open(results) as f:
        for row in f:
            parts = row.split()
            if len(parts) == 4 and parts[0] == scenario and parts[1] in by_round and parts[3] != "n/a":
                by_round[parts[1]][parts[2]] = float(parts[3])
    med = {p: (statistics.median(v.values()) if v else None) for p, v in by_round.items()}
    ratio = ratio_vs_best(med["portcullis"], [med[p] for p in PROXIES[1:] if med[p] is not None], better)
    paired = []
    for r, ours in by_round["portcullis"].items():
        x = ratio_vs_best(ours, [by_round[p][r] for p in PROXIES[1:] if r in by_round[p]], better)
        if x is not None:
            paired.append(x)
    rounds = max(len(v) for v in by_round.values())
    cells = " ".join(f"{p}={fmt(med[p])}" for p in PROXIES)
    show = lambda x: "n/a" if x is None else f"{x:.2f}"
    control = ""
    if by_round[COPY]:
        copy_ratio = ratio_vs_best(med["portcullis"], [med[COPY]], better)
        control = f" {COPY}={fmt(med[COPY])} copy_ratio={show(copy_ratio)}"
    print(f"{scenario} {cells} ratio_vs_best={show(ratio)} paired_ratio={show(statistics.median(paired) if paired else None)}"
          f"{control}  (median of {rounds}; {better}er is better)")


def main(argv):
    if len(argv) == 4 and argv[1] == "get":
        print(get(argv[2], argv[3]))
        return 0
    if len(argv) == 3 and argv[1] == "clean":
        return clean(argv[2])
    if len(argv) == 5 and argv[1] == "line" and argv[4] in ("high", "low"):
        line(argv[2], argv[3], argv[4])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
