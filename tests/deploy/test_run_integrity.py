"""A run folder whose files were edited or swapped after the run is refused, not used.

fit-head and grid-search record a sha256 of each model file (and of the class names) in
run.json; predict and export check them, and check run.json's class names against the run's
store, before any file is extracted or built. One module-scoped project: tiny PNGs -> extract
(a small real CNN, weights file written here) -> two fit-head runs (different seeds) and one
grid-search run. Each test edits a copy of a run folder.
"""

import hashlib
import json
import shutil

import pytest

from conftest import read_csv, write_images

SIZE = 32


def _tiny_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import keras

    from pipeline.extract.backbones import BackboneSpec, register_backbone
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head
    from pipeline.search.run import run_grid_search

    register_backbone(BackboneSpec(
        name="tiny_trunk_integrity", build=_tiny_trunk, preprocess=lambda x: x / 127.5 - 1.0,
        preprocess_name="x / 127.5 - 1 (test)", input_shape=(SIZE, SIZE, 3)), overwrite=True)
    root = tmp_path_factory.mktemp("integrity")
    data = write_images(root / "pets", classes=("cat", "dog"), per_class=6, size=(24, 24))
    keras.utils.set_random_seed(0)
    weights = root / "trunk.weights.h5"
    _tiny_trunk(None, (SIZE, SIZE, 3)).save_weights(str(weights))
    store = run_extraction({"data": str(data), "backbone": "tiny_trunk_integrity",
                            "weights": str(weights), "input_size": SIZE,
                            "cache_dir": str(root / "cache"), "progress": False},
                           echo=lambda *_: None).path
    heads = [fit_head(store, {"epochs": 2, "hidden_units": (8,), "seed": seed,
                              "progress": False}, out_dir=root / "runs", echo=lambda *_: None)
             for seed in (0, 1)]
    search = run_grid_search(store, {"models": "logistic_regression", "cv": 2, "n_jobs": 1,
                                     "progress": False, "learning_curve": False},
                             out_dir=root / "runs", echo=lambda *_: None)
    return {"root": root, "data": data, "store": store, "heads": heads, "search": search}


def _copy(run, tmp_path, name="run"):
    copy = tmp_path / name
    shutil.copytree(run, copy)
    return copy


def _edit_json(path, edit):
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _refused(capsys, argv, *words):
    from run_pipeline import main

    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out[-800:]
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for word in words:
        assert word in captured.err, captured.err


def _predict_argv(run, runs, tmp_path):
    return ["predict", "--run", str(run), "--data", str(runs["data"]), "--cache-dir",
            str(tmp_path / "cache"), "--no-progress"]


def test_runs_record_digests_of_their_model_files_and_class_names(runs):
    head = json.loads((runs["heads"][0] / "run.json").read_text())
    assert head["file_sha256"] == {"head.keras": _sha256(runs["heads"][0] / "head.keras")}
    search = json.loads((runs["search"] / "run.json").read_text())
    assert search["file_sha256"] == {name: _sha256(runs["search"] / name)
                                     for name in ("best_model.skops", "best_model.json")}
    names = json.dumps(["cat", "dog"]).encode()
    assert head["class_names_sha256"] == search["class_names_sha256"] == \
        hashlib.sha256(names).hexdigest()


@pytest.mark.parametrize("older", [False, True], ids=["digests", "older run without digests"])
def test_reversed_class_names_in_run_json_are_refused_by_predict_and_export(runs, tmp_path,
                                                                           capsys, older):
    run = _copy(runs["heads"][0], tmp_path)

    def reverse(info):
        info["class_names"].reverse()
        if older:  # a run written before digests were recorded: the store still tells
            info.pop("file_sha256", None)
            info.pop("class_names_sha256", None)

    _edit_json(run / "run.json", reverse)
    _refused(capsys, _predict_argv(run, runs, tmp_path), "run.json", "class_names")
    _refused(capsys, ["export", "--run", str(run)], "run.json", "class_names")
    assert not (tmp_path / "cache").exists() and not (run / "export").exists()
    assert not list(run.glob("predictions-*.csv"))


def test_a_head_copied_from_a_sibling_run_is_refused(runs, tmp_path, capsys):
    run = _copy(runs["heads"][0], tmp_path)
    shutil.copy(runs["heads"][1] / "head.keras", run / "head.keras")
    _refused(capsys, _predict_argv(run, runs, tmp_path), "head.keras")
    _refused(capsys, ["export", "--run", str(run)], "head.keras")


def test_a_grid_search_sidecar_with_reversed_class_names_is_refused(runs, tmp_path, capsys):
    run = _copy(runs["search"], tmp_path)
    _edit_json(run / "best_model.json", lambda info: info["class_names"].reverse())
    _refused(capsys, _predict_argv(run, runs, tmp_path), "best_model.json")


def test_an_older_run_without_digests_still_predicts(runs, tmp_path, capsys):
    from run_pipeline import main

    run = _copy(runs["heads"][0], tmp_path)

    def drop(info):
        info.pop("file_sha256", None)
        info.pop("class_names_sha256", None)

    _edit_json(run / "run.json", drop)
    assert main(_predict_argv(run, runs, tmp_path)) == 0
    rows = read_csv(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rows) == 12 and {"p_cat", "p_dog"} <= set(rows[0])
