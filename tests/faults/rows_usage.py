"""Fault-table rows: bad invocations of every command. Each ends the same way: exit status 2,
exactly one `error: ...` line on standard error naming the problem, and no traceback.

The rows run the CLI in-process (`run_pipeline.main`) on real files written here: tiny images,
real HDF5 stores (ours, a corrupt one, a foreign one, one of another schema version), GIFs,
videos, CSV manifests and TOML files. Nothing here builds a big model: every case must be refused
before (or instead of) the expensive work.
"""

import shutil

import h5py
import numpy as np
from PIL import Image

from conftest import write_images
from fault_case import Fault

MINIMUM_INPUT_SIZE = 16  # mobilenet needs 32: a size below the backbone's minimum


def _tiny_clip_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv3D(2, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling3D(name="gap")(x))


def build(root):
    """Every bad input of these rows, written once under `root`."""
    from pipeline.extract.backbones import BackboneSpec, get_backbone, register_backbone
    from pipeline.extract.backbones.c3d import preprocess_c3d
    from pipeline.store.feature_store import write_store

    register_backbone(BackboneSpec(
        name="tiny_clip_bad_input", kind="clip", build=_tiny_clip_net, preprocess=preprocess_c3d,
        clip_recipe=get_backbone("c3d").clip_recipe, preprocess_name="c3d (test)",
        input_shape=(16, 32, 32, 3)), overwrite=True)
    rng = np.random.default_rng(0)
    f = {"root": root, "images": write_images(root / "pets", per_class=3, size=(24, 24))}
    labels = np.arange(20) % 2
    f["store"] = write_store(root / "good.h5", rng.normal(size=(20, 4)).astype(np.float32) +
                             labels[:, None], labels, class_names=["a", "b"])
    five = np.repeat(np.arange(5), 2)  # 5 classes x 2 rows: too few for a validation split
    f["five_by_two"] = write_store(root / "five.h5", rng.normal(size=(10, 4)).astype(np.float32),
                                   five, class_names=list("abcde"))
    f["corrupt"] = root / "corrupt.h5"
    f["corrupt"].write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    f["foreign"] = root / "foreign.h5"
    with h5py.File(f["foreign"], "w") as fh:
        fh["x"] = np.zeros(3)
    f["schema99"] = root / "schema99.h5"
    shutil.copy(f["store"], f["schema99"])
    with h5py.File(f["schema99"], "a") as fh:
        fh.attrs["schema_version"] = 99
    f["typo_toml"] = root / "typo.toml"
    f["typo_toml"].write_text("[fit_head]\nhiden_units = [8]\n")
    f["bad_toml"] = root / "bad.toml"
    f["bad_toml"].write_text("[fit_head\nepochs = 2\n")
    f["grid_unknown_family"] = root / "grid.toml"
    f["grid_unknown_family"].write_text('[models.mine]\nfamily = "decision_jungle"\n')
    f["no_label_csv"] = root / "pets" / "nolabel.csv"
    f["no_label_csv"].write_text("path\ncat/cat_0.png\n")
    outside = root / "outside.png"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(outside)
    f["outside_csv"] = root / "pets" / "outside.csv"
    f["outside_csv"].write_text("path,label\ncat/cat_0.png,cat\n../outside.png,dog\n")
    f["missing_row_csv"] = root / "pets" / "missing.csv"
    f["missing_row_csv"].write_text("path,label\ncat/gone.png,cat\n")
    f["jpeg"] = root / "photo.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f["jpeg"])
    # Clips: a folder holding only GIFs of one frame, and one holding only zero-length videos.
    for label in ("a", "b"):
        one = root / "one_frame" / label / "still.gif"
        one.parent.mkdir(parents=True)
        Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(one)
        empty = root / "empty_videos" / label / "empty.mp4"
        empty.parent.mkdir(parents=True)
        empty.write_bytes(b"")
    f["not_a_run"] = root / "not_a_run"
    f["not_a_run"].mkdir()
    from pipeline.search.run import run_grid_search

    f["knn_run"] = run_grid_search(f["store"], {"models": "knn", "cv": 2, "progress": False,
                                                "n_jobs": 1}, out_dir=root / "grid",
                                   echo=lambda *_: None)  # its best model has no Keras form
    return f


