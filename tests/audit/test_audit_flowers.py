"""The audit on real photos and real weights (slow; needs ../shared): flowers5 with a planted
train/test manifest, MobileNet vectors from the shared ImageNet weights.

Planted: 200 train photos per class; 60 other photos per class in test; 40 train photos copied
into test resized to 90% and re-encoded at JPEG quality 70; 30 train labels flipped. The audit
must list >= 90% of the planted pairs, and rank the flipped labels among the train rows' top 60
at least as well as a plain 5-fold cross-validated logistic regression's self-confidence
ranking. The figures are printed (run with -s) and they calibrate the default threshold (0.15).
"""

import csv
import json

import numpy as np
import pytest

from conftest import FLOWERS, MOBILENET_WEIGHTS, needs_shared
from planted import resized_copy

pytestmark = [pytest.mark.slow, needs_shared(FLOWERS, MOBILENET_WEIGHTS)]


def _manifest(root, seed=0, per_class=200, n_test=60, n_leaks=40, n_flips=30):
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
    rows, train = [], []
    for name in classes:
        photos = sorted((FLOWERS / name).glob("*.jpg"))
        picked = rng.choice(len(photos), per_class + n_test, replace=False)
        for k, i in enumerate(picked):
            split = "train" if k < per_class else "test"
            link = root / "photos" / name / photos[i].name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photos[i])
            rows.append([f"photos/{name}/{photos[i].name}", name, split])
            if split == "train":
                train.append(len(rows) - 1)
    picks = rng.choice(train, n_leaks + n_flips, replace=False)
    leaks, flips = [], []
    for r in picks[:n_leaks]:
        path, name, _ = rows[r]
        copy = f"copies/{name}/copy_{path.split('/')[-1]}"
        (root / copy).parent.mkdir(parents=True, exist_ok=True)
        resized_copy(root / path, root / copy)
        rows.append([copy, name, "test"])
        leaks.append((path, copy))
    for r in picks[n_leaks:]:
        rows[r][1] = classes[(classes.index(rows[r][1]) + 1 + rng.integers(0, 4)) % 5]
        flips.append(rows[r][0])
    with (root / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "split"]] + rows)
    return leaks, flips


def _baseline_hits(store_path, flips):
    """Flipped labels among the 2x-their-number least self-confident train rows of a plain
    5-fold cross-validated logistic regression on the raw vectors (stratified, shuffled folds,
    seed 0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from pipeline.store.feature_store import open_store

    with open_store(store_path) as store:
        x, y = store.load("train")
        ids = store.column("ids")[store.indices("train")]
    probs = cross_val_predict(LogisticRegression(max_iter=2000), x, y, method="predict_proba",
                              cv=StratifiedKFold(5, shuffle=True, random_state=0))
    ranked = ids[np.argsort(probs[np.arange(len(y)), y])]
    return sum(f in set(ranked[:2 * len(flips)]) for f in flips)


def test_planted_leaks_and_flipped_labels_on_flowers5(tmp_path):
    from pipeline.audit.run import run_audit
    from pipeline.extract.run import run_extraction

    leaks, flips = _manifest(tmp_path)
    store = run_extraction({"data": str(tmp_path / "manifest.csv"), "backbone": "mobilenet",
                            "weights": str(MOBILENET_WEIGHTS), "layer": "pooled",
                            "pooling": "avg", "batch_size": 32, "dtype": "float32",
                            "cache_dir": str(tmp_path / "cache")},
                           progress=False, echo=lambda *_: None).path
    folder = run_audit(store, {"threshold": 0.5}, echo=print)  # wide: see the whole picture
    with open(folder / "duplicates.csv", newline="") as fh:
        pairs = {(r["id_a"], r["id_b"]): float(r["distance"]) for r in csv.DictReader(fh)}
    planted = [pairs.get(p) for p in leaks]
    planted_d = np.array([d for d in planted if d is not None])
    summary = json.loads((folder / "summary.json").read_text())
    from pipeline.audit.neighbours import prepare_vectors, scan_neighbours
    from pipeline.store.feature_store import open_store

    with open_store(store) as s:
        ids = s.column("ids").tolist()
        prepared, _, _ = prepare_vectors(s.file["features"])
    nearest = scan_neighbours(prepared, k=1, threshold=0.0).knn_distance[:, 0]
    involved = {i for pair in leaks for i in pair}
    others = np.array([d for i, d in zip(ids, nearest) if i not in involved])
    print(f"\nplanted pairs found under 0.5: {len(planted_d)}/{len(leaks)}; their distance: "
          f"max {planted_d.max():.4f}, median {np.median(planted_d):.4f}; other photos' "
          f"nearest neighbour: p1 {np.percentile(others, 1):.4f}, p5 "
          f"{np.percentile(others, 5):.4f}, min {others.min():.4f}")
    default = run_audit(store, {}, out_dir=tmp_path / "default", echo=print)
    with open(default / "duplicates.csv", newline="") as fh:
        found = {(r["id_a"], r["id_b"]) for r in csv.DictReader(fh) if r["split_a"] != r["split_b"]}
    hits = sum(p in found for p in leaks)
    with open(default / "label_candidates.csv", newline="") as fh:
        issues = list(csv.DictReader(fh))  # cleanlab's whole ranking: the probe's quality
    with open(default / "label_issues.csv", newline="") as fh:
        shown = list(csv.DictReader(fh))  # only the credible ones
    top = 2 * len(flips)
    ours_all = sum(f in {r["id"] for r in issues[:top]} for f in flips)
    train_issues = [r["id"] for r in issues if r["split"] == "train"]
    ours = sum(f in set(train_issues[:top]) for f in flips)
    baseline = _baseline_hits(store, flips)
    threshold = json.loads((default / "summary.json").read_text())["thresholds"]
    print(f"default threshold {threshold['duplicate_distance']}: {hits}/{len(leaks)} planted "
          "pairs found, "
          f"{len(found)} cross-split pairs in all; flipped labels in the top {top}: audit "
          f"{ours} among train rows ({ours_all} among all rows), plain CV logistic regression "
          f"{baseline} (of {len(flips)}); label issues flagged {len(issues)} "
          f"({len(train_issues)} train); flips flagged "
          f"{sum(f in set(train_issues) for f in flips)}; shown as credible "
          f"{len(shown)}, flips among them {sum(r['id'] in set(flips) for r in shown)}")
    assert hits >= 0.9 * len(leaks)
    assert np.percentile(planted_d, 90) <= 0.15 < np.percentile(others, 1)
    assert ours >= baseline
    assert len(shown) <= 0.05 * summary["n_rows"]
