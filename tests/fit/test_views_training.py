"""Stage two and augmented views: a file's views train only where the file itself trains.

Stores are written here with real HDF5 (`StoreWriter(view_rows=True)`); the views of the
validation and test files are poisoned (NaN vectors, which every checked read refuses, or an
unlabelled class), so a single read or fit of one of them fails the test. Real Keras heads,
real scikit-learn models.
"""

import json

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store.feature_store import StoreWriter, open_store

K = 2


def _views_store(path, poison: str, per_class=30, dim=8, seed=0, grouped=True):
    """2 separable classes; splits train/val/test by file; K views per file after the plain
    rows. poison: "nan" (views of val/test files are NaN: fit-head) or "label" (views of test
    files are unlabelled: grid-search, whose folds train on the val files too). Feature 0 is
    the file's number in every view of it, so a fit's rows can be traced back to files.
    grouped: pairs of files share a group; else the group column is blank."""
    rng = np.random.default_rng(seed)
    n = 2 * per_class
    labels = np.repeat([0, 1], per_class)
    x = rng.normal(0, 1, (n, dim)).astype(np.float32) + labels[:, None] * 2.0
    x[:, 0] = np.arange(n)
    split = np.array((["train"] * 20 + ["val"] * 5 + ["test"] * 5) * 2, dtype=object)
    ids = np.array([f"{'ab'[c]}/{i}.png" for c, i in zip(labels, range(n))], dtype=object)
    group = np.array([f"g{i // 2}" if grouped else "" for i in range(n)], dtype=object)
    writer = StoreWriter(path, (dim,), view_rows=True)
    cols = dict(ids=ids, split=split, group=group, stamps=np.array(["1:1"] * n, dtype=object))
    writer.append(x, labels=labels, view=np.zeros(n, np.int32), **cols)
    held = split != "train"
    for v in range(1, K + 1):
        xv = x + rng.normal(0, 0.1, x.shape).astype(np.float32)
        xv[:, 0] = x[:, 0]
        yv = labels.copy()
        if poison == "nan":
            xv[held] = np.nan
        else:
            yv[split == "test"] = -1
        writer.append(xv, labels=yv, view=np.full(n, v, np.int32), **cols)
    writer.commit("k" * 64, ["a", "b"], {"backbone": "external", "layer": "given"})
    return path, int((split == "train").sum())


def test_row_index_adds_only_the_views_of_the_rows_asked(tmp_path):
    path, _ = _views_store(tmp_path / "s.h5", "nan")
    with open_store(path) as store:
        index = store.row_index
        train = store.indices("train")
        rows = index.with_views(train)
        assert len(store) == 60 and store.n_views == K and len(rows) == len(train) * (K + 1)
        ids = store.full_column("ids")
        assert set(ids[rows]) == set(ids[train])  # every view is a view of a training file
        groups = store.full_column("group")
        assert (groups[index.plain] == groups).all()  # a view is in its file's group
        store.read_rows(rows)  # training rows and their views read fine
        with pytest.raises(StoreError, match="NaN"):  # the poison works
            store.read_rows(index.with_views(store.indices("test")))
        assert len(store.vectors) == 60  # the audit's array never holds views
        first = index.with_views(train[:3], max_view=1)
        assert first[:3].tolist() == train[:3].tolist()
        assert (index.view[first[3:]] == 1).all() and set(index.plain[first[3:]]) == set(train[:3])


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_fit_head_trains_on_views_of_training_files_only(tmp_path, noise):
    from pipeline.fit.run import fit_head

    path, n_train = _views_store(tmp_path / "s.h5", "nan")
    run = fit_head(path, {"progress": False, "epochs": 5, "hidden_units": (8,),
                          "learning_curve": False, "feature_noise": noise,
                          "feature_dropout": noise / 3},
                   out_dir=tmp_path / "runs", echo=lambda *_: None)
    metrics = json.loads((run / "metrics.json").read_text())
    n_fit = metrics["split"]["n_train"]
    assert metrics["data_checks"]["train_view_rows"] == K * n_fit
    assert n_fit + metrics["split"]["n_calibration"] == n_train
    assert metrics["split"]["n_val"] == 10 and metrics["split"]["n_test"] == 10
    import keras

    head = keras.saving.load_model(run / "head.keras")
    names = [layer.name for layer in head.layers]
    assert ("feature_noise" in names) == bool(noise)


def test_fit_head_train_views_zero_uses_the_plain_rows(tmp_path):
    from pipeline.fit.run import fit_head

    path, _ = _views_store(tmp_path / "s.h5", "nan")
    run = fit_head(path, {"progress": False, "epochs": 2, "train_views": 0},
                   out_dir=tmp_path / "runs", echo=lambda *_: None)
    assert json.loads((run / "metrics.json").read_text())["data_checks"]["train_view_rows"] == 0


