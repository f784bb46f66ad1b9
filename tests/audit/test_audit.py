"""`audit` on real files: photo-like PNGs with planted leaks (90% resized, JPEG q70 copies in
test/), one byte-identical copy and flipped labels, extracted by a real (test-only) Keras trunk
into a real store, audited through the CLI."""

import csv
import json
import shutil

import numpy as np
import pytest

from planted import register_thumbnail_backbone, write_planted
from conftest import read_csv


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    import run_pipeline
    from pipeline.extract.run import run_extraction

    root = tmp_path_factory.mktemp("audit")
    planted = write_planted(root / "data")
    exact_src = "train/green/green_000.png"
    shutil.copy(root / "data" / exact_src, root / "data" / "test/green/exact_copy.png")
    planted["exact"] = (exact_src, "test/green/exact_copy.png")
    register_thumbnail_backbone()
    store = run_extraction({"data": str(root / "data"), "backbone": "thumbnail_trunk",
                            "weights": "none", "layer": "grid", "pooling": "avg", "input_size": 32,
                            "resize": "squash", "batch_size": 32, "dtype": "float32",
                            "cache_dir": str(root / "cache")},
                           progress=False, echo=lambda *_: None).path
    return {"root": root, "store": store, "planted": planted, "run_pipeline": run_pipeline}


@pytest.fixture(scope="module")
def folder(audited):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = audited["run_pipeline"].main(["audit", "--store", str(audited["store"])])
    assert code == 0
    last = out.getvalue().strip().splitlines()[-1]
    from pathlib import Path

    return Path(last)


