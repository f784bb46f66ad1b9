"""Do cached augmented views help? Test accuracy of the default head and of a logistic
regression trained on the plain rows plus K views of each training photo, with and without
--feature-noise, and what a view costs to extract.

    python benchmarks/views.py [--input-size 128] [--views 16] [--sizes 20,50,100]
                               [--classes 2,5] [--extract-only]

Data: flowers5 (../shared/data/flowers5) through the shared ImageNet MobileNet weights. Per class
a seeded pool of 100 training photos and 60 test photos is drawn once; the pool and the test
photos are extracted once with --views (the largest K), and every smaller data set (20 or 50
photos per class, 2 classes: daisy and dandelion) is a subset of those rows, with views 1..K of
its training photos only. Validation and test rows are always plain views. Skips cleanly
without ../shared.
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
CACHE = Path(__file__).resolve().parent / "cache" / "views"
POOL, TEST = 100, 60  # photos per class: the largest training set, and the fixed test set
TWO = ("daisy", "dandelion")

import numpy as np  # noqa: E402


def write_manifest() -> Path:
    """The seeded pool and test photos of every class, as a manifest with a split column."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE.parent / ".gitignore").write_text("*\n")  # the cache never reaches git
    rng = np.random.default_rng(0)
    path = CACHE / "flowers_pool.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "split"])
        for folder in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
            files = sorted(folder.glob("*.jpg"))
            chosen = rng.choice(len(files), POOL + TEST, replace=False)
            for i, j in enumerate(chosen):
                out.writerow([str(files[j]), folder.name, "train" if i < POOL else "test"])
    return path


def extract(input_size: int, views: int) -> tuple[Path, dict]:
    """The views store of the pool (extracted on the first call) and the extraction cost."""
    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    lines = []
    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(write_manifest()), backbone="mobilenet", weights=str(WEIGHTS),
                input_size=input_size, cache_dir=str(CACHE), progress=False, views=views)
    started = time.perf_counter()
    result = run_extraction(opts, echo=lines.append)
    cost = {"lines": lines, "seconds": time.perf_counter() - started,
            "plain_seconds": result.seconds}
    return result.path, cost


def subset_store(source: Path, classes, per_class: int, views: int) -> Path:
    """The first `per_class` pool photos of each class (the pool is in seeded order) with their
    views 1..`views`, and every test photo of those classes (plain, plus all its views for TTA)."""
    from pipeline.store.feature_store import StoreWriter, open_store

    path = CACHE / f"subset-{len(classes)}c-{per_class}-k{views}.h5"
    if path.exists():
        return path
    with open_store(source) as store:
        names = list(store.class_names)
        keep = [names.index(c) for c in classes]
        labels, split = store.column("labels"), store.column("split")
        rows = []
        for c in keep:
            rows += list(np.flatnonzero((labels == c) & (split == "train"))[:per_class])
            rows += list(np.flatnonzero((labels == c) & (split == "test")))
        rows = np.array(sorted(rows))
        index = store.row_index
        extra = index.views_of(rows)
        extra = extra[(index.view[extra] <= views) | (split[index.plain[extra]] == "test")]
        order = np.concatenate([rows, extra])
        x = store.read_rows(order)
        cols = {c: store.full_column(c)[order] for c in ("ids", "split", "group", "stamps")}
        y = np.searchsorted(keep, store.full_column("labels")[order])
        writer = StoreWriter(path, store.feature_shape, view_rows=True)
        writer.append(x, labels=y, view=store.full_column("view")[order], **cols)
        writer.commit(store.key, [names[c] for c in keep], store.provenance)
    return path


