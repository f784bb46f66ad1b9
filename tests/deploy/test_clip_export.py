"""export of a clip run made with a C3D mean cube (`--mean-file`) agrees with predict.

One module-scoped run: GIFs of random frames -> extract with a tiny clip backbone that follows
C3D's own recipe (resize, crop offsets and mean loading come from the c3d spec's `clip_recipe`)
and a random mean cube -> fit-head -> predict and export. The exported model, fed the raw
clips the reader makes, must give predict's probabilities (1e-5).
"""

import json

import numpy as np
import pytest
from PIL import Image

SHAPE = (16, 32, 32, 3)


def _tiny_clip_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling3D(name="gap")(x))


def _write_gif(path, n, seed):
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    from pipeline.extract.backbones import BackboneSpec, get_backbone, register_backbone
    from pipeline.extract.backbones.c3d import preprocess_c3d
    from pipeline.fit.run import fit_head
    from run_pipeline import main

    recipe = get_backbone("c3d").clip_recipe
    register_backbone(BackboneSpec(
        name="tiny_clip_export", kind="clip", build=_tiny_clip_net, preprocess=preprocess_c3d,
        clip_recipe=recipe, preprocess_name="c3d (test)", input_shape=SHAPE), overwrite=True)
    root = tmp_path_factory.mktemp("clip_export")
    weights = root / "tiny.weights.h5"
    import keras

    keras.utils.set_random_seed(0)
    _tiny_clip_net(None, SHAPE).save_weights(str(weights))
    data = root / "gifs"
    for i in range(12):
        _write_gif(data / ("pos" if i % 2 else "neg") / f"g{i}.gif", 16 + 10 * (i % 3), seed=i)
    resized = recipe.resize_shape(SHAPE[1])  # the cube is cropped like the frames
    mean = np.random.default_rng(1).uniform(0, 255, (SHAPE[0], *resized, 3)).astype(np.float32)
    np.save(root / "mean.npy", mean)
    assert main(["extract", "--data", str(data), "--backbone", "tiny_clip_export",
                 "--weights", str(weights), "--mean-file", str(root / "mean.npy"),
                 "--cache-dir", str(root / "cache"), "--batch-size", "4", "--no-progress"]) == 0
    (store,) = (root / "cache").glob("gifs-*.h5")
    run = fit_head(store, {"epochs": 3, "hidden_units": (8,), "progress": False},
                   out_dir=root / "runs", echo=lambda *_: None)
    return {"root": root, "data": data, "run": run, "mean": root / "mean.npy", "recipe": recipe}


def test_exported_model_equals_predict_with_a_mean_cube(clip_run, tmp_path):
    from pipeline.deploy.formats import contract_path
    import keras

    from pipeline.deploy.export import export_model
    from pipeline.deploy.prediction import predict, read_predictions
    from pipeline.extract.sources.clips import ClipReader

    predicted = read_predictions(predict(clip_run["run"], clip_run["data"],
                                         {"progress": False}, echo=lambda *_: None))
    path = export_model(clip_run["run"], {"out": str(tmp_path / "clips.keras")},
                        echo=lambda *_: None)
    model = keras.saving.load_model(path, safe_mode=True)
    reader = ClipReader(SHAPE, {"mean_file": str(clip_run["mean"])}, clip_run["recipe"])
    assert len(predicted) == 12  # with 1, 2 and 3 clips per file, in mixed order
    for sample_id, want in predicted.items():
        clips = np.concatenate(list(reader.read(clip_run["data"] / sample_id)))
        clips = clips.astype(np.float32)
        (got,) = model.predict(clips, batch_size=len(clips), verbose=0)  # one video per call
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=sample_id)
    contract = json.loads(contract_path(path, "keras").read_text())
    assert "mean cube" in contract["preprocessing_inside"]


def test_clip_model_json_describes_the_reader_once(clip_run, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model

    path = export_model(clip_run["run"], {"out": str(tmp_path / "c.keras"), "check": False},
                        echo=lambda *_: None)
    contract = json.loads(contract_path(path, "keras").read_text())
    text = json.dumps(contract)
    assert "squash" not in text  # an image policy has no place in a clip model's contract
    top, left = clip_run["recipe"].crop_offsets(SHAPE[1])
    height, width = clip_run["recipe"].resize_shape(SHAPE[1])
    outside = contract["resize_outside_the_model"]
    assert f"{height}x{width}" in outside["policy"] and f"({top}, {left})" in outside["policy"]
    assert text.count(f"{height}x{width}") == 1


def test_clip_run_exports_to_onnx_taking_uint8_frames(clip_run, tmp_path):
    from pipeline.deploy.formats import contract_path
    import onnxruntime

    from pipeline.deploy.export import export_model
    from pipeline.deploy.prediction import predict, read_predictions
    from pipeline.extract.sources.clips import ClipReader

    predicted = read_predictions(predict(clip_run["run"], clip_run["data"],
                                         {"progress": False, "out": str(tmp_path / "p.csv")},
                                         echo=lambda *_: None))
    path = export_model(clip_run["run"], {"format": "onnx", "out": str(tmp_path / "c.onnx")},
                        echo=lambda *_: None)
    contract = json.loads(contract_path(path, "onnx").read_text())
    assert contract["input_shape"] == ["clips", *SHAPE] and contract["input_dtype"] == "uint8"
    assert contract["parity"]["max_abs_difference"] <= 1e-4
    assert "4 file(s) of the run's store" in contract["parity"]["inputs"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reader = ClipReader(SHAPE, {"mean_file": str(clip_run["mean"])}, clip_run["recipe"])
    for sample_id, want in predicted.items():  # 1, 2 or 3 clips per call: one video each
        clips = np.concatenate(list(reader.read(clip_run["data"] / sample_id)))
        (got,) = session.run(None, {session.get_inputs()[0].name: clips})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=sample_id)
