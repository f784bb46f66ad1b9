"""The int8 guard refuses vectors far from float32: it falls back to float32 (said and recorded)
or stops with the fix, and `info` shows its figures, threshold and decision."""

import numpy as np
import pytest

from pipeline.errors import ConfigError, EngineError
from pipeline.extract.engines import installed
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images
from tests.extract.guard_models import register_spread_backbone

pytestmark = [pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed"),
              pytest.mark.skipif(not installed("nncf"), reason="nncf is not installed")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    register_spread_backbone()
    return write_images(tmp_path_factory.mktemp("int8guard") / "data", per_class=10,
                        size=(40, 40))


def _extract(data, cache, messages=None, **kw):
    opts = {"data": str(data), "backbone": register_spread_backbone(), "weights": "none",
            "batch_size": 8, "cache_dir": str(cache), "engine": "openvino",
            "calibration_size": 12}
    opts.update(kw)
    echo = (lambda *a: messages.append(" ".join(map(str, a)))) if messages is not None \
        else (lambda *_: None)
    result = run_extraction(opts, progress=False, echo=echo)
    with open_store(result.path) as store:
        return result, store.load()[0], store.provenance


def test_refused_int8_vectors_are_never_published_float32_are(data, tmp_path):
    messages = []
    _, v32, _ = _extract(data, tmp_path, precision="float32")
    result, v8, prov = _extract(data, tmp_path, messages, precision="int8")
    guard = prov["int8_guard"]
    assert guard["cosine_median"] < guard["threshold"] == 0.98
    assert guard["decision"] == "refused: float32 vectors stored"
    assert prov["precision"] == "int8" and prov["calibration"]["on_refusal"] == "fallback"
    assert any("int8 guard refused" in m and "float32 vectors instead" in m for m in messages)
    np.testing.assert_allclose(v8, v32, rtol=1e-5, atol=1e-5)  # float32's, not the rejected

    from pipeline.commands.info import describe_store

    text = describe_store(result.path)
    assert "int8 guard" in text and "threshold 0.98" in text
    assert "decision: refused: float32 vectors stored" in text


def test_refusal_as_error_names_the_fix_and_writes_nothing(data, tmp_path):
    with pytest.raises(EngineError, match=r"--precision float32.*--int8-refusal fallback"):
        _extract(data, tmp_path, precision="int8", int8_refusal="error")
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob("*.xml"))


def test_a_lower_threshold_keeps_int8_and_is_another_store(data, tmp_path):
    messages = []
    kept, v8, prov = _extract(data, tmp_path, messages, precision="int8", int8_min_cosine=0.0)
    fell_back, v32, _ = _extract(data, tmp_path, precision="int8")
    assert prov["int8_guard"]["decision"] == "int8 kept" and prov["int8_guard"]["threshold"] == 0
    assert any("int8 guard: median cosine" in m for m in messages)
    # the lower bar accepts more loss; the depthwise retry is still tried below the default bar
    assert any("quantizing again with them kept in float32" in m for m in messages)
    assert kept.path != fell_back.path  # the guard's rule is part of the vectors' key
    assert not np.allclose(v8, v32, atol=1e-3)  # really the int8 model's vectors


def test_threshold_outside_zero_to_one_is_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="--int8-min-cosine"):
        _extract(data, tmp_path, precision="int8", int8_min_cosine=1.5)
