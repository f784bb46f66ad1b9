"""Fault-table rows of hostile values: option values out of range or of the wrong kind (in a
TOML file or on the command line), run folders whose files were swapped or edited, and labels or
file names that a spreadsheet would run as formulas.

Each refused row ends with exit status 2 and one `error: ...` line naming the option or file.
"""

import json
import shutil
import zipfile

import h5py
import numpy as np

from conftest import register_tiny_trunk, write_images
from fault_case import Fault


def _toml(root, name, text: str, raw: bytes | None = None):
    path = root / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def build(root):
    """The files of these rows, written once under `root`."""
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    f = {"root": root}
    f["store"] = write_store(root / "good.h5", rng.normal(size=(20, 4)).astype(np.float32) +
                             labels[:, None], labels, class_names=["a", "b"])
    f["epochs_inf"] = _toml(root, "epochs_inf.toml", "[fit_head]\nepochs = inf\n")
    f["lr_nan"] = _toml(root, "lr_nan.toml", "[fit_head]\nlearning_rate = nan\n")
    f["hidden_zero"] = _toml(root, "hidden_zero.toml", "[fit_head]\nhidden_units = [0]\n")
    f["hidden_fraction"] = _toml(root, "hidden_fraction.toml",
                                 "[fit_head]\nhidden_units = [8.5]\n")
    f["dropout_big"] = _toml(root, "dropout_big.toml", "[fit_head]\ndropout = 1.5\n")
    f["epochs_float"] = _toml(root, "epochs_float.toml", "[fit_head]\nepochs = 2.9\n")
    f["not_utf8"] = _toml(root, "latin1.toml", "",
                          raw="[fit_head]\n# caf\xe9\nepochs = 2\n".encode("latin-1"))
    f["grid_cv_float"] = _toml(root, "grid_cv.toml", "[grid_search]\ncv = 2.5\n")
    f["audit_neighbours_inf"] = _toml(root, "audit_inf.toml", "[audit]\nmemory_limit_mb = inf\n")
    _swapped_runs(root, f)
    _swapped_grid_runs(root, f)
    return f


