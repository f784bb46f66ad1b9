"""What `--precision int8` costs in accuracy, per backbone: cosine to float32 and two heads.

For each backbone the same images are extracted twice on the native OpenVINO engine, in float32
and in int8 (the int8 vectors kept whatever the guard says, `--int8-min-cosine 0`, so their loss
can be measured; the guard's decision at the default threshold is shown beside it). Reported:
the median and minimum cosine similarity between each file's two vectors, the guard's own
median (held-back images), and the test accuracy of a linear probe (logistic regression,
stratified 30% test split, seed 0) and of fit-head's default head, int8 against float32.

Backbones: the shared real MobileNet weights where they exist (else random ones), ResNet50 and
Xception with random weights (no real ones can be downloaded here); random-weight figures show
how faithful int8 is to the float32 graph, not how well a pretrained model classifies.

Usage:
    python benchmarks/int8.py [--backbones mobilenet,resnet50:96,xception:96] [--images 150] \\
        [--calibration-size 100] [--data ../shared/data/flowers5]

`NAME:SIZE` runs that backbone at SIZE x SIZE pixels instead of its default input size (random-
weight models are measured for the faithfulness of int8 to float32, which a smaller input keeps
cheap on a small machine).

Prints a table and appends its rows (with cores, CPU flags, load before and after) to
benchmarks/results/int8_accuracy.csv.
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

RESULTS = ROOT / "benchmarks" / "results" / "int8_accuracy.csv"
SHARED = ROOT.parent / "shared"
REAL_WEIGHTS = {"mobilenet": SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"}


def _subset(source: Path, per_class: int, workdir: Path) -> Path:
    """The first `per_class` photos of each class (sorted names), linked into a new folder."""
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


def measure(backbone: str, data: Path, workdir: Path, calibration_size: int) -> dict:
    import numpy as np

    from pipeline.extract.quantize import GUARD_MEDIAN
    from pipeline.extract.run import run_extraction

    backbone, _, size = backbone.partition(":")
    weights = REAL_WEIGHTS.get(backbone)
    weights = str(weights) if weights and weights.is_file() else "none"
    stores = {}
    for precision in ("float32", "int8"):
        opts = {"data": str(data), "backbone": backbone, "weights": weights, "engine": "openvino",
                "precision": precision, "cache_dir": str(workdir / "cache"), "int8_min_cosine": 0.0,
                "input_size": int(size) if size else None, "calibration_size": calibration_size}
        stores[precision] = run_extraction(opts, progress=False, echo=lambda *_: None).path
    v32, labels, _ = _vectors(stores["float32"])
    v8, _, prov = _vectors(stores["int8"])
    ids = sorted(v32)  # the same file's two vectors, matched by id
    a, b = np.stack([v32[i] for i in ids]), np.stack([v8[i] for i in ids])
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    y = np.array([labels[i] for i in ids])
    guard = prov["int8_guard"]
    row = {"backbone": backbone, "input_size": size or "default",
           "weights": "real" if weights != "none" else "random",
           "images": len(ids), "cosine_median": round(float(np.median(cos)), 4),
           "cosine_min": round(float(cos.min()), 4), "guard_median": guard["cosine_median"],
           "kept_in_float32": guard["kept_in_float32"],
           "default_guard": "keeps int8" if guard["cosine_median"] >= GUARD_MEDIAN
           else "refuses (float32 stored)",
           "probe_float32": round(_probe_accuracy(a, y), 4),
           "probe_int8": round(_probe_accuracy(b, y), 4)}
    row["head_float32"] = round(_head_accuracy(stores["float32"], workdir / "runs"), 4)
    row["head_int8"] = round(_head_accuracy(stores["int8"], workdir / "runs"), 4)
    row["probe_loss"] = round(row["probe_float32"] - row["probe_int8"], 4)
    row["head_loss"] = round(row["head_float32"] - row["head_int8"], 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenet,resnet50:96,xception:96")
    parser.add_argument("--calibration-size", type=int, default=100)
    parser.add_argument("--images", type=int, default=150,
                        help="photos in all, the same number from each class")
    parser.add_argument("--data", default=str(SHARED / "data" / "flowers5"))
    args = parser.parse_args()

    from machine import append_rows, machine_fields

    machine = machine_fields()
    workdir = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    rows = []
    try:
        source = Path(args.data)
        n_classes = sum(1 for p in source.iterdir() if p.is_dir())
        data = _subset(source, max(1, args.images // n_classes), workdir)
        for backbone in args.backbones.split(","):
            rows.append(measure(backbone, data, workdir, args.calibration_size))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cols = ("backbone", "input_size", "weights", "images", "cosine_median", "cosine_min",
            "guard_median",
            "kept_in_float32", "default_guard", "probe_float32", "probe_int8", "head_float32",
            "head_int8")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    append_rows(RESULTS, rows, machine)


if __name__ == "__main__":
    main()
