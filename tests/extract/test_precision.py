"""`--precision auto`: bfloat16 on a CPU with native bfloat16 units (checked against float32 by
its guard), float32 elsewhere, with the same key as `--precision float32` there."""

import numpy as np
import pytest

from pipeline.extract import engines
from pipeline.extract.engines import auto_precision, installed
from pipeline.extract.options import ExtractConfig
from pipeline.extract.precision import CPU_FLAGS_KNOB, cpu_flags, native_bfloat16_flag
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from pipeline.store.vector_identity import vector_key
from tests.conftest import register_tiny_trunk, write_images
from tests.extract.guard_models import register_offset_backbone

needs_openvino = pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
WITH_BF16 = "fpu sse avx2 avx512f avx512_bf16 avx512_vnni"
WITHOUT_BF16 = "fpu sse avx2 avx512f avx512_vnni"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    data = write_images(root / "data", per_class=6, size=(40, 40))
    weights = register_tiny_trunk(root / "tiny.weights.h5")
    return root, data, weights


def _extract(case, cache, messages=None, **kw):
    root, data, weights = case
    opts = {"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
            "batch_size": 4, "cache_dir": str(root / cache)}
    opts.update(kw)
    echo = (lambda *a: messages.append(" ".join(map(str, a)))) if messages is not None \
        else (lambda *_: None)
    result = run_extraction(opts, progress=False, echo=echo)
    with open_store(result.path) as store:
        return result, store.load()[0], store.provenance


def test_flags_come_from_cpuinfo_unless_the_knob_names_them(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_tile amx_bf16 avx512_bf16\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.delenv(CPU_FLAGS_KNOB, raising=False)
    assert {"amx_bf16", "avx512_bf16"} <= cpu_flags(cpuinfo)
    assert native_bfloat16_flag(cpu_flags(cpuinfo)) == "amx_bf16"  # AMX named first
    assert cpu_flags(tmp_path / "absent") == frozenset()
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITHOUT_BF16)
    assert native_bfloat16_flag() is None and "avx2" in cpu_flags(cpuinfo)
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITH_BF16)
    assert native_bfloat16_flag() == "avx512_bf16"


def test_auto_on_a_gpu_keeps_float32(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITH_BF16)
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: True)
    choice = auto_precision(ExtractConfig.from_mapping({"data": "x"}))
    assert choice.precision == "float32" and "GPU" in choice.why


@needs_openvino
def test_auto_with_an_engine_that_only_emulates_bfloat16_is_float32(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITH_BF16)
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: False)
    emulated = auto_precision(ExtractConfig.from_mapping({"data": "x", "engine": "tensorflow"}))
    assert emulated.precision == "float32" and "engine tensorflow" in emulated.why
    assert "--engine openvino does" in emulated.why
    native = auto_precision(ExtractConfig.from_mapping({"data": "x"}))
    assert native.precision == "bfloat16" and "avx512_bf16" in native.why
    assert engines.choose_engine(ExtractConfig.from_mapping({"data": "x"})).name == "openvino"


def test_auto_without_bfloat16_units_is_the_float32_store(case, monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITHOUT_BF16)
    made, v32, _ = _extract(case, "cache", precision="float32")
    messages = []
    again, v_auto, prov = _extract(case, "cache", messages)  # the default: auto
    assert again.path == made.path and again.cache_hit  # the same key: nothing extracted
    np.testing.assert_array_equal(v_auto, v32)
    assert any(m.startswith("precision: float32 (auto: this CPU has no native bfloat16")
               for m in messages)
    config = made.path.with_name(made.path.name[:-3] + ".config.toml").read_text()
    assert 'precision = "float32"' in config  # the resolved precision, not auto


def test_stores_made_before_keep_their_keys():
    """A float32 identity's key, as stores made before `auto` were named."""
    identity = {"backbone": "resnet50", "weights": "imagenet", "layer": "pooled",
                "pooling": "avg", "input_shape": [224, 224, 3],
                "preprocess": "keras.applications.resnet50.preprocess_input",
                "reader": {"reader": "image", "resize": "squash", "jpeg_draft": True},
                "dtype": "float32", "precision": "float32"}
    assert vector_key(identity) == \
        "2c9fb57e2fe79868f904b12f4b2f4a5d8a64e2940adf944b853e30acce729922"


