"""Engines: OpenVINO and JAX give TensorFlow's vectors, in a worker, without leaking state."""

import numpy as np
import pytest

from pipeline.extract.engines import installed, resolve_engine
from pipeline.errors import ConfigError, EngineError
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images, write_resnet50_weights


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """Images plus a ResNet50 weights file with non-trivial BatchNorm statistics."""
    root = tmp_path_factory.mktemp("engines")
    data = write_images(root / "data", per_class=3, size=(40, 40))
    weights = write_resnet50_weights(root / "r50.weights.h5")
    return root, data, weights


def _vectors(root, data, weights, engine, **kw):
    opts = {"data": str(data), "backbone": "resnet50", "weights": str(weights), "layer": "pooled",
            "pooling": "avg", "input_size": 32, "resize": "squash", "batch_size": 6,
            "dtype": "float32", "cache_dir": str(root / f"cache-{engine}"), "engine": engine}
    opts.update(kw)
    result = run_extraction(opts, progress=False, echo=lambda *_: None)
    with open_store(result.path) as store:
        return result.path, store.load()[0], store.provenance


@pytest.mark.parametrize("engine", ["openvino", "jax"])
def test_engine_vectors_match_tensorflow(tiny_case, engine):
    if not installed(engine):
        pytest.skip(f"{engine} is not installed (pip install -r requirements-dev.txt)")
    import keras

    root, data, weights = tiny_case
    path_tf, ref, prov_tf = _vectors(root, data, weights, "tensorflow")
    path_other, got, prov = _vectors(root, data, weights, engine)
    assert prov["engine"] == engine and prov_tf["engine"] == "tensorflow"
    assert path_tf.name == path_other.name  # the engine is not part of the cache key
    assert np.abs(ref).max() > 0.1  # vectors that can disagree
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert keras.backend.backend() == "tensorflow"  # the worker left this process alone
    # ... so stage two still trains here, on TensorFlow.
    from pipeline.fit.heads import build_head

    head = build_head((ref.shape[1],), 2)
    head.fit(ref, np.array([0, 0, 0, 1, 1, 1]), epochs=1, verbose=0)


def test_half_precision_is_a_separate_cache(tiny_case):
    root, data, weights = tiny_case
    path32, v32, _ = _vectors(root, data, weights, "tensorflow")
    path16, v16, prov = _vectors(root, data, weights, "tensorflow", precision="bfloat16")
    assert path16 != path32 and prov["precision"] == "bfloat16"
    assert v16.dtype == np.float32
    assert np.abs(v16 - v32).max() < 0.1 * np.abs(v32).max()  # close, but not the same vectors


def test_engine_errors_are_clear():
    with pytest.raises(ConfigError, match="engine must be one of"):
        resolve_engine("tensorrt")
    if not installed("torch"):
        with pytest.raises(EngineError, match="'torch' is not installed"):
            resolve_engine("torch")
    assert resolve_engine("auto") in ("openvino", "tensorflow", "jax")


def test_fit_head_works_after_an_openvino_extract_in_the_same_shell(tmp_path):
    if not installed("openvino"):
        pytest.skip("openvino is not installed")
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = write_images(tmp_path / "data", per_class=6)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)

    def cli(*args):
        proc = subprocess.run([sys.executable, str(root / "run_pipeline.py"), *args], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()[-1]

    store = cli("extract", "--data", str(data), "--backbone", "resnet50", "--weights", "none",
                "--input-size", "32", "--engine", "openvino", "--cache-dir",
                str(tmp_path / "cache"), "--no-progress")
    with open_store(store) as s:
        assert s.provenance["engine"] == "openvino"
    run = cli("fit-head", "--store", store, "--epochs", "2", "--out", str(tmp_path / "runs"),
              "--no-progress")
    assert (Path(run) / "head.keras").is_file()
