"""Plugins: a module named with `--plugin` registers a backbone, and every process that builds
the extractor (this one, the engine worker, Ray actors) imports it first."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.extract.engines import installed
from pipeline.plugins import load_plugins
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = '''
"""A user's plugin: one tiny backbone."""
import keras

from pipeline.extract.backbones import BackboneSpec, register_backbone


def build(weights, input_shape):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv",
                            kernel_initializer="ones", bias_initializer="zeros")(inputs)
    return keras.Model(inputs, x)


register_backbone(BackboneSpec(name="{name}", build=build, preprocess=lambda x: x / 255.0,
                               preprocess_name="x/255", input_shape=(16, 16, 3)),
                  overwrite=True)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin module written into a folder on sys.path (not imported yet); its name."""
    name = f"featcache_test_plugin_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{name}.py").write_text(PLUGIN.format(name=f"plugin_cnn_{tmp_path.name[-6:]}"))
    monkeypatch.syspath_prepend(str(folder))
    return name, f"plugin_cnn_{tmp_path.name[-6:]}"


def _extract(tmp_path, plugin, **options):
    module, backbone = plugin
    data = write_images(tmp_path / "data", per_class=2, size=(16, 16))
    config = {"data": str(data), "backbone": backbone, "weights": "none", "plugin": module,
              "batch_size": 4, "workers": 2, "cache_dir": str(tmp_path / "cache"),
              "progress": False, **options}
    result = run_extraction(config, echo=lambda *_: None)
    with open_store(result) as store:
        return store.load()[0], store.provenance


def test_a_plugin_backbone_runs_in_the_jax_engine_worker(tmp_path, plugin):
    if not installed("jax"):
        pytest.skip("jax is not installed")
    vectors, provenance = _extract(tmp_path, plugin, engine="jax")
    assert provenance["engine"] == "jax" and provenance["backbone"] == plugin[1]
    assert vectors.shape == (4, 4) and np.abs(vectors).max() > 0  # the ones-kernel conv
    assert provenance["extract_options"]["plugin"] == [plugin[0]]  # predict loads it again


def test_a_plugin_backbone_runs_on_ray_actors(tmp_path, plugin):
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    vectors, provenance = _extract(tmp_path, plugin, engine="tensorflow", cluster="ray",
                                   actors=1, gpus_per_actor=0)
    assert provenance["backbone"] == plugin[1] and vectors.shape == (4, 4)


def test_the_cli_takes_plugins_and_a_missing_one_is_one_error_line(tmp_path, plugin):
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "plugins"), str(ROOT)]))
    data = write_images(tmp_path / "data", per_class=2, size=(16, 16))
    base = [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
            "--weights", "none", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    ok = subprocess.run([*base, "--backbone", plugin[1], "--plugin", plugin[0]], env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert Path(ok.stdout.strip().splitlines()[-1]).is_file()
    bad = subprocess.run([*base, "--plugin", "no_such_featcache_plugin"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "cannot import plugin module 'no_such_featcache_plugin'" in bad.stderr


def test_load_plugins_names_a_missing_module():
    with pytest.raises(ConfigError, match="cannot import plugin module 'no_such_module_x'"):
        load_plugins(["no_such_module_x"])


def test_an_installed_entry_point_of_the_plugin_group_is_loaded(tmp_path, monkeypatch):
    """A distribution on sys.path declaring a `featcache.plugins` entry point (as `pip install`
    of a package with that entry point leaves it) is imported by load_plugins()."""
    site = tmp_path / "site"
    info = site / "featcache_ep_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: featcache-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[featcache.plugins]\ndemo = featcache_ep_demo\n")
    (site / "featcache_ep_demo.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(site))
    assert "entry point demo" in load_plugins()
    assert sys.modules["featcache_ep_demo"].LOADED


def test_a_recorded_plugin_counts_as_loaded_only_when_the_user_loaded_it(tmp_path, monkeypatch):
    """A run folder's recorded plugins are checked, never imported: one installed as an entry
    point (or named with --plugin) passes; another is refused, naming --plugin, and stays
    unimported."""
    from pipeline.plugins import check_recorded_plugins

    site = tmp_path / "site"
    info = site / "featcache_ep_recorded-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: featcache-ep-recorded\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[featcache.plugins]\nrec = fc_ep_recorded:setup\n")
    (site / "fc_ep_recorded.py").write_text("def setup():\n    pass\n")
    (site / "fc_never_imported.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(site))
    load_plugins()
    check_recorded_plugins(["fc_ep_recorded"], tmp_path / "run", "predict")
    with pytest.raises(ConfigError, match="pass --plugin fc_never_imported"):
        check_recorded_plugins(["fc_ep_recorded", "fc_never_imported"], tmp_path / "run",
                               "predict")
    assert "fc_never_imported" not in sys.modules


@pytest.mark.parametrize("recorded", [[".relative"], ["os; rm -rf /"], 5, [["nested"]]])
def test_recorded_plugins_that_are_no_module_names_are_one_error(tmp_path, recorded):
    from pipeline.plugins import check_recorded_plugins

    with pytest.raises(ConfigError, match="not module names"):
        check_recorded_plugins(recorded, tmp_path / "run", "predict")
