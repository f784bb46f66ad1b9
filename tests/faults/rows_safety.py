"""Fault-table rows of hostile values: option values out of range or of the wrong kind (in a
TOML file or on the command line), run folders whose files were swapped or edited, and labels or
file names that a spreadsheet would run as formulas.

Each refused row ends with exit status 2 and one `error: ...` line naming the option or file.
"""

import numpy as np

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
    return f


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
]]
