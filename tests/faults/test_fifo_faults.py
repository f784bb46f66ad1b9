"""A FIFO (or a device) wherever the tool reads a file a user names or can put in place: a
config or grid file, a weights file, a store, a run's files, the predictions CSV, the audit's
tables, its graph cache, an output folder's marker, a KerasHub preset's files, keras.json.

Reading a FIFO waits for a writer, so each such read would hang the command. Every case must end
with one `error:` line naming the FIFO (or, where the file is only a cache, go on without it),
never open it, and leave it in place. A watchdog thread opens the FIFO's write end whenever a
reader waits on it, so a command that does open it ends (on an empty file) and the test fails
saying so, instead of hanging.
"""

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from conftest import register_tiny_trunk, write_images

REPO = Path(__file__).resolve().parents[2]


# The watchdog runs in a process of its own: a thread would wait for the GIL, which h5py holds
# while it blocks in opening the FIFO.
_WATCHER = r"""
import errno, os, stat, sys, time
fifo, stop, report = sys.argv[1:]
while not os.path.exists(stop):
    time.sleep(0.02)
    try:
        if not stat.S_ISFIFO(os.stat(fifo).st_mode):
            break  # replaced: the test says so
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO unless a reader waits
    except OSError:
        fd = None
    if fd is None:  # a writer that waits is let go by a read end, and then has one
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        time.sleep(0.02)
        try:
            if not os.read(fd, 1 << 16):
                os.close(fd)
                continue  # end of file: no writer
        except BlockingIOError:
            pass  # a writer holds it open
    open(report, "w").close()
    os.close(fd)
"""


class FifoWatch:
    """Meanwhile, a reader or writer that opens `fifo` is let go at once (it sees an empty
    file, or a closed pipe); `opened` says whether any did."""

    def __init__(self, fifo: Path):
        self.fifo, self.opened = fifo, False
        self._signals = Path(tempfile.mkdtemp())  # not beside the FIFO: outside the user's folder
        self._stop, self._report = self._signals / "stop", self._signals / "opened"

    def __enter__(self):
        self._proc = subprocess.Popen([sys.executable, "-c", _WATCHER, str(self.fifo),
                                       str(self._stop), str(self._report)])
        return self

    def __exit__(self, *exc):
        self._stop.touch()
        self._proc.wait(timeout=30)
        self.opened = self._report.exists()
        shutil.rmtree(self._signals)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store, a fit-head run and an audit of a tiny dataset (tiny trunk, 32 px)."""
    from pipeline.audit.run import run_audit
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    root = tmp_path_factory.mktemp("fifo")
    data = write_images(root / "pets", per_class=6, size=(24, 24))
    weights = register_tiny_trunk(root / "tiny.weights.h5")
    store = run_extraction({"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
                            "input_size": 32, "cache_dir": str(root / "cache")},
                           progress=False, echo=lambda *_: None).path
    run = fit_head(store, {"epochs": 1, "hidden_units": (4,), "test_fraction": 0.0,
                           "progress": False, "learning_curve": False},
                   out_dir=root / "runs", echo=lambda *_: None)
    run_audit(store, {"folds": 2, "threshold": 2.0}, echo=lambda *_: None)
    return {"root": root, "data": data, "weights": weights, "store": Path(store), "run": run}


def _store_copy(made, tmp_path) -> Path:
    """The store and its audit folder, copied (a case may put a FIFO in the audit)."""
    store = tmp_path / made["store"].name
    shutil.copy(made["store"], store)
    shutil.copytree(made["store"].with_suffix(".audit"), store.with_suffix(".audit"))
    return store


def _run_copy(made, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    return run


def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def _config(made, tmp_path):
    pipe = _fifo(tmp_path / "head.toml")
    return pipe, ["fit-head", "--store", made["store"], "--config", pipe, "--out", tmp_path]


def _grid(made, tmp_path):
    pipe = _fifo(tmp_path / "grid.toml")
    return pipe, ["grid-search", "--store", made["store"], "--grid", pipe, "--out", tmp_path]


def _weights(made, tmp_path):
    pipe = _fifo(tmp_path / "tiny.weights.h5")
    return pipe, ["extract", "--data", made["data"], "--backbone", "tiny_trunk", "--weights",
                  pipe, "--input-size", "32", "--cache-dir", tmp_path / "cache"]


def _store(made, tmp_path):
    pipe = _fifo(tmp_path / "pets.h5")
    return pipe, ["fit-head", "--store", pipe, "--out", tmp_path]


def _info(made, tmp_path):
    pipe = _fifo(tmp_path / "pets.h5")
    return pipe, ["info", pipe]


def _run_json(made, tmp_path):
    run = _run_copy(made, tmp_path)
    return _fifo(run / "run.json"), ["predict", "--run", run, "--data", made["data"]]


def _head(made, tmp_path):
    run = _run_copy(made, tmp_path)
    return _fifo(run / "head.keras"), ["export", "--run", run, "--format", "keras"]


def _calibration(made, tmp_path):
    run = _run_copy(made, tmp_path)
    return _fifo(run / "calibration.json"), ["predict", "--run", run, "--data", made["data"],
                                             "--no-calibrate"]  # which reads the temperature


def _seen_rows(made, tmp_path):
    run = _run_copy(made, tmp_path)
    return _fifo(run / "predictions_val.csv"), ["predict", "--run", run, "--data", made["data"]]


def _predictions_out(made, tmp_path):
    pipe = _fifo(tmp_path / "p.csv")
    return pipe, ["predict", "--run", made["run"], "--data", made["data"], "--out", pipe]


def _duplicates(made, tmp_path):
    store = _store_copy(made, tmp_path)
    pipe = _fifo(store.with_suffix(".audit") / "duplicates.csv")
    return pipe, ["fit-head", "--store", store, "--exclude-leaks", "--out", tmp_path]


def _marker(made, tmp_path):
    """A FIFO under the name of the marker that makes a folder the audit's own: not ours."""
    out = tmp_path / "audit"
    out.mkdir()
    return _fifo(out / ".featcache-output"), ["audit", "--store", made["store"], "--out", out]


