"""Do the defaults lose to the plain recipe? A table: plain LogisticRegression() vs the default
fit-head vs the default grid's best, on the same vectors and the same held-out test rows.

    python benchmarks/defaults.py [--store STORE] [--sets full,small400,two400] [--input-size 224]
    python benchmarks/defaults.py --sets f20x2,f50x2,f100x2,f20x5,f50x5,f100x5,d20x2,d50x2,...

Vectors: flowers5 (../shared/data/flowers5) through the shared ImageNet MobileNet weights,
extracted once into benchmarks/cache/ and reused (a few minutes on 2 cores at 224 px). Each data
set gets one stratified 20% test split (seed 0); the three recipes train on the other 80% (the
head and the grid make their own validation rows or folds from it) and are scored once on the
test rows. Skips cleanly without ../shared.

The small sets `f<N>x<C>` and `d<N>x<C>` have a fixed test set instead: `f` is flowers5 (the
pool of benchmarks/views.py: N of its seeded 100 training photos per class, C = 2 (daisy,
dandelion) or 5 classes, tested on its 60 test photos per class); `d` is a second data set,
scikit-learn's handwritten digits as raw 8x8 pixels (64 values, no backbone; C = 2 is 3 vs 8,
C = 10 all digits; N training digits per class, the last 60 of each class tested). The
`scaled` column is `make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))`,
the linear probe the defaults must match.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"
CACHE = Path(__file__).resolve().parent / "cache"

import numpy as np  # noqa: E402

# name -> (description, classes kept (None = all), rows per class (None = all))
SETS = {
    "full": ("flowers5, all photos", None, None),
    "small400": ("flowers5, 80 photos per class", None, 80),
    "two400": ("daisy vs dandelion, 200 photos each", ("daisy", "dandelion"), 200),
}


def extract_once(input_size: int) -> Path:
    """The flowers5 MobileNet store in benchmarks/cache/ (extracted on the first call)."""
    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # the cache never reaches git
    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(FLOWERS), backbone="mobilenet", weights=str(WEIGHTS),
                input_size=input_size, cache_dir=str(CACHE), progress=False)
    return run_extraction(opts, echo=lambda *_: None).path


def subset_store(source: Path, name: str, seed: int = 0) -> tuple[Path, str]:
    """Writes the rows of data set `name` with a stratified 20% `test` split drawn with `seed`
    (the rows themselves are drawn with seed 0); returns its path and a description."""
    from sklearn.model_selection import train_test_split

    from pipeline.store.feature_store import open_store, write_store

    description, classes, per_class = SETS[name]
    with open_store(source) as store:
        labels, ids = store.column("labels"), store.column("ids")
        names = list(store.class_names)
        keep_classes = [names.index(c) for c in classes] if classes else list(range(len(names)))
        rng = np.random.default_rng(0)
        rows = []
        for c in keep_classes:
            of_class = np.flatnonzero(labels == c)
            rows += sorted(rng.choice(of_class, per_class, replace=False) if per_class
                           else of_class)
        rows = np.array(rows)
        x = store.read_rows(rows)
    y = np.searchsorted(keep_classes, labels[rows])
    _, test = train_test_split(np.arange(len(rows)), test_size=0.2, stratify=y, random_state=seed)
    split = np.where(np.isin(np.arange(len(rows)), test), "test", "train")
    path = CACHE / f"defaults-{name}-{seed}.h5"
    write_store(path, x, y, class_names=[names[c] for c in keep_classes], ids=ids[rows],
                split=split.tolist())
    return path, f"{description} ({len(rows)} rows, {len(test)} test)"


def fixed_test_store(name: str) -> tuple[Path, str]:
    """`f<N>x<C>` (flowers5 pool) or `d<N>x<C>` (digits pixels): N per class, fixed test."""
    kind, rest = name[0], name[1:]
    per_class, n_classes = (int(v) for v in rest.split("x"))
    if kind == "f":
        import views

        source, _ = views.extract(224, 0)
        classes = views.TWO if n_classes == 2 else tuple(
            sorted(p.name for p in FLOWERS.iterdir() if p.is_dir()))[:n_classes]
        path = views.subset_store(source, classes, per_class, 0)
        return path, f"flowers5, {per_class} photos/class x {n_classes} (60/class test)"
    from sklearn.datasets import load_digits

    from pipeline.store.feature_store import write_store

    digits = load_digits()
    keep = (3, 8) if n_classes == 2 else tuple(range(10))
    rows, split = [], []
    for c in keep:
        of = np.flatnonzero(digits.target == c)
        rows += list(of[:per_class]) + list(of[-60:])
        split += ["train"] * per_class + ["test"] * 60
    rows = np.array(rows)
    path = CACHE / f"defaults-{name}.h5"
    write_store(path, digits.data[rows].astype(np.float32),
                np.searchsorted(keep, digits.target[rows]), class_names=[str(c) for c in keep],
                split=split, provenance={"data_name": "digits-pixels"})
    return path, f"digits pixels, {per_class}/class x {n_classes} (60/class test)"


def scaled_recipe(store_path: Path) -> float:
    """The linear probe the defaults must match: standardised, C = 1, 1,000 iterations."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline.store.feature_store import open_store

    with open_store(store_path) as store:
        x_train, y_train = store.load("train")
        x_test, y_test = store.load("test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        model.fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def plain_recipe(store_path: Path) -> float:
    """`LogisticRegression()` as a user would first write it, on raw vectors."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.store.feature_store import open_store

    with open_store(store_path) as store:
        x_train, y_train = store.load("train")
        x_test, y_test = store.load("test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is part of the plain recipe
        model = LogisticRegression().fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def default_head(store_path: Path, out: Path) -> tuple[float, str]:
    from pipeline.fit.run import fit_head

    run = fit_head(store_path, {"progress": False}, out_dir=out, echo=lambda *_: None)
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["test_accuracy"], f"{metrics['epochs_run']}"


def default_grid(store_path: Path, out: Path, n_jobs: int) -> tuple[float, str]:
    import csv

    from pipeline.search.run import run_grid_search

    run = run_grid_search(store_path, {"n_jobs": n_jobs, "progress": False}, out_dir=out,
                          echo=lambda *_: None)
    with open(run / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        best = next(csv.DictReader(fh))
    return float(best["test_score"]), f"{best['model']} {best['params']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a flowers5 store to use instead of extracting one")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--repeats", type=int, default=3, help="test splits per small set "
                        "(seeds 0..N-1; 80 test rows move by 1.25 points a row, so one split "
                        "is noise); the full set uses one")
    parser.add_argument("--recipes", default="plain,scaled,head,grid",
                        help="which columns to measure (the others print as n/a)")
    parser.add_argument("--extract-only", action="store_true")
    args = parser.parse_args()
    names = args.sets.split(",")
    fixed = [n for n in names if n not in SETS]  # f<N>x<C> / d<N>x<C>: fixed test sets
    needs_flowers = any(n in SETS or n.startswith("f") for n in names)
    if needs_flowers and not args.store and not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: ../shared not available ({FLOWERS} or {WEIGHTS} missing)")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import append_rows, machine_fields

    context = machine_fields()
    started = time.perf_counter()
    source = None
    if len(fixed) < len(names):
        source = Path(args.store) if args.store else extract_once(args.input_size)
        print(f"vectors: {source.name} ({time.perf_counter() - started:.0f} s)")
    if args.extract_only:
        return 0
    out = CACHE / "runs"
    rows = []
    wanted = args.recipes.split(",")
    for name in names:
        scores, notes, secs = [], [], np.zeros(4)
        for seed in range(1 if name == "full" or name in fixed else args.repeats):
            path, described = (fixed_test_store(name) if name in fixed
                               else subset_store(source, name, seed))
            t0 = time.perf_counter()
            plain = plain_recipe(path) if "plain" in wanted else np.nan
            t1 = time.perf_counter()
            scaled = scaled_recipe(path) if "scaled" in wanted else np.nan
            t2 = time.perf_counter()
            head, head_note = default_head(path, out) if "head" in wanted else (np.nan, "n/a")
            t3 = time.perf_counter()
            grid, grid_note = (default_grid(path, out, args.n_jobs) if "grid" in wanted
                               else (np.nan, "n/a"))
            t4 = time.perf_counter()
            scores.append((plain, scaled, head, grid))
            notes.append((head_note, grid_note))
            secs += (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
            print(f"{name} split {seed}: plain {plain:.3f}  scaled {scaled:.3f}  head {head:.3f} "
                  f"({head_note})  grid {grid:.3f} ({grid_note})", flush=True)
            append_rows(ROOT / "benchmarks" / "results" / "defaults.csv", [{
                "set": name, "split_seed": seed, "data": described,
                "plain_lr": round(plain, 4), "scaled_lr": round(scaled, 4),
                "head": round(head, 4), "grid_best": round(grid, 4),
                "head_epochs": head_note, "grid_winner": grid_note}], context)
        n = len(scores)
        mean = np.mean(scores, axis=0)
        described += f", mean of {n} test split{'s' if n > 1 else ''}" if n > 1 else ""
        rows.append((described, *mean, notes, secs / n))
    print()
    print("| data (test accuracy) | plain `LogisticRegression()` | scaled, C=1 | default "
          "fit-head | default grid's best | seconds (plain / scaled / head / grid) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for described, plain, scaled, head, grid, notes, secs in rows:
        epochs = ", ".join(h for h, _ in notes)
        winners = ", ".join(sorted({g.split(" ")[0] for _, g in notes}))
        print(f"| {described} | {plain:.3f} | {scaled:.3f} | {head:.3f} ({epochs}) | "
              f"{grid:.3f} ({winners}) | {secs[0]:.0f} / {secs[1]:.0f} / {secs[2]:.0f} / "
              f"{secs[3]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
