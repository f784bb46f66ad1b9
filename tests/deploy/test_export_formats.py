"""export --format: every artifact loads in its own runtime and gives predict's probabilities.

One tiny run (a random-weight two-layer backbone at 32x32) is exported once per format; each
artifact is then run here straight through its runtime's own API on the run's images, decoded
as extract decodes them, and compared with the CSV `predict` wrote for the same files. A
grid-search winner that is a scikit-learn pipeline goes to one ONNX file and must match its
`predict_proba`. Refusals leave nothing behind.
"""

import json

import numpy as np
import pytest

from conftest import write_images

SIZE = 32
BOUND = 1e-4


def _tiny_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    return keras.Model(inputs, x, name="tiny_export_trunk")


def _register_trunk():
    from keras.applications import mobilenet

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(
        name="tiny_export_trunk", build=_tiny_trunk, preprocess=mobilenet.preprocess_input,
        preprocess_name="keras.applications.mobilenet.preprocess_input",
        input_shape=(SIZE, SIZE, 3), notes="test-only trunk"), overwrite=True)


GRID = """
[models.svm]
family = "rbf_svm"
preprocess = ["standardize", "pca"]
[models.svm.params]
C = [1.0]
pca__n_components = 4
"""

BOOSTING_GRID = """
[models.boosting]
family = "hist_gradient_boosting"
[models.boosting.params]
max_iter = [5]
early_stopping = false
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipeline.deploy.prediction import predict, read_predictions
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head
    from pipeline.search.run import run_grid_search

    root = tmp_path_factory.mktemp("formats")
    data = write_images(root / "pets", classes=("cat", "dog"), per_class=8)
    _register_trunk()
    opts = {"data": str(data), "backbone": "tiny_export_trunk", "weights": "none",
            "layer": "pooled", "pooling": "avg", "input_size": SIZE, "resize": "squash",
            "batch_size": 8, "cache_dir": str(root / "cache")}
    store = run_extraction(opts, progress=False, echo=lambda *_: None).path
    head = fit_head(store, {"epochs": 3, "hidden_units": (8,), "test_fraction": 0.25,
                            "progress": False}, out_dir=root / "runs", echo=lambda *_: None)
    runs = {"head": head}
    for name, grid in (("svm", GRID), ("boosting", BOOSTING_GRID)):
        (root / f"{name}.toml").write_text(grid)
        runs[name] = run_grid_search(store, {"grid": str(root / f"{name}.toml"), "cv": 2,
                                             "n_jobs": 1, "progress": False,
                                             "learning_curve": False},
                                     out_dir=root / f"runs-{name}", echo=lambda *_: None)
    predicted = {}
    for name in ("head", "svm"):
        csv = predict(runs[name], data, {"cache_dir": str(root / "cache"), "progress": False,
                                         "out": str(root / f"{name}.csv")}, echo=lambda *_: None)
        predicted[name] = read_predictions(csv)
    return {"root": root, "data": data, "runs": runs, "predicted": predicted}


def _pixels(tiny):
    """The run's images as extract decodes them (uint8), and predict's rows for them."""
    from pipeline.extract.sources.images import load_image

    ids = sorted(tiny["predicted"]["head"])
    return ids, np.stack([load_image(tiny["data"] / i, (SIZE, SIZE), "squash") for i in ids])


def _run_in_own_runtime(fmt, path, x):
    """The artifact run through its runtime's public API (not through pipeline code)."""
    if fmt == "keras":
        import keras

        return keras.saving.load_model(path, safe_mode=True).predict(x.astype(np.float32),
                                                                     verbose=0)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(x)[0]
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held: its variables live as long as it does
    return loaded.serve(tf.constant(x)).numpy()


@pytest.mark.parametrize("fmt, name", [("keras", "model.keras"), ("onnx", "onnx/model.onnx"),
                                       ("openvino", "openvino/model.xml"),
                                       ("litert", "litert/model.tflite"),
                                       ("saved_model", "saved_model/model")])
