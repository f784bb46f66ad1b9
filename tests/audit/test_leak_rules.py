"""The audit's store-adaptive rules on real stores of known geometry (written with
`write_store`): the threshold read from the store's own neighbour distances, suggested groups
as connected components, label issues kept only where the probe is credible, and fit-head's
few-group validation warning. The photo version of the same shape is test_audit_frames.py."""

import contextlib
import io
import json

import numpy as np
import pytest

from conftest import read_csv


def clustered_vectors(sources=24, frames=10, dim=256, seed=0):
    """`sources` random directions, each seen `frames` times with noise of a random size (like
    frames of one photo: some close, some farther); returns (x, source of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(sources, dim))
    scale = rng.uniform(0.25, 0.8, size=(sources * frames, 1))
    source = np.repeat(np.arange(sources), frames)
    x = centres[source] + scale * rng.normal(size=(sources * frames, dim))
    return x.astype(np.float32), source


def class_vectors(classes=20, per_class=25, dim=256, spread=0.75, seed=0):
    """A clean few-shot store through a strong backbone: `classes` random directions, each
    class `per_class` distinct photos around it (no duplicates: the closest two photos of one
    class sit at cosine distance ~0.26, other classes from ~0.78). Returns (x, class of each row)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(classes), per_class)
    x = rng.normal(size=(classes, dim))[label] + spread * rng.normal(size=(len(label), dim))
    return x.astype(np.float32), label


def _store(path, x, labels, groups=None, names=("a", "b", "c")):
    from pipeline.store.feature_store import write_store

    return write_store(path, x, labels, class_names=list(names),
                       ids=[f"img/{i:04d}.jpg" for i in range(len(x))],
                       group=None if groups is None else list(groups))


def _main(args):
    import run_pipeline

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_pipeline.main(args)
    return code, out.getvalue().strip().splitlines(), err.getvalue()


def _pair_distances(x, source):
    from pipeline.audit.neighbours import prepare_vectors

    prepared, _, _ = prepare_vectors(x)
    d = 1.0 - prepared @ prepared.T
    upper = np.triu_indices(len(x), 1)
    same = (source[:, None] == source[None, :])[upper]
    return prepared, d[upper][same], d[upper][~same]


def test_clustered_store_gets_a_threshold_between_its_clusters_and_its_distinct_rows():
    from pipeline.audit.threshold import choose_threshold

    x, source = clustered_vectors()
    prepared, within, between = _pair_distances(x, source)
    choice = choose_threshold(prepared)
    assert choice.adaptive and "adapted to this store" in choice.how
    assert np.percentile(within, 99) <= choice.value < between.min()
    assert choice.value > 0.15  # the fixed default would miss most frames here
    assert (within <= 0.15).mean() < 0.6 and (within <= choice.value).mean() >= 0.99


def test_frames_within_classes_still_adapt_when_the_rule_reads_the_labels():
    from pipeline.audit.threshold import choose_threshold

    x, source = clustered_vectors()  # 3 classes of 8 sources x 10 frames
    prepared, within, between = _pair_distances(x, source)
    choice = choose_threshold(prepared, labels=source % 3)
    assert choice.adaptive and np.percentile(within, 99) <= choice.value < between.min()
    assert choice.facts["class_sized_share"] == 0


@pytest.mark.parametrize("classes, per_class", [(20, 25), (5, 10)])
def test_tight_classes_are_not_clusters_of_near_duplicates(classes, per_class):
    from pipeline.audit.threshold import choose_threshold

    x, label = class_vectors(classes, per_class)
    prepared, within, _ = _pair_distances(x, label)
    choice = choose_threshold(prepared, labels=label)
    assert not choice.adaptive and choice.value == 0.15 < within.min()
    assert choice.facts["class_sized_share"] > 0.9 and "whole class" in choice.how


@pytest.mark.parametrize("classes, per_class", [(20, 25), (5, 10)])
def test_a_clean_few_shot_store_audits_with_no_duplicates_and_no_class_sized_groups(
        tmp_path, classes, per_class):
    x, label = class_vectors(classes, per_class)
    store = _store(tmp_path / "s.h5", x, label, names=[f"c{i}" for i in range(classes)])
    code, out, _ = _main(["audit", "--store", str(store), "--map", "none"])
    assert code == 0 and out[-1] == str(tmp_path / "s.audit")
    summary = json.loads((tmp_path / "s.audit" / "summary.json").read_text())
    assert summary["thresholds"]["duplicate_distance"] == 0.15
    assert summary["counts"]["duplicate_pairs"] == 0 and summary["cross_split_pairs"] == 0
    assert summary["suggested_groups"]["groups"] == 0
    assert not read_csv(tmp_path / "s.audit" / "duplicates.csv")


