"""Does the default fit-head give what a tuned linear probe gives? Test accuracy of the default head, plain and tuned logistic regression and the default grid's best, on the same rows.

    python benchmarks/defaults.py [--sets f10x5,f30x5,f100x5,f20x2,digits] [--seeds 0,1]
                                  [--recipes head,plain,tuned,grid] [--n-jobs -1]

Sets (test accuracy on fixed test photos, every recipe on the same training rows):
  f<K>x<C>  flowers5 (../shared/data/flowers5) through the shared ImageNet MobileNet weights
            (224 px, extracted once into benchmarks/cache/ and reused): C classes (2: daisy and
            dandelion; 5: all), K training photos per class drawn with each sampling seed
            from the photos outside a fixed test split of 150 photos per class (drawn once,
            seed 0). Each set is written as a manifest (path, label, split) under
            benchmarks/cache/defaults/, and its store holds those photos' vectors with that
            split column.
  digits    the demo: scikit-learn's digits written as PNGs (the demo's own train/test
            split, 1,347 / 450), ResNet50 with random weights at 32 px, as `demo` extracts.

Recipes:
  head      `fit-head` with no head options (the head it chooses), its test_accuracy.
  plain     `LogisticRegression()` on the raw vectors, as a user would first write it.
  tuned     standardised `LogisticRegression(max_iter=1000)`, C chosen by stratified 5-fold
            cross-validation over 17 values from 1e-4 to 1e4, refit on every training row.
  grid      `grid-search` with its default grid, the leaderboard's best test_score.
Skips cleanly without ../shared (the digits set needs no ../shared).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"
CACHE = Path(__file__).resolve().parent / "cache"
SETS = CACHE / "defaults"
TEST_PER_CLASS = 150
TWO = ("daisy", "dandelion")
C_VALUES = tuple(10.0 ** (i / 2) for i in range(-8, 9))  # 1e-4 .. 1e4, 17 values

import numpy as np  # noqa: E402


def flowers_store() -> Path:
    """The MobileNet store of every flowers5 photo (extracted on the first call)."""
    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # the cache never reaches git
    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(FLOWERS), backbone="mobilenet", weights=str(WEIGHTS),
                input_size=224, cache_dir=str(CACHE), progress=False)
    return run_extraction(opts, echo=lambda *_: None).path


def digits_store() -> Path:
    """The demo's store: its digits folder through ResNet50 with random weights at 32 px."""
    from pipeline.demo import write_digits_folder
    from pipeline.extract.run import run_extraction

    data = write_digits_folder(CACHE / "demo" / "digits")
    return run_extraction({"data": str(data), "backbone": "resnet50", "weights": "none",
                           "input_size": 32, "batch_size": 64, "cache_dir": str(CACHE),
                           "progress": False}, echo=lambda *_: None).path


