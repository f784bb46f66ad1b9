"""A new user's first dataset, tried end to end on real photos and real weights (slow; needs
../shared): 3 flowers5 classes, 8 photos each, 10 "frames" per photo (crops of 80-95% with small
brightness and contrast changes), class folders and no groups, so fit-head's random split
scatters each photo's frames over train, val and test. MobileNet vectors from the shared
ImageNet weights.

The audit must find the frames that cross the split at its default threshold, suggest the
photos as groups, and with them fit-head must keep every photo on one side; the same photos
with correct groups must not be flagged as label issues wholesale.
"""

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FLOWERS, MOBILENET_WEIGHTS, needs_shared, read_csv
from frames import write_frames

pytestmark = [pytest.mark.slow, needs_shared(FLOWERS, MOBILENET_WEIGHTS)]

FAST = {"epochs": 3, "patience": 2, "hidden_units": (), "progress": False,
        "learning_curve": False}


def _photos(seed=1):
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    for name in ("daisy", "rose", "tulip"):
        files = sorted((FLOWERS / name).glob("*.jpg"))
        out[name] = [Image.open(files[i]).convert("RGB")
                     for i in rng.choice(len(files), 8, replace=False)]
    return out


def _extract(data, cache):
    from pipeline.extract.run import run_extraction

    return run_extraction({"data": str(data), "backbone": "mobilenet",
                           "weights": str(MOBILENET_WEIGHTS), "input_size": 160,
                           "cache_dir": str(cache)}, progress=False, echo=lambda *_: None).path


def _main(args):
    import run_pipeline

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_pipeline.main(args)
    return code, out.getvalue().strip().splitlines()


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    truth = write_frames(root / "data", sources=_photos())
    store = _extract(root / "data", root / "cache")
    unaudited = root / "unaudited" / store.name
    unaudited.parent.mkdir()
    shutil.copy(store, unaudited)
    code, lines = _main(["audit", "--store", str(store)])
    assert code == 0
    return {"root": root, "truth": truth, "store": store, "unaudited": unaudited,
            "audit": Path(lines[-1]), "lines": lines}


def _photo_sets(truth, *id_lists):
    return [{truth[i] for i in ids} for ids in id_lists]


def test_the_default_threshold_finds_the_frames_that_cross_the_split(shape):
    from pipeline.audit.run import row_splits
    from pipeline.store.feature_store import open_store

    truth = shape["truth"]
    with open_store(shape["store"]) as store:
        ids = store.column("ids").tolist()
        splits, _ = row_splits(store, 0)
    true_pairs = {(a, b) for x, a in enumerate(ids) for y, b in enumerate(ids)
                  if x < y and truth[a] == truth[b] and splits[x] != splits[y]}
    found = {tuple(sorted((r["id_a"], r["id_b"]))) for r in read_csv(shape["audit"] /
             "duplicates.csv") if r["split_a"] != r["split_b"]}
    true_pairs = {tuple(sorted(p)) for p in true_pairs}
    recall = len(found & true_pairs) / len(true_pairs)
    summary = json.loads((shape["audit"] / "summary.json").read_text())
    print(f"\n{len(found & true_pairs)} of {len(true_pairs)} true cross-split pairs found "
          f"({recall:.0%}) at threshold {summary['thresholds']['duplicate_distance']}; "
          f"{len(found - true_pairs)} false")
    assert recall >= 0.9
    assert len(found - true_pairs) <= 0.02 * len(found)
    assert summary["thresholds"]["duplicate_adaptive"] is True
    assert any(line.startswith("duplicate threshold") and "adapted to this store" in line
               for line in shape["lines"])


def test_the_suggested_groups_are_the_photos_and_the_audit_says_how_to_use_them(shape):
    truth = shape["truth"]
    rows = read_csv(shape["audit"] / "suggested_groups.csv")
    assert [r["id"] for r in rows] == sorted(truth, key=[r["id"] for r in rows].index)
    assert len(rows) == len(truth)
    group_of_photo = {}
    for r in rows:
        group_of_photo.setdefault(truth[r["id"]], set()).add(r["group"])
    assert all(len(g) == 1 and "" not in g for g in group_of_photo.values())  # never split
    assert len({r["group"] for r in rows}) >= 20  # of 24 photos: at most a few merged
    said = [line for line in shape["lines"] if line.startswith("suggested groups:")]
    assert said and "--groups-from-audit" in said[0] and "manifest" in said[0]


