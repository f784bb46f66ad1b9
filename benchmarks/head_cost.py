"""What does choosing the head cost? Wall time of the default fit-head (the head chosen by
cross-validation) against the fixed head that was the default before (one hidden layer of
256, given by options), side by side in one process on all of flowers5.

    python benchmarks/head_cost.py [--store STORE] [--repeats 1]

The store: every flowers5 photo (../shared/data/flowers5) through the shared ImageNet
MobileNet weights at 224 px, extracted once into benchmarks/cache/ (benchmarks/defaults.py's).
Both recipes use fit-head's default splits (20% test, 20% validation, 10% calibration) and
write their run folders under benchmarks/cache/runs/. Skips cleanly without ../shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from defaults import CACHE, FLOWERS, ROOT, WEIGHTS, flowers_store  # noqa: E402

RECIPES = {"chosen (default)": {}, "fixed 256 (given)": {"hidden_units": (256,)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a flowers5 store to reuse")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not args.store and not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: ../shared not available ({FLOWERS} or {WEIGHTS} missing)")
        return 0
    from machine import append_rows, machine_fields
    from pipeline.fit.choice import describe
    from pipeline.fit.run import fit_head

    store = Path(args.store) if args.store else flowers_store()
    context = machine_fields()
    rows = []
    for repeat in range(args.repeats):
        for recipe, options in RECIPES.items():
            started = time.perf_counter()
            run = fit_head(store, {"progress": False, **options}, out_dir=CACHE / "runs",
                           echo=lambda *_: None)
            seconds = time.perf_counter() - started
            metrics = json.loads((run / "metrics.json").read_text())
            choice = metrics["head"].get("choice")
            rows.append({"store": store.name, "repeat": repeat, "recipe": recipe,
                         "wall_seconds": round(seconds, 1),
                         "test_accuracy": round(metrics["test_accuracy"], 4),
                         "n_test": metrics["split"]["n_test"],
                         "head": describe(choice["winner"]) if choice else "hidden 256",
                         "winner_cv_accuracy": round(choice["winner"]["accuracy"], 4)
                         if choice else ""})
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    append_rows(ROOT / "benchmarks" / "results" / "head_cost.csv", rows, context)
    base = [r["wall_seconds"] for r in rows if r["recipe"].startswith("fixed")]
    chosen = [r["wall_seconds"] for r in rows if r["recipe"].startswith("chosen")]
    print(f"chosen / fixed wall time: {sum(chosen) / sum(base):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