def flowers_set(source: Path, name: str, seed: int) -> Path:
    """Writes set `name` (f<K>x<C>) for sampling `seed`: its manifest and its store."""
    from pipeline.store.feature_store import open_store, write_store

    per_class, n_classes = (int(v) for v in name[1:].split("x"))
    SETS.mkdir(parents=True, exist_ok=True)
    with open_store(source) as store:
        names = list(store.class_names)
        classes = TWO if n_classes == 2 else tuple(names)
        labels, ids = store.column("labels"), store.column("ids")
        rows, split = [], []
        for c in (names.index(n) for n in classes):
            of_class = np.flatnonzero(labels == c)
            order = np.random.default_rng(0).permutation(of_class)  # the fixed test photos
            test, pool = order[:TEST_PER_CLASS], order[TEST_PER_CLASS:]
            train = np.random.default_rng([seed, c]).choice(pool, per_class, replace=False)
            rows += list(train) + list(test)
            split += ["train"] * per_class + ["test"] * len(test)
        rows = np.array(rows)
        x = store.read_rows(rows) if np.all(np.diff(rows) > 0) else \
            store.read_rows(np.arange(len(store)))[rows]
        root = Path(store.provenance.get("data_root", FLOWERS))
    with open(SETS / f"{name}-seed{seed}.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "split"])
        for r, s in zip(rows, split):
            out.writerow([str(root / ids[r]), names[labels[r]], s])
    keep = [names.index(n) for n in classes]
    return write_store(SETS / f"{name}-seed{seed}.h5", x, np.searchsorted(keep, labels[rows]),
                       class_names=list(classes), ids=ids[rows], split=split,
                       provenance={"data_name": f"flowers5 {name}, sampling seed {seed}"})


def train_and_test(store_path: Path):
    from pipeline.store.feature_store import open_store

    with open_store(store_path) as store:
        test = store.indices("test")
        train = np.setdiff1d(np.arange(len(store)), test)
        x, y = store.read_rows(np.arange(len(store))), store.column("labels")
    return x[train], y[train], x[test], y[test]


def plain_lr(store_path: Path) -> tuple[float, str]:
    from sklearn.linear_model import LogisticRegression

    x, y, x_test, y_test = train_and_test(store_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is part of the plain recipe
        return float(LogisticRegression().fit(x, y).score(x_test, y_test)), "C=1"


def tuned_lr(store_path: Path) -> tuple[float, str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, x_test, y_test = train_and_test(store_path)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                          {"logisticregression__C": list(C_VALUES)},
                          cv=StratifiedKFold(5, shuffle=True, random_state=0), n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x, y)
    return (float(search.score(x_test, y_test)),
            f"C={search.best_params_['logisticregression__C']:.3g}")


def default_head(store_path: Path) -> tuple[float, str]:
    from pipeline.fit.choice import describe
    from pipeline.fit.run import fit_head

    run = fit_head(store_path, {"progress": False}, out_dir=CACHE / "runs",
                   echo=lambda *_: None)
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["test_accuracy"], describe(metrics["head"]["choice"]["winner"])


def default_grid(store_path: Path, n_jobs: int) -> tuple[float, str]:
    from pipeline.search.run import run_grid_search

    run = run_grid_search(store_path, {"n_jobs": n_jobs, "progress": False},
                          out_dir=CACHE / "runs", echo=lambda *_: None)
    with open(run / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        best = next(csv.DictReader(fh))
    return float(best["test_score"]), f"{best['model']} {best['params']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="f10x5,f30x5,f100x5,f20x2,digits")
    parser.add_argument("--seeds", default="0,1", help="sampling seeds of the flowers5 sets")
    parser.add_argument("--recipes", default="head,plain,tuned,grid")
    parser.add_argument("--n-jobs", type=int, default=-1, help="grid-search's workers")
    args = parser.parse_args()
    names = args.sets.split(",")
    flowers = [n for n in names if n.startswith("f")]
    if flowers and not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped the flowers5 sets: ../shared not available ({FLOWERS} or {WEIGHTS} "
              "missing)")
        names = [n for n in names if not n.startswith("f")]
    from machine import append_rows, machine_fields

    context = machine_fields()
    recipes = {"head": default_head, "plain": plain_lr, "tuned": tuned_lr,
               "grid": lambda path: default_grid(path, args.n_jobs)}
    wanted = args.recipes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    # The sets' stores are cached too: the source store is opened (or extracted) only when one
    # of them is missing.
    missing = [n for n in names if n.startswith("f") and
               not all((SETS / f"{n}-seed{seed}.h5").is_file() for seed in seeds)]
    source = flowers_store() if missing else None
    rows = []
    for name in names:
        for seed in (seeds if name.startswith("f") else [0]):
            path = (flowers_set(source, name, seed) if name in missing else
                    SETS / f"{name}-seed{seed}.h5") if name.startswith("f") else digits_store()
            n_train, _, n_test, _ = (len(a) for a in train_and_test(path))
            row = {"set": name, "sampling_seed": seed if name.startswith("f") else "",
                   "n_train": n_train, "n_test": n_test}
            for recipe in ("head", "plain", "tuned", "grid"):
                started = time.perf_counter()
                score, note = recipes[recipe](path) if recipe in wanted else (np.nan, "")
                row[f"{recipe}_accuracy"] = round(score, 4)
                row[f"{recipe}_seconds"] = round(time.perf_counter() - started, 1)
                row[f"{recipe}_model"] = note
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            rows.append(row)
            # each row as it is measured: an interrupted run keeps what it finished
            append_rows(ROOT / "benchmarks" / "results" / "defaults.csv", [row], context)
    scored = [r for r in rows if not np.isnan(r["head_accuracy"] + r["tuned_accuracy"])]
    if scored:
        gaps = [r["head_accuracy"] - r["tuned_accuracy"] for r in scored]
        print(f"default head minus tuned LR: worst {min(gaps):+.4f}, mean {np.mean(gaps):+.4f} "
              f"over {len(gaps)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
