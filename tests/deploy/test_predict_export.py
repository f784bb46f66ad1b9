"""predict and export against fit-head's own evaluation, on real images and a real CNN.

One module-scoped run: tiny PNGs -> extract (a small real CNN registered here, weights file
written here) -> fit-head. A randomly initialised deep net (MobileNet) amplifies float rounding
(1 ulp of preprocessing -> 1e-4 in its features), which a trained one does not; the real
MobileNet's parity is checked in the slow test with the shared ImageNet weights.
predict re-extracts the same files into a fresh cache; export joins backbone and head.
Both must reproduce the per-sample probabilities fit-head recorded (1e-5).
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_images

SIZE = 32


def _tiny_cnn(weights, input_shape):
    """A small real CNN trunk (conv, BatchNorm, ReLU, depthwise conv), named layers."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def _register_tiny_cnn():
    from keras.applications import resnet50

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    # caffe-mode preprocessing (RGB->BGR, minus the ImageNet mean), as ResNet50 and VGG19 use.
    register_backbone(BackboneSpec(
        name="tiny_cnn", build=_tiny_cnn, preprocess=resnet50.preprocess_input,
        preprocess_name="keras.applications.resnet50.preprocess_input",
        input_shape=(SIZE, SIZE, 3), notes="test-only trunk"), overwrite=True)


def _tiny_cnn_weights(path):
    """A weights file with non-trivial BatchNorm statistics, so nothing is an identity."""
    import keras

    keras.utils.set_random_seed(0)
    trunk = _tiny_cnn(None, (SIZE, SIZE, 3))
    bn = trunk.get_layer("bn1")
    gamma, beta, _, _ = bn.get_weights()
    rng = np.random.default_rng(0)
    bn.set_weights([gamma * 1.5, beta + 0.1, rng.normal(0, 20, 8).astype(np.float32),
                    rng.uniform(500, 3000, 8).astype(np.float32)])
    trunk.save_weights(path)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    root = tmp_path_factory.mktemp("predict")
    data = write_images(root / "pets", classes=("cat", "dog"), per_class=10)
    _register_tiny_cnn()
    weights = _tiny_cnn_weights(root / "tiny_cnn.weights.h5")
    opts = {"data": str(data), "backbone": "tiny_cnn", "weights": str(weights),
            "layer": "pooled", "pooling": "avg", "input_size": SIZE, "resize": "squash",
            "dtype": "float32", "batch_size": 8, "cache_dir": str(root / "cache")}
    store = run_extraction(opts, progress=False, echo=lambda *_: None).path
    run = fit_head(store, {"epochs": 5, "hidden_units": (16,), "test_fraction": 0.25,
                           "progress": False}, out_dir=root / "runs", echo=lambda *_: None)
    return {"root": root, "data": data, "weights": weights, "store": store, "run": run}


def _recorded(run):
    from pipeline.deploy.prediction import read_predictions

    recorded = {}
    for split in ("val", "test"):
        recorded.update(read_predictions(run / f"predictions_{split}.csv"))
    return recorded


def test_predict_reproduces_fit_head_probabilities(fitted, capsys):
    from pipeline.deploy.prediction import read_predictions
    from run_pipeline import main

    code = main(["predict", "--run", str(fitted["run"]), "--data", str(fitted["data"]),
                 "--cache-dir", str(fitted["root"] / "fresh_cache"), "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and last == str(fitted["run"] / "predictions-pets.csv")
    predicted = read_predictions(last)
    recorded = _recorded(fitted["run"])
    split = json.loads((fitted["run"] / "metrics.json").read_text())["split"]
    assert len(predicted) == 20 and len(recorded) == split["n_val"] + split["n_test"] == 8
    got = np.array([predicted[i] for i in recorded])
    want = np.array([recorded[i] for i in recorded])
    assert np.ptp(want[:, 0]) > 1e-3  # the probabilities differ from image to image
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert any((fitted["root"] / "fresh_cache").glob("pets-tiny_cnn-pooled-*.h5"))


def test_export_reproduces_probabilities_and_loads_without_our_package(fitted, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model
    from pipeline.extract.sources.images import load_image

    lines = []
    path = export_model(fitted["run"], {"out": str(tmp_path / "pets.keras")}, echo=lines.append)
    contract = json.loads(contract_path(path, "keras").read_text())
    assert contract["input_shape"] == [SIZE, SIZE, 3]
    assert contract["preprocessing_inside"].startswith("caffe: RGB->BGR")  # measured, not named
    assert contract["resize_outside_the_model"]["policy"] == "squash"
    assert contract["class_names"] == ["cat", "dog"]
    recorded = _recorded(fitted["run"])
    ids = sorted(recorded)
    raw = np.stack([load_image(fitted["data"] / i, (SIZE, SIZE), "squash") for i in ids])
    np.save(tmp_path / "raw.npy", raw.astype(np.float32))
    script = (
        "import sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, m.predict(np.load({str(tmp_path / 'raw.npy')!r}),"
        " verbose=0))\n"
        "print('pipeline' in sys.modules, m.trainable_weights and 'head' or 'frozen')\n")
    # -I: isolated mode, so neither the working tree nor PYTHONPATH can supply our package.
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "False"
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, np.array([recorded[i] for i in ids]), atol=1e-5)


def test_predict_refuses_weights_it_cannot_reproduce(fitted, tmp_path):
    from pipeline.errors import WeightsError
    from pipeline.deploy.prediction import predict

    changed = tmp_path / "changed.weights.h5"
    shutil.copy(fitted["weights"], changed)
    with open(changed, "ab") as fh:
        fh.write(b"\0")  # another file now sits where the head's weights were
    for weights, message in ((str(changed), "not the ones this head was trained with"),
                             ("none", "random weights .* drawn by the unknown backend")):
        run = tmp_path / f"run-{weights[-4:]}"
        shutil.copytree(fitted["run"], run)
        info = json.loads((run / "run.json").read_text())
        info["provenance"]["extract_options"]["weights"] = weights
        (run / "run.json").write_text(json.dumps(info))
        with pytest.raises(WeightsError, match=message):
            predict(run, fitted["data"], {"cache_dir": str(tmp_path / "c"), "progress": False})
    assert not (tmp_path / "c").exists()  # refused before extracting anything


def test_predict_on_a_run_without_extract_options_is_refused(tmp_path, capsys):
    from pipeline.store.feature_store import write_store
    from pipeline.fit.run import fit_head
    from run_pipeline import main

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    store = write_store(tmp_path / "ext.h5", rng.normal(size=(40, 4)).astype(np.float32) + labels[:, None],
                        labels, class_names=["a", "b"])
    run = fit_head(store, {"epochs": 1, "progress": False}, out_dir=tmp_path, echo=lambda *_: None)
    for command in (["predict", "--run", str(run), "--data", str(tmp_path)],
                    ["export", "--run", str(run)], ["predict", "--run", str(tmp_path),
                                                    "--data", str(tmp_path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert ("extract_options" in err or "not a run folder" in err) and err.count("\n") == 1


def test_grid_search_run_predicts_through_the_same_code(fitted, tmp_path):
    search = pytest.importorskip("pipeline.search.run", reason="needs grid-search")
    from pipeline.deploy.prediction import predict, read_predictions

    run = search.run_grid_search(fitted["store"], {}, out_dir=tmp_path, echo=lambda *_: None)
    out = predict(run, fitted["data"], {"cache_dir": str(fitted["root"] / "cache"),
                                        "progress": False}, echo=lambda *_: None)
    probs = np.array(list(read_predictions(out).values()))
    assert probs.shape == (20, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