def test_grid_search_fits_never_see_a_view_of_a_test_file(tmp_path, monkeypatch):
    from pipeline.deploy.prediction import load_run
    from pipeline.search import run as search_run
    from pipeline.search.run import run_grid_search

    fits = []  # (rows a fold fit trained on, rows it scored) of every cross-validation fit
    real = search_run._fit_and_score

    def recording(pipeline, params, X, y, train, val, *args, **kwargs):
        fits.append((np.asarray(train), np.asarray(val)))
        return real(pipeline, params, X, y, train, val, *args, **kwargs)

    monkeypatch.setattr(search_run, "_fit_and_score", recording)
    path, _ = _views_store(tmp_path / "s.h5", "label")
    run = run_grid_search(path, {"models": "logistic_regression", "n_jobs": 1, "cv": 3,
                                 "progress": False, "learning_curve": False},
                          out_dir=tmp_path / "runs", echo=lambda *_: None)
    # one fit on a test file's view would have learnt the unlabelled class (-1) too
    with open_store(path) as store:
        probs = load_run(run).predict_proba(store.read_rows(np.arange(60)))
    assert probs.shape == (60, 2)
    folds = json.loads((run / "folds.json").read_text())
    files = np.array([f"{'ab'[c]}/{i}.png" for c, i in zip(np.repeat([0, 1], 30), range(60))])
    assert len(folds["folds"]) == 3 and folds["test"]
    for fold in folds["folds"]:
        train, val = np.array(fold["train"]), np.array(fold["val"])
        assert len(train) and len(val)
        # the folds name plain rows (views are added to training rows at fit time only), and
        # no file is on both sides of a fold, nor in the test split
        assert max(train.max(), val.max()) < 60
        assert not set(files[train]) & set(files[val])
        assert not set(files[folds["test"]]) & (set(files[train]) | set(files[val]))
    with open_store(path) as store:
        ids, view = store.full_column("ids"), store.full_column("view")
    assert fits and {tuple(val) for _, val in fits} == {tuple(f["val"]) for f in folds["folds"]}
    for train, val in fits:  # views train, beside their own files only; none is scored
        assert (view[train] > 0).sum() == K * (view[train] == 0).sum()
        assert set(ids[train]) == set(ids[train[view[train] == 0]])
        assert (view[val] == 0).all() and not set(ids[train]) & set(ids[val])


def test_audit_label_folds_train_on_views_of_their_fit_rows_only():
    from pipeline.audit.labels import out_of_sample_probabilities

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    x = rng.normal(0, 1, (40, 4)) + labels[:, None] * 2.0
    train = np.arange(0, 40, 2)
    # one view of every row; a view of a row outside `train` carries a class the rows lack,
    # so a fit that used one would score 3 classes into 2 columns and fail
    of = np.arange(40)
    view_labels = np.where(np.isin(of, train), labels, 2)
    probs = out_of_sample_probabilities(x, labels, train, np.arange(40), folds=4, seed=0,
                                        views=(x + 0.01, view_labels, of))
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1)


def test_grid_search_keras_head_stops_early_on_whole_files(tmp_path, monkeypatch):
    """With views and no group column, the head's early-stopping rows are whole files: never
    a view of a file that trains (a view of a training photo would make early stopping watch
    the training set)."""
    from pipeline.search.keras_estimator import KerasHeadClassifier
    from pipeline.search.run import run_grid_search

    fits = []  # per fit: (files of its early-stopping rows, files of its training rows)
    real_fit = KerasHeadClassifier.fit

    def recording_fit(self, X, y, groups=None):
        real_fit(self, X, y, groups=groups)
        files = np.asarray(X)[:, 0]  # feature 0, scaled alike for every view of one file
        trained = np.setdiff1d(np.arange(len(files)), self.stop_rows_)
        fits.append((set(files[self.stop_rows_].tolist()), set(files[trained].tolist())))
        return self

    monkeypatch.setattr(KerasHeadClassifier, "fit", recording_fit)
    grid = tmp_path / "grid.toml"
    grid.write_text("[models.keras_head]\npreprocess = [\"standardize\"]\nparams = { "
                    "hidden_units = [[4]], epochs = 2, patience = 1 }\n")
    path, _ = _views_store(tmp_path / "s.h5", "label", grouped=False)
    run_grid_search(path, {"grid": str(grid), "n_jobs": 1, "cv": 2, "progress": False,
                           "learning_curve": False}, out_dir=tmp_path / "runs",
                    echo=lambda *_: None)
    assert len(fits) == 3  # two folds and the refit
    for stopping, trained in fits:
        assert stopping and trained
        assert not stopping & trained, f"{len(stopping & trained)} of {len(stopping)} " \
            "early-stopping files also train"