def test_each_format_loads_in_its_runtime_and_matches_predict(tiny, fmt, name, capsys):
    from pipeline.deploy.formats import contract_path
    from run_pipeline import main

    run = tiny["runs"]["head"]
    assert main(["export", "--run", str(run), "--format", fmt]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    path = run / "export" / name
    assert last == str(path) and path.exists()
    contract = json.loads(contract_path(path, fmt).read_text())
    assert contract["format"] == fmt and contract["model"] == path.name
    assert contract["input_dtype"] == ("float32" if fmt == "keras" else "uint8")
    parity = contract["parity"]
    assert parity["max_abs_difference"] <= BOUND and parity["rows_compared"] >= 4 + 3
    assert "file(s) of the run's store" in parity["inputs"]
    _assert_store_compared(parity)
    ids, x = _pixels(tiny)
    got = np.asarray(_run_in_own_runtime(fmt, path, x))
    want = np.array([tiny["predicted"]["head"][i] for i in ids])
    assert np.ptp(want[:, 0]) > 1e-3  # the probabilities differ from image to image
    np.testing.assert_allclose(got, want, atol=BOUND)
    assert not list((run / "export").rglob(".featcache-scratch"))  # no scratch left behind


def _assert_store_compared(parity):
    """model.json says which stored rows the artifact's own vectors were compared with."""
    store = parity["store"]
    assert len(store["files"]) == 4 and all(f.startswith(("cat/", "dog/"))
                                            for f in store["files"])
    assert store["rows_compared"] == 4 and store["max_abs_difference"] <= store["bound"]
    assert store["bound"] == BOUND  # vectors of this trunk are below 1: the bound is 1e-4


def _perturbed_trunks(monkeypatch):
    """The backbone export builds is no longer the one that made the store (as when its code
    or a plugin changed): its first kernel is scaled by 1.05."""
    from pipeline.extract.backbones import feature_model

    real = feature_model.build_feature_model

    def perturbed(*args, **kwargs):
        model = real(*args, **kwargs)
        kernel = next(w for w in model.weights if "kernel" in w.path)
        kernel.assign(kernel.numpy() * 1.05)
        return model

    monkeypatch.setattr(feature_model, "build_feature_model", perturbed)


@pytest.mark.parametrize("run_name, fmt", [("head", "keras"), ("svm", "onnx")])
def test_an_artifact_whose_trunk_did_not_make_the_store_is_refused(tiny, tmp_path, monkeypatch,
                                                                   capsys, run_name, fmt):
    from run_pipeline import main

    _perturbed_trunks(monkeypatch)
    out = tmp_path / f"m.{fmt}"
    assert main(["export", "--run", str(tiny["runs"][run_name]), "--format", fmt, "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    assert "store" in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_scikit_learn_winner_is_one_onnx_file_matching_predict_proba(tiny, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model

    run = tiny["runs"]["svm"]
    assert json.loads((run / "best_model.json").read_text())["family"] == "rbf_svm"
    path = export_model(run, {"format": "onnx", "out": str(tmp_path / "svm.onnx")},
                        echo=lambda *_: None)
    contract = json.loads(contract_path(path, "onnx").read_text())
    assert "rbf_svm" in contract["head"] and contract["parity"]["max_abs_difference"] <= BOUND
    _assert_store_compared(contract["parity"])
    ids, x = _pixels(tiny)
    got = _run_in_own_runtime("onnx", path, x)
    want = np.array([tiny["predicted"]["svm"][i] for i in ids])
    assert np.ptp(want[:, 0]) > 1e-3
    np.testing.assert_allclose(got, want, atol=BOUND)


def test_a_scikit_learn_winner_in_another_format_is_refused(tiny, capsys):
    from run_pipeline import main

    run = tiny["runs"]["svm"]
    assert main(["export", "--run", str(run), "--format", "litert"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--format onnx" in err and err.count("\n") == 1
    assert not (run / "export").exists()


def test_a_family_the_converter_cannot_take_is_refused_by_name(tiny, capsys):
    from run_pipeline import main

    run = tiny["runs"]["boosting"]
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "family hist_gradient_boosting" in err and err.count("\n") == 1
    assert not list((run / "export").rglob("*.onnx")) and not list(
        (run / "export").rglob("*.json"))


def test_a_missing_converter_is_refused_before_any_work(tiny, monkeypatch, capsys):
    from pipeline.deploy import formats
    from run_pipeline import main

    # What a user without the export extra has: the converter module cannot be found.
    monkeypatch.setattr(formats.FORMATS["onnx"], "requires", ("tf2onnx_absent_here",))
    run = tiny["runs"]["head"]
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["export", "--run", str(run), "--format", "onnx", "--out",
                 str(tiny["root"] / "absent.onnx")]) == 2
    err = capsys.readouterr().err
    assert "tf2onnx_absent_here" in err and "requirements-export.txt" in err
    assert sorted(p.name for p in run.rglob("*")) == before
    assert not (tiny["root"] / "absent.onnx").exists()


def test_an_artifact_failing_parity_is_never_published_and_the_old_one_is_kept(tiny, tmp_path,
                                                                               monkeypatch):
    from pipeline.deploy import formats
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model
    from pipeline.errors import BackboneError

    out = tmp_path / "m.tflite"
    export_model(tiny["runs"]["head"], {"format": "litert", "out": str(out), "check": False},
                 echo=lambda *_: None)
    before = out.read_bytes(), contract_path(out, "litert").read_text()
    real_load = formats.LiteRtFormat.load

    def off_by_a_little(self, path):  # a runtime that rounds worse than the bound allows
        run = real_load(self, path)
        return lambda x: run(x) + 3e-4

    monkeypatch.setattr(formats.LiteRtFormat, "load", off_by_a_little)
    with pytest.raises(BackboneError, match="differs from predict by 3.0.e-04"):
        export_model(tiny["runs"]["head"], {"format": "litert", "out": str(out)},
                     echo=lambda *_: None)
    assert (out.read_bytes(), contract_path(out, "litert").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.litert.json", "m.tflite"]


def test_the_export_pins_are_installed_by_ci():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def pins(name):
        return {l.strip() for l in (root / name).read_text().splitlines()
                if l.strip() and not l.startswith("#")}

    export = pins("requirements-export.txt")
    assert {p.split("==")[0] for p in export} >= {"tf2onnx", "onnx", "onnxruntime", "skl2onnx",
                                                  "ai-edge-litert"}
    assert export <= pins("requirements-dev.txt")  # the same versions: CI tests what users get


def test_a_folder_artifact_replaces_only_an_earlier_export(tiny, tmp_path, capsys):
    from pipeline.deploy.formats import contract_path
    from run_pipeline import main

    run, out = tiny["runs"]["head"], tmp_path / "served"
    for _ in range(2):  # the second export replaces the first (its model.json lists its files)
        assert main(["export", "--run", str(run), "--format", "saved_model", "--out", str(out),
                     "--no-check"]) == 0
    assert (out / "saved_model.pb").is_file()
    assert json.loads(contract_path(out, "saved_model").read_text())["model"] == "served"
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--format", "saved_model", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and err.count("\n") == 1
    assert sorted(p.name for p in mine.rglob("*")) == ["notes"]
    assert not contract_path(mine, "saved_model").exists()
