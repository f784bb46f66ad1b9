"""A run folder names the plugins its store was extracted with, but never picks code to import:
predict and export load a plugin only when the user passes `--plugin` (or has installed it as a
`featcache.plugins` entry point), and otherwise refuse in one line that names it.

Real modules on a temporary PYTHONPATH, run through the CLI in a process of their own: one
registers the tiny backbone the run was extracted with; the other writes a marker file when it
is imported, and a shared run folder's run.json names it as well.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRUNK_PLUGIN = "fc_fault_trunk_plugin"
MARKER_PLUGIN = "fc_fault_marker_plugin"
BACKBONE = "fc_fault_plugin_trunk"
PLUGIN_CODE = f'''
"""Registers a tiny backbone (a user's plugin)."""
import keras

from pipeline.extract.backbones import BackboneSpec, register_backbone


def build(weights, input_shape):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv",
                            kernel_initializer="ones", bias_initializer="zeros")(inputs)
    return keras.Model(inputs, x)


register_backbone(BackboneSpec(name="{BACKBONE}", build=build, preprocess=lambda x: x / 255.0,
                               preprocess_name="x/255", input_shape=(16, 16, 3)),
                  overwrite=True)
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A fit-head run extracted with the trunk plugin, and a copy whose run.json also names the
    module that writes a marker when imported."""
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    root = tmp_path_factory.mktemp("plugins")
    plugins = root / "plugins"
    plugins.mkdir()
    (plugins / f"{TRUNK_PLUGIN}.py").write_text(PLUGIN_CODE)
    marker = root / "imported.txt"
    (plugins / f"{MARKER_PLUGIN}.py").write_text(
        f"open({str(marker)!r}, 'w').write('the run folder chose this module')\n")
    sys.path.insert(0, str(plugins))
    try:
        data = write_images(root / "pets", per_class=6, size=(16, 16))
        store = run_extraction({"data": str(data), "backbone": BACKBONE, "weights": "none",
                                "plugin": TRUNK_PLUGIN, "cache_dir": str(root / "cache"),
                                "progress": False}, echo=lambda *_: None)
        run = fit_head(store, {"epochs": 1, "hidden_units": (4,), "progress": False,
                               "learning_curve": False, "test_fraction": 0.0,
                               "calibration_fraction": 0.0},
                       out_dir=root / "runs", echo=lambda *_: None)
    finally:
        sys.path.remove(str(plugins))
    shared = root / "shared_run"
    shutil.copytree(run, shared)
    info = json.loads((shared / "run.json").read_text())
    info["provenance"]["extract_options"]["plugin"] = [TRUNK_PLUGIN, MARKER_PLUGIN]
    (shared / "run.json").write_text(json.dumps(info))
    return {"root": root, "plugins": plugins, "marker": marker, "data": data, "run": run,
            "shared": shared}


def _cli(runs, *argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(runs["plugins"]), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *argv], env=env,
                          capture_output=True, text=True, timeout=300, cwd=runs["root"])


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_predict_imports_no_module_a_run_folder_names(runs):
    line = _one_error_line(_cli(runs, "predict", "--run", str(runs["shared"]), "--data",
                                str(runs["data"]), "--plugin", TRUNK_PLUGIN, "--no-progress"))
    assert MARKER_PLUGIN in line and "--plugin" in line
    assert not runs["marker"].exists()
    assert not (runs["shared"] / "predictions-pets.csv").exists()


def test_export_imports_no_module_a_run_folder_names(runs):
    out = runs["root"] / "exported" / "model.keras"
    line = _one_error_line(_cli(runs, "export", "--run", str(runs["shared"]), "--out", str(out),
                                "--plugin", TRUNK_PLUGIN))
    assert MARKER_PLUGIN in line and "--plugin" in line
    assert not runs["marker"].exists() and not out.exists()


def test_a_recorded_plugin_loads_only_when_the_user_passes_it(runs):
    line = _one_error_line(_cli(runs, "predict", "--run", str(runs["run"]), "--data",
                                str(runs["data"]), "--no-progress"))
    assert f"--plugin {TRUNK_PLUGIN}" in line
    ok = _cli(runs, "predict", "--run", str(runs["run"]), "--data", str(runs["data"]),
              "--plugin", TRUNK_PLUGIN, "--no-progress")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert Path(ok.stdout.strip().splitlines()[-1]).is_file()
    assert not runs["marker"].exists()
