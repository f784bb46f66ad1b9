"""export of an image backbone run on clip frames (`--temporal-pool max`) is checked clip by clip.

One module-scoped run: GIFs of random frames -> extract with a tiny image net, 4 frames per clip,
max over time -> fit-head. The parity check must feed each clip as its own call (the model pools
the frames of one video) and compare the artifact's pooled vectors with the store's row of
each clip, so an artifact that pools with the wrong flag cannot pass.
"""

import json

import numpy as np
import pytest
from PIL import Image

SIZE = 32
FRAMES = 4


def _tiny_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, name="conv2")(x))


def _write_gif(path, n, seed, cue):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        arr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        arr[..., cue] = np.clip(arr[..., cue].astype(int) + 90, 0, 255)  # a learnable cue
        frames.append(Image.fromarray(arr))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, loop=0)


@pytest.fixture(scope="module")
def max_run(tmp_path_factory):
    import keras

    from pipeline.extract.backbones import BackboneSpec, register_backbone
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    register_backbone(BackboneSpec(name="tiny_frames_export", build=_tiny_net,
                                   preprocess=lambda x: x / 127.5 - 1.0,
                                   preprocess_name="x / 127.5 - 1 (test)",
                                   input_shape=(SIZE, SIZE, 3)), overwrite=True)
    root = tmp_path_factory.mktemp("frame_export")
    weights = root / "tiny.weights.h5"
    keras.utils.set_random_seed(0)
    _tiny_net(None, (SIZE, SIZE, 3)).save_weights(str(weights))
    data = root / "clips"
    for c, name in enumerate(("neg", "pos")):
        for i in range(6):
            _write_gif(data / name / f"g{i}.gif", 3 + i, 10 * c + i, c)
    store = run_extraction({"data": str(data), "backbone": "tiny_frames_export",
                            "weights": str(weights), "frames": FRAMES, "temporal_pool": "max",
                            "cache_dir": str(root / "cache"), "batch_size": 5,
                            "progress": False}, echo=lambda *_: None).path
    run = fit_head(store, {"epochs": 2, "hidden_units": (8,), "test_fraction": 0.0,
                           "val_fraction": 0.34, "progress": False},
                   out_dir=root / "runs", echo=lambda *_: None)
    return {"root": root, "run": run}


def test_a_max_pooled_run_is_checked_one_clip_per_call(max_run, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model

    path = export_model(max_run["run"], {"out": str(tmp_path / "m.keras")}, echo=lambda *_: None)
    parity = json.loads(contract_path(path, "keras").read_text())["parity"]
    assert parity["rows_compared"] == 4 + 1  # one pooled row per clip, and the random call
    store = parity["store"]
    assert len(store["files"]) == 4 and store["rows_compared"] == 4
    assert store["max_abs_difference"] <= store["bound"]


def test_a_max_run_exported_with_mean_pooling_is_refused(max_run, tmp_path, monkeypatch):
    from pipeline.deploy import export
    from pipeline.errors import BackboneError

    monkeypatch.setattr(export, "_rows_pool", lambda reader: "mean")  # the wrong flag
    with pytest.raises(BackboneError, match="store"):
        export.export_model(max_run["run"], {"out": str(tmp_path / "m.keras")},
                            echo=lambda *_: None)
    assert not list(tmp_path.iterdir())