CLIP = ["--backbone", "tiny_clip_bad_input", "--weights", "none", "--no-progress"]

# (case id, argv with {placeholders} filled from build(), words the error line must hold)
CASES = [Fault(*row) for row in [
    # extract
    ("extract-no-data", ["extract"], "--data"),
    ("extract-missing-data", ["extract", "--data", "{root}/nowhere"], "data not found"),
    ("extract-batch-size-negative", ["extract", "--data", "{images}", "--batch-size", "-1"],
     "--batch-size"),
    ("extract-batch-size-zero", ["extract", "--data", "{images}", "--batch-size", "0"],
     "--batch-size"),
    ("extract-batch-size-not-int", ["extract", "--data", "{images}", "--batch-size", "many"],
     "--batch-size"),
    ("extract-input-size-below-minimum-none",
     ["extract", "--data", "{images}", "--backbone", "mobilenet", "--weights", "none",
      "--input-size", str(MINIMUM_INPUT_SIZE), "--cache-dir", "{root}/c1", "--no-progress"],
     "--input-size"),
    ("extract-input-size-below-minimum-imagenet",
     ["extract", "--data", "{images}", "--backbone", "mobilenet", "--weights", "imagenet",
      "--input-size", str(MINIMUM_INPUT_SIZE), "--cache-dir", "{root}/c2", "--no-progress"],
     "--input-size"),
    ("extract-input-size-zero", ["extract", "--data", "{images}", "--input-size", "0"],
     "--input-size"),
    ("extract-unknown-backbone", ["extract", "--data", "{images}", "--backbone", "resnet5o"],
     "unknown backbone"),
    ("extract-missing-weights", ["extract", "--data", "{images}", "--weights", "{root}/w.h5"],
     "weights file not found"),
    ("extract-corrupt-weights-file",
     ["extract", "--data", "{images}", "--backbone", "mobilenet", "--weights", "{corrupt}",
      "--input-size", "32", "--cache-dir", "{root}/c6", "--no-progress"], "corrupt.h5"),
    ("extract-foreign-hdf5-as-weights",
     ["extract", "--data", "{images}", "--backbone", "mobilenet", "--weights", "{foreign}",
      "--input-size", "32", "--cache-dir", "{root}/c7", "--no-progress"], "foreign.h5"),
    ("extract-bad-choice", ["extract", "--data", "{images}", "--resize", "stretch"], "--resize"),
    ("extract-config-missing", ["extract", "--config", "{root}/none.toml"], "config file not found"),
    ("extract-manifest-missing-column", ["extract", "--data", "{no_label_csv}"], "label"),
    ("extract-manifest-path-outside", ["extract", "--data", "{outside_csv}"], "outside"),
    ("extract-manifest-file-missing", ["extract", "--data", "{missing_row_csv}"],
     "file not found"),
    ("extract-gif-of-one-frame-at-fps-0",
     ["extract", "--data", "{root}/one_frame", *CLIP, "--fps", "0", "--cache-dir", "{root}/c3"],
     "fps"),
    ("extract-only-zero-length-videos",
     ["extract", "--data", "{root}/empty_videos", *CLIP, "--cache-dir", "{root}/c4"],
     "could be decoded"),
    ("extract-frames-not-16", ["extract", "--data", "{root}/one_frame", *CLIP, "--frames", "8",
                               "--cache-dir", "{root}/c5"], "frames"),
    # info
    ("info-missing", ["info", "{root}/nothing.h5"], "not found"),
    ("info-csv-manifest", ["info", "{outside_csv}"], "not an HDF5"),
    ("info-jpeg", ["info", "{jpeg}"], "not an HDF5"),
    ("info-corrupt-h5", ["info", "{corrupt}"], "store"),
    ("info-foreign-h5", ["info", "{foreign}"], "not a feature store"),
    ("info-schema-99", ["info", "{schema99}"], "schema"),
    # fit-head
    ("fit-no-store", ["fit-head"], "--store"),
    ("fit-missing-store", ["fit-head", "--store", "{root}/nothing.h5"], "not found"),
    ("fit-corrupt-store", ["fit-head", "--store", "{corrupt}"], "store"),
    ("import-missing-vectors", ["import", "--vectors", "{corrupt}.missing.npy", "--name", "x"],
     "no such file"),
    ("vectors-corrupt-store", ["vectors", "--store", "{corrupt}", "--format", "parquet"],
     "store"),
    ("fit-foreign-hdf5", ["fit-head", "--store", "{foreign}"], "not a feature store"),
    ("fit-schema-99", ["fit-head", "--store", "{schema99}"], "schema"),
    ("fit-five-classes-two-images", ["fit-head", "--store", "{five_by_two}", "--hidden-units",
                                     "64", "--out", "{root}/runs"], "too few"),
    ("fit-batch-size-zero", ["fit-head", "--store", "{store}", "--batch-size", "0"], "batch"),
    ("fit-batch-size-negative", ["fit-head", "--store", "{store}", "--batch-size", "-1"],
     "--batch-size"),
    ("fit-unknown-activation", ["fit-head", "--store", "{store}", "--activation", "relux",
                                "--out", "{root}/runs"], "activation"),
    ("fit-unknown-optimizer", ["fit-head", "--store", "{store}", "--optimizer", "adamm",
                               "--out", "{root}/runs"], "optimizer"),
    ("fit-toml-typo", ["fit-head", "--store", "{store}", "--config", "{typo_toml}"], "hiden_units"),
    ("fit-toml-invalid", ["fit-head", "--store", "{store}", "--config", "{bad_toml}"],
     "not valid TOML"),
    ("fit-cv-one", ["fit-head", "--store", "{store}", "--cv", "1"], "cv"),
    ("fit-fraction-above-one", ["fit-head", "--store", "{store}", "--val-fraction", "1.5",
                                "--out", "{root}/runs"], "fraction"),
    # grid-search
    ("grid-no-store", ["grid-search"], "--store"),
    ("grid-unknown-family", ["grid-search", "--store", "{store}", "--grid",
                             "{grid_unknown_family}"], "decision_jungle"),
    ("grid-missing-grid", ["grid-search", "--store", "{store}", "--grid", "{root}/g.toml"],
     "grid file not found"),
    ("grid-foreign-hdf5", ["grid-search", "--store", "{foreign}"], "not a feature store"),
    ("grid-unknown-model", ["grid-search", "--store", "{store}", "--models", "nosuch"], "nosuch"),
    ("grid-bad-scoring", ["grid-search", "--store", "{store}", "--scoring", "auc"], "--scoring"),
    # predict and export
    ("predict-missing-run", ["predict", "--run", "{root}/runs/gone", "--data", "{images}"],
     "not found"),
    ("predict-not-a-run", ["predict", "--run", "{not_a_run}", "--data", "{images}"],
     "not a run folder"),
    ("predict-no-data", ["predict", "--run", "{not_a_run}"], "--data"),
    ("predict-batch-size-zero", ["predict", "--run", "{not_a_run}", "--data", "{images}",
                                 "--batch-size", "0"], "batch"),
    ("export-missing-run", ["export", "--run", "{root}/runs/gone"], "not found"),
    ("export-no-run", ["export"], "--run"),
    ("export-grid-search-without-keras-form", ["export", "--run", "{knn_run}"],
     "logistic regression or a linear SVM"),
    # the CLI itself
    ("unknown-command", ["extrakt"], "extrakt"),
    ("unknown-flag", ["fit-head", "--store", "{store}", "--epoks", "3"], "--epoks"),
]]
