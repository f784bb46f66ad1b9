"""What a reduced precision (bfloat16, int8, the default auto) costs in accuracy: cosine to float32 and two heads.

For each backbone the same images are extracted on the native OpenVINO engine in float32 and at
each precision asked: `bfloat16` (OpenVINO's bfloat16, as asked: no guard), `int8` (kept
whatever its guard says, `--int8-min-cosine 0`, so its loss can be measured), and `auto`, a
default extract (engine and precision auto: on a CPU with native bfloat16, bfloat16 if its
guard keeps it, else float32). Reported per precision: the median and minimum cosine
similarity between each file's two vectors, the guard's own figures (held-back files) and what
it decides at its default threshold, and the test accuracy of a linear probe (logistic
regression, stratified 30% test split, seed 0) and of fit-head's default head, against float32.

Backbones: the shared real MobileNet weights where they exist (else random ones); the others
with random weights (none can be downloaded here): their figures show how faithful a precision
is to the float32 graph, not how well a pretrained model classifies.

Usage:
    python benchmarks/precision_accuracy.py [--precisions bfloat16,auto] \\
        [--backbones mobilenet,resnet50,vgg19,xception] [--images 150] \\
        [--calibration-size 100] [--data ../shared/data/flowers5]

`NAME:SIZE` runs that backbone at SIZE x SIZE pixels instead of its default input size.
`--images 0` takes every photo of --data.

Prints a table and appends its rows (with cores, CPU flags, load before and after) to
benchmarks/results/precision_accuracy.csv (int8 rows of earlier runs: int8_accuracy.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

RESULTS = ROOT / "benchmarks" / "results" / "precision_accuracy.csv"
SHARED = ROOT.parent / "shared"
REAL_WEIGHTS = {"mobilenet": SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"}


def _subset(source: Path, per_class: int | None, workdir: Path) -> Path:
    """The first `per_class` photos of each class (sorted names; None: all), linked into a new
    folder."""
    root = workdir / "images"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for f in sorted(folder.glob("*.jpg"))[:per_class]:
            os.symlink(f.resolve(), root / folder.name / f.name)
    return root


def _vectors(path):
    from pipeline.store.feature_store import open_store

    with open_store(path) as store:
        X, y = store.load()
        ids = [str(i) for i in store.column("ids")]
        return dict(zip(ids, X)), dict(zip(ids, y)), store.provenance


def _probe_accuracy(X, y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    return float(LogisticRegression(max_iter=3000).fit(X_tr, y_tr).score(X_te, y_te))


def _head_accuracy(store_path, out: Path) -> float:
    from pipeline.fit.run import fit_head

    run = fit_head(store_path, {"progress": False}, out_dir=str(out), echo=lambda *_: None)
    return float(json.loads((Path(run) / "metrics.json").read_text())["test_accuracy"])


def _cosines(a, b):
    import numpy as np

    unit = [v / np.where(n > 0, n, 1.0)[:, None] for v, n in
            ((a, np.linalg.norm(a, axis=1)), (b, np.linalg.norm(b, axis=1)))]
    return (unit[0] * unit[1]).sum(axis=1)


def _guard(precision: str, prov: dict) -> tuple[dict, str]:
    """The guard's report in a store's provenance, and what it decides at its default rule."""
    from pipeline.extract.precision import BFLOAT16_GUARD_MEDIAN
    from pipeline.extract.quantize import GUARD_MEDIAN

    if precision == "int8":
        guard = prov.get("int8_guard") or {}
        kept = guard.get("cosine_median", 0) >= GUARD_MEDIAN
        return guard, "keeps int8" if kept else "refuses (float32 stored)"
    guard = (prov.get("precision_choice") or {}).get("bfloat16_guard") or {}
    if precision == "auto":
        return guard, f"auto chose {prov.get('precision')}"
    return guard, f"not run (asked); threshold {BFLOAT16_GUARD_MEDIAN}"


def measure(backbone: str, precisions: list, data: Path, workdir: Path,
            calibration_size: int) -> list[dict]:
    import numpy as np

    from pipeline.extract.run import run_extraction

    backbone, _, size = backbone.partition(":")
    weights = REAL_WEIGHTS.get(backbone)
    weights = str(weights) if weights and weights.is_file() else "none"
    stores = {}
    # auto first: the store it makes (or shares with float32 or bfloat16) records its choice
    for precision in sorted(("float32", *precisions), key=lambda p: p != "auto"):
        opts = {"data": str(data), "backbone": backbone, "weights": weights,
                "engine": "auto" if precision == "auto" else "openvino",
                "precision": precision, "cache_dir": str(workdir / "cache"), "int8_min_cosine": 0.0,
                "input_size": int(size) if size else None, "calibration_size": calibration_size}
        stores[precision] = run_extraction(opts, progress=False, echo=print).path
    v32, labels, _ = _vectors(stores["float32"])
    ids = sorted(v32)  # the same file's vectors, matched by id
    a = np.stack([v32[i] for i in ids])
    y = np.array([labels[i] for i in ids])
    probe32 = round(_probe_accuracy(a, y), 4)
    head32 = round(_head_accuracy(stores["float32"], workdir / "runs"), 4)
    rows = []
    for precision in precisions:
        other, _, prov = _vectors(stores[precision])
        b = np.stack([other[i] for i in ids])
        cos = _cosines(a, b)
        guard, decision = _guard(precision, prov)
        row = {"backbone": backbone, "input_size": size or "default",
               "weights": "real" if weights != "none" else "random", "images": len(ids),
               "precision": precision, "computed_in": prov.get("precision"),
               "engine": prov.get("engine"),
               "cosine_median": round(float(np.median(cos)), 6),
               "cosine_min": round(float(cos.min()), 6),
               "guard_median": guard.get("cosine_median", ""),
               "guard_seconds": guard.get("seconds", ""), "guard": decision,
               "probe_float32": probe32, "probe": round(_probe_accuracy(b, y), 4),
               "head_float32": head32,
               "head": round(_head_accuracy(stores[precision], workdir / "runs"), 4)}
        row["probe_loss"] = round(row["probe_float32"] - row["probe"], 4)
        row["head_loss"] = round(row["head_float32"] - row["head"], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", default="bfloat16,auto",
                        help="compared with float32: bfloat16, int8, auto (the default)")
    parser.add_argument("--backbones", default="mobilenet,resnet50,vgg19,xception")
    parser.add_argument("--calibration-size", type=int, default=100)
    parser.add_argument("--images", type=int, default=150,
                        help="photos in all, the same number from each class (0: all)")
    parser.add_argument("--data", default=str(SHARED / "data" / "flowers5"))
    args = parser.parse_args()

    from machine import append_rows, machine_fields

    machine = machine_fields()
    workdir = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    rows = []
    try:
        source = Path(args.data)
        n_classes = sum(1 for p in source.iterdir() if p.is_dir())
        per_class = max(1, args.images // n_classes) if args.images else None
        data = _subset(source, per_class, workdir)
        for backbone in args.backbones.split(","):  # each backbone's rows kept as it ends
            measured = measure(backbone, args.precisions.split(","), data, workdir,
                               args.calibration_size)
            append_rows(RESULTS, measured, machine)
            rows += measured
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cols = ("backbone", "input_size", "weights", "images", "precision", "computed_in",
            "cosine_median", "cosine_min", "guard_median", "guard", "probe_float32", "probe",
            "head_float32", "head")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
