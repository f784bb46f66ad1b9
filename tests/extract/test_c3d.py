"""C3D: the seed's graph layer by layer, weights by layer name, and a cached fc6 row checked
against the model's own output. One 78M-parameter model is built for the module."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pipeline.extract.backbones import get_backbone
from pipeline.extract.backbones.c3d import build_c3d, load_mean_cube, preprocess_c3d
from pipeline.extract.backbones.feature_model import resolve_layer_name
from pipeline.extract.backbones.weights import load_trunk
from pipeline.errors import ConfigError, WeightsError

C3D_RECIPE = get_backbone("c3d").clip_recipe

# Seed 000's model.summary(), up to fc7 (its 2-class nfc8 is the user's own head).
SEED_LAYERS = [
    ("conv1", (16, 112, 112, 64), 5248), ("pool1", (16, 56, 56, 64), 0),
    ("conv2", (16, 56, 56, 128), 221312), ("pool2", (8, 28, 28, 128), 0),
    ("conv3a", (8, 28, 28, 256), 884992), ("conv3b", (8, 28, 28, 256), 1769728),
    ("pool3", (4, 14, 14, 256), 0),
    ("conv4a", (4, 14, 14, 512), 3539456), ("conv4b", (4, 14, 14, 512), 7078400),
    ("pool4", (2, 7, 7, 512), 0),
    ("conv5a", (2, 7, 7, 512), 7078400), ("conv5b", (2, 7, 7, 512), 7078400),
    ("zeropad5", (2, 8, 8, 512), 0), ("pool5", (1, 4, 4, 512), 0),
    ("flatten_1", (8192,), 0), ("fc6", (4096,), 33558528), ("dropout_1", (4096,), 0),
    ("fc7", (4096,), 16781312), ("dropout_2", (4096,), 0),
]
SEED_TOTAL, SEED_NFC8 = 78_003_970, 8_194


def write_legacy_h5(path: Path, layers: list, extra: dict | None = None) -> Path:
    """Writes weights in Keras 2's HDF5 layout: root attr `layer_names`; one group per layer
    with attr `weight_names` and one dataset per name (e.g. `conv1/kernel:0`).

    Args:
        layers: (name, [arrays]) in the order to list them; an empty list for weightless layers.
        extra: more (name -> [arrays]) layers, e.g. a fine-tuned head the trunk does not have.
    """
    items = list(layers) + list((extra or {}).items())
    with h5py.File(path, "w") as fh:
        fh.attrs["layer_names"] = np.array([n.encode() for n, _ in items])
        fh.attrs["backend"] = b"tensorflow"
        fh.attrs["keras_version"] = b"2.2.4"
        for name, arrays in items:
            group = fh.create_group(name)
            names = [f"{name}/{kind}:0" for kind in ("kernel", "bias")][:len(arrays)]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for weight_name, value in zip(names, arrays):
                group.create_dataset(weight_name, data=value)
    return path


def layer_arrays(model) -> list:
    return [(layer.name, [np.asarray(w) for w in layer.get_weights()]) for layer in model.layers
            if layer.name != "clip"]


@pytest.fixture(scope="module")
def c3d():
    return build_c3d()  # random weights: the layout, not the values, is under test


@pytest.fixture(scope="module")
def legacy_file(c3d, tmp_path_factory):
    """The model's weights as seed 000's file would hold them: listed in another order than the
    model's layers (so only names can match them up) and with the user's 2-class nfc8 beside."""
    path = tmp_path_factory.mktemp("weights") / "C3D_Sport1M_weights_keras_2.2.4.h5"
    rng = np.random.default_rng(0)
    return write_legacy_h5(path, layer_arrays(c3d)[::-1],
                           extra={"nfc8": [rng.normal(size=(4096, 2)).astype("float32"),
                                           np.zeros(2, "float32")]})


def test_layer_output_shapes_and_parameters_equal_the_seed(c3d):
    got = [(layer.name, tuple(layer.output.shape[1:]), layer.count_params())
           for layer in c3d.layers[1:]]
    assert got == SEED_LAYERS
    assert c3d.count_params() == SEED_TOTAL - SEED_NFC8 == 77_995_776


def test_spec_feature_layers():
    spec = get_backbone("c3d")
    assert spec.kind == "clip" and spec.input_shape == (16, 112, 112, 3)
    import keras

    small = build_c3d((16, 32, 32, 3))
    assert resolve_layer_name(spec, small, "pool5") == "flatten_1"
    assert resolve_layer_name(spec, small, "pooled") == "fc6"  # the C3D paper's feature
    assert small.get_layer("fc7").activation is keras.activations.relu
    assert build_c3d(include_top=True, input_shape=(16, 32, 32, 3)).layers[-1].name == "fc8"


def test_legacy_keras2_file_loads_by_layer_name(c3d, legacy_file):
    trunk = load_trunk(get_backbone("c3d"), str(legacy_file), (16, 112, 112, 3))
    for (name, expected), layer in zip(layer_arrays(c3d), trunk.layers[1:]):
        assert layer.name == name
        for want, got in zip(expected, layer.get_weights()):
            np.testing.assert_array_equal(got, want)


def test_conv1_of_another_shape_fails_naming_conv1(c3d, tmp_path):
    layers = layer_arrays(c3d)
    layers[0] = ("conv1", [np.zeros((3, 3, 3, 3, 32), "float32"), np.zeros(32, "float32")])
    bad = write_legacy_h5(tmp_path / "bad.h5", layers)
    with pytest.raises(WeightsError, match=r"conv1.*\(3, 3, 3, 3, 64\).*\(3, 3, 3, 3, 32\)"):
        load_trunk(get_backbone("c3d"), str(bad), (16, 112, 112, 3))


def test_missing_layer_fails_naming_it(c3d, tmp_path):
    missing = write_legacy_h5(tmp_path / "no_fc7.h5",
                              [(n, w) for n, w in layer_arrays(c3d) if n != "fc7"])
    with pytest.raises(WeightsError, match="fc7"):
        load_trunk(get_backbone("c3d"), str(missing), (16, 112, 112, 3))


def test_mean_cube_layouts(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.uniform(0, 255, size=(16, 128, 171, 3)).astype("float32")
    np.save(tmp_path / "last.npy", cube)
    np.save(tmp_path / "caffe.npy", np.moveaxis(cube, -1, 0)[None])  # (1, 3, 16, 128, 171)
    for name in ("last.npy", "caffe.npy"):
        got = load_mean_cube(str(tmp_path / name), (16, 112, 112, 3))
        np.testing.assert_array_equal(got, cube[:, 8:120, 30:142])  # as the frames
    np.save(tmp_path / "wrong.npy", cube[:, :100])
    with pytest.raises(ConfigError, match=r"\(16, 100, 171, 3\)"):
        load_mean_cube(str(tmp_path / "wrong.npy"), (16, 112, 112, 3))
    clip = rng.uniform(0, 255, size=(1, 16, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(preprocess_c3d(clip, cube[:, 8:120, 30:142]),
                               clip[..., ::-1] - cube[:, 8:120, 30:142], rtol=0, atol=0)


def test_cached_fc6_equals_the_models_output(c3d, legacy_file, tmp_path):
    import keras

    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store
    from pipeline.extract.sources.clips import ClipReader

    rng = np.random.default_rng(2)
    gif = tmp_path / "gifs" / "pos" / "smile.gif"
    gif.parent.mkdir(parents=True)
    frames = [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)) for _ in range(5)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=80, loop=0)
    opts = {"data": str(tmp_path / "gifs"), "backbone": "c3d", "weights": str(legacy_file),
            "layer": "fc6", "pooling": "avg", "batch_size": 1, "workers": 1, "dtype": "float32",
            "cache_dir": str(tmp_path / "cache")}
    result = run_extraction(opts, progress=False, echo=lambda *a: None)
    with open_store(result.path) as store:
        cached = store.load()[0]
        assert store.provenance["reader"]["mean"].startswith("sports1m_bgr_per_channel")
    (clip,) = next(ClipReader((16, 112, 112, 3), {}, C3D_RECIPE).read(gif))  # 5 frames: one looped clip
    fc6 = keras.Model(c3d.inputs, c3d.get_layer("fc6").output)
    expected = np.asarray(fc6.predict_on_batch(preprocess_c3d(clip[None].astype("float32"))))
    assert cached.shape == (1, 4096) and np.abs(expected).max() > 0
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-5)


def _port_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The Keras port's cv2.resize(frame, (171, 128)) written out: each output pixel from the
    2x2 nearest source pixels, centres aligned, no antialiasing; as interpolation matrices."""
    def matrix(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
            i = int(np.floor(src))
            m[o, i] += 1 - (src - i)
            m[o, min(i + 1, n_in - 1)] += src - i
        return m

    rows, cols = matrix(frame.shape[0], height), matrix(frame.shape[1], width)
    out = np.einsum("wx,hxc->hwc", cols, np.einsum("hy,yxc->hxc", rows, frame.astype(np.float64)))
    return np.floor(out + 0.5).astype(np.uint8)


def _port_clip(frames) -> np.ndarray:
    """The port's recipe: resize to 128x171, then frame[8:120, 30:142]."""
    return np.stack([_port_resize(f, 128, 171)[8:120, 30:142] for f in frames])


def test_frames_are_prepared_exactly_as_the_keras_port(tmp_path):
    from pipeline.extract.sources.clips import ClipReader

    rng = np.random.default_rng(5)
    # Noise with fine detail: an antialiasing filter or a crop one column off changes it all.
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(16)]
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:02d}.png")
    reader = ClipReader((16, 112, 112, 3), {}, C3D_RECIPE)
    (clip,), = list(reader.read(folder))
    expected = _port_clip(frames)
    assert np.abs(clip.astype(int) - expected).max() <= 1  # float32 vs float64 rounding
    assert (clip == expected).mean() > 0.99
    assert C3D_RECIPE.crop_offsets(112) == (8, 30) and C3D_RECIPE.resize_shape(112) == (128, 171)


def test_video_frames_follow_the_same_recipe(tmp_path):
    import av

    from pipeline.extract.sources.clips import ClipReader

    rng = np.random.default_rng(6)
    path = tmp_path / "noise.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv444p"
        for _ in range(16):
            frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:  # what the decoder gives at full size
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    (clip,), = list(ClipReader((16, 112, 112, 3), {}, C3D_RECIPE).read(path))
    expected = _port_clip(decoded[:16])
    assert np.abs(clip.astype(int) - expected).max() <= 1
    assert (clip == expected).mean() > 0.99
