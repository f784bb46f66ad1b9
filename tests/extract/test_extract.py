"""Stage one end to end: vectors equal Keras' own, the cache is hit, updated and resumable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import BackboneError, StoreError, WeightsError
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import StoreLock, open_store
from tests.conftest import write_images

ROOT = Path(__file__).resolve().parents[2]


def _opts(data, cache, **kw):
    # ResNet50 with random weights: its vectors are O(1), so comparisons at 1e-6 mean something
    # (a random MobileNet's are ~1e-21 and would pass any tolerance).
    opts = {"data": str(data), "backbone": "resnet50", "weights": "none", "layer": "pooled",
            "pooling": "avg", "input_size": 32, "resize": "squash", "batch_size": 4,
            "workers": 2, "dtype": "float32", "cache_dir": str(cache)}
    opts.update(kw)
    return opts


def _extract(data, cache, **kw):
    return run_extraction(_opts(data, cache, **kw), progress=False, echo=lambda *_: None)


def _reference(app, module, paths, size, layer):
    """The backbone's own output, with images loaded and preprocessed as Keras documents."""
    import keras

    x = np.stack([keras.utils.img_to_array(keras.utils.load_img(
        p, target_size=(size, size), interpolation="bilinear")) for p in paths])
    out = np.asarray(app.predict_on_batch(module.preprocess_input(x)))
    return out.mean(axis=(1, 2)) if layer == "pooled" else out


@pytest.mark.parametrize("name", ["resnet50", "vgg19"])
def test_cached_vectors_equal_keras_output(tmp_path, name):
    import keras

    constructor, module = {"resnet50": (keras.applications.ResNet50, keras.applications.resnet50),
                           "vgg19": (keras.applications.VGG19, keras.applications.vgg19)}[name]
    size = 64
    app = constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for w in app.weights:  # distinctive weights, so loading the wrong ones cannot pass
        if "moving_variance" not in w.path:
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32") + np.asarray(w) * 0.5)
    weights = tmp_path / f"{name}.weights.h5"
    app.save_weights(weights)
    data = write_images(tmp_path / "data", per_class=3, size=(50, 70), ext=".jpg")
    for layer in ("pooled", "pool5"):
        result = _extract(data, tmp_path / "cache", backbone=name, weights=str(weights),
                          layer=layer, input_size=size, batch_size=6)
        with open_store(result.path) as store:
            ids = list(store.column("ids"))
            got = store.read_rows(np.arange(len(store)))
            assert store.provenance["backbone"] == name and store.provenance["layer"] == layer
        expected = _reference(app, module, [data / i for i in ids], size, layer)
        assert got.shape == expected.shape
        expected_shape = {("resnet50", "pool5"): (2, 2, 2048), ("vgg19", "pool5"): (2, 2, 512),
                          ("resnet50", "pooled"): (2048,), ("vgg19", "pooled"): (512,)}
        assert got.shape[1:] == expected_shape[(name, layer)]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_cache_hit_builds_no_backbone(tmp_path, monkeypatch):
    data = write_images(tmp_path / "data", per_class=3)
    first = _extract(data, tmp_path / "cache")
    assert not first.cache_hit and first.n_extracted == 6

    def forbidden(*a, **k):
        raise AssertionError("the backbone was built on a cache hit")

    monkeypatch.setattr("pipeline.extract.backbones.feature_model.build_feature_model", forbidden)
    second = _extract(data, tmp_path / "cache")
    assert second.cache_hit and second.path == first.path and second.n_extracted == 0