@needs_openvino
def test_auto_with_bfloat16_units_is_guarded_bfloat16(case, monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITH_BF16)
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: False)
    messages = []
    auto, v_auto, prov = _extract(case, "cache", messages)
    assert prov["precision"] == "bfloat16" and prov["engine"] == "openvino"
    choice = prov["precision_choice"]
    assert choice["asked"] == "auto" and choice["chose"] == "bfloat16"
    assert choice["bfloat16_guard"]["decision"] == "bfloat16 kept"
    assert choice["bfloat16_guard"]["cosine_median"] >= 0.999
    assert any(m.startswith("precision: bfloat16 (auto: this CPU computes bfloat16 natively "
                            "(avx512_bf16) and engine openvino does too; guard: median cosine")
               for m in messages)
    asked, v_asked, _ = _extract(case, "cache", precision="bfloat16", engine="openvino")
    assert asked.path == auto.path and asked.cache_hit  # the resolved precision is the key
    _, v32, _ = _extract(case, "cache", precision="float32", engine="openvino")
    assert not np.array_equal(v_auto, v32)  # really computed in bfloat16
    messages.clear()
    again, _, _ = _extract(case, "cache", messages)  # the guard's measurement is reused
    assert again.cache_hit and not any("openvino:" in m for m in messages)

    from pipeline.commands.info import describe_store

    text = describe_store(auto.path)
    assert "precision    bfloat16 (auto: this CPU computes bfloat16 natively" in text
    assert "threshold 0.999: bfloat16 kept" in text


@needs_openvino
def test_guard_refuses_bfloat16_that_loses_the_signal(tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_KNOB, WITH_BF16)
    monkeypatch.setattr(engines, "has_nvidia_gpu", lambda: False)
    data = write_images(tmp_path / "data", per_class=6, size=(40, 40))
    opts = {"data": str(data), "backbone": register_offset_backbone(), "weights": "none",
            "batch_size": 4, "cache_dir": str(tmp_path / "cache"), "progress": False}
    messages = []
    fell_back = run_extraction(opts, echo=messages.append)
    warning = [m for m in messages if m.startswith("warning: bfloat16 vectors of "
                                                   "tiny_offset_cancel are too far")]
    assert len(warning) == 1 and "extracting in float32 instead" in warning[0]
    asked = run_extraction(dict(opts, precision="float32", engine="openvino"), echo=print)
    assert asked.path == fell_back.path and asked.cache_hit  # the float32 store
    with open_store(fell_back.path) as store:
        prov, vectors = store.provenance, store.load()[0]
    guard = prov["precision_choice"]["bfloat16_guard"]
    assert prov["precision"] == "float32" and guard["decision"] == "refused: float32 vectors stored"
    # the engine chosen for bfloat16 gave way to float32's choice (this process's TensorFlow)
    assert prov["engine"] == "tensorflow"
    assert guard["cosine_median"] < 0.9
    bf16 = run_extraction(dict(opts, precision="bfloat16", engine="openvino"), echo=print)
    with open_store(bf16.path) as store:  # what was refused: far from the stored vectors
        lost = store.load()[0]
    cosine = (lost * vectors).sum(1) / np.linalg.norm(lost, axis=1) / np.linalg.norm(vectors,
                                                                                    axis=1)
    assert np.median(cosine) < 0.9


@needs_openvino
def test_guards_measure_vectors_of_any_scale():
    """A random-weight MobileNet's vectors have norms near 1e-18: their cosine is still 1."""
    import openvino as ov
    import openvino.opset13 as ops

    from pipeline.extract.quantize import cosine_to_float32

    pixels = ops.parameter([2, 4], np.float32)
    tiny = ov.Model([ops.multiply(pixels, ops.constant(np.float32(1e-20)))], [pixels])
    inputs = [np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.float32)]
    np.testing.assert_allclose(cosine_to_float32(tiny, tiny, inputs), 1.0, atol=1e-6)
    np.testing.assert_allclose(cosine_to_float32(tiny, tiny, inputs, other_hint="bf16"), 1.0,
                               atol=1e-3)
