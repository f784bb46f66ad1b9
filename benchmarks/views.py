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
