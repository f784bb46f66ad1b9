"""predict and export as a user meets them: from another working directory, after the project
(data, weights, store, run folder) moved, on folders that mix loose files and subfolders or hold
a class the run never saw; and without leaving stores or lock files in the shared cache.

One module-scoped run through the CLI with relative paths: a tiny real CNN (weights file written
here) -> extract -> fit-head; then the whole project folder is moved.
"""

import json
import shutil

import numpy as np
import pytest

from conftest import write_images

SIZE = 32


def _tiny_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))


def _cli(argv, capsys):
    from run_pipeline import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A project made with relative paths, then moved to another folder."""
    import os

    import keras

    from pipeline.extract.backbones import BackboneSpec, register_backbone
    from run_pipeline import main

    register_backbone(BackboneSpec(
        name="tiny_trunk_paths", build=_tiny_trunk, preprocess=lambda x: x / 127.5 - 1.0,
        preprocess_name="x / 127.5 - 1 (test)", input_shape=(SIZE, SIZE, 3)), overwrite=True)
    base = tmp_path_factory.mktemp("paths")
    project = base / "project"
    write_images(project / "pets", classes=("cat", "dog"), per_class=6, size=(24, 24))
    keras.utils.set_random_seed(0)
    _tiny_trunk(None, (SIZE, SIZE, 3)).save_weights(str(project / "trunk.weights.h5"))
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["extract", "--data", "pets", "--backbone", "tiny_trunk_paths", "--weights",
                     "trunk.weights.h5", "--cache-dir", "cache", "--no-progress"]) == 0
        (store,) = (project / "cache").glob("pets-*.h5")
        assert main(["fit-head", "--store", str(store.relative_to(project)), "--out",
                     "cache/runs", "--epochs", "2", "--hidden-units", "8", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    (run,) = (project / "cache" / "runs").iterdir()
    shutil.move(project, base / "elsewhere")
    elsewhere = base / "elsewhere"
    return {"base": base, "root": elsewhere, "run": elsewhere / "cache" / "runs" / run.name,
            "data": elsewhere / "pets"}


def test_predict_and_export_after_the_project_moved(moved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # any working directory
    code, out, err = _cli(["predict", "--run", str(moved["run"]), "--data", str(moved["data"]),
                           "--no-progress"], capsys)
    assert code == 0, err
    csv = out.strip().splitlines()[-1]
    assert csv == str(moved["run"] / "predictions-pets.csv")
    code, out, err = _cli(["export", "--run", str(moved["run"])], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(moved["run"] / "export" / "model.keras")
    assert list(tmp_path.iterdir()) == []  # nothing written where the user stood


def test_a_weights_file_that_cannot_be_found_names_the_option(moved, tmp_path, capsys):
    hidden = tmp_path / "kept" / "trunk.weights.h5"
    hidden.parent.mkdir()
    shutil.move(moved["root"] / "trunk.weights.h5", hidden)
    try:
        for command in (["predict", "--data", str(moved["data"])], ["export"]):
            code, _, err = _cli([*command, "--run", str(moved["run"]), "--no-progress"]
                                if command[0] == "predict" else [*command, "--run",
                                                                 str(moved["run"])], capsys)
            assert code == 2 and err.count("\n") == 1
            assert "--weights FILE" in err and "weights = " in err, err
        code, out, err = _cli(["predict", "--run", str(moved["run"]), "--data",
                               str(moved["data"]), "--weights", str(hidden), "--no-progress"],
                              capsys)
        assert code == 0, err
    finally:
        shutil.move(hidden, moved["root"] / "trunk.weights.h5")


def test_loose_files_beside_a_subfolder_are_all_scored(moved, tmp_path, capsys):
    from pipeline.deploy.prediction import read_predictions

    mixed = tmp_path / "mixed"
    write_images(mixed, classes=("sub",), per_class=2, size=(24, 24))
    for source in sorted((moved["data"] / "cat").iterdir())[:3]:
        shutil.copy(source, mixed / source.name)
    code, out, err = _cli(["predict", "--run", str(moved["run"]), "--data", str(mixed),
                           "--out", str(tmp_path / "mixed.csv"), "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(read_predictions(tmp_path / "mixed.csv")) == [
        "cat_0.png", "cat_1.png", "cat_2.png", "sub/sub_0.png", "sub/sub_1.png"]


def test_labelled_folder_gets_accuracy_and_an_unseen_class_is_named(moved, tmp_path, capsys):
    labelled = tmp_path / "labelled"
    for label in ("cat", "dog"):
        shutil.copytree(moved["data"] / label, labelled / label)
    write_images(labelled, classes=("orchid",), per_class=2, size=(24, 24))
    code, out, err = _cli(["predict", "--run", str(moved["run"]), "--data", str(labelled),
                           "--out", str(tmp_path / "labelled.csv"), "--no-progress"], capsys)
    assert code == 0, err
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "orchid" in warning and "2 row(s)" in warning
    accuracy_line = next(line for line in out.splitlines() if line.startswith("accuracy "))
    report = json.loads((tmp_path / "labelled-accuracy.json").read_text())
    assert report["n_labelled"] == 12 and report["n_rows"] == 14
    assert report["unseen_classes"] == {"orchid": 2}
    assert accuracy_line.startswith(f"accuracy {report['accuracy']:.3f} on 12 labelled")
    rows = (tmp_path / "labelled.csv").read_text().splitlines()
    assert sum(1 for r in rows[1:] if r.startswith("orchid/") and r.split(",")[1] == "") == 2


def test_predict_leaves_no_stores_or_locks_in_the_cache(moved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["predict", "--run", str(moved["run"]), "--data",
                         str(moved["data"] / "dog"), "--no-progress"], capsys)
    assert code == 0, err
    assert not (tmp_path / "cache").exists()
    assert list(moved["run"].rglob("*.lock")) == []
    assert list((moved["run"] / "predict").glob("*.h5"))  # its stores live in the run folder
    assert list(moved["root"].rglob("*.lock")) == []


def test_store_lock_is_removed_on_error_and_still_excludes_a_second_holder(tmp_path):
    from pipeline.errors import StoreError
    from pipeline.store.feature_store import StoreLock

    store = tmp_path / "s.h5"
    with pytest.raises(ValueError):
        with StoreLock(store):
            assert (tmp_path / "s.h5.lock").exists()
            with pytest.raises(StoreError, match="being written by pid"):
                with StoreLock(store):
                    pass
            raise ValueError("the holder fails")
    assert not (tmp_path / "s.h5.lock").exists()
    with StoreLock(store):  # and the next holder gets it
        pass
    assert not (tmp_path / "s.h5.lock").exists()
