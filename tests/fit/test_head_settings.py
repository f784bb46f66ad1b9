"""fit-head's typed settings, the head's own seeding, the untouched test score, and a quiet
TensorFlow: real stores, real small heads, one subprocess run through the CLI."""

import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FAST = {"epochs": 3, "patience": 2, "hidden_units": (8,), "progress": False,
        "learning_curve": False}


def _store(path, n=100, n_classes=2, dim=8, seed=0):
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[np.arange(n), labels] += 2.5
    return write_store(path, x, labels, class_names=[f"class{i}" for i in range(n_classes)],
                       ids=[f"s{i:04d}" for i in range(n)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("settings") / "two.h5")


def test_head_config_is_one_frozen_class_built_from_the_option_table():
    from pipeline.fit import heads
    from pipeline.fit.options import FIT_HEAD_OPTIONS, HeadConfig

    assert heads.HeadConfig is HeadConfig  # one list of head defaults, not two
    names = {f.name for f in dataclasses.fields(HeadConfig)} - {"config_file"}
    assert names == {opt.name for opt in FIT_HEAD_OPTIONS}
    config = HeadConfig.from_mapping({"epochs": 3, "hidden_units": "8,4"})
    assert config.epochs == 3 and config.hidden_units == (8, 4)
    assert config.batch_size == HeadConfig.option("batch_size").default
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 5
    with pytest.raises(ConfigError, match="unknown fit-head option"):
        HeadConfig.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match="cv"):
        HeadConfig.from_mapping({"cv": 1})


def test_fit_and_command_code_reads_attributes_not_option_dicts():
    files = sorted((ROOT / "pipeline" / "fit").rglob("*.py")) + [
        ROOT / "pipeline" / "commands" / "fit_head.py"]
    dict_reads = re.compile(r"\bopts(\[|\.get\()|resolve_options|with_defaults")
    offenders = [f"{path.name}:{i}" for path in files
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if dict_reads.search(line)]
    assert not offenders, offenders


def test_fit_head_takes_the_config_object_and_a_partial_mapping_alike(store, tmp_path):
    from pipeline.fit.options import HeadConfig
    from pipeline.fit.run import fit_head

    a = fit_head(store, HeadConfig.from_mapping(FAST), out_dir=tmp_path / "a",
                 echo=lambda *_: None)
    b = fit_head(store, FAST, out_dir=tmp_path / "b", echo=lambda *_: None)
    ma, mb = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    assert ma["split"] == mb["split"] and ma["best_epoch"] == mb["best_epoch"]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_output_only_activations_are_refused_as_the_hidden_activation(name, store, tmp_path,
                                                                      capsys):
    from pipeline.fit.options import HeadConfig
    from run_pipeline import main

    with pytest.raises(ConfigError, match="--activation relu"):
        HeadConfig.from_mapping({"activation": name})
    code = main(["fit-head", "--store", str(store), "--out", str(tmp_path / "runs"),
                 "--activation", name])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and name in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()
    assert HeadConfig.from_mapping({"activation": "sigmoid"}).activation == "sigmoid"


def test_build_head_seeds_its_own_layers_not_the_global_generators(store, tmp_path):
    import keras

    from pipeline.fit.heads import build_head
    from pipeline.fit.options import HeadConfig
    from pipeline.fit.run import fit_head

    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    config = HeadConfig.from_mapping({"hidden_units": (8,), "seed": 4})
    first = build_head((6,), 3, config).get_weights()
    keras.utils.set_random_seed(99)  # whatever the global seeds are, the head is the same
    second = build_head((6,), 3, config).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = build_head((6,), 3, config.replace(seed=5)).get_weights()
    assert not np.array_equal(first[0], other[0])
    np.random.seed(123)
    random.seed(123)
    fit_head(store, FAST, out_dir=tmp_path, echo=lambda *_: None)
    assert np.array_equal(np.random.get_state()[1], before_np)
    assert random.getstate() == before_py


def test_untouched_test_share_is_held_out_by_default_and_reported_last(store, tmp_path):
    from pipeline.fit.options import HeadConfig
    from pipeline.fit.run import fit_head

    assert HeadConfig().test_fraction == 0.2
    lines = []
    run = fit_head(store, FAST, out_dir=tmp_path, echo=lines.append)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"]["n_test"] == 20 and "test_accuracy" in metrics
    assert metrics["score"] == {"split": "test", "accuracy": metrics["test_accuracy"],
                                "n": 20}
    assert lines[-1].startswith(f"test_accuracy {metrics['test_accuracy']:.4f}")


def test_a_tiny_fit_head_prints_no_tensorflow_retracing_warning(store, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), "fit-head", "--store", str(store),
         "--out", str(tmp_path / "runs"), "--epochs", "3", "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "retracing" not in done.stderr, done.stderr[-2000:]
    assert Path(done.stdout.strip().splitlines()[-1]).is_dir()
