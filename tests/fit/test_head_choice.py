"""fit-head's default head is chosen by cross-validation on the training rows alone, a linear
winner is the exact logistic regression loaded into head.keras, given options train exactly
their head, and data too small for the usual shares still gets a head. Real HDF5 stores,
real Keras heads, real images where extraction is part of the promise."""

import json

import numpy as np
import pytest

from conftest import read_csv, register_tiny_trunk, write_images

QUICK = {"progress": False, "learning_curve": False}


def _store(path, x, labels, split=None, names=None):
    from pipeline.store.feature_store import write_store

    k = int(labels.max()) + 1
    return write_store(path, x.astype(np.float32), labels,
                       class_names=names or [f"c{i}" for i in range(k)],
                       ids=[f"r{i:04d}" for i in range(len(labels))], split=split)


def _blobs(n, k=3, dim=10, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.normal(size=(k, dim)) * spread
    return centres[labels] + rng.normal(size=(n, dim)), labels


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_the_choice_sees_only_the_training_rows(tmp_path):
    """Poisoned validation and test vectors (each row given another class's centre) change
    nothing in the candidates' scores; the same rows scored inside the folds would."""
    from pipeline.fit.choice import choose_head
    from pipeline.fit.options import HeadConfig
    from pipeline.fit.run import fit_head

    x, labels = _blobs(150)
    split = ["train"] * 90 + ["val"] * 30 + ["test"] * 30
    poisoned = x.copy()
    held = np.arange(90, 150)
    poisoned[held] = x[held][np.argsort((labels[held] + 1) % 3, kind="stable")] * 3.0
    runs = {}
    for name, vectors in (("clean", x), ("poisoned", poisoned)):
        lines = []
        runs[name] = fit_head(_store(tmp_path / f"{name}.h5", vectors, labels, split), QUICK,
                              out_dir=tmp_path / name, echo=lines.append)
        assert any(line.startswith("head chosen by") for line in lines)
        assert sum("<- chosen" in line for line in lines) == 1
    clean, dirty = (_metrics(runs[n])["head"]["choice"] for n in ("clean", "poisoned"))
    assert clean["candidates"] == dirty["candidates"] and clean["winner"] == dirty["winner"]
    assert clean["n_rows"] == 90
    # The poison works: scored inside the folds, the same rows move the scores.
    leaked = choose_head(lambda r: poisoned[r], labels, np.arange(120), np.arange(150).astype(str),
                         3, HeadConfig())
    assert leaked.candidates != dirty["candidates"]


def test_given_head_options_train_exactly_that_head(tmp_path):
    import keras

    from pipeline.fit.run import fit_head

    x, labels = _blobs(120)
    lines = []
    run = fit_head(_store(tmp_path / "s.h5", x, labels),
                   {**QUICK, "hidden_units": (512, 128), "l2": 0.01, "epochs": 2},
                   out_dir=tmp_path, echo=lines.append)
    assert not any(line.startswith("head chosen by") for line in lines)
    head = keras.saving.load_model(run / "head.keras", safe_mode=True)
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [512, 128, 3]
    assert all(layer.kernel_regularizer.l2 == pytest.approx(0.01) for layer in dense)
    names = [layer.name for layer in head.layers]
    assert "standardize" in names and "dropout_0" in names and "l2_normalize" not in names
    metrics = _metrics(run)
    assert metrics["head"] == {"chosen": False, "given": "by options", "solver": "adam"}
    assert metrics["epochs_run"] == 2 and "val_accuracy" in metrics


def test_a_chosen_head_trains_again_from_its_config_file(tmp_path):
    """config.toml holds the chosen head's options: given back, they train that head (no
    choice) on the same rows, and it predicts what the first one did."""
    import keras

    from pipeline.config import load_config_file
    from pipeline.fit.run import fit_head

    x, labels = _blobs(150, seed=3)
    store = _store(tmp_path / "s.h5", x, labels)
    first = fit_head(store, QUICK, out_dir=tmp_path / "a", echo=lambda *_: None)
    recorded = load_config_file(first / "config.toml", "fit_head")
    assert recorded["hidden_units"] == [] and recorded["solver"] == "lbfgs"
    lines = []
    again = fit_head(store, {"config": str(first / "config.toml")}, out_dir=tmp_path / "b",
                     echo=lines.append)
    assert _metrics(again)["head"]["chosen"] is False
    assert not any(line.startswith("head chosen by") for line in lines)
    a, b = (keras.saving.load_model(r / "head.keras").predict(x.astype(np.float32), verbose=0)
            for r in (first, again))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_solved_linear_head_is_logistic_regression_at_its_c(tmp_path):
    """The saved head gives scikit-learn's LogisticRegression probabilities at the recorded
    C, and its Keras loss (class-weighted mean cross-entropy + l2 |W|^2, l2 = 1 / (2 C n))
    is at its minimum there: the C-to-l2 mapping is exact."""
    import keras
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from pipeline.fit.run import fit_head

    x, labels = _blobs(160, k=4, dim=6, seed=5, spread=0.8)
    labels[::7] = 0  # unequal classes: the balanced weights matter
    run = fit_head(_store(tmp_path / "s.h5", x, labels, ["train"] * 120 + ["test"] * 40),
                   {**QUICK, "hidden_units": (), "l2": 0.004, "solver": "lbfgs",
                    "calibration_fraction": 0.0}, out_dir=tmp_path, echo=lambda *_: None)
    solved = _metrics(run)["head"]
    n = solved["n_rows"]
    assert n == 120 and solved["C"] == pytest.approx(1 / (2 * 0.004 * n))
    train, test = x[:120], x[120:]
    scaler = StandardScaler().fit(train)
    reference = LogisticRegression(C=solved["C"], class_weight="balanced", tol=1e-10,
                                   max_iter=10000).fit(scaler.transform(train), labels[:120])
    head = keras.saving.load_model(run / "head.keras")
    np.testing.assert_allclose(head.predict(test.astype(np.float32), verbose=0),
                               reference.predict_proba(scaler.transform(test)), atol=2e-4)
    counts = np.bincount(labels[:120])
    weights = tf.constant((120 / (4 * counts))[labels[:120]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        probs = head(train.astype(np.float32), training=False)
        loss = tf.reduce_mean(weights * keras.losses.sparse_categorical_crossentropy(
            labels[:120], probs)) + tf.add_n(head.losses)
    kernel = head.get_layer("predictions").kernel
    grad = tape.gradient(loss, kernel).numpy()
    assert np.abs(grad).max() < 1e-4 * np.abs(kernel.numpy()).max()


def test_a_few_photos_per_class_get_a_head_not_an_error(tmp_path, capsys):
    """4 photos in each of 5 classes: no test, validation or calibration share (a note each),
    folds as small as the classes allow, a head and a run folder, exit 0."""
    from pipeline.extract.run import run_extraction
    from run_pipeline import main

    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    data = write_images(tmp_path / "data", classes=("a", "b", "c", "d", "e"), per_class=4,
                        size=(36, 36))
    store = run_extraction({"data": str(data), "backbone": "tiny_trunk",
                            "weights": str(weights), "input_size": 32,
                            "cache_dir": str(tmp_path / "cache"), "progress": False},
                           echo=lambda *_: None).path
    code = main(["fit-head", "--store", str(store), "--out", str(tmp_path / "runs"),
                 "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    run = tmp_path / "runs" / out[-1].split("/")[-1]
    assert (run / "head.keras").is_file() and out[-1] == str(run)
    for share in ("test", "validation", "calibration"):
        assert sum(line.startswith(f"note: no {share} share") for line in out) == 1, share
    choice = _metrics(run)["head"]["choice"]
    assert choice["folds"] == 4 and choice["n_rows"] == 20
    score = _metrics(run)["score"]
    assert score["split"] == "cross-validation" and score["n"] == 20
    assert any("on 20 training rows" in line for line in out)


def test_a_class_with_one_row_is_refused_in_one_line(tmp_path, capsys):
    from run_pipeline import main

    x, labels = _blobs(9)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 0, 1])
    store = _store(tmp_path / "s.h5", x, labels)
    assert main(["fit-head", "--store", str(store), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 2" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
