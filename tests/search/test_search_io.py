"""Saving and loading a grid-search best model: round trips, Keras form, and every refusal
(checksum, provenance, planted pickles, untrusted skops types, unsafe Keras files)."""

import json
import pickle

import numpy as np
import pytest

from pipeline.search import io as search_io
from pipeline.errors import StoreError
from pipeline.outputs import file_sha256
from pipeline.search.io import load_best_model, save_best_model

PROVENANCE = {"backbone": "mobilenet", "layer": "pooled", "pooling": "avg", "input_size": 224,
              "input_shape": [224, 224, 3], "preprocess": "tf", "weights": "sha256:abc",
              "reader": {"resize": "squash"}, "dtype": "float32", "precision": "float32"}
CLASSES = ["daisy", "rose", "tulip"]


def data(n=90, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(k, d)[y]
    return X.astype(np.float32), y


def saved_run(tmp_path, pipeline, X, y, class_names=CLASSES, name="run"):
    run_dir = tmp_path / name
    run_dir.mkdir()
    meta = {"store": "/stores/x.h5", "store_key": "k" * 64, "provenance": dict(PROVENANCE),
            "class_names": list(class_names)}
    search_io.write_run_json(run_dir, meta)
    pipeline.fit(X, y)
    save_best_model(run_dir, pipeline, meta, model="m", family="f", params={}, cv_mean=0.9,
                    test_score=None)
    return run_dir


def sklearn_pipeline(clf, *steps):
    from sklearn.pipeline import make_pipeline

    return make_pipeline(*steps, clf)


def test_logistic_pipeline_round_trip_and_its_keras_form(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = data()
    pipe = sklearn_pipeline(LogisticRegression(C=0.5), StandardScaler(), PCA(4, whiten=True))
    run_dir = saved_run(tmp_path, pipe, X, y)
    assert sorted(p.name for p in run_dir.iterdir()) == ["best_model.json", "best_model.skops",
                                                          "run.json"]
    model = load_best_model(run_dir, provenance=dict(PROVENANCE))
    assert model.class_names == CLASSES
    np.testing.assert_allclose(model.predict_proba(X), pipe.predict_proba(X), rtol=1e-6)
    head = model.keras_head
    np.testing.assert_allclose(head.predict(X, verbose=0), pipe.predict_proba(X), atol=1e-5)


def test_binary_linear_svm_gives_two_columns_and_a_sigmoid_head(tmp_path):
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import LinearSVC

    X, y = data(k=2)
    pipe = sklearn_pipeline(LinearSVC(), Normalizer())
    model = load_best_model(saved_run(tmp_path, pipe, X, y, class_names=["no", "yes"]))
    probs = model.predict_proba(X)
    assert probs.shape == (len(X), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), pipe.predict(X))  # softmax keeps the ranking
    head_p = model.keras_head.predict(X, verbose=0)
    assert head_p.shape == (len(X), 1)
    np.testing.assert_allclose(head_p[:, 0], probs[:, 1], atol=1e-5)


def test_rbf_svm_and_forest_load_but_have_no_keras_form(tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    X, y = data()
    for i, clf in enumerate([SVC(), RandomForestClassifier(n_estimators=5, random_state=0)]):
        model = load_best_model(saved_run(tmp_path, sklearn_pipeline(clf), X, y, name=f"r{i}"))
        assert model.predict_proba(X).shape == (len(X), 3) and model.keras_head is None
        np.testing.assert_array_equal(model.predict(X), clf.predict(X))


def test_a_class_missing_from_training_still_gets_a_column(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = data(k=2)  # labels 0 and 1 only, the store has three classes
    model = load_best_model(saved_run(tmp_path, sklearn_pipeline(LogisticRegression()), X, y))
    probs = model.predict_proba(X)
    assert probs.shape == (len(X), 3) and np.all(probs[:, 2] == 0.0)
    assert model.keras_head is None


def test_keras_head_run_saves_keras_file_and_reloads(tmp_path):
    from sklearn.preprocessing import StandardScaler

    from pipeline.search.keras_estimator import KerasHeadClassifier

    X, y = data()
    pipe = sklearn_pipeline(KerasHeadClassifier(hidden_units=(8,), epochs=3, dropout=0.0),
                            StandardScaler())
    run_dir = saved_run(tmp_path, pipe, X, y)
    sidecar = json.loads((run_dir / "best_model.json").read_text())
    assert sidecar["format"] == "skops+keras"
    assert set(sidecar["files"]) == {"best_model.skops", "best_model.keras"}
    model = load_best_model(run_dir, provenance=dict(PROVENANCE))
    np.testing.assert_allclose(model.predict_proba(X), pipe.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(model.keras_head.predict(X, verbose=0), pipe.predict_proba(X),
                               atol=1e-5)


@pytest.fixture
def logistic_run(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    return saved_run(tmp_path, sklearn_pipeline(LogisticRegression()), X, y)


def test_changed_model_file_is_refused_by_checksum(logistic_run):
    path = logistic_run / "best_model.skops"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreError, match="does not match the checksum"):
        load_best_model(logistic_run)


@pytest.mark.parametrize("field, value, named", [
    ("backbone", "resnet50", "backbone"), ("layer", "pool5", "layer"),
    ("preprocess", "caffe", "preprocess"), ("weights", "sha256:def", "weights"),
    ("input_shape", [160, 160, 3], "input_shape"), ("dtype", "float16", "dtype"),
    ("precision", "int8", "precision"), ("reader", {"resize": "center_crop"}, "reader.resize")])
def test_other_provenance_is_refused(logistic_run, field, value, named):
    with pytest.raises(StoreError, match=f"{named}: model"):
        load_best_model(logistic_run, provenance={**PROVENANCE, field: value})


def test_a_store_with_another_vector_key_is_refused(logistic_run):
    """Same recorded fields, another key (a store made by another version): refused too."""
    ours = {**PROVENANCE, "vector_key": "a" * 64}
    meta = json.loads((logistic_run / "best_model.json").read_text())
    meta["provenance"] = ours
    (logistic_run / "best_model.json").write_text(json.dumps(meta))
    load_best_model(logistic_run, provenance=dict(ours))
    with pytest.raises(StoreError, match="vector_key: model"):
        load_best_model(logistic_run, provenance={**PROVENANCE, "vector_key": "b" * 64})


def test_not_a_grid_search_folder_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a grid-search run folder"):
        load_best_model(tmp_path)


class _Planted:
    """Unpickling this runs `open(marker, "w")`: the classic pickle payload, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _point_sidecar_at(run_dir, fmt, files):
    path = run_dir / "best_model.json"
    sidecar = json.loads(path.read_text())
    sidecar["format"] = fmt
    sidecar["files"] = {name: file_sha256(run_dir / name) for name in files}
    path.write_text(json.dumps(sidecar))


def test_planted_pickles_are_never_executed(logistic_run, tmp_path):
    import joblib

    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Planted(tmp_path / "proof")))  # the payload really works...
    assert (tmp_path / "proof").exists()
    with open(logistic_run / "best_model.pkl", "wb") as fh:
        pickle.dump(_Planted(marker), fh)
    joblib.dump(_Planted(marker), logistic_run / "best_model.joblib")
    load_best_model(logistic_run)  # ...but files the sidecar does not name are ignored
    for name in ("best_model.pkl", "best_model.joblib"):
        _point_sidecar_at(logistic_run, "pickle", [name])  # a sidecar rewritten to name it
        with pytest.raises(StoreError, match="never loaded"):
            load_best_model(logistic_run)
    # A pickle under the expected name, with a matching checksum in the sidecar.
    (logistic_run / "best_model.skops").write_bytes(pickle.dumps(_Planted(marker)))
    _point_sidecar_at(logistic_run, "skops", ["best_model.skops"])
    with pytest.raises(StoreError, match="not a skops file"):
        load_best_model(logistic_run)
    assert not marker.exists()


def test_skops_file_with_an_untrusted_type_is_refused(logistic_run, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    payload = {"model": LogisticRegression().fit(X, y), "extra": _Planted(tmp_path / "pwned")}
    sio.dump(payload, logistic_run / "best_model.skops")
    _point_sidecar_at(logistic_run, "skops", ["best_model.skops"])
    with pytest.raises(StoreError, match="types outside the trusted list"):
        load_best_model(logistic_run)
    assert not (tmp_path / "pwned").exists()


def test_keras_file_with_a_lambda_is_refused_in_safe_mode(logistic_run, tmp_path):
    import keras

    inputs = keras.Input((6,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    keras.Model(inputs, outputs).save(logistic_run / "best_model.keras")
    _point_sidecar_at(logistic_run, "keras", ["best_model.keras"])
    with pytest.raises(StoreError, match="safe mode"):
        load_best_model(logistic_run)
