"""How many rows the audit flags as label issues on clean data, and how many planted flips it
finds: cleanlab's own flags beside the ones the audit shows (only where the probe's held-out
accuracy makes them credible, pipeline/audit/labels.py `credible_issues`), at the default
agreement level (0.95) and at 0.9, in one run.

Data (real photos, the shared MobileNet ImageNet weights):
  * flowers5, PER_CLASS photos per class, labels as given (taken as clean; flowers5 may hold a
    few real label errors, which then count as false alarms here);
  * the same vectors with FLIP_SHARE of the labels moved to another class (seeded);
  * both again for daisy vs sunflower only, where the probe is strong (held-out ~0.9);
  * the frames shape: 3 classes x 8 photos x 10 frames (crops of 80-95%, brightness and
    contrast 0.9-1.1), labelled and grouped correctly (group = photo).
Probabilities are the audit's: a standardised logistic regression, 5-fold cross-validated,
group-aware where there are groups.

Usage:
    python benchmarks/label_issues.py [--per-class 200] [--flip-share 0.03] [--input-size 224]

Prints a table and appends its rows to benchmarks/results/label_issues.csv. Goal: at most 5%
of clean rows shown as issues.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "audit"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"


def _extract(data: Path, cache: Path, size: int):
    from pipeline.extract.run import run_extraction

    return run_extraction({"data": str(data), "backbone": "mobilenet", "weights": str(WEIGHTS),
                           "input_size": size, "cache_dir": str(cache)},
                          progress=False, echo=lambda *_: None).path


def _flowers(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name in sorted(p.name for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted((FLOWERS / name).glob("*.jpg"))
        (root / name).mkdir(parents=True)
        for i in rng.choice(len(files), min(per_class, len(files)), replace=False):
            (root / name / files[i].name).symlink_to(files[i])
    return root


def _frames(root: Path, seed: int) -> Path:
    import csv

    from PIL import Image

    from frames import write_frames

    rng = np.random.default_rng(seed)
    sources = {}
    for name in ("daisy", "rose", "tulip"):
        files = sorted((FLOWERS / name).glob("*.jpg"))
        sources[name] = [Image.open(files[i]).convert("RGB")
                         for i in rng.choice(len(files), 8, replace=False)]
    truth = write_frames(root / "data", sources=sources, seed=seed)
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        for row_id, photo in truth.items():
            writer.writerow([f"data/{row_id}", row_id.split("/")[0], photo])
    return root / "manifest.csv"


def measure(store_path, flip_share: float, seed: int, agreements=(0.9, 0.95),
            classes=None) -> list[dict]:
    """Flags of cleanlab and of the audit on the store's labels, `flip_share` of them flipped,
    one row per credibility level (the audit's default is CREDIBLE_AGREEMENT)."""
    from pipeline.audit.labels import (credible_issues, out_of_sample_probabilities,
                                       rank_label_issues)
    from pipeline.store.feature_store import open_store

    with open_store(store_path) as store:
        x = store.read_rows(np.arange(len(store))).reshape(len(store), -1)
        labels = store.column("labels").copy()
        groups = store.row_index.group[:len(store)]
        n_classes = len(store.class_names)
        if classes:  # a subset of the classes, relabelled 0..len(classes)-1
            keep = np.isin(labels, [store.class_names.index(c) for c in classes])
            x, groups = x[keep], groups[keep]
            labels = np.searchsorted(sorted(store.class_names.index(c) for c in classes),
                                     labels[keep])
            n_classes = len(classes)
    rng = np.random.default_rng(seed)
    flips = rng.choice(len(labels), int(round(flip_share * len(labels))), replace=False)
    labels[flips] = (labels[flips] + rng.integers(1, n_classes, len(flips))) % n_classes
    probs = out_of_sample_probabilities(x, labels, np.arange(len(labels)), groups, 5, seed)
    issues = rank_label_issues(labels, probs)
    clean = np.setdiff1d(np.arange(len(labels)), flips)

    def rates(rows):
        rows = set(np.asarray(rows).tolist())
        false = sum(r in rows for r in clean.tolist())
        found = sum(r in rows for r in flips.tolist())
        return (round(false / len(clean), 4), round(found / len(flips), 4) if len(flips) else "",
                round(found / len(rows), 4) if rows and len(flips) else "")

    c_false, c_recall, c_precision = rates(issues["rows"])
    out = []
    for agreement in agreements:
        shown, facts = credible_issues(issues, labels, probs, agreement=agreement)
        s_false, s_recall, s_precision = rates(shown["rows"])
        floor = facts["confidence_floor"]
        out.append({"rows": len(labels), "flips": len(flips),
                    "probe_held_out_accuracy": facts["held_out_accuracy"],
                    "agreement_needed": agreement, "confidence_floor": floor or "none",
                    "cleanlab_clean_flagged_share": c_false, "shown_clean_flagged_share": s_false,
                    "cleanlab_flip_recall": c_recall, "shown_flip_recall": s_recall,
                    "cleanlab_precision": c_precision, "shown_precision": s_precision})
    return out


def main(argv=None) -> int:
    from machine import RESULTS, append_rows, machine_fields

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=200, help="flowers5 photos per class")
    parser.add_argument("--flip-share", type=float, default=0.03)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"error: needs {FLOWERS} and {WEIGHTS} (../shared)", file=sys.stderr)
        return 2
    before = machine_fields()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flowers = _extract(_flowers(tmp / "flowers5", args.per_class, args.seed),
                           tmp / "cache", args.input_size)
        frames = _extract(_frames(tmp / "frames", args.seed), tmp / "cache", args.input_size)
        pair = ("daisy", "sunflower")  # the pair a linear probe separates best (~0.9)
        for name, store, share, classes in (
                (f"flowers5 {args.per_class}/class, labels as given", flowers, 0.0, None),
                (f"flowers5 {args.per_class}/class, {args.flip_share:.0%} flipped", flowers,
                 args.flip_share, None),
                (f"flowers5 {' vs '.join(pair)}, labels as given", flowers, 0.0, pair),
                (f"flowers5 {' vs '.join(pair)}, {args.flip_share:.0%} flipped", flowers,
                 args.flip_share, pair),
                ("frames 3x8x10, correct groups", frames, 0.0, None)):
            rows += [{"data": name, "input_size": args.input_size, **row}
                     for row in measure(store, share, args.seed, classes=classes)]
    keys = ["data", "rows", "flips", "probe_held_out_accuracy", "agreement_needed",
            "cleanlab_clean_flagged_share",
            "shown_clean_flagged_share", "cleanlab_flip_recall", "shown_flip_recall",
            "shown_precision"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    append_rows(RESULTS / "label_issues.csv", rows, before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