def test_fit_head_without_an_audit_says_to_run_one(shape, tmp_path):
    from pipeline.fit.run import fit_head

    lines = []
    fit_head(shape["unaudited"], FAST, out_dir=tmp_path, echo=lines.append)
    note = [line for line in lines if line.startswith("note: no audit")]
    assert note and "audit --store" in note[0] and "--groups-from-audit" in note[0]


def test_exclude_leaks_leaves_no_leaking_row_and_stops_suggesting_itself(shape, tmp_path):
    from pipeline.errors import DataError
    from pipeline.evaluation.exclusions import drop_leaking_rows
    from pipeline.evaluation.splits import make_split
    from pipeline.fit.run import fit_head
    from pipeline.store.feature_store import open_store

    with open_store(shape["store"]) as store:
        ids = store.column("ids")
        split = make_split(store, 0.2, 0, 0.2)  # fit-head's default split
        (train, val, test), dropped = drop_leaking_rows(store, [split.train, split.val,
                                                                split.test])
    train_photos, held_photos = _photo_sets(shape["truth"], ids[train].tolist(),
                                            ids[np.concatenate([val, test])].tolist())
    assert dropped and not train_photos & held_photos  # no held-out row still leaks
    # Here every photo has frames in train, so nothing honest is left to validate on: said.
    lines = []
    with pytest.raises(DataError, match="--groups-from-audit"):
        fit_head(shape["store"], {**FAST, "exclude_leaks": True}, out_dir=tmp_path,
                 echo=lines.append)
    warning = [line for line in lines if "cross the splits" in line]
    assert warning and "--groups-from-audit" in warning[0]
    assert "--exclude-leaks" not in warning[0]


def test_groups_from_audit_keep_each_photo_on_one_side_and_flag_a_volatile_val(shape,
                                                                               tmp_path):
    from pipeline.fit.run import fit_head

    lines = []
    run = fit_head(shape["store"], {**FAST, "groups_from_audit": True}, out_dir=tmp_path,
                   echo=lines.append)
    val = [r["id"] for r in read_csv(run / "predictions_val.csv")]
    test = [r["id"] for r in read_csv(run / "predictions_test.csv")]
    frames = {}
    for i in shape["truth"]:
        frames.setdefault(shape["truth"][i], set()).add(i)
    for ids in (val, test):
        for photo in _photo_sets(shape["truth"], ids)[0]:
            assert frames[photo] <= set(ids)  # all ten frames of a held-out photo, none trained
    assert not any("cross the splits" in line for line in lines)
    volatile = [line for line in lines if "volatile" in line]
    assert volatile and "--cv" in volatile[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("volatile" in w for w in metrics["data_checks"]["warnings"])
    assert metrics["split"]["groups_from"].endswith("suggested_groups.csv")


def test_grid_search_takes_the_audit_groups(shape, tmp_path):
    from pipeline.search.run import run_grid_search

    lines = []
    run = run_grid_search(shape["store"], {"models": "logistic_regression", "cv": 3,
                                           "n_jobs": 1, "progress": False,
                                           "learning_curve": False, "groups_from_audit": True},
                          out_dir=tmp_path, echo=lines.append)
    folds = json.loads((run / "folds.json").read_text())
    assert "group-aware" in folds["test_how"]
    assert any(line.startswith("--groups-from-audit:") for line in lines)


def test_correct_groups_raise_no_wholesale_label_alarm(shape, tmp_path):
    truth = shape["truth"]
    data = shape["root"] / "data"
    with (tmp_path / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        for row_id, photo in truth.items():
            (tmp_path / row_id).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / row_id).symlink_to(data / row_id)
            writer.writerow([row_id, row_id.split("/")[0], photo])
    store = _extract(tmp_path / "manifest.csv", tmp_path / "cache")
    code, lines = _main(["audit", "--store", str(store)])
    assert code == 0
    issues = read_csv(Path(lines[-1]) / "label_issues.csv")
    summary = json.loads((Path(lines[-1]) / "summary.json").read_text())
    print(f"\nlabel issues on correctly labelled, correctly grouped frames: {len(issues)} of "
          f"{len(truth)}; {summary.get('label_issue_credibility')}")
    assert len(issues) <= 0.05 * len(truth)
