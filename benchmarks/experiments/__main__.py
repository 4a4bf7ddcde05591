"""Regenerate every experiment table and plot under benchmarks/results/.

    python -m benchmarks.experiments                 # the full run (cached: finished runs are kept)
    python -m benchmarks.experiments --quick --out /tmp/x   # the CI smoke test: every suite, tiny
    python -m benchmarks.experiments --only digits_approx rotors_eps
    python -m benchmarks.experiments --report-only   # tables and plots from the cache

Learning rates are tuned first (suite ``tuning``, on seeds no table reports) and each method then
trains at its own best rate; see suites.py for the grids and report.py for the tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.experiments.report import write_report
from benchmarks.experiments.runner import read_cache, run_specs
from benchmarks.experiments.suites import SUITES, make_specs

RESULTS = Path(__file__).resolve().parents[1] / "results"


def choose_learning_rates(records: list[dict]) -> dict[str, dict[str, float]]:
    """``{method: {task: lr}}``: the rate with the best mean validation metric on the tuning seeds."""
    scores = defaultdict(list)
    for r in records:
        scores[(r["labels"]["method"], r["labels"]["task"], r["labels"]["learning_rate"])].append(
            r["validation"]
        )
    chosen: dict[str, dict[str, float]] = defaultdict(dict)
    best: dict[tuple, float] = {}
    for (method, task, lr), values in sorted(scores.items()):
        sign = 1 if next(r["metric"] for r in records if r["labels"]["task"] == task) == "accuracy" else -1
        score = sign * statistics.fmean(values)
        if (method, task) not in best or score > best[(method, task)]:
            best[(method, task)] = score
            chosen[method][task] = lr
    return dict(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.experiments", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="every suite, one seed, a few steps (CI)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each")
    parser.add_argument(
        "--only", nargs="+", choices=list(SUITES), help="run these suites (tuning is implied)"
    )
    parser.add_argument("--report-only", action="store_true", help="tables and plots from the cache only")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected at least 1, got {args.jobs}")
    if args.quick and args.out is None:
        parser.error("--out: give a folder for quick results (they must not overwrite benchmarks/results/)")
    out = args.out or RESULTS
    runs_file = out / "runs.jsonl"
    names = [n for n in SUITES if args.only is None or n in args.only or n == "tuning"]
    started, failures = time.perf_counter(), []
    lrs: dict = {}
    for name in names:
        if not args.report_only:
            specs = make_specs(name, lrs, args.quick)
            print(f"{name}: {len(specs)} runs", file=sys.stderr, flush=True)
            failures += run_specs(specs, runs_file, args.jobs)
        if name == "tuning":
            tuning = [r for r in read_cache(runs_file).values() if r["suite"] == "tuning"]
            lrs = choose_learning_rates(tuning) if tuning else {}
    # the report shows the current grid only: the cache may also hold runs of earlier grids or configs
    grid = {name: make_specs(name, lrs, args.quick) for name in SUITES}  # ordered
    cache = read_cache(runs_file)
    # a run shared by two suites (the same overrides) is cached once: each suite gets it with its labels
    records = [
        {**cache[spec.key], "suite": name, "labels": spec.labels}
        for name, specs in grid.items()
        for spec in specs
        if spec.key in cache
    ]
    planned = {name: len(specs) for name, specs in grid.items()}
    if records:
        path = write_report(records, out, lrs, planned)
        print(f"wrote {path} ({(time.perf_counter() - started) / 60:.1f} min)", file=sys.stderr)
    for f in failures:
        print(f"FAILED {f['suite']} {f['labels']}: {f['error']}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