def test_classes_tighter_than_the_default_are_not_listed_as_near_duplicates(tmp_path):
    # Distinct photos of each class sit ~0.04-0.06 apart, under the fixed 0.15: the classes'
    # own nearest neighbours set the threshold, and one planted copy is still found.
    x, label = class_vectors(20, 25, spread=0.25)
    x[1] = x[0] + 1e-3 * np.random.default_rng(5).normal(size=x.shape[1]).astype(np.float32)
    prepared, within, _ = _pair_distances(x, label)
    assert np.percentile(within, 99) < 0.15
    store = _store(tmp_path / "s.h5", x, label, names=[f"c{i}" for i in range(20)])
    code, out, _ = _main(["audit", "--store", str(store), "--map", "none"])
    assert code == 0
    summary = json.loads((tmp_path / "s.audit" / "summary.json").read_text())
    assert summary["thresholds"]["duplicate_distance"] < np.sort(within)[1]
    assert summary["counts"]["duplicate_pairs"] == 1
    assert summary["suggested_groups"]["groups"] == 1
    assert {r["id_a"] for r in read_csv(tmp_path / "s.audit" / "duplicates.csv")} <= {
        "img/0000.jpg", "img/0001.jpg"}


def test_exclude_leaks_and_groups_from_audit_work_on_a_clean_few_shot_store(tmp_path):
    from pipeline.fit.run import fit_head

    x, label = class_vectors(5, 10)
    store = _store(tmp_path / "s.h5", x, label, names=[f"c{i}" for i in range(5)])
    assert _main(["audit", "--store", str(store), "--map", "none"])[0] == 0
    fast = {"epochs": 2, "hidden_units": (), "progress": False, "learning_curve": False}
    for flag in ("exclude_leaks", "groups_from_audit"):
        run = fit_head(store, {**fast, flag: True}, out_dir=tmp_path / flag, echo=lambda *_: None)
        split = json.loads((run / "metrics.json").read_text())["split"]
        assert split["n_val"] > 0 and split["n_test"] > 0, (flag, split)
        assert len(read_csv(run / "predictions_test.csv")) == split["n_test"]


def test_clean_store_keeps_the_calibrated_default():
    from pipeline.audit.neighbours import prepare_vectors
    from pipeline.audit.threshold import choose_threshold

    x = np.random.default_rng(1).normal(size=(800, 256)).astype(np.float32)
    choice = choose_threshold(prepare_vectors(x)[0])
    assert not choice.adaptive and choice.value == 0.15
    assert "calibrated default" in choice.how and choice.facts["clustered_share"] < 0.05


def test_a_given_threshold_is_used_as_given():
    from pipeline.audit.threshold import choose_threshold

    x, _ = clustered_vectors(sources=4, frames=3, dim=16)
    choice = choose_threshold(x, 0.3)
    assert (choice.value, choice.how, choice.adaptive) == (0.3, "given with --threshold", False)


def test_components_follow_chains_and_keep_store_groups_whole():
    from pipeline.audit.groups import suggested_groups
    from pipeline.store.row_index import RowIndex

    pairs = np.array([[0, 1, 0.1], [1, 2, 0.1], [5, 7, 0.2], [3, 8, 0.1]])  # 0-1-2: a chain
    column = np.array(["", "", "", "", "v1", "", "v2", "v1", ""], dtype=object)  # 4, 7: one group
    groups = RowIndex([f"r{i}" for i in range(9)], np.zeros(9), column).group
    names, sizes = suggested_groups(9, pairs, groups)
    assert names[0] == names[1] == names[2] != ""
    assert names[4] == names[5] == names[7] != "" and names[4] != names[0]
    assert names[6] == "" and sizes.tolist() == [3, 3, 3, 2, 3, 3, 1, 3, 2]
    assert (names[0], names[4], names[3]) == ("dup00001", "dup00002", "dup00003")  # by size


