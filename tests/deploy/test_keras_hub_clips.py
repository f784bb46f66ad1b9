"""A tiny DINOv2 preset on clip frames (`--frames 8 --temporal-pool mean|none`) end to end
through the CLI: extract, fit-head, grid-search, audit, predict, and export to Keras and ONNX,
on a GIF and an MP4 written here (neither at the preset's size, so its converter's crop runs)."""

import json

import numpy as np
import pytest
from PIL import Image

SIZE = 28
FRAMES = 8


def _frames(n, seed, cue):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        arr[..., cue] = np.clip(arr[..., cue].astype(int) + 90, 0, 255)  # a learnable cue
        out.append(arr)
    return out


def _write_gif(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=60, loop=0)


def _write_mp4(path, frames):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 52, 40, "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    import keras
    import keras_hub

    root = tmp_path_factory.mktemp("hub_clips")
    keras.utils.set_random_seed(6)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=2, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3))
    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0, interpolation="bicubic",
        antialias=True)
    preset = root / "dino_clips"
    backbone.save_to_preset(str(preset))
    converter.save_to_preset(str(preset))
    data = root / "clips"
    for c, name in enumerate(("neg", "pos")):
        for i in range(4):
            _write_gif(data / name / f"g{i}.gif", _frames(3 + 2 * i, 10 * c + i, c))
            _write_mp4(data / name / f"v{i}.mp4", _frames(12, 50 + 10 * c + i, c))
    return {"root": root, "preset": preset, "data": data, "backbone": backbone,
            "converter": converter}


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("pool", ["mean", "none"])
def test_a_preset_on_clip_frames_goes_through_every_command(clips, tmp_path, capsys, pool):
    from pipeline.deploy.formats import contract_path
    import onnxruntime

    from pipeline.deploy.prediction import read_predictions
    from pipeline.extract.sources.frame_reader import FrameReader, sampled_indices
    from pipeline.store.feature_store import open_store
    from run_pipeline import main

    assert main(["extract", "--data", str(clips["data"]), "--backbone", str(clips["preset"]),
                 "--frames", str(FRAMES), "--temporal-pool", pool, "--cache-dir",
                 str(tmp_path / "cache"), "--batch-size", "8", "--no-progress"]) == 0
    store = _last_line(capsys)
    with open_store(store) as opened:
        ids, stored = list(opened.column("ids")), np.asarray(opened.file["features"][:])
        reader_record = dict(opened.provenance)["reader"]
    assert reader_record["aspect"] == "crop_to_aspect_ratio"
    assert len(ids) == 16 * (1 if pool == "mean" else FRAMES)
    # A GIF's rows are KerasHub's backbone on its converter's output for the sampled frames.
    with Image.open(clips["data"] / "pos/g1.gif") as gif:
        decoded = []
        for index in range(gif.n_frames):
            gif.seek(index)
            decoded.append(np.asarray(gif.convert("RGB")))
    picked = np.stack([decoded[i] for i in sampled_indices(len(decoded), FRAMES)])
    tokens = np.asarray(clips["backbone"](clips["converter"](picked)))[:, 0]
    rows = stored[[i for i, sid in enumerate(ids) if sid.startswith("pos/g1.gif")]]
    np.testing.assert_allclose(rows, tokens.mean(axis=0, keepdims=True) if pool == "mean"
                               else tokens, atol=1e-5)

    runs = tmp_path / "runs"
    assert main(["fit-head", "--store", store, "--epochs", "2", "--hidden-units", "8",
                 "--out", str(runs), "--no-progress"]) == 0
    run = _last_line(capsys)
    assert main(["grid-search", "--store", store, "--models", "logistic_regression", "--cv", "2",
                 "--out", str(runs)]) == 0
    assert _last_line(capsys)
    assert main(["audit", "--store", store, "--out", str(tmp_path / "audit")]) == 0
    assert _last_line(capsys) and (tmp_path / "audit").is_dir()
    assert main(["predict", "--run", run, "--data", str(clips["data"]), "--cache-dir",
                 str(tmp_path / "fresh"), "--no-progress"]) == 0
    predicted = read_predictions(_last_line(capsys))
    recorded = {}
    for split in ("val", "test"):
        recorded.update(read_predictions(f"{run}/predictions_{split}.csv"))
    assert recorded and set(recorded) <= set(predicted)
    np.testing.assert_allclose([predicted[i] for i in sorted(recorded)],
                               [recorded[i] for i in sorted(recorded)], atol=1e-5)

    reader = FrameReader((SIZE, SIZE, 3), {"frames": FRAMES, "temporal_pool": pool},
                         image_resize=_fit(clips))
    for fmt, name in (("keras", "m.keras"), ("onnx", "m.onnx")):
        assert main(["export", "--run", run, "--format", fmt, "--out",
                     str(tmp_path / name)]) == 0
        path = _last_line(capsys)
        contract = json.loads(contract_path(tmp_path / name, fmt).read_text())
        assert contract["resize_outside_the_model"]["policy"] == "image_converter"
        assert contract["resize_outside_the_model"]["interpolation"] == "bicubic"
        if fmt == "keras":
            import keras

            model = keras.saving.load_model(path, safe_mode=True)
            run_model = lambda x: model.predict(x, batch_size=len(x), verbose=0)  # noqa: E731
        else:
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            run_model = lambda x: session.run(  # noqa: E731
                None, {session.get_inputs()[0].name: x})[0]
        for sid in ("neg/v2.mp4", "pos/g1.gif"):
            pixels = np.concatenate(list(reader.read(clips["data"] / sid)))
            got = run_model(pixels)  # one video per call
            want = predicted[sid][None] if pool == "mean" else \
                np.stack([predicted[f"{sid}#clip{k}"] for k in range(FRAMES)])
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{fmt} {sid}")


def _fit(clips):
    from pipeline.extract.sources.converter_resize import ConverterResize

    converter = clips["converter"]
    return ConverterResize((SIZE, SIZE), converter.crop_to_aspect_ratio,
                           converter.pad_to_aspect_ratio, converter.interpolation,
                           converter.antialias)