def test_added_changed_removed_files_update_the_store(tmp_path):
    data = write_images(tmp_path / "data", per_class=3)
    first = _extract(data, tmp_path / "cache")
    write_images(tmp_path / "extra", classes=("dog",), per_class=1, seed=9)
    (tmp_path / "extra" / "dog" / "dog_0.png").rename(data / "dog" / "dog_new.png")
    (data / "cat" / "cat_2.png").unlink()
    changed = data / "dog" / "dog_0.png"
    write_images(tmp_path / "other", classes=("dog",), per_class=1, seed=5)
    os.replace(tmp_path / "other" / "dog" / "dog_0.png", changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = _extract(data, tmp_path / "cache")
    assert second.path == first.path and second.n_extracted == 2  # the new and the changed file
    fresh = _extract(data, tmp_path / "fresh")
    with open_store(second.path) as a, open_store(fresh.path) as b:
        assert list(a.column("ids")) == list(b.column("ids"))
        assert "cat/cat_2.png" not in set(a.column("ids"))
        np.testing.assert_array_equal(a.column("labels"), b.column("labels"))
        assert np.abs(b.load()[0]).max() > 0.1
        np.testing.assert_allclose(a.read_rows(np.arange(len(a))), b.read_rows(np.arange(len(b))),
                                   atol=1e-6)


def test_other_settings_never_reuse_vectors(tmp_path):
    data = write_images(tmp_path / "data", per_class=2)
    a = _extract(data, tmp_path / "cache", input_size=64)  # a 2x2 map: max and avg differ
    b = _extract(data, tmp_path / "cache", input_size=64, pooling="max")
    c = _extract(data, tmp_path / "cache", input_size=48)
    assert len({a.path, b.path, c.path}) == 3 and not b.cache_hit and not c.cache_hit
    with open_store(a.path) as sa, open_store(b.path) as sb:
        assert not np.allclose(sa.load()[0], sb.load()[0], rtol=1e-3, atol=0)


def test_bad_files_are_recorded_and_the_rest_extracted(tmp_path):
    from PIL import Image

    data = write_images(tmp_path / "data", per_class=2, ext=".jpg")
    good = (data / "cat" / "cat_0.jpg").read_bytes()
    (data / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (data / "cat" / "zero.jpg").write_bytes(b"")
    (data / "dog" / "notes.png").write_text("this is text, not a PNG")
    Image.new("CMYK", (30, 30), (0, 128, 255, 0)).save(data / "dog" / "cmyk.jpg")
    result = _extract(data, tmp_path / "cache")
    assert result.n_failures == 3 and result.n_rows == 5
    with open_store(result.path) as store:
        failures = dict(store.failures())
        assert set(failures) == {"cat/truncated.jpg", "cat/zero.jpg", "dog/notes.png"}
        assert "empty" in failures["cat/zero.jpg"]
        assert "dog/cmyk.jpg" in set(store.column("ids"))
    assert "3 failures recorded" in result.summary()
    assert _extract(data, tmp_path / "cache").cache_hit  # failures are cached, not retried


def test_a_locked_store_is_refused_clearly(tmp_path):
    data = write_images(tmp_path / "data", per_class=2)
    path = _extract(data, tmp_path / "cache").path
    (data / "cat" / "cat_0.png").unlink()  # so the next run would write
    with StoreLock(path):
        with pytest.raises(StoreError, match="being written"):
            _extract(data, tmp_path / "cache")


def test_unknown_backbone_and_unfit_weights_are_clear(tmp_path):
    import keras

    data = write_images(tmp_path / "data", per_class=1)
    with pytest.raises(BackboneError, match="resnet50.*vgg19"):
        _extract(data, tmp_path / "cache", backbone="resnet5O")
    wrong = tmp_path / "vgg.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(wrong)
    with pytest.raises(WeightsError, match="does not fit mobilenet"):
        _extract(data, tmp_path / "cache", backbone="mobilenet", weights=str(wrong))
    with pytest.raises(WeightsError, match="not found"):
        _extract(data, tmp_path / "cache", weights=str(tmp_path / "missing.weights.h5"))


def test_keras_and_legacy_model_files_are_cut_at_the_feature_layer(tmp_path):
    import keras

    full = keras.applications.MobileNet(include_top=True, weights=None, input_shape=(32, 32, 3),
                                        classes=7)
    full.save(tmp_path / "full.keras")
    full.save(tmp_path / "full.h5")  # Keras 2's whole-model HDF5 layout
    data = write_images(tmp_path / "data", per_class=2)
    trunk = keras.Model(full.input, full.get_layer("conv_pw_13_relu").output)
    paths, feats = None, []
    for name in ("full.keras", "full.h5"):
        result = _extract(data, tmp_path / f"cache-{name}", weights=str(tmp_path / name),
                          backbone="mobilenet", batch_size=4)
        with open_store(result.path) as store:
            paths = [data / i for i in store.column("ids")]
            feats.append(store.load()[0])
    expected = _reference(trunk, keras.applications.mobilenet, paths, 32, "pooled")
    for got in feats:
        np.testing.assert_allclose(got, expected, atol=1e-5)


def _cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, **kw)


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path):
    data = write_images(tmp_path / "data", per_class=60, size=(64, 64))
    cache = tmp_path / "cache"
    args = ["extract", "--data", str(data), "--backbone", "resnet50", "--weights", "none",
            "--input-size", "96", "--batch-size", "2", "--cache-dir", str(cache), "--no-progress",
            "--engine", "tensorflow"]  # random init differs by backend: compare like with like
    proc = _cli(*args, env={"PIPELINE_JOURNAL_ROWS": "4"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob(".*.parts/part-*.h5"))) < 3:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(cache.glob("*.h5")), "finished before the kill: test could not interrupt it"
    done_before = sum(h5py.File(p)["sample_ids"].shape[0] for p in cache.glob(".*.parts/part-*.h5"))
    assert done_before >= 8

    rerun = _cli(*args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    store_path = Path(out.strip().splitlines()[-1])  # the CLI contract: path is the last line
    assert f"extracted {120 - done_before} files in " in out
    assert not list(cache.glob(".*.parts"))  # journal cleaned up

    whole = _extract(data, tmp_path / "whole", input_size=96, batch_size=2)
    with open_store(store_path) as a, open_store(whole.path) as b:
        assert list(a.column("ids")) == list(b.column("ids"))
        np.testing.assert_array_equal(a.column("labels"), b.column("labels"))
        assert np.abs(b.load()[0]).max() > 0.1
        np.testing.assert_allclose(a.load()[0], b.load()[0], atol=1e-6)
        assert len(a) == 120


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _cli("extract", "--data", str(tmp_path / "empty"), "--weights", "none")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: no input files found")
    assert "Traceback" not in err


def test_process_decoding_gives_the_thread_results(tmp_path):
    data = write_images(tmp_path / "data", per_class=5, ext=".jpg")
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    by_threads = _extract(data, tmp_path / "threads", decode="threads")
    by_procs = _extract(data, tmp_path / "procs", decode="processes", workers=2)
    with open_store(by_threads.path) as a, open_store(by_procs.path) as b:
        assert list(a.column("ids")) == list(b.column("ids")) and len(a) == 10
        assert dict(a.failures()).keys() == dict(b.failures()).keys() == {"dog/broken.jpg"}
        assert np.abs(a.load()[0]).max() > 0.1
        np.testing.assert_allclose(a.load()[0], b.load()[0], atol=1e-5, rtol=1e-5)