def _swapped_runs(root, f):
    """A real fit-head run (tiny trunk, one epoch) and copies of it with one file swapped."""
    import keras

    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    f["images"] = write_images(root / "pets", per_class=6, size=(24, 24))
    weights = register_tiny_trunk(root / "tiny.weights.h5")
    store = run_extraction({"data": str(f["images"]), "backbone": "tiny_trunk",
                            "weights": str(weights), "input_size": 32,
                            "cache_dir": str(root / "cache")}, progress=False,
                           echo=lambda *_: None).path
    f["head_run"] = fit_head(store, {"epochs": 1, "hidden_units": (4,), "test_fraction": 0.0,
                                     "progress": False, "learning_curve": False,
                                     "calibration_fraction": 0.0},
                             out_dir=root / "runs", echo=lambda *_: None)

    def copy(name):
        target = root / "swapped" / name
        shutil.copytree(f["head_run"], target)
        f[name] = target
        return target

    inputs = keras.Input(shape=(4,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    lam.save(copy("lambda_run") / "head.keras")
    with h5py.File(copy("hdf5_run") / "head.keras", "w") as fh:
        fh["x"] = np.zeros(3)
    original = f["head_run"] / "head.keras"
    with zipfile.ZipFile(original) as zin, \
            zipfile.ZipFile(copy("os_system_run") / "head.keras", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = config["config"]["layers"][-1]
                layer.update(module="os", class_name="system", registered_name=None)
                layer["config"] = {"command": "touch " + str(root / "pwned")}
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    for name, edit in (("other_backbone_run", _other_backbone), ("list_run_json", _a_list),
                       ("no_class_names_run", _no_class_names),
                       ("wrong_class_count_run", _three_classes)):
        path = copy(name) / "run.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    (copy("latin1_run_json") / "run.json").write_bytes('{"kind": "keras_head", "caf\xe9": 1}'
                                                       .encode("latin-1"))


def _swapped_grid_runs(root, f):
    """A real grid-search run (logistic regression) and copies with an edited sidecar."""
    from pipeline.search.run import run_grid_search

    f["grid_run"] = run_grid_search(f["store"], {"models": "logistic_regression", "cv": 2,
                                                 "progress": False, "n_jobs": 1,
                                                 "learning_curve": False},
                                    out_dir=root / "grid", echo=lambda *_: None)
    for name, edit in (("sidecar_without_classes", lambda d: {**d, "class_names": None}),
                       ("sidecar_a_list", lambda d: [d])):
        target = root / "swapped_grid" / name
        shutil.copytree(f["grid_run"], target)
        sidecar = target / "best_model.json"
        sidecar.write_text(json.dumps(edit(json.loads(sidecar.read_text()))))
        f[name] = target


def _untouched(name):
    """After a refusal: the swapped folder is as it was, nothing in it ran, nothing exported."""
    def check(f):
        assert (f[name] / "head.keras").is_file() and (f[name] / "run.json").is_file()
        assert not (f["root"] / "pwned").exists()
        assert not (f["root"] / "export").exists()
    return check


def _other_backbone(info):
    info["provenance"]["extract_options"]["backbone"] = "mobilenet"
    info["provenance"]["backbone"] = "mobilenet"
    return info


def _a_list(info):
    return [info]


def _no_class_names(info):
    info.pop("class_names")
    return info


def _three_classes(info):
    info["class_names"] = ["cat", "dog", "=cmd|x"]
    return info


FIT = ["fit-head", "--store", "{store}", "--out", "{root}/runs", "--no-progress",
       "--no-learning-curve", "--epochs", "1"]
FIT_FILE = ["fit-head", "--store", "{store}", "--out", "{root}/runs", "--no-progress",
            "--no-learning-curve", "--config"]

CASES = [Fault(*row) for row in [
    # option values: ranges, finiteness and integer-ness, checked once by the Option tables
    ("safety-fit-epochs-inf-in-toml", [*FIT_FILE, "{epochs_inf}"], "epochs"),
    ("safety-fit-learning-rate-nan-in-toml", [*FIT_FILE, "{lr_nan}"], "learning_rate"),
    ("safety-fit-learning-rate-nan-flag", [*FIT, "--learning-rate", "nan"], "--learning-rate"),
    ("safety-fit-learning-rate-zero", [*FIT, "--learning-rate", "0"], "--learning-rate"),
    ("safety-fit-hidden-units-zero", [*FIT_FILE, "{hidden_zero}"], "hidden_units"),
    ("safety-fit-hidden-units-negative-flag", [*FIT, "--hidden-units", "8,-1"],
     "--hidden-units"),
    ("safety-fit-hidden-units-fraction", [*FIT_FILE, "{hidden_fraction}"], "hidden_units"),
    ("safety-fit-dropout-above-one", [*FIT_FILE, "{dropout_big}"], "dropout"),
    ("safety-fit-epochs-fraction-in-toml", [*FIT_FILE, "{epochs_float}"], "epochs"),
    ("safety-fit-toml-not-utf8", [*FIT_FILE, "{not_utf8}"], "UTF-8"),
    ("safety-fit-l2-negative", [*FIT, "--l2", "-0.5"], "--l2"),
    ("safety-fit-min-delta-inf", [*FIT, "--min-delta", "inf"], "--min-delta"),
    ("safety-fit-val-fraction-nan", [*FIT, "--val-fraction", "nan"], "--val-fraction"),
    ("safety-grid-time-budget-nan", ["grid-search", "--store", "{store}", "--time-budget", "nan",
                                     "--out", "{root}/runs", "--no-progress"], "--time-budget"),
    ("safety-grid-cv-fraction-in-toml", ["grid-search", "--store", "{store}", "--config",
                                         "{grid_cv_float}", "--out", "{root}/runs",
                                         "--no-progress"], "cv"),
    ("safety-grid-test-fraction-one", ["grid-search", "--store", "{store}", "--test-fraction",
                                       "1", "--out", "{root}/runs"], "--test-fraction"),
    ("safety-audit-threshold-nan", ["audit", "--store", "{store}", "--threshold", "nan",
                                    "--out", "{root}/audit"], "--threshold"),
    ("safety-audit-memory-limit-inf-in-toml", ["audit", "--store", "{store}", "--config",
                                               "{audit_neighbours_inf}", "--out",
                                               "{root}/audit"], "memory_limit_mb"),
]] + [
    # run folders with a swapped or edited file: predict, export and audit --run refuse them
    Fault(f"safety-{command}-{name.replace('_', '-')}", argv, words, after=_untouched(name))
    for name, words in (("lambda_run", "head.keras"), ("hdf5_run", "head.keras"),
                        ("os_system_run", "head.keras"), ("other_backbone_run", "run.json"),
                        ("list_run_json", "run.json"), ("no_class_names_run", "run.json"),
                        ("wrong_class_count_run", "run.json"))
    for command, argv in (
        ("predict", ["predict", "--run", "{%s}" % name, "--data", "{images}", "--no-progress"]),
        ("export", ["export", "--run", "{%s}" % name, "--out", "{root}/export/%s.keras" % name]))
] + [
    Fault("safety-predict-run-json-not-utf8", ["predict", "--run", "{latin1_run_json}",
                                               "--data", "{images}"], "run.json"),
    Fault("safety-audit-run-sidecar-without-class-names",
          ["audit", "--store", "{store}", "--run", "{sidecar_without_classes}", "--out",
           "{root}/audit3"], "best_model.json"),
    Fault("safety-audit-run-sidecar-a-list",
          ["audit", "--store", "{store}", "--run", "{sidecar_a_list}", "--out",
           "{root}/audit4"], "best_model.json"),
    Fault("safety-audit-run-is-a-fit-head-run", ["audit", "--store", "{store}", "--run",
                                                 "{head_run}", "--out", "{root}/audit2"],
          "grid-search"),
]
