"""A KerasHub preset directory end to end through the CLI: extract, fit-head, grid-search,
audit, predict and export, on a tiny DINOv2 preset with random weights made here."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_images

SIZE = 28


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    import keras
    import keras_hub

    root = tmp_path_factory.mktemp("hub_run")
    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64,
        num_register_tokens=2, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3))
    preset = root / "dino_preset"
    backbone.save_to_preset(str(preset))
    keras_hub.layers.DINOV2ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0).save_to_preset(
        str(preset))
    data = write_images(root / "pets", per_class=10, size=(SIZE, SIZE))
    return {"root": root, "preset": preset, "data": data}


def test_a_preset_directory_goes_through_every_command(hub_run, capsys):
    from pipeline.deploy.prediction import read_predictions
    from run_pipeline import main

    root = hub_run["root"]
    assert main(["extract", "--data", str(hub_run["data"]), "--backbone", str(hub_run["preset"]),
                 "--layer", "cls_tokens_mean", "--engine", "tensorflow", "--cache-dir",
                 str(root / "cache"), "--batch-size", "8", "--no-progress"]) == 0
    store = _last_line(capsys)
    assert store.endswith(".h5") and "hub-dino_preset-cls_tokens_mean" in store
    assert main(["fit-head", "--store", store, "--epochs", "3", "--hidden-units", "8",
                 "--out", str(root / "runs"), "--no-progress"]) == 0
    run = _last_line(capsys)
    assert main(["grid-search", "--store", store, "--models", "logistic_regression", "--cv", "2",
                 "--out", str(root / "runs")]) == 0
    assert (root / "runs").is_dir() and _last_line(capsys)
    assert main(["audit", "--store", store, "--out", str(root / "audit")]) == 0
    assert _last_line(capsys) and (root / "audit").is_dir()
    assert main(["predict", "--run", run, "--data", str(hub_run["data"]), "--cache-dir",
                 str(root / "fresh"), "--no-progress"]) == 0
    predicted = read_predictions(_last_line(capsys))
    recorded = {}
    for split in ("val", "test"):
        recorded.update(read_predictions(f"{run}/predictions_{split}.csv"))
    assert len(predicted) == 20 and recorded
    ids = sorted(recorded)
    np.testing.assert_allclose([predicted[i] for i in ids], [recorded[i] for i in ids],
                               atol=1e-5)
    hub_run["run"], hub_run["recorded"] = run, recorded


def test_export_of_a_preset_run_loads_with_keras_hub_and_reproduces_it(hub_run, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model
    from pipeline.extract.sources.images import load_image

    if "run" not in hub_run:
        pytest.skip("the end-to-end run above failed")
    path = export_model(hub_run["run"], {"out": str(tmp_path / "pets.keras")},
                        echo=lambda *_: None)
    contract = json.loads(contract_path(path, "keras").read_text())
    assert contract["input_shape"] == [SIZE, SIZE, 3]
    assert contract["preprocessing_inside"].startswith("per-channel x * [0.003922")
    ids = sorted(hub_run["recorded"])
    raw = np.stack([load_image(hub_run["data"] / i, (SIZE, SIZE), "squash") for i in ids])
    np.save(tmp_path / "raw.npy", raw.astype(np.float32))
    script = (
        "import sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, m.predict(np.load({str(tmp_path / 'raw.npy')!r}),"
        " verbose=0))\n"
        "print('pipeline' in sys.modules)\n")
    # -I: our package is not importable there; Keras imports KerasHub's layers by their module.
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False"
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               [hub_run["recorded"][i] for i in ids], atol=1e-5)


def test_predict_refuses_a_preset_whose_weights_changed(hub_run, tmp_path, capsys):
    from run_pipeline import main

    if "run" not in hub_run:
        pytest.skip("the end-to-end run above failed")
    weights = hub_run["preset"] / "model.weights.h5"
    original = weights.read_bytes()
    try:
        import keras_hub

        keras_hub.models.Backbone.from_preset(str(hub_run["preset"]), load_weights=False) \
            .save_to_preset(str(tmp_path / "other"))  # other (random) weights, same architecture
        weights.write_bytes((tmp_path / "other" / "model.weights.h5").read_bytes())
        assert main(["predict", "--run", hub_run["run"], "--data", str(hub_run["data"]),
                     "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "are not the ones this head was trained with" in err
        assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("*.h5"))
    finally:
        weights.write_bytes(original)
