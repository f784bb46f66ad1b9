"""Temperature scaling, ECE and the learning curve: on known probabilities, and in a real
fit-head run folder (then read back by predict's loader, calibrated and raw)."""

import csv
import json

import numpy as np
import pytest


def _overconfident(n=2000, k=4, sharpen=6.0, seed=0):
    """Labels drawn from softmax(z); the head reports softmax(sharpen * z): overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    honest = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in honest])
    sharp = np.exp(sharpen * z - (sharpen * z).max(axis=1, keepdims=True))
    return sharp / sharp.sum(axis=1, keepdims=True), labels


def test_temperature_scaling_keeps_argmax_and_lowers_nll_and_ece():
    from pipeline.evaluation.calibration import (apply_temperature, expected_calibration_error,
                                                 fit_temperature, nll)

    probs, labels = _overconfident()
    t = fit_temperature(probs, labels)
    after = apply_temperature(probs, t)
    assert t == pytest.approx(6.0, rel=0.25)  # it recovers the sharpening
    assert np.array_equal(after.argmax(axis=1), probs.argmax(axis=1))
    assert nll(after, labels) < 0.5 * nll(probs, labels)
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(probs,
                                                                                       labels)
    # A calibrated head is left (almost) alone.
    assert fit_temperature(after, labels) == pytest.approx(1.0, abs=0.05)


def test_sigmoid_temperature_divides_the_logit_and_ece_counts_bins():
    from pipeline.evaluation.calibration import apply_temperature, expected_calibration_error

    p = np.array([0.01, 0.3, 0.5, 0.9, 0.999])
    two = np.column_stack([1 - p, p])
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(apply_temperature(two, 2.5)[:, 1], 1 / (1 + np.exp(-logit / 2.5)),
                               atol=1e-12)
    # Two bins: confidence 0.95 always right (gap 0.05), confidence 0.65 right half the time
    # (gap 0.15): ECE = 0.5 * 0.05 + 0.5 * 0.15.
    probs = np.array([[0.95, 0.05]] * 4 + [[0.65, 0.35]] * 4)
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.10)


def test_learning_curve_subsets_are_stratified_and_nested():
    from pipeline.evaluation.curves import learning_curve

    labels = np.repeat([0, 1, 2], [50, 30, 20])
    rows = np.arange(100)
    seen = []
    points = learning_curve(lambda r: seen.append(r) or len(r) / 100, rows, labels,
                            full_score=0.99)
    assert [p["fraction"] for p in points] == [0.1, 0.25, 0.5, 1.0]
    assert [p["n_train"] for p in points] == [10, 25, 50, 100]
    assert points[-1]["val_accuracy"] == 0.99 and len(seen) == 3
    assert np.bincount(labels[seen[0]]).tolist() == [5, 3, 2]
    assert set(seen[0]) <= set(seen[1]) <= set(seen[2])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pipeline.fit.run import fit_head
    from pipeline.store.feature_store import write_store

    root = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(0)
    n = 240
    labels = np.arange(n) % 3
    x = rng.normal(size=(n, 16)).astype(np.float32)
    x[np.arange(n), labels] += 1.2  # overlapping classes: a head trained long is overconfident
    store = write_store(root / "three.h5", x, labels, class_names=["a", "b", "c"],
                        ids=[f"r{i}" for i in range(n)])
    return fit_head(store, {"epochs": 60, "patience": 60, "hidden_units": (64,),
                            "dropout": 0.0, "l2": 0.0, "learning_rate": 3e-3,
                            "test_fraction": 0.25, "calibration_fraction": 0.2,
                            "progress": False},
                    out_dir=root / "runs", echo=lambda *_: None)


def test_fit_head_records_calibration_and_learning_curve(run):
    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["temperature"] == cal["temperature"] > 1.0  # the overfit head was overconfident
    for split in ("val", "test"):
        assert set(cal[split]) == {"ece_before", "ece_after", "nll_before", "nll_after"}
    # T comes from a calibration share of the training rows, never from the validation rows
    # that chose the epoch; figures after calibration are only given on rows that did not fit T.
    split = metrics["split"]
    assert split["n_calibration"] >= 20 and "calibration" in cal["fitted_on"]
    assert split["n_train"] + split["n_calibration"] + split["n_val"] + split["n_test"] == 240
    assert {k for k in cal if isinstance(cal[k], dict)} == {"val", "test"}
    assert cal["bounds"][0] <= cal["temperature"] <= cal["bounds"][1]
    # T minimises NLL; ECE over 15 bins on a few dozen rows is too noisy to promise a drop here
    # (the overconfident-probabilities test above checks it on 2,000 rows).
    assert all(0.0 <= cal[s][k] <= 1.0 for s in ("val", "test") for k in ("ece_before",
                                                                          "ece_after"))
    assert (run / "reliability_diagram.png").stat().st_size > 0
    with open(run / "learning_curve.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [float(r["fraction"]) for r in curve] == [0.1, 0.25, 0.5, 1.0]
    assert float(curve[-1]["val_accuracy"]) == pytest.approx(metrics["val_accuracy"])
    assert metrics["learning_curve"][0]["n_train"] < metrics["learning_curve"][-1]["n_train"]
    assert (run / "learning_curve.png").stat().st_size > 0


def test_predict_loader_applies_the_temperature_unless_told_not_to(run):
    from pipeline.deploy.prediction import load_run, read_predictions
    from pipeline.evaluation.calibration import apply_temperature
    from pipeline.fit.calibration import read_temperature
    from pipeline.store.feature_store import open_store

    info = json.loads((run / "run.json").read_text())
    recorded = read_predictions(run / "predictions_test.csv")
    with open_store(info["store"]) as store:
        index = {sid: i for i, sid in enumerate(store.column("ids"))}
        ids = sorted(recorded)
        x = store.read_rows(np.array([index[i] for i in ids]))
    expected = np.array([recorded[i] for i in ids])
    calibrated = load_run(run).predict_proba(x)
    raw = load_run(run, calibrate=False).predict_proba(x)
    np.testing.assert_allclose(calibrated, expected, atol=1e-5)  # what fit-head recorded
    np.testing.assert_allclose(apply_temperature(raw, read_temperature(run)), calibrated,
                               atol=1e-5)
    assert np.array_equal(raw.argmax(axis=1), calibrated.argmax(axis=1))  # accuracy unchanged
    assert raw.max(axis=1).mean() > calibrated.max(axis=1).mean()  # raw is the overconfident one


def test_a_calibration_share_that_cannot_be_held_out_is_named_as_such(tmp_path):
    """Class b has one training row: no calibration share can hold one out of both classes,
    and the reason must name that share, not a test set."""
    from pipeline.fit.run import fit_head
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.array([0] * 12 + [1] + [0] * 3 + [1] * 3)
    split = ["train"] * 13 + ["val"] * 6
    x = rng.normal(size=(len(labels), 4)).astype(np.float32) + labels[:, None]
    store = write_store(tmp_path / "few.h5", x, labels, class_names=["a", "b"], split=split,
                        ids=[f"r{i}" for i in range(len(labels))])
    run = fit_head(store, {"epochs": 1, "hidden_units": (4,), "calibration_fraction": 0.2,
                           "progress": False}, out_dir=tmp_path / "runs", echo=lambda *_: None)
    skipped = json.loads((run / "metrics.json").read_text())["calibration"]["skipped"]
    assert "calibration share" in skipped and "test set" not in skipped
    assert "train/val splits" not in skipped  # the store's own splits are not what failed