def test_components_of_a_million_rows_need_no_dense_matrix():
    from pipeline.audit.groups import suggested_groups

    n = 1_000_000
    pairs = np.column_stack([np.arange(0, n - 1, 2), np.arange(1, n, 2), np.zeros(n // 2)])
    names, sizes = suggested_groups(n, pairs, np.arange(n))
    assert (sizes == 2).all() and len(set(names[:1000].tolist())) == 500


def test_label_issues_are_shown_only_where_the_probe_is_credible():
    from pipeline.audit.labels import credible_issues, rank_label_issues

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    # A weak probe: right about half the time, never sure; cleanlab still flags many rows.
    weak = rng.dirichlet(np.ones(3), 600)
    weak[np.arange(600), labels] += 0.3
    weak /= weak.sum(axis=1, keepdims=True)
    issues = rank_label_issues(labels, weak)
    shown, facts = credible_issues(issues, labels, weak)
    assert len(issues["rows"]) > 30 and len(shown["rows"]) <= 0.05 * 600
    # A strong probe (sure and right on clean rows) sees 20 flipped labels: they are shown.
    flipped = labels.copy()
    flips = rng.choice(600, 20, replace=False)
    flipped[flips] = (labels[flips] + 1) % 3
    strong = np.full((600, 3), 0.02)
    strong[np.arange(600), labels] = 0.96
    shown, facts = credible_issues(rank_label_issues(flipped, strong), flipped, strong)
    assert set(flips) <= set(shown["rows"].tolist()) and facts["confidence_floor"] <= 0.96


def test_audit_cli_writes_suggested_groups_and_the_rule(tmp_path):
    x, source = clustered_vectors()
    store = _store(tmp_path / "s.h5", x, source % 3)
    code, out, _ = _main(["audit", "--store", str(store)])
    assert code == 0
    folder = tmp_path / "s.audit"
    assert out[-1] == str(folder)
    rows = read_csv(folder / "suggested_groups.csv")
    assert list(rows[0]) == ["id", "group", "size"] and len(rows) == len(x)
    by_source = {}
    for r, s in zip(rows, source):
        by_source.setdefault(int(s), set()).add(r["group"])
    assert all(len(g) == 1 and "" not in g for g in by_source.values())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["thresholds"]["duplicate_adaptive"] is True
    assert summary["suggested_groups"]["groups"] == 24
    assert summary["thresholds"]["duplicate_rule"]["clustered_share"] > 0.5


def test_bad_threshold_and_groups_from_audit_without_an_audit_are_refused(tmp_path):
    x, source = clustered_vectors(sources=6, frames=5, dim=32)
    store = _store(tmp_path / "s.h5", x, source % 3)
    with pytest.raises(SystemExit) as exited:  # refused by the flag parser itself
        _main(["audit", "--store", str(store), "--threshold", "wide"])
    assert exited.value.code == 2
    code, out, err = _main(["audit", "--store", str(store), "--threshold", "3"])
    assert code == 2 and err.startswith("error: threshold") and err.count("\n") == 1
    for command in ("fit-head", "grid-search"):
        code, out, err = _main([command, "--store", str(store), "--groups-from-audit",
                                "--out", str(tmp_path / "runs")])
        assert code == 2 and err.startswith("error: --groups-from-audit needs a current audit")
        assert "run_pipeline.py audit" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_fit_head_flags_a_validation_set_of_few_groups_as_volatile(tmp_path):
    from pipeline.fit.run import fit_head

    rng = np.random.default_rng(0)
    groups = np.repeat([f"src{i}" for i in range(30)], 10)  # 30 sources of 10 rows
    labels = np.repeat(np.arange(30) % 3, 10)
    x = rng.normal(size=(300, 16)).astype(np.float32) + labels[:, None]
    store = _store(tmp_path / "g.h5", x, labels, groups)
    lines = []
    run = fit_head(store, {"epochs": 2, "hidden_units": (), "progress": False,
                           "learning_curve": False}, out_dir=tmp_path, echo=lines.append)
    volatile = [line for line in lines if "volatile" in line]
    assert len(volatile) == 1 and "--cv" in volatile[0] and "group(s)" in volatile[0]
    split = json.loads((run / "metrics.json").read_text())["split"]
    n_val = split["n_val"]
    assert split["groups_from"] == "the store"
    assert f"{n_val} row(s)" in volatile[0]


@pytest.mark.parametrize("n_sources", [40])
def test_many_sources_in_validation_are_not_volatile(tmp_path, n_sources):
    from pipeline.evaluation.checks import volatile_groups_warning

    groups = np.repeat(np.arange(n_sources), 3).astype(object)
    assert volatile_groups_warning(groups, np.arange(len(groups))) == []
    assert volatile_groups_warning(groups, np.arange(15))  # 5 sources


def test_a_few_copies_among_distinct_rows_stop_where_distinct_rows_meet():
    from pipeline.audit.threshold import adaptive_threshold

    # 100 rows with 3 copies each (0.05 away, then distinct rows from 0.9), 400 distinct rows
    # whose nearest neighbours start at 0.18: the cut may not reach into those.
    clustered = np.hstack([np.full((100, 3), 0.05), np.linspace(0.9, 1.2, 61)[None].repeat(100, 0)])
    distinct = np.linspace(0.18, 1.1, 64)[None].repeat(400, 0)
    choice = adaptive_threshold(np.vstack([clustered, distinct]), pair_median=1.0)
    assert choice.adaptive and choice.facts["clustered_share"] == 0.2
    assert choice.value == pytest.approx(0.18) and "capped" in choice.how
    uncapped = adaptive_threshold(clustered, pair_median=1.0)  # copies only: the geometric mean
    assert uncapped.value == pytest.approx(np.sqrt(0.05 * 0.9), abs=1e-3)