def linear_probe(path: Path, views: int) -> float:
    """`make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))` on the
    training photos' plain rows and views 1..K, scored on the plain test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline.store.feature_store import open_store

    with open_store(path) as store:
        train = store.indices("train")
        rows = store.row_index.with_views(train, max_view=views)
        x, y = store.read_rows(rows), store.full_column("labels")[rows]
        x_test, y_test = store.load("test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        model.fit(x, y)
    return float(model.score(x_test, y_test))


def head(path: Path, views: int, noise: float, tta: int) -> tuple[float, float, int]:
    """The default fit-head (train_views K, feature noise as given): test accuracy, test
    accuracy with TTA over the plain view and `tta` views of each test photo, epochs run."""
    from pipeline.deploy.prediction import load_run
    from pipeline.deploy.tta import tta_average
    from pipeline.fit.run import fit_head
    from pipeline.store.feature_store import open_store

    run = fit_head(path, {"progress": False, "train_views": views, "feature_noise": noise,
                          "learning_curve": False}, out_dir=CACHE / "runs",
                   echo=lambda *_: None)
    metrics = json.loads((run / "metrics.json").read_text())
    loaded = load_run(run)
    with open_store(path) as store:
        test = store.indices("test")
        y = store.column("labels")[test]
        plain = loaded.predict_proba(store.read_rows(test))
        index = store.row_index
        views_rows = index.views_of(test, max_view=tta)
        total, count = np.array(plain), np.ones(len(test))
        where = np.searchsorted(test, index.plain[views_rows])
        np.add.at(total, where, loaded.predict_proba(store.read_rows(views_rows)))
        np.add.at(count, where, 1)
    tta_acc = float(np.mean((total / count[:, None]).argmax(1) == y))
    return metrics["test_accuracy"], tta_acc, metrics["epochs_run"]


def view_cost(input_size: int, n_files: int = 24, views: int = 4) -> dict:
    """Seconds per plain image and per view on the same files, measured side by side: a fresh
    extraction without views, then the views of the same files."""
    import shutil

    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    folder = CACHE / "cost"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines = (CACHE / "flowers_pool.csv").read_text().splitlines()
    manifest = folder / "cost.csv"
    rng = np.random.default_rng(1)
    picked = [lines[i] for i in sorted(rng.choice(np.arange(1, len(lines)), n_files, False))]
    manifest.write_text("\n".join([lines[0], *[",".join(line.split(",")[:2]) for line in picked]])
                        + "\n")
    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(manifest), backbone="mobilenet", weights=str(WEIGHTS),
                input_size=input_size, cache_dir=str(folder / "cache"), progress=False)
    plain = run_extraction(opts, echo=lambda *_: None)
    echo = []
    run_extraction({**opts, "views": views}, echo=echo.append)
    seconds = float(next(line for line in echo if line.startswith("views:")).split(" in ")[1]
                    .split("s;")[0])
    return {"plain_s_per_image": plain.seconds / n_files,
            "view_s_per_view": seconds / (n_files * views), "files": n_files, "views": views}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--views", default="0,4,8,16")
    parser.add_argument("--sizes", default="20,50,100")
    parser.add_argument("--classes", default="2,5")
    parser.add_argument("--noise", type=float, default=0.5,
                        help="--feature-noise of the rows with noise")
    parser.add_argument("--tta", type=int, default=8)
    parser.add_argument("--extract-only", action="store_true")
    args = parser.parse_args()
    if not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: ../shared not available ({FLOWERS} or {WEIGHTS} missing)")
        return 0
    from machine import append_rows, machine_fields

    context = machine_fields()
    ks = [int(k) for k in args.views.split(",")]
    source, cost = extract(args.input_size, max(ks))
    print(f"vectors: {source.name} ({cost['seconds']:.0f} s)")
    if args.extract_only:
        return 0
    measured = view_cost(args.input_size)
    print(f"extraction cost: {measured['plain_s_per_image'] * 1000:.0f} ms per plain image, "
          f"{measured['view_s_per_view'] * 1000:.0f} ms per view (same {measured['files']} "
          f"files, {measured['views']} views each)")
    append_rows(ROOT / "benchmarks" / "results" / "views_cost.csv",
                [{"benchmark": "views", "input_size": args.input_size, **measured}], context)
    rows = []
    print("| classes | photos/class | K | LR | head | head + noise | head + TTA |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n_classes in (int(c) for c in args.classes.split(",")):
        classes = TWO if n_classes == 2 else tuple(sorted(p.name for p in FLOWERS.iterdir()
                                                          if p.is_dir()))[:n_classes]
        for size in (int(s) for s in args.sizes.split(",")):
            path = subset_store(source, classes, size, max(ks))
            for k in ks:
                lr = linear_probe(path, k)
                plain_head, tta_acc, epochs = head(path, k, 0.0, args.tta)
                noisy, _, _ = head(path, k, args.noise, 0)
                row = {"classes": n_classes, "per_class": size, "views": k,
                       "test_rows": TEST * n_classes, "lr_scaled": round(lr, 4),
                       "head": round(plain_head, 4), "head_noise": round(noisy, 4),
                       "noise": args.noise, "head_tta": round(tta_acc, 4), "tta": args.tta,
                       "head_epochs": epochs, "input_size": args.input_size}
                rows.append(row)
                # each row is kept as it is measured: a capped or interrupted run keeps its rows
                append_rows(ROOT / "benchmarks" / "results" / "views.csv", [row], context)
                print(f"| {n_classes} | {size} | {k} | {lr:.3f} | {plain_head:.3f} | "
                      f"{noisy:.3f} | {tta_acc:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
