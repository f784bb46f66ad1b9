"""fit-head tells the truth about its splits and scores: ungrouped rows, exact holdout shares,
cross-validation scored on rows that chose nothing, messages that name the fix, tiny-data and
copied-row warnings, and the group column in every per-row CSV. Real stores, real small heads."""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError, DataError
from conftest import read_csv

FAST = {"epochs": 4, "patience": 2, "hidden_units": (8,), "progress": False,
        # These tests look at the train/val split alone: no test or calibration share.
        "test_fraction": 0.0, "calibration_fraction": 0.0}


def _store(path, n_classes=2, n=100, dim=8, groups=None, split=None, seed=0, x=None):
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    if x is None:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[np.arange(n), labels] += 2.5
    return write_store(path, x, labels, class_names=[f"class{i}" for i in range(n_classes)],
                       ids=[f"s{i:04d}" for i in range(n)], group=groups, split=split)


def _fit(store, tmp_path, **opts):
    from pipeline.fit.run import fit_head

    lines = []
    run = fit_head(store, {**FAST, **opts}, out_dir=tmp_path / "runs", echo=lines.append)
    return run, json.loads((run / "metrics.json").read_text()), lines


def test_rows_without_a_group_are_groups_of_their_own(tmp_path):
    # 80 ungrouped rows and 4 videos of 5 frames: "20% validation" must be about 20 rows, not
    # the 6 or 80 that one giant group "" gives.
    groups = [""] * 80 + [f"video{i // 5}" for i in range(20)]
    run, metrics, lines = _fit(_store(tmp_path / "mixed.h5", groups=groups), tmp_path)
    assert 18 <= metrics["split"]["n_val"] <= 22
    assert metrics["split"]["rows_without_group"] == 80
    assert any("80 of 100 rows have no group" in line for line in lines)
    val = read_csv(run / "predictions_val.csv")
    train_groups = {groups[i] for i in range(100)} - {groups[int(r["id"][1:])] for r in val}
    assert not ({r["group"] for r in val} - {""}) & train_groups  # videos stay whole