CASES = {"config": _config, "grid": _grid, "weights": _weights, "store": _store,
         "info": _info, "run_json": _run_json, "head": _head, "calibration": _calibration,
         "seen_rows": _seen_rows, "predictions_out": _predictions_out,
         "duplicates": _duplicates, "output_marker": _marker}


def _main(argv):
    from run_pipeline import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv] + ["--no-progress"] * (argv[0] in (
                "extract", "fit-head", "grid-search", "predict")))
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fifo_where_a_file_is_read_is_refused_unopened(made, tmp_path, case):
    pipe, argv = CASES[case](made, tmp_path)
    with FifoWatch(pipe) as watch:
        code, err = _main(argv)
    assert not watch.opened, f"the FIFO was opened: {err}"
    assert stat.S_ISFIFO(os.stat(pipe).st_mode), "the FIFO was replaced"
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert pipe.name in lines[0], lines[0]
    if case != "output_marker":  # that one says the folder holds files audit did not write
        assert "FIFO" in lines[0], lines[0]


def test_a_fifo_at_the_graph_cache_is_left_alone_and_unused(made, tmp_path):
    """The audit's neighbour graph is only a cache: a FIFO under its name is not the audit's,
    so it is neither read nor replaced, and the audit builds the graph and finishes."""
    store = _store_copy(made, tmp_path)
    graph = next(made["store"].parent.glob(f"{made['store'].stem}.neighbours-*.h5"))
    pipe = _fifo(tmp_path / graph.name)
    with FifoWatch(pipe) as watch:
        code, err = _main(["audit", "--store", store, "--out", tmp_path / "again",
                           "--folds", "2", "--threshold", "2"])
    assert not watch.opened, f"the FIFO was opened: {err}"
    assert stat.S_ISFIFO(os.stat(pipe).st_mode), "the FIFO was replaced"
    assert code == 0, err
    assert "Traceback" not in err


def test_a_fifo_in_a_preset_directory_is_refused_unopened(tmp_path):
    """A local KerasHub preset whose image_converter.json is a FIFO."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    preset = tmp_path / "dino_tiny"
    keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=0, image_shape=(28, 28, 3),
        position_embedding_shape=(28, 28, 3)).save_to_preset(str(preset))
    keras_hub.layers.DINOV2ImageConverter(image_size=(28, 28), scale=1 / 255.0,
                                          offset=0.0).save_to_preset(str(preset))
    pipe = _fifo(preset / "image_converter.json")
    data = write_images(tmp_path / "pets", per_class=2, size=(28, 28))
    with FifoWatch(pipe) as watch:
        code, err = _main(["extract", "--data", data, "--backbone", preset, "--cache-dir",
                           tmp_path / "cache"])
    assert not watch.opened, f"the FIFO was opened: {err}"
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "FIFO" in lines[0], err
    assert "image_converter.json" in lines[0], lines[0]


def test_keras_json_as_a_fifo_is_refused_before_keras_loads(made, tmp_path):
    """Keras reads $KERAS_HOME/keras.json when it is imported: a FIFO there would hang every
    command that loads Keras. A process of its own (Keras is imported here already)."""
    home = tmp_path / "keras_home"
    home.mkdir()
    pipe = _fifo(home / "keras.json")
    env = {**os.environ, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with FifoWatch(pipe) as watch:
        done = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "fit-head",
                               "--store", str(made["store"]), "--out", str(tmp_path),
                               "--no-progress"], capture_output=True, text=True, env=env,
                              timeout=300, cwd=tmp_path)
    assert not watch.opened, f"the FIFO was opened: {done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "KERAS_HOME" in lines[0] and "FIFO" in lines[0], lines[0]
