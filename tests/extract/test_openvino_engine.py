"""The native OpenVINO engine: a cached IR, float32 kept float32, int8 with its accuracy guard."""

import sys

import numpy as np
import pytest

from pipeline.errors import ConfigError, EngineError
from pipeline.extract.engines import installed
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images, write_resnet50_weights

pytestmark = pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Ten images per class plus ResNet50 weights whose BatchNorm statistics are not trivial."""
    root = tmp_path_factory.mktemp("native")
    data = write_images(root / "data", per_class=10, size=(40, 40))
    weights = write_resnet50_weights(root / "r50.weights.h5")
    return root, data, weights


def _extract(case, cache, messages=None, **kw):
    root, data, weights = case
    opts = {"data": str(data), "backbone": "resnet50", "weights": str(weights),
            "layer": "pooled", "pooling": "avg", "input_size": 32, "resize": "squash",
            "batch_size": 8, "dtype": "float32", "cache_dir": str(root / cache),
            "engine": "openvino"}
    opts.update(kw)
    echo = (lambda *a: messages.append(" ".join(map(str, a)))) if messages is not None \
        else (lambda *_: None)
    result = run_extraction(opts, progress=False, echo=echo)
    with open_store(result.path) as store:
        return result, store.load()[0], store.provenance


def test_converted_model_is_cached_and_reused_without_keras(case, monkeypatch):
    first, vectors, prov = _extract(case, "cache")
    irs = list((case[0] / "cache" / "openvino").glob("*.xml"))
    assert prov["engine"] == "openvino" and len(irs) == 1 and irs[0].with_suffix(".bin").is_file()
    first.path.unlink()

    def forbidden(*a, **k):
        raise AssertionError("the Keras model was built although its IR is cached")

    monkeypatch.setattr("pipeline.extract.backbones.feature_model.build_feature_model", forbidden)
    messages = []
    again, vectors_again, _ = _extract(case, "cache", messages)
    assert again.path == first.path and not again.cache_hit
    assert any("cached model" in m for m in messages)
    np.testing.assert_array_equal(vectors_again, vectors)


def test_bfloat16_is_only_used_when_asked(case):
    """On CPUs with bf16 units OpenVINO would round to bf16 unless told f32 (the Keras bug)."""
    _, v32, _ = _extract(case, "cache")
    _, v16, prov = _extract(case, "cache", precision="bfloat16")
    assert prov["precision"] == "bfloat16"
    with open("/proc/cpuinfo") as fh:
        has_bf16 = any(flag in fh.read() for flag in ("avx512_bf16", "amx_bf16"))
    if has_bf16:  # float32 must not be the bf16 result (the errors are ~1e-2 there)
        assert np.abs(v16 - v32).max() > 1e-3


def test_int8_is_keyed_calibrated_and_guarded(case):
    pytest.importorskip("nncf")
    messages = []
    _, v32, _ = _extract(case, "cache")
    _, v8, prov = _extract(case, "cache", messages, precision="int8",
                            calibration_size=12)
    assert prov["precision"] == "int8" and prov["calibration"]["images"] == 12
    assert len(prov["calibration"]["fingerprint"]) == 20
    guard = prov["int8_guard"]
    assert guard["images"] == 8 and guard["measured_on"] == "held-back images"
    assert guard["decision"] == "int8 kept" and guard["threshold"] == 0.98
    assert any("int8 guard: median cosine" in m for m in messages)
    cos = (v8 * v32).sum(1) / np.linalg.norm(v8, axis=1) / np.linalg.norm(v32, axis=1)
    assert guard["cosine_median"] > 0.98 and np.median(cos) > 0.98
    assert not np.allclose(v8, v32, atol=1e-4)  # really int8, not the float32 model again
    # Another calibration set is another model, hence another store and another IR.
    from pipeline.extract.openvino_engine import ir_key
    from pipeline.extract.quantize import CalibrationPlan
    from pipeline.extract.sources import discover

    samples = discover(case[1], (".png",)).samples
    other = dict(prov, calibration=CalibrationPlan(samples, 10).settings())
    assert other["calibration"]["fingerprint"] != prov["calibration"]["fingerprint"]
    assert ir_key(other) != ir_key(prov)


def test_int8_needs_the_openvino_engine(case):
    with pytest.raises(ConfigError, match="--precision int8 runs on --engine openvino"):
        _extract(case, "cache", engine="tensorflow", precision="int8")


def test_calibration_choice_is_seeded_and_stable():
    from pipeline.extract.quantize import CalibrationPlan
    from pipeline.extract.sources import Sample

    samples = [Sample(id=f"c/{i}.jpg", path=None, label="c", stamp="1:2") for i in range(50)]
    plan = CalibrationPlan(samples, 10)
    again = CalibrationPlan(list(reversed(samples)), 10)
    assert [s.id for s in plan.calibration] == [s.id for s in again.calibration]
    assert plan.settings() == again.settings() and len(plan.held_back) == 40
    assert not {s.id for s in plan.calibration} & {s.id for s in plan.held_back}
    touched = [Sample(id=s.id, path=None, label="c", stamp="1:3") if s is plan.calibration[0]
               else s for s in samples]  # a calibration file changed on disk: another model
    assert CalibrationPlan(touched, 10).settings() != plan.settings()


def test_auto_keeps_host_preprocessing_off_the_native_engine():
    from pipeline.extract.engines import has_nvidia_gpu, resolve_engine

    if not has_nvidia_gpu():
        assert resolve_engine("auto") == "openvino"
        assert resolve_engine("auto", native_ok=False) == "tensorflow"
        assert resolve_engine("auto", "mobilenet") == "tensorflow"  # measured faster there


def test_missing_nncf_is_one_clear_error(monkeypatch):
    from pipeline.extract.quantize import _import_nncf

    monkeypatch.setitem(sys.modules, "nncf", None)  # makes `import nncf` raise ImportError
    with pytest.raises(EngineError, match=r"pip install nncf==3\.4\.0"):
        _import_nncf()


@pytest.mark.slow
def test_int8_mobilenet_vectors_keep_the_flowers5_linear_probe():
    """The int8 bar: a linear probe on int8 vectors within 0.015 of one on float32 vectors."""
    pytest.importorskip("nncf")
    from pathlib import Path

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from tests.conftest import FLOWERS, MOBILENET_WEIGHTS

    if not (FLOWERS.is_dir() and MOBILENET_WEIGHTS.is_file()):
        pytest.skip("needs ../shared (flowers5 and the MobileNet weights)")
    cache = Path(__file__).resolve().parents[2] / "cache"  # re-runs are cache hits
    scores, guard = {}, None
    for precision in ("float32", "int8"):
        result = run_extraction(  # the default head test's stores: one extraction for both
            {"data": str(FLOWERS), "backbone": "mobilenet", "weights": str(MOBILENET_WEIGHTS),
             "cache_dir": str(cache), "engine": "openvino", "precision": precision},
            progress=False)
        with open_store(result.path) as store:
            X, y = store.load()
            guard = store.provenance.get("int8_guard", guard)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y,
                                                  random_state=0)
        scores[precision] = LogisticRegression(max_iter=3000).fit(X_tr, y_tr).score(X_te, y_te)
    print(f"flowers5 linear probe, MobileNet: float32 {scores['float32']:.4f}, int8 "
          f"{scores['int8']:.4f}; int8 guard {guard}")
    assert guard["images"] == 64 and guard["measured_on"] == "held-back images"
    assert abs(scores["int8"] - scores["float32"]) <= 0.015


@pytest.mark.slow
def test_int8_mobilenet_default_head_keeps_its_accuracy_or_int8_is_refused():
    """A default fit-head on float32 vectors of flowers5, and the head it chose trained on int8
    vectors, within 0.015 test accuracy of each other (the same split), unless the guard
    refused int8. The same head on both: the choice itself may tip either way on a 0.002 CV
    difference, which says nothing about int8."""
    pytest.importorskip("nncf")
    import json
    import tomllib
    from pathlib import Path

    from pipeline.fit.options import FIXED_HEAD
    from pipeline.fit.run import fit_head
    from tests.conftest import FLOWERS, MOBILENET_WEIGHTS

    if not (FLOWERS.is_dir() and MOBILENET_WEIGHTS.is_file()):
        pytest.skip("needs ../shared (flowers5 and the MobileNet weights)")
    cache = Path(__file__).resolve().parents[2] / "cache"  # re-runs are cache hits
    metrics, guard, head = {}, None, {}
    for precision in ("float32", "int8"):
        result = run_extraction(
            {"data": str(FLOWERS), "backbone": "mobilenet", "weights": str(MOBILENET_WEIGHTS),
             "cache_dir": str(cache), "engine": "openvino", "precision": precision},
            progress=False)
        with open_store(result.path) as store:
            guard = store.provenance.get("int8_guard", guard)
        run = fit_head(result.path, {"progress": False, "learning_curve": False, **head},
                       out_dir=str(cache / "runs"), echo=lambda *_: None)
        metrics[precision] = json.loads((Path(run) / "metrics.json").read_text())
        chosen = tomllib.loads((Path(run) / "config.toml").read_text())["fit_head"]
        head = {k: chosen[k] for k in (*FIXED_HEAD, "solver")}  # int8: float32's head
    print(f"MobileNet flowers5, head {head}: test accuracy float32 "
          f"{metrics['float32']['test_accuracy']:.4f}, int8 {metrics['int8']['test_accuracy']:.4f}"
          f"; guard {guard}")
    if guard["decision"] != "int8 kept":  # refused: the store holds float32 vectors, said so
        assert guard["cosine_median"] < guard["threshold"]
        return
    assert not metrics["int8"]["head"]["chosen"]
    assert abs(metrics["int8"]["test_accuracy"] - metrics["float32"]["test_accuracy"]) <= 0.015
