"""Fault-table rows: where commands write. `--out` (and extract's `--cache-dir`) given as a file,
a folder of the user's, a folder named like a model, or a file of the user's: each ends with one
`error:` line naming the flag, or does the obviously right thing, and never deletes, overwrites
or hides what the user had.

The files are real: a tiny CNN trunk (weights written here) extracts six images into a store,
fit-head trains a 2-epoch head on it, and the rows then point the commands at the user's files.
"""

from pathlib import Path

import numpy as np

from conftest import write_images
from fault_case import Fault

SIZE = 32
USER_TEXT = "the user's own notes\n"


def _tiny_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))


def register_trunk(root: Path) -> Path:
    """Registers backbone `tiny_trunk_outputs` and writes its weights under `root`."""
    import keras

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(
        name="tiny_trunk_outputs", build=_tiny_trunk, preprocess=lambda x: x / 127.5 - 1.0,
        preprocess_name="x / 127.5 - 1 (test)", input_shape=(SIZE, SIZE, 3)), overwrite=True)
    weights = root / "trunk.weights.h5"
    if not weights.exists():
        keras.utils.set_random_seed(0)
        _tiny_trunk(None, (SIZE, SIZE, 3)).save_weights(str(weights))
    return weights


def extracted_run(root: Path) -> dict:
    """An extracted store and a fit-head run folder on it, made through the CLI."""
    from run_pipeline import main

    weights = register_trunk(root)
    data = write_images(root / "pets", classes=("cat", "dog"), per_class=6, size=(24, 24))
    assert main(["extract", "--data", str(data), "--backbone", "tiny_trunk_outputs", "--weights",
                 str(weights), "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    (store,) = (root / "cache").glob("pets-*.h5")
    assert main(["fit-head", "--store", str(store), "--out", str(root / "runs"), "--epochs", "2",
                 "--hidden-units", "8", "--no-progress"]) == 0
    (run,) = (root / "runs").iterdir()
    return {"data": data, "store": store, "run": run}


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text(USER_TEXT)
    (path / "photos").mkdir()
    (path / "photos" / "a.txt").write_text(USER_TEXT)
    return path


def build(root):
    from pipeline.store.feature_store import write_store

    f = {"root": root, **extracted_run(root)}
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    f["vectors"] = write_store(root / "vectors.h5", rng.normal(size=(20, 4)).astype(np.float32)
                               + labels[:, None], labels, class_names=["a", "b"])
    five = np.repeat(np.arange(5), 2)  # too few rows for a validation split
    f["five_by_two"] = write_store(root / "five.h5", rng.normal(size=(10, 4)).astype(np.float32),
                                   five, class_names=list("abcde"))
    f["user_dir"] = _user_folder(root / "my_folder")
    f["user_file"] = root / "my_file.txt"
    f["user_file"].write_text(USER_TEXT)
    f["user_csv"] = root / "my_table.csv"
    f["user_csv"].write_text("name,amount\nrent,1200\n")
    f["model_folder"] = _user_folder(root / "named_like.keras")
    f["user_json_dir"] = root / "exports"
    f["user_json_dir"].mkdir()
    (f["user_json_dir"] / "model.keras.json").write_text('{"mine": true}\n')
    f["older_json_dir"] = root / "older"  # a model.json of the user's, the older sidecar name
    f["older_json_dir"].mkdir()
    (f["older_json_dir"] / "model.json").write_text('{"mine": true}\n')
    return f


def _user_files_kept(*keys):
    def check(files):
        for key in keys:
            path = files[key]
            if path.is_dir():
                assert (path / "notes.txt").read_text() == USER_TEXT
                assert (path / "photos" / "a.txt").read_text() == USER_TEXT
            else:
                assert path.is_file(), path
            hidden = path.with_name(f".{path.name}.old")
            assert not hidden.exists(), f"{path} was hidden as {hidden}"
    return check


def _csv_file_kept(files):
    assert files["user_csv"].read_text() == "name,amount\nrent,1200\n"
    assert not files["user_csv"].with_name("my_table-accuracy.json").exists()


def _user_json_kept(files):
    assert (files["user_json_dir"] / "model.keras.json").read_text() == '{"mine": true}\n'
    assert not (files["user_json_dir"] / "model.keras").exists()


def _older_name_json_kept(files):
    assert (files["older_json_dir"] / "model.json").read_text() == '{"mine": true}\n'
    assert (files["older_json_dir"] / "model.keras").is_file()


def _nothing_written_here(files):
    here = Path.cwd()
    assert not (here / ".featcache-scratch").exists()
    assert not list(here.parent.glob(f"{here.name}*.json"))


def _prediction_inside_user_folder(files):
    _user_files_kept("user_dir")(files)
    assert (files["user_dir"] / "predictions-pets.csv").is_file()


def _audit_twice_replaces_its_own(files):
    folder = files["root"] / "twice.audit"
    assert (folder / "summary.json").is_file() and (folder / ".featcache-output").is_file()
    assert not any(p.name.endswith(".old") for p in files["root"].iterdir())


def _no_empty_run_folders(files):
    assert not (files["root"] / "runs" / "later").exists()


CASES = [
    Fault("outputs-audit-out-user-folder-is-kept", ["audit", "--store", "{vectors}", "--out",
                                            "{user_dir}"], "--out",
          after=_user_files_kept("user_dir")),
    Fault("outputs-audit-out-user-file-is-kept", ["audit", "--store", "{vectors}", "--out",
                                          "{user_file}"], "--out",
          after=_user_files_kept("user_file")),
    Fault("outputs-audit-out-folder-holding-the-store", ["audit", "--store", "{store}", "--out",
                                                 "{root}/cache"], "--out"),
    Fault("outputs-audit-out-first-time", ["audit", "--store", "{vectors}", "--out",
                                   "{root}/twice.audit"], status=0),
    Fault("outputs-audit-out-own-folder-replaced", ["audit", "--store", "{vectors}", "--out",
                                            "{root}/twice.audit"], status=0,
          after=_audit_twice_replaces_its_own),
    Fault("outputs-fit-out-is-a-file", ["fit-head", "--store", "{vectors}", "--out", "{user_file}",
                                "--epochs", "2"], "--out", after=_user_files_kept("user_file")),
    Fault("outputs-fit-out-below-a-file", ["fit-head", "--store", "{vectors}", "--out",
                                   "{user_file}/runs", "--epochs", "2"], "--out",
          after=_user_files_kept("user_file")),
    Fault("outputs-fit-bad-option-leaves-no-new-folder", ["fit-head", "--store", "{five_by_two}",
                                                  "--hidden-units", "64", "--out",
                                                  "{root}/runs/later"], "too few",
          after=_no_empty_run_folders),
    Fault("outputs-grid-out-is-a-file", ["grid-search", "--store", "{vectors}", "--out", "{user_file}",
                                 "--models", "knn", "--cv", "2"], "--out",
          after=_user_files_kept("user_file")),
    Fault("outputs-extract-cache-dir-is-a-file", ["extract", "--data", "{data}", "--backbone",
                                          "tiny_trunk_outputs", "--weights",
                                          "{root}/trunk.weights.h5", "--cache-dir",
                                          "{user_file}", "--no-progress"], "--cache-dir",
          after=_user_files_kept("user_file")),
    Fault("outputs-predict-out-user-csv-is-kept", ["predict", "--run", "{run}", "--data", "{data}",
                                           "--out", "{user_csv}", "--no-progress"], "--out",
          after=_csv_file_kept),
    Fault("outputs-predict-out-folder-writes-inside", ["predict", "--run", "{run}", "--data", "{data}",
                                               "--out", "{user_dir}", "--no-progress"], status=0,
          after=_prediction_inside_user_folder),
    Fault("outputs-export-out-folder-named-like-a-model", ["export", "--run", "{run}", "--out",
                                                   "{model_folder}"], "--out",
          after=_user_files_kept("model_folder")),
    Fault("outputs-export-out-beside-a-user-json", ["export", "--run", "{run}", "--out",
                                            "{user_json_dir}/model.keras"], "--out",
          after=_user_json_kept),
    Fault("outputs-export-beside-a-user-json-of-the-older-name",
          ["export", "--run", "{run}", "--out", "{older_json_dir}/model.keras", "--no-check"],
          status=0, after=_older_name_json_kept),
    Fault("outputs-export-saved-model-out-is-the-folder-you-are-in",
          ["export", "--run", "{run}", "--format", "saved_model", "--out", "."], "--out",
          after=_nothing_written_here),
]