@pytest.mark.parametrize("fraction", [0.2, 0.4])
def test_group_holdout_share_is_the_asked_fraction(fraction):
    from pipeline.evaluation.splits import holdout

    n = 400  # 100 groups of 4 rows, two classes
    labels = np.repeat(np.arange(100) % 2, 4)
    groups = np.array([f"g{i // 4}" for i in range(n)], dtype=object)
    kept, held = holdout(np.arange(n), labels, groups, fraction, seed=3)
    assert len(held) == round(fraction * n)  # 0.4 means 40%, not 50%
    assert not set(groups[kept]) & set(groups[held])
    assert np.bincount(labels[held]).tolist() == [len(held) // 2] * 2  # still stratified


def test_too_few_groups_names_the_fraction_that_works(tmp_path, capsys):
    from run_pipeline import main

    store = _store(tmp_path / "four.h5", n=40, groups=[f"g{i % 4}" for i in range(40)])
    config = tmp_path / "head.toml"
    # a head given by options (a chosen one would train without a validation share)
    config.write_text("[fit_head]\nhidden_units = [8]\nepochs = 2\nprogress = false\n"
                      "test_fraction = 0.0\n")
    code = main(["fit-head", "--store", str(store), "--out", str(tmp_path / "runs"),
                 "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "only 4 distinct groups" in err and "--val-fraction 0.5" in err
    assert f"val_fraction = 0.5 in {config}" in err and "explicit" in err
    from pipeline.fit.run import fit_head

    run = fit_head(store, {**FAST, "val_fraction": 0.5}, out_dir=tmp_path / "runs",
                   echo=lambda *_: None)  # the fix it named works
    assert json.loads((run / "metrics.json").read_text())["split"]["n_val"] == 20


def test_too_few_rows_per_class_says_how_many_are_needed(tmp_path):
    from pipeline.fit.run import fit_head

    store = _store(tmp_path / "tiny.h5", n_classes=5, n=10)
    with pytest.raises(DataError) as info:
        fit_head(store, FAST, out_dir=tmp_path / "runs", echo=lambda *_: None)
    text = str(info.value)
    assert "each class needs about 5 rows" in text and "--val-fraction 0.2" in text
    assert "--val-fraction 0.5" in text  # the share at which 10 rows do work


def test_cross_validation_scores_come_from_rows_that_chose_nothing(tmp_path):
    groups = [f"v{i // 4}" for i in range(120)]
    run, metrics, lines = _fit(_store(tmp_path / "cv.h5", n=120, groups=groups), tmp_path, cv=3)
    cv = metrics["cross_validation"]
    table = read_csv(run / "cv_folds.csv")
    assert len(table) == 120 and {r["group"] for r in table} == set(groups)
    for fold in (1, 2, 3):
        roles = {role: {r["id"] for r in table if r[f"fold{fold}"] == role}
                 for role in ("train", "stop", "scored")}
        assert roles["train"] and roles["stop"] and roles["scored"]
        assert not roles["stop"] & roles["scored"] and not roles["train"] & roles["scored"]
        stop_groups = {groups[int(i[1:])] for i in roles["stop"]}
        assert not stop_groups & {groups[int(i[1:])] for i in roles["train"]}
        assert len(roles["scored"]) == cv["folds"][fold - 1]["n_val"]
    assert "took no part in training or in choosing the epoch" in cv["scored_on"]
    # The mean and spread reach the console, and the headline says which rows each figure is.
    summary = [line for line in lines if line.startswith("cross-validation: accuracy")]
    assert summary and f"{cv['val_accuracy_mean']:.4f} +/- {cv['val_accuracy_std']:.4f}" \
        in summary[0]
    assert "chose the epoch" in lines[-1] and "held-out fold rows" in lines[-1]


def test_store_split_leak_warning_says_how_to_fix_it(tmp_path):
    split = ["val" if i % 4 == 0 else "train" for i in range(80)]
    groups = [f"g{i // 8}" for i in range(80)]
    run, metrics, lines = _fit(_store(tmp_path / "leaky.h5", n=80, split=split, groups=groups),
                               tmp_path)
    warning = next(line for line in lines if line.startswith("warning: 10 group(s)"))
    assert "without its `split` column" in warning and "move each of these groups" in warning
    assert metrics["split"]["groups_in_more_than_one_split"] == 10
    assert read_csv(run / "misclassified.csv") == [] or "group" in read_csv(run / "misclassified.csv")[0]
    assert read_csv(run / "predictions_val.csv")[0]["group"] == "g0"


def test_tiny_validation_and_copied_vectors_are_said_out_loud(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[20:] = x[:20]  # every row twice: validation rows are copies of training rows
    x[np.arange(40), np.arange(40) % 2] += 2.5
    run, metrics, lines = _fit(_store(tmp_path / "copies.h5", n=40, x=x), tmp_path)
    assert metrics["split"]["n_val"] == 8
    assert any("validation has only 8 row(s)" in line for line in lines)
    copied = metrics["data_checks"]["validation_rows_copied_from_train"]
    assert copied >= 1 and any(f"{copied} validation row(s) have vectors identical" in line
                               for line in lines)
    assert len(metrics["data_checks"]["warnings"]) >= 2


def test_clean_data_gives_no_warnings(tmp_path):
    _, metrics, lines = _fit(_store(tmp_path / "clean.h5", n=200), tmp_path)
    assert not [line for line in lines if line.startswith("warning")]
    assert metrics["data_checks"]["validation_rows_copied_from_train"] == 0


def test_categorical_loss_on_two_classes_picks_a_two_unit_softmax():
    from pipeline.fit.heads import resolve_output

    spec = resolve_output(2, "auto", "categorical_crossentropy")
    assert spec.units == 2 and spec.activation == "softmax"
    with pytest.raises(ConfigError, match="sigmoid outputs"):  # explicit contradictions stay
        resolve_output(5, "sigmoid", "auto")
    with pytest.raises(ConfigError, match="--loss binary_crossentropy"):
        resolve_output(2, "sigmoid", "categorical_crossentropy")


@pytest.mark.parametrize("n_classes, flags, mistake, fix, key", [
    (2, ["--output", "softmax", "--loss", "binary_crossentropy"],
     "a 2-unit softmax trained with binary cross-entropy learns nothing useful",
     "--loss categorical_crossentropy", 'loss = "categorical_crossentropy" in'),
    (5, ["--output", "sigmoid"], "5 independent yes/no answers",
     "--output softmax", 'output = "softmax" in'),
])
def test_refusals_say_the_mistake_and_the_flag_not_the_projects_history(
        tmp_path, capsys, n_classes, flags, mistake, fix, key):
    from run_pipeline import main

    store = _store(tmp_path / "s.h5", n_classes=n_classes)
    config = tmp_path / "c.toml"
    config.write_text("[fit_head]\nepochs = 1\n")
    for extra, with_key in (([], False), (["--config", str(config)], True)):
        code = main(["fit-head", "--store", str(store), "--out", str(tmp_path / "runs"),
                     *flags, *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert mistake in err and fix in err and "seed 0" not in err
        assert (key in err) == with_key
    assert not (tmp_path / "runs").exists()


def test_default_training_ends_when_val_loss_stops_improving(tmp_path):
    # The old defaults (learning rate 1e-4, no min_delta) ran all 100 epochs here while
    # val_loss crept down by about 1e-4 an epoch.
    from pipeline.fit.options import FIT_HEAD_OPTIONS

    assert "usually" in next(o.help for o in FIT_HEAD_OPTIONS if o.name == "epochs")
    run, metrics, _ = _fit(_store(tmp_path / "plain.h5", n=300, dim=32), tmp_path,
                           epochs=100, patience=10, hidden_units=(256,))
    history = read_csv(run / "history.csv")
    best = float(history[metrics["best_epoch"] - 1]["val_loss"])
    assert metrics["epochs_run"] < 100
    # It stopped exactly --patience epochs after the last epoch that beat the best by
    # --min-delta, and no later epoch did.
    assert metrics["epochs_run"] == metrics["best_epoch"] + 10
    assert all(float(r["val_loss"]) > best - 5e-3 for r in history[metrics["best_epoch"]:])
