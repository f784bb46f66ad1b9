"""Wall time of the default grid search on flowers5 (MobileNet vectors), as a table.

    python benchmarks/search_flowers.py [--store STORE] [--n-jobs N] [--out DIR]

Uses STORE when given, else a flowers5 MobileNet store in cache/ or ../main/cache/, else
extracts one from ../shared (a few minutes on 2 cores). Skips cleanly without ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"


def find_store(cache_dir: Path) -> Path:
    for folder in (ROOT / "cache", ROOT.parent / "main" / "cache"):
        found = sorted(folder.glob("flowers5-mobilenet-pooled-*.h5"))
        if found:
            return found[-1]
    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(FLOWERS), backbone="mobilenet", weights=str(WEIGHTS),
                cache_dir=str(cache_dir), progress=False)
    return run_extraction(opts).path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--out", default=str(ROOT / "cache" / "runs"))
    args = parser.parse_args()
    if not args.store and not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: ../shared not available ({FLOWERS} or {WEIGHTS} missing)")
        return 0
    from pipeline.search.run import run_grid_search

    store = Path(args.store) if args.store else find_store(ROOT / "cache")
    started = time.perf_counter()
    run_dir = run_grid_search(store, {"n_jobs": args.n_jobs, "progress": False},
                              out_dir=args.out, echo=lambda *_: None)
    wall = time.perf_counter() - started
    with open(run_dir / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        board = list(csv.DictReader(fh))
    n_folds = len(json.loads((run_dir / "folds.json").read_text())["folds"])
    best = {}
    for row in board:
        if row["status"] == "done":
            best.setdefault(row["model"], row)
    fit_total = {}
    for row in board:
        if row["fit_seconds"]:
            fit_total[row["model"]] = fit_total.get(row["model"], 0.0) + float(row["fit_seconds"])
    print(f"store {store.name}  n_jobs {args.n_jobs}  cores {os.cpu_count()}  "
          f"candidates {len(board)}")
    print(f"{'model':<24}{'best cv':>9}{'std':>8}{'test':>8}{'fit s/fold':>12}"
          f"{'fit s (sum)':>13}")
    for name, row in best.items():
        print(f"{name:<24}{float(row['cv_mean']):>9.4f}{float(row['cv_std']):>8.4f}"
              f"{row['test_score'] or '':>8.6}{float(row['fit_seconds']):>12.2f}"
              f"{fit_total[name] * n_folds:>13.1f}")
    print(f"wall time of the default search: {wall:.1f} s   run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