def test_audit_folder_sits_beside_the_store_and_holds_every_file(audited, folder):
    assert folder == audited["store"].with_suffix(".audit")
    for name in ("duplicates.csv", "label_issues.csv", "outliers.csv", "summary.json",
                 "report.html"):
        assert (folder / name).stat().st_size > 0, name
    with open(folder / "duplicates.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == "id_a,id_b,split_a,split_b,group_a,group_b,distance,kind"
    with open(folder / "label_issues.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == "id,split,given_label,suggested_label,score"
    with open(folder / "outliers.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == "id,split,score"


def test_planted_cross_split_copies_are_found_and_listed_first(audited, folder):
    rows = read_csv(folder / "duplicates.csv")
    pairs = {(r["id_a"], r["id_b"]): r for r in rows}
    leaks = audited["planted"]["leaks"]
    found = [pairs[p] for p in leaks if p in pairs]
    assert len(found) >= 0.9 * len(leaks), (len(found), len(leaks))
    assert all(r["split_a"] == "train" and r["split_b"] == "test" and r["kind"] == "near"
               for r in found)
    crossing = [r["split_a"] != r["split_b"] for r in rows]
    assert crossing == sorted(crossing, reverse=True)  # leaks first
    exact = pairs[audited["planted"]["exact"]]
    assert exact["kind"] == "exact" and float(exact["distance"]) < 1e-4
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cross_split_pairs"] == sum(crossing) >= len(found) + 1
    assert summary["counts"]["duplicate_pairs"] == len(rows)
    assert summary["store_key"] and summary["provenance"]["backbone"] == "thumbnail_trunk"
    data = audited["root"] / "data"
    assert summary["class_balance"] == {c: sum(1 for s in ("train", "test")
                                               for _ in (data / s / c).iterdir())
                                        for c in ("blue", "green", "red")}
    assert summary["thresholds"]["duplicate_distance"] == 0.15
    assert sum(summary["nearest_neighbour_distance"]["histogram"]["counts"]) == summary["n_rows"]


def test_flipped_labels_rank_near_the_top(audited, folder):
    ranked = [r["id"] for r in read_csv(folder / "label_issues.csv")]
    flips = audited["planted"]["flips"]
    top = ranked[:2 * len(flips)]
    assert sum(f in top for f in flips) >= len(flips) / 2, (top, flips)
    issue = next(r for r in read_csv(folder / "label_issues.csv") if r["id"] in flips)
    original = issue["id"].split("/")[1]
    assert issue["given_label"] == original and issue["suggested_label"] != original


def test_threshold_override_and_bad_threshold(audited, tmp_path, capsys):
    main = audited["run_pipeline"].main
    assert main(["audit", "--store", str(audited["store"]), "--threshold", "0.00001",
                 "--out", str(tmp_path / "strict")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "strict")
    summary = json.loads((tmp_path / "strict" / "summary.json").read_text())
    assert summary["counts"]["duplicate_pairs"] < 5
    assert summary["thresholds"]["duplicate_how"] == "given with --threshold"
    assert main(["audit", "--store", str(audited["store"]), "--threshold", "-1",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: threshold") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_block_scan_equals_brute_force():
    from pipeline.audit.neighbours import prepare_vectors, scan_neighbours

    rng = np.random.default_rng(1)
    x = rng.gamma(1.0, 1.0, size=(530, 24)).astype(np.float32)
    x[400] = x[7] * 1.001  # a near copy
    x[401] = x[8]  # an exact copy
    prepared, digests, _ = prepare_vectors(x, block_rows=100)
    scan = scan_neighbours(prepared, k=4, threshold=0.01, block_rows=64)
    centred = x - x.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    assert np.allclose(scan.knn_distance, np.sort(dist, axis=1)[:, :4], atol=1e-5)
    assert np.array_equal(scan.knn_index[:, 0], dist.argmin(axis=1))
    expected = {(int(i), int(j)) for i, j in np.argwhere(np.triu(dist <= 0.01, 1))}
    assert {(int(i), int(j)) for i, j, _ in scan.pairs} == expected == {(7, 400), (8, 401)}
    assert digests[8] == digests[401] != digests[7]
    # Scale does not matter, down to a random-weight network's ~1e-20 vectors.
    tiny, _, _ = prepare_vectors(x * np.float32(1e-20))
    tiny_scan = scan_neighbours(tiny, k=4, threshold=0.01, block_rows=64)
    assert np.allclose(tiny_scan.knn_distance, scan.knn_distance, atol=1e-4)


def test_prepared_vectors_spill_to_a_scratch_file_above_the_limit(tmp_path):
    from pipeline.audit.neighbours import CentredRows, RowFile, prepare_vectors

    x = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    small, _, _ = prepare_vectors(x)
    mapped, _, _ = prepare_vectors(x, memory_limit_mb=0, scratch=tmp_path)
    assert isinstance(mapped, CentredRows) and isinstance(mapped.rows, RowFile)
    assert isinstance(small, np.ndarray)
    assert len(list(tmp_path.glob("*.audit.f32"))) == 1
    assert np.allclose(mapped[:], small) and np.allclose(mapped[[7, 3, 7]], small[[7, 3, 7]])
    assert np.allclose(mapped[100:140], small[100:140])


def test_rows_read_from_the_scratch_file_are_centred_without_float64_copies_of_the_read(
        tmp_path):
    """The exact distances read 1 GB of rows at a time from the scratch file: centring the
    whole read in float64 held about five times that at once, which alone broke a 4 GB bound.
    numpy reports its arrays to tracemalloc, so the peak is counted, not timed."""
    import tracemalloc

    from pipeline.audit.neighbours import prepare_vectors

    x = np.random.default_rng(0).normal(size=(16384, 128)).astype(np.float32)
    small, _, _ = prepare_vectors(x)
    spilled, _, _ = prepare_vectors(x, memory_limit_mb=0, scratch=tmp_path)
    tracemalloc.start()
    try:
        read = spilled[:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.allclose(read, small, atol=1e-6)
    assert peak < 1.5 * read.nbytes, peak / read.nbytes


def test_fit_head_warns_about_audited_leaks_and_can_drop_them(audited, folder, tmp_path):
    from pipeline.fit.run import fit_head

    fast = {"epochs": 2, "patience": 2, "hidden_units": (8,), "progress": False,
            "learning_curve": False}
    summary = json.loads((folder / "summary.json").read_text())
    lines = []
    fit_head(audited["store"], fast, out_dir=tmp_path, echo=lines.append)
    warning = [line for line in lines if line.startswith("warning:") and "cross the splits" in line]
    assert len(warning) == 1 and str(folder) in warning[0]
    assert f"{summary['cross_split_pairs']} near-duplicate pair(s)" in warning[0]
    lines = []
    run = fit_head(audited["store"], {**fast, "exclude_leaks": True}, out_dir=tmp_path,
                   echo=lines.append)
    split = json.loads((run / "metrics.json").read_text())["split"]
    n_test_rows = sum(1 for _ in (audited["root"] / "data" / "test").rglob("*.*"))
    dropped = n_test_rows - split["n_test"]
    assert dropped >= len(audited["planted"]["leaks"]) + 1  # every planted copy, and the exact one
    import re

    said = re.search(r"(\d+) leaking val/test row\(s\) dropped \(audit\)", split["how"])
    assert said and int(said.group(1)) >= dropped  # test rows, plus any val rows dropped
    assert any(line.startswith("--exclude-leaks: dropped") for line in lines)
    tested = {r["id"] for r in read_csv(run / "predictions_test.csv")}
    assert not tested & {b for _, b in audited["planted"]["leaks"]}


def test_exclude_leaks_without_an_audit_is_refused(audited, tmp_path, capsys):
    copy = tmp_path / "copy.h5"
    shutil.copy(audited["store"], copy)
    code = audited["run_pipeline"].main(["fit-head", "--store", str(copy), "--exclude-leaks",
                                         "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --exclude-leaks needs a current audit")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_grid_search_drops_leaking_test_rows_and_draws_a_learning_curve(audited, folder,
                                                                         tmp_path):
    from pipeline.search.run import run_grid_search

    lines = []
    run = run_grid_search(audited["store"], {"models": "logistic_regression", "cv": 2,
                                             "n_jobs": 1, "progress": False,
                                             "exclude_leaks": True},
                          out_dir=tmp_path, echo=lines.append)
    folds = json.loads((run / "folds.json").read_text())
    assert "leaking test row(s) dropped (audit)" in folds["test_how"]
    assert any("cross the splits" in line for line in lines)
    with open(run / "learning_curve.csv", newline="") as fh:
        assert [float(r["fraction"]) for r in csv.DictReader(fh)] == [0.1, 0.25, 0.5, 1.0]
    # Its best model, cross-validated, can rank the label issues instead (audit --run).
    main = audited["run_pipeline"].main
    assert main(["audit", "--store", str(audited["store"]), "--run", str(run),
                 "--out", str(tmp_path / "by_run")]) == 0
    summary = json.loads((tmp_path / "by_run" / "summary.json").read_text())
    assert str(run) in summary["label_issues_from"]
    ranked = [r["id"] for r in read_csv(tmp_path / "by_run" / "label_issues.csv")]
    flips = audited["planted"]["flips"]
    assert sum(f in ranked[:2 * len(flips)] for f in flips) >= len(flips) / 2
    assert main(["audit", "--store", str(audited["store"]), "--run", str(tmp_path),
                 "--out", str(tmp_path / "bad")]) == 2
