"""Environment variables that need a process of their own: what Keras reads as it is imported
(KERAS_BACKEND, the backend named in $KERAS_HOME/keras.json), and the tool's own variables, which
no module reads when it is imported. Each bad value is one `error:` line naming the variable or
file, exit status 2, no traceback. (The fault table, rows_environment.py, has the rows that run
in its process.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pipeline.store.feature_store import write_store

    labels = np.arange(20) % 2
    features = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32) + labels[:, None]
    return write_store(tmp_path_factory.mktemp("env") / "s.h5", features, labels,
                       class_names=["a", "b"])


def _cli(argv, tmp_path, **env) -> tuple[int, list]:
    done = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *map(str, argv)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    return done.returncode, done.stderr.strip().splitlines()


def test_an_unknown_keras_backend_is_one_line(store, tmp_path):
    code, err = _cli(["fit-head", "--store", store, "--out", tmp_path, "--no-progress"],
                     tmp_path, KERAS_BACKEND="abc")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: KERAS_BACKEND"), err
    assert "tensorflow" in err[0]  # the values it may take


def test_an_unknown_backend_in_keras_json_is_one_line(store, tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "abc", "floatx": "float32"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "fit-head", "--store",
                           str(store), "--out", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**env, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert "keras.json" in err[0] and "'abc'" in err[0], err[0]
    assert json.loads((home / "keras.json").read_text())["backend"] == "abc"  # left as it was


def test_the_tools_own_variables_are_not_read_on_import(tmp_path):
    """A bad PIPELINE_* value stops only the command that reads it: here extract refuses its
    missing data first, in its own words."""
    code, err = _cli(["extract", "--data", tmp_path / "missing", "--backbone", "mobilenet"],
                     tmp_path, PIPELINE_HUB_DOWNLOAD_SECONDS="abc", PIPELINE_JOURNAL_ROWS="abc")
    assert code == 2 and len(err) == 1 and "data not found" in err[0], err
